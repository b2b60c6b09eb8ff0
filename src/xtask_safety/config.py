"""Recipe dataclasses. One set of dataclasses drives Python, YAML recipes and CLI flags.

Recipes are parsed with TRL's ``TrlParser``: ``--config recipe.yaml`` sets defaults, flags on the
command line override them, and a key no dataclass knows is an error. Field names follow HF/TRL
(``model_name_or_path``, ``max_length``, ``lora_r``, ``load_in_4bit`` ...).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from trl import ModelConfig, TrlParser

from xtask_safety.choices import check_choices, check_counts
from xtask_safety.errors import ConfigError

WEIGHTINGS = ("uniform", "per_task", "balanced", "ratio")
# Training keys Transformers renamed: the recipes use the new name (5.23+); older releases, which vLLM's
# environments pin (<5.20, <5.21), know only the old one, so there the new name is read as the old.
RENAMED_KEYS = {"activation_checkpointing": "gradient_checkpointing",
                "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs"}


@dataclass
class ModelArguments(ModelConfig):
    """TRL's ModelConfig plus the embedded default model, GGUF files and layer-restricted LoRA."""

    model_name_or_path: str | None = field(
        default="embedded",
        metadata={"help": "HF id, local directory, .gguf file, or 'embedded' (SmolLM2-135M-Instruct)."},
    )
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file name inside model_name_or_path."})
    lora_top_layers: int | None = field(
        default=None, metadata={"help": "Apply LoRA only to the top N transformer layers (None: all)."}
    )
    prompt_template: Literal["chat", "alpaca"] = field(default="chat", metadata={"help": "'chat' (model's template) or 'alpaca'."})
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message; None keeps the chat template's default."}
    )


@dataclass
class DefenseArguments:
    """Training data and the mixed-task loss."""

    train_file: str | None = field(default=None, metadata={"help": "Training records (JSONL, record schema)."})
    eval_file: str | None = field(default=None, metadata={"help": "Optional records for eval loss."})
    weighting: Literal["uniform", "per_task", "balanced", "ratio"] = field(
        default="uniform", metadata={"help": f"Sample weighting: one of {', '.join(WEIGHTINGS)}."}
    )
    task_weights: Any = field(
        default=None,
        metadata={"help": "per_task weights: YAML mapping or 'summarize=2,translate=1' (others 1.0); a task:domain key "
                          "('cloze:useful=2') weights one task's rows of one domain."},
    )
    defense_ratio: float = field(
        default=0.5, metadata={"help": "ratio weighting: share of total weight on malicious (refusal) rows."}
    )
    loss_normalization: Literal["token", "sample"] = field(
        default="token",
        metadata={"help": "'token': weighted mean over completion tokens; 'sample': weighted mean of per-sample means."},
    )
    decision_tokens: int = field(
        default=0, metadata={"help": "Weight the first N completion tokens (the refuse/answer decision)..."}
    )
    decision_weight: float = field(default=1.0, metadata={"help": "...by this factor."})
    stratify_batches: bool = field(
        default=False,
        metadata={"help": "Mix every batch in the set's domain proportions (refusal and answer rows together), so no "
                          "step pushes the refuse-or-answer decision one way for all documents; replaces "
                          "train_sampling_strategy."},
    )
    decision_dev_file: str | None = field(
        default=None,
        metadata={"help": "Records (JSONL) whose refuse-or-answer decision is read off the first completion token "
                          "every decision_eval_steps steps; the curve goes to <output_dir>/decision_curve.jsonl."},
    )
    decision_eval_steps: int = field(default=5, metadata={"help": "Steps between two decision_dev_file readings."})
    decision_eval_start: int = field(
        default=0,
        metadata={"help": "First step read (0: from decision_eval_steps on). Early readings, before the lead-ins are "
                          "learned, cannot be selected anyway; skipping them leaves time for a larger slice."},
    )
    decision_select: bool = field(
        default=False,
        metadata={"help": "Save the adapter of the decision_dev_file reading with the best balanced score (malicious "
                          "refused, benign answered) instead of the last step's: early stopping without generation."},
    )
    decision_calibrate_steps: int = field(
        default=0,
        metadata={"help": "After training (and step selection), up to N small steps that move only the refuse-or-answer "
                          "threshold: each trains on one batch of benign or malicious training rows, whichever side "
                          "the decision_dev_file reading says is short; the best-balanced reading is kept "
                          "(train/calibrate.py). 0: off."},
    )
    decision_calibrate_lr: float = field(
        default=2e-4, metadata={"help": "Learning rate of the calibration steps (a fresh AdamW)."}
    )
    resume: bool = field(default=False, metadata={"help": "Resume from the last checkpoint in output_dir."})
    run_group: str | None = field(default=None, metadata={"help": "Tracking group (e.g. a sweep name)."})

    def __post_init__(self) -> None:
        check_choices(self)
        if not 0.0 < self.defense_ratio < 1.0:
            raise ConfigError(f"defense_ratio: must be in (0, 1), got {self.defense_ratio}")
        if self.decision_tokens < 0 or self.decision_weight < 0:
            raise ConfigError("decision_tokens and decision_weight must be non-negative")
        if self.decision_select and not self.decision_dev_file:
            raise ConfigError("decision_select: needs decision_dev_file (the development records it reads)")
        if self.decision_eval_steps < 1:
            raise ConfigError(f"decision_eval_steps: must be positive, got {self.decision_eval_steps}")
        check_counts(self, non_negative=("decision_eval_start", "decision_calibrate_steps"))
        if self.decision_calibrate_steps and not self.decision_dev_file:
            raise ConfigError("decision_calibrate_steps: needs decision_dev_file (the development records it reads)")
        if not self.decision_calibrate_lr > 0:
            raise ConfigError(f"decision_calibrate_lr: must be positive, got {self.decision_calibrate_lr}")
        self.task_weights = parse_mapping(self.task_weights, "task_weights")


def parse_mapping(value: Any, key: str) -> dict[str, float] | None:
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{key}: malformed JSON ({exc.msg})") from None
        else:
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ConfigError(f"{key}: expected 'name=value,...', got {value!r}")
            value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    out = {}
    for k, v in value.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}.{k}: expected a number, got {v!r}") from None
        if out[str(k)] < 0:
            raise ConfigError(f"{key}.{k}: must be non-negative")
    return out


def parse_recipe(
    types: tuple[type, ...], argv: list[str] | None, prog: str, positional: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    """Parse ``--config YAML`` plus flags into the dataclasses; every problem becomes a ConfigError.

    ``positional`` names a field that the leading arguments (before the first flag) fill, e.g.
    ``report RUN_DIR ...``; ``defaults`` replaces dataclass defaults (the recipe and flags still win).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser(types, prog=prog, allow_abbrev=False)
    parser.error = lambda message: _raise(f"{prog}: {message}")  # type: ignore[method-assign]
    parser.add_argument("--config", metavar="RECIPE.yaml", help="YAML recipe: its keys set the defaults of the flags.")
    renames = _renamed_keys(parser)
    if renames:
        argv = [_rename_flag(arg, renames) for arg in argv]
        set_defaults = parser.set_defaults_with_config
        parser.set_defaults_with_config = lambda **kw: set_defaults(  # type: ignore[method-assign]
            **{renames.get(k, k): v for k, v in kw.items()})
    if defaults:
        parser.set_defaults(**defaults)
    if positional:
        lead = 0
        while lead < len(argv) and not argv[lead].startswith("-"):
            lead += 1
        if lead:
            argv = [f"--{positional}", *argv[:lead], *argv[lead:]]
    if "--config" in argv:
        idx = argv.index("--config")
        if idx + 1 >= len(argv):
            raise ConfigError("--config: missing path")
        from xtask_safety.resources import recipe_path

        argv[idx + 1] = str(recipe_path(argv[idx + 1], "--config"))  # recipes/... also from an installed package
        _check_recipe(argv[idx + 1], parser, renames)
    try:
        parsed = tuple(parser.parse_args_and_config(argv))
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{prog}: {str(exc).strip().splitlines()[0]}") from None
    parsed = parsed[: len(types)]  # the --config entry comes back as an extra namespace
    for obj in parsed:
        check_choices(obj)
    return parsed


def _renamed_keys(parser: Any) -> dict[str, str]:
    """The renamed keys this parser knows only by their old name (an older Transformers)."""
    dests = {a.dest for a in parser._actions}
    return {new: old for new, old in RENAMED_KEYS.items() if new not in dests and old in dests}


def _rename_flag(arg: str, renames: dict[str, str]) -> str:
    """``--activation_checkpointing[=X]`` (either spelling) as the old flag where only that exists."""
    flag, sep, value = arg.partition("=")
    key = flag[2:].replace("-", "_") if flag.startswith("--") else None
    return f"--{renames[key]}{sep}{value}" if key in renames else arg


def _check_recipe(path: str, parser: Any, renames: dict[str, str]) -> None:
    """The recipe is readable YAML, a mapping, with known keys of the right kinds (named by file and line)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the recipe ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping")
    known = {a.dest for a in parser._actions} - {"config"}
    unknown = sorted(k for k in cfg if k not in known and k not in renames and k != "env")
    if unknown:
        raise ConfigError(f"{path}: unknown recipe key(s) {unknown}")
    _check_types(path, {renames.get(k, k): v for k, v in cfg.items()}, parser._actions)


def _check_types(path: str, cfg: dict[str, Any], actions: list[Any]) -> None:
    """Numbers and booleans in a recipe must be numbers and booleans.

    argparse converts only *string* defaults, so a YAML list or mapping given for a number would
    otherwise reach the trainer unchecked and fail there with a traceback.
    """
    by_dest = {a.dest: a for a in actions}
    for key, value in cfg.items():
        action = by_dest.get(key)
        kind = getattr(action, "type", None)
        if action is None or value is None or isinstance(value, str):
            continue
        if kind in (int, float):
            allowed: tuple[type, ...] = (int,) if kind is int else (int, float)
            many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
            items = value if many and isinstance(value, list) else [value]
            if not all(isinstance(v, str) or (isinstance(v, allowed) and not isinstance(v, bool)) for v in items):
                want = f"a list of {kind.__name__} values" if many else f"a number ({kind.__name__})"
                raise ConfigError(f"{path}: {key}: expected {want}, got {value!r}")
        elif getattr(kind, "__name__", "") == "string_to_bool" and not isinstance(value, bool):
            raise ConfigError(f"{path}: {key}: expected true or false, got {value!r}")


def _raise(message: str) -> None:
    raise ConfigError(message)
