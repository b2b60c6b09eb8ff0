"""A model judge end to end: ``xtask-safety score --model_judge PATH`` in one command.

Every answer becomes a judge prompt (:mod:`.judge_formats`); prompts go through the project's own
generation runner (:func:`xtask_safety.generate.run.generate_to_file`: batched, greedy, resumable
record by record) into a JSONL cache whose keys are a hash of the judge model, the format, the prompt
version and the judge prompt itself. A rerun (or another scoring of the same answers) reads verdicts
from the cache and loads no model when nothing is missing. A local sequence-classification
checkpoint (``config.architectures`` ending in ``ForSequenceClassification``) is run as a classifier
judge instead (labels from ``id2label``, mapped with ``label_map``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtask_safety.errors import ConfigError
from xtask_safety.score.judge_formats import (
    FORMATS,
    PROMPT_VERSION,
    JudgeFormat,
    judge_input,
    render,
    unparsed,
)

NO_ANSWER = {"label": "not_generated", "passed": None, "reason": "no answer to judge"}


@dataclass
class ModelJudgeConfig:
    model: str
    format: str = "auto"  # auto: classifier for a sequence-classification checkpoint, else xtask
    backend: str = "transformers"
    batch_size: int = 8
    max_new_tokens: int | None = None  # None: the format's default
    cache: str | None = None
    gguf_file: str | None = None
    label_map: dict[str, str] = field(default_factory=dict)
    max_chars: int = 2000
    progress: bool = True


def is_classifier(model: str) -> bool:
    """A local checkpoint whose config declares a sequence-classification head."""
    cfg = Path(model) / "config.json"
    if not cfg.is_file():
        return False
    try:
        archs = json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or []
    except (ValueError, UnicodeDecodeError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in archs)


def cache_key(model_id: str, fmt: str, prompt: str) -> str:
    return hashlib.sha256("\x00".join((model_id, fmt, PROMPT_VERSION, prompt)).encode()).hexdigest()[:24]


class ModelJudge:
    """Judge rows (``response``, ``document``, ``instruction``) with a local model; see the module doc."""

    def __init__(self, cfg: ModelJudgeConfig, name: str = "model"):
        self.cfg, self.name = cfg, name
        fmt = cfg.format
        if fmt == "auto":
            fmt = "classifier" if is_classifier(cfg.model) else "xtask"
        if fmt != "classifier" and fmt not in FORMATS:
            raise ConfigError(f"model_judge_format: expected auto, classifier or one of {', '.join(FORMATS)}, "
                              f"got {cfg.format!r}")
        if cfg.backend not in ("transformers", "vllm"):
            raise ConfigError(f"judge_backend: expected transformers or vllm, got {cfg.backend!r}")
        if cfg.model != "embedded" and not cfg.model.endswith(".gguf") and not Path(cfg.model).exists():
            raise ConfigError(f"model_judge {cfg.model}: no such local model (a directory, a .gguf file or "
                              "'embedded')")
        self.format = fmt
        self.model_id = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
        if cfg.gguf_file:
            self.model_id += f"::{cfg.gguf_file}"
        self.stats: dict[str, Any] = {}

    # -- interface shared with the other judges ------------------------------------------------------
    def judge_many(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.format == "classifier":
            from xtask_safety.score.model_judge import ClassifierJudge

            out = ClassifierJudge(self.cfg.model, self.cfg.label_map, name=self.name).judge_many(rows)
        else:
            out = self._generative(rows, FORMATS[self.format])
        unparsed_rows = [v for v in out if v["label"] == "unparsed"]
        self.stats = {"judge": self.name, "model": self.cfg.model, "format": self.format,
                      "prompt_version": PROMPT_VERSION, "n_judged": sum(v["label"] != "not_generated" for v in out),
                      "unparsed": len(unparsed_rows), "unparsed_examples": [v["reason"] for v in unparsed_rows[:3]],
                      "cache": self.cfg.cache}
        return out

    def predict_rows(self, rows: list[dict[str, Any]]) -> list[str]:
        """Labels for labelled rows (``judge-eval``)."""
        return [v["label"] for v in self.judge_many(rows)]

    # -- generative judges ---------------------------------------------------------------------------
    def _generative(self, rows: list[dict[str, Any]], fmt: JudgeFormat) -> list[dict[str, Any]]:
        from xtask_safety.records import JsonlAppender

        if not self.cfg.cache:
            raise ConfigError("model judge: no cache file given (judge_cache)")
        texts = {k: judge_input(fmt, r, self.cfg.max_chars) for k, r in enumerate(rows) if r.get("response") is not None}
        keys = {k: cache_key(self.model_id, fmt.name, t) for k, t in texts.items()}
        done: dict[str, str | None] = {}
        if Path(self.cfg.cache).exists():  # (a missing cache is created only once there is a verdict to keep)
            cache = JsonlAppender(self.cfg.cache)
            done = {rid: row.get("response") for rid, row in cache.done.items()}
            cache.close()
        missing = {}
        for k, key in keys.items():
            if key not in done:
                missing.setdefault(key, texts[k])
        if missing:
            done.update(self._generate(missing, fmt))
        out = []
        for k in range(len(rows)):
            if k not in keys:
                out.append(dict(NO_ANSWER))
            elif done.get(keys[k]) is None:
                out.append(unparsed(None, "judge prompt too long for the judge model"))
            else:
                out.append(fmt.parse(done[keys[k]]))
        return out

    def _generate(self, prompts: dict[str, str], fmt: JudgeFormat) -> dict[str, str | None]:
        from xtask_safety.generate.base import SamplingConfig
        from xtask_safety.generate.run import generate_to_file
        from xtask_safety.records import Record

        backend = self._backend()
        records = [Record(id=key, task="instruction", domain="judge", document="",
                          instruction=render(fmt, text, backend.tokenizer), meta={"judge_format": fmt.name})
                   for key, text in prompts.items()]
        sampling = SamplingConfig(max_new_tokens=self.cfg.max_new_tokens or fmt.max_new_tokens)
        info = {"model": self.model_id, "judge_format": fmt.name, "prompt_version": PROMPT_VERSION,
                "backend": self.cfg.backend}
        rows = generate_to_file(records, backend, self.cfg.cache, sampling, run_info=info, desc="model judge",
                                progress=self.cfg.progress, on_too_long="skip")
        return {r["id"]: r.get("response") for r in rows}

    def _backend(self) -> Any:
        from xtask_safety.generate.backends import BackendSpec, build_backend, vllm_runs_here
        from xtask_safety.models import offline_defaults

        offline_defaults()
        if self.cfg.backend == "vllm" and not vllm_runs_here(None):
            raise ConfigError("judge_backend vllm: vLLM is not importable in this interpreter; run `score` with "
                              "vLLM's Python, or use the three-command flow (judge-prompts, generate --backend vllm, "
                              "score --judge_answers)")
        spec = BackendSpec(model=self.cfg.model, gguf_file=self.cfg.gguf_file, batch_size=self.cfg.batch_size)
        backend = build_backend(self.cfg.backend, spec)
        backend.render = lambda text: text  # prompts arrive rendered in the judge's own format
        return backend
