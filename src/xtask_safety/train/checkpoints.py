"""Crash-safe resume: find the last *complete* checkpoint and refuse to resume a different run.

``transformers.trainer_utils.get_last_checkpoint`` returns the highest ``checkpoint-N`` directory
even when the job was killed while writing it. The Trainer writes ``trainer_state.json`` last, so a
checkpoint counts as complete only when that file parses and the weights (safetensors, or a
DeepSpeed/FSDP shard directory) and the optimizer state are present.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from xtask_safety.errors import ConfigError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
FINGERPRINT_FILE = "xtask_run_fingerprint.json"
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")


def is_complete(ckpt: Path) -> bool:
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or "global_step" not in state:
        return False
    sharded = any(p.is_dir() and p.name.startswith(("global_step", "pytorch_model_fsdp")) for p in ckpt.iterdir())
    weights = sharded or any((ckpt / f).is_file() for f in WEIGHT_FILES)
    optimizer = sharded or (ckpt / "optimizer.pt").is_file() or any(ckpt.glob("optimizer*"))
    return weights and optimizer


def checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` directories, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    for ckpt in reversed(checkpoints(output_dir)):
        if is_complete(ckpt):
            return str(ckpt)
    return None


def resolve_resume(output_dir: str, explicit: str | None, auto: bool, fingerprint: dict[str, Any]) -> str | None:
    """The checkpoint to resume from: ``explicit`` (must be complete), else with ``auto`` the last complete
    one in ``output_dir``; either must belong to this run (same fingerprint)."""
    resume = explicit or None
    if resume and not is_complete(Path(resume)):
        raise ConfigError(f"resume_from_checkpoint: {resume} is not a complete checkpoint")
    if resume is None and auto:
        resume = last_complete_checkpoint(output_dir)
    if resume:
        check_fingerprint(output_dir, fingerprint)
    return resume


def run_fingerprint(train_file_sha256: str, settings: dict[str, Any]) -> dict[str, Any]:
    blob = json.dumps(settings, sort_keys=True, default=str)
    return {"train_file_sha256": train_file_sha256, "settings_sha256": hashlib.sha256(blob.encode()).hexdigest(),
            "settings": json.loads(blob)}


def check_fingerprint(output_dir: str | Path, fingerprint: dict[str, Any]) -> None:
    """Resuming with other data or other training settings would silently mix two runs: refuse."""
    path = Path(output_dir) / FINGERPRINT_FILE
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no (readable) fingerprint: checkpoints from an older version or written by hand
    if old.get("train_file_sha256") != fingerprint["train_file_sha256"]:
        raise ConfigError(f"{output_dir}: its checkpoints were trained on a different train_file; "
                          "use another output_dir or delete the checkpoints to start over")
    if old.get("settings_sha256") != fingerprint["settings_sha256"]:
        before, now = old.get("settings", {}), fingerprint["settings"]
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise ConfigError(f"{output_dir}: cannot resume, training settings changed since the checkpoints "
                          f"were written ({', '.join(changed) or 'settings'}); use another output_dir")


def write_fingerprint(output_dir: str | Path, fingerprint: dict[str, Any]) -> None:
    from xtask_safety.records import write_json

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(output_dir) / FINGERPRINT_FILE, fingerprint)
