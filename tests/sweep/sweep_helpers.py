"""Helpers shared by the sweep tests (imported as ``sweep_helpers``): a tiny sweep recipe and its reader."""

from __future__ import annotations

from pathlib import Path

import yaml

# A training recipe that takes a second or two per cell on the tiny model: two steps, a checkpoint
# after each (so a killed cell has something to resume from).
TINY_TRAIN = {
    "model_name_or_path": "embedded", "dtype": "float32", "use_peft": True, "lora_r": 4, "lora_alpha": 8,
    "lora_target_modules": ["q_proj", "v_proj"], "completion_only_loss": True, "max_length": 128,
    "learning_rate": 1.0e-3, "max_steps": 2, "per_device_train_batch_size": 2, "save_strategy": "steps",
    "save_steps": 1, "save_total_limit": 1, "logging_steps": 1, "report_to": "none", "use_cpu": True,
    "bf16": False, "disable_tqdm": True, "dataloader_num_workers": 0, "activation_checkpointing": False,
}


def write_sweep(tmp_path: Path, model: str, corpus: Path, **overrides) -> Path:
    """A sweep over the tiny model and the small corpus: base + summarize at 2 sizes + mixed (4 cells)."""
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump(TINY_TRAIN))
    cfg = {
        "name": "tiny", "output_dir": str(tmp_path / "sweep"), "models": [model],
        "defended": ["summarize", "mixed"], "sizes": [2, 4], "mixed_sizes": [1], "weightings": ["uniform"],
        "seeds": [0], "data_recipe": None,
        "data_overrides": {"sources": [{"path": str(corpus)}], "eval_per_domain": 2, "dedup": "exact",
                           "target_max_words": 20},
        "eval_tasks": "summarize,cloze", "eval_docs_per_domain": 2, "train_recipe": str(train),
        "max_new_tokens": 4, "batch_size": 12, "quiet": True,
    }
    cfg.update(overrides)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def events(sweep_dir: Path) -> list[dict]:
    from xtask_safety.sweep.cache import read_events

    return read_events(sweep_dir / "events")


def by_invocation(evs: list[dict]) -> list[list[dict]]:
    order = list(dict.fromkeys(e["invocation"] for e in evs))
    return [[e for e in evs if e["invocation"] == inv] for inv in order]


def actions(evs: list[dict], stage: str) -> dict[str, list[str]]:
    """cell -> the actions of ``stage`` in these events."""
    out: dict[str, list[str]] = {}
    for e in evs:
        if e["stage"] == stage:
            out.setdefault(e["cell"], []).append(e["action"])
    return out
