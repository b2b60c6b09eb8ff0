"""Crash-safe resume: find the last *complete* checkpoint and refuse to resume a different run.

``transformers.trainer_utils.get_last_checkpoint`` returns the highest ``checkpoint-N`` directory
even when the job was killed while writing it. The Trainer writes ``trainer_state.json`` last, so a
checkpoint counts as complete only when that file parses and the weights (safetensors, or a
DeepSpeed/FSDP shard directory) and the optimizer state are present.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xtask_safety.errors import ConfigError, DataError

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


def reached_max_steps(ckpt: str | Path, max_steps: int | None) -> bool:
    """Whether a (complete) checkpoint was written at the run's last step (``max_steps`` > 0)."""
    if not max_steps or max_steps <= 0:
        return False
    state = json.loads((Path(ckpt) / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state.get("global_step", 0)) >= max_steps


def restore_finished(trainer: Any, ckpt: str | Path) -> Any:
    """Take a checkpoint written at ``max_steps`` as the result of the run, without training.

    Resumed from such a checkpoint, the Trainer trains one step *past* ``max_steps`` (its loop checks
    the step count only after a step), so a run killed after its last checkpoint would end with a
    different adapter than the uninterrupted run. This loads the checkpoint's weights and state as
    ``Trainer.train`` does for a single-process or DDP run (not DeepSpeed/FSDP) and returns a
    ``TrainOutput`` whose loss is :func:`run_mean_loss`.
    """
    from transformers import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer._load_from_checkpoint(str(ckpt))
    trainer.state = TrainerState.load_from_json(str(Path(ckpt) / "trainer_state.json"))
    return TrainOutput(trainer.state.global_step, run_mean_loss(trainer.state.log_history), {})


def run_mean_loss(history: list[dict[str, Any]]) -> float:
    """The mean training loss of the whole run from its logged losses, each weighted by the steps it covers.

    After a resume the Trainer's own ``training_loss`` covers only the steps run since the resume; this
    equals an uninterrupted run's value (up to float summation order) when ``logging_steps`` divides
    ``save_steps``.
    """
    total, steps, prev = 0.0, 0, 0
    for entry in history:
        if isinstance(entry.get("loss"), (int, float)) and isinstance(entry.get("step"), int) and entry["step"] > prev:
            total += entry["loss"] * (entry["step"] - prev)
            steps += entry["step"] - prev
            prev = entry["step"]
    return total / steps if steps else float("nan")


# What the writers the Trainer uses (Python, torch.save, safetensors, tokenizers) say when the disk is full.
_WRITE_FAILURES = {"no space left on device": "No space left on device", "os error 28": "No space left on device",
                   "file too large": "File too large", "os error 27": "File too large",
                   "disk quota exceeded": "Disk quota exceeded", "file write failed": "file write failed"}


def write_failure(exc: BaseException) -> str | None:
    """Why a save failed, when it failed for lack of space (full disk, quota, file-size limit); else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return seen.strerror or str(seen)
        text = str(seen).lower()
        for needle, reason in _WRITE_FAILURES.items():
            if needle in text:
                return reason
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def write_failures_reported(output_dir: str | Path) -> Iterator[None]:
    """A full disk while the Trainer writes a checkpoint or the adapter becomes a one-line error; the
    checkpoint it was writing is removed, complete checkpoints stay for ``--resume true``."""
    try:
        yield
    except Exception as exc:
        reason = write_failure(exc)
        if reason is None:
            raise
        for ckpt in checkpoints(output_dir):
            if not is_complete(ckpt):
                shutil.rmtree(ckpt, ignore_errors=True)
        raise DataError(f"{output_dir}: cannot write a checkpoint or the adapter ({reason}); complete "
                        "checkpoints are kept: make room and rerun with --resume true") from None
