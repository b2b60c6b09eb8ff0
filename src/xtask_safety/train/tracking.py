"""Experiment tracking: run names that say what was trained, W&B (offline by default), TensorBoard.

The trainer's ``report_to`` picks the trackers (``wandb``, ``tensorboard``, ``none``). For W&B the run
is opened here, before the trainer's callback would open an anonymous one, with

* a name ``<model>-<task or mixed>-n<defense size>-<weighting>`` derived from the *data*, so a name
  cannot disagree with what was trained on,
* a group (``run_group``, default ``<model>-<task setting>``: the runs a defense-size curve compares),
* tags ``model:…``, ``task:…``, ``size:…``, ``weighting:…``, ``setting:single|mixed``, and
* the recipe (file text and parsed arguments), the data profile and the dataset manifest in its config.

``WANDB_MODE`` defaults to ``offline``: runs are written under ``<output_dir>/wandb`` (or
``$WANDB_DIR``) and uploaded later with ``wandb sync``, so training never waits on a network.
No document or model output is logged.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import string
from collections import Counter
from pathlib import Path
from typing import Any

from xtask_safety.errors import ConfigError
from xtask_safety.records import Record
from xtask_safety.tasks import INSTRUCTION_TASK, TASK_NAMES

WANDB_ID_FILE = "xtask_wandb_run_id.txt"
TRACKER_PACKAGES = {"wandb": ("wandb", "wandb==0.31.0"), "tensorboard": ("tensorboard", "tensorboard")}


def model_short_name(model_name_or_path: str | None) -> str:
    name = (model_name_or_path or "model").rstrip("/\\")
    if name.lower() in ("embedded", "smollm2-135m-instruct"):
        return "smollm2-135m-instruct"
    name = re.split(r"[/\\]", name)[-1]
    name = re.sub(r"\.gguf$", "", name, flags=re.I)
    return re.sub(r"[^a-z0-9.+-]+", "-", name.lower()).strip("-") or "model"


def data_profile(records: list[Record], weights: list[float]) -> dict[str, Any]:
    """Counts per task x domain, the defended tasks, the defense size and the weight each task carries."""
    counts = Counter(f"{r.task}/{r.domain}" for r in records)
    defense = Counter(r.task for r in records if r.is_malicious and r.task != INSTRUCTION_TASK)
    tasks = [t for t in TASK_NAMES if t in defense]
    sizes = sorted(set(defense.values()))
    weight_per_task: dict[str, float] = {}
    for r, w in zip(records, weights, strict=True):
        weight_per_task[r.task] = weight_per_task.get(r.task, 0.0) + float(w)
    if not tasks:
        setting = "none"
    elif len(tasks) == 1:
        setting = "single"
    else:
        setting = "mixed"
    return {
        "n_records": len(records),
        "counts": dict(sorted(counts.items())),
        "defense_tasks": tasks,
        "setting": setting,
        # per-task size for equal-sized (paper-style) sets, else the total number of refusal rows
        "defense_size": sizes[0] if len(sizes) == 1 else sum(defense.values()),
        "defense_size_per_task": dict(defense),
        "n_malicious": sum(r.is_malicious for r in records),
        "weight_per_task": {k: round(v, 6) for k, v in sorted(weight_per_task.items())},
    }


def run_identity(model: str | None, profile: dict[str, Any], weighting: str, group: str | None = None,
                 extra_tags: list[str] | None = None) -> dict[str, Any]:
    short = model_short_name(model)
    tasks = profile["defense_tasks"]
    if not tasks:
        task_key = "nodefense"
    elif len(tasks) == 1:
        task_key = tasks[0]
    elif len(tasks) == len(TASK_NAMES):
        task_key = "mixed"
    else:
        task_key = "mixed-" + "+".join(tasks)
    size = profile["defense_size"]
    per_task = len(set(profile["defense_size_per_task"].values())) <= 1
    size_key = f"n{size}" + ("x" + str(len(tasks)) if per_task and len(tasks) > 1 else "")
    tags = [f"model:{short}", f"setting:{profile['setting']}", f"size:{size}", f"weighting:{weighting}"]
    tags += [f"task:{t}" for t in tasks] + list(extra_tags or [])
    return {"name": f"{short}-{task_key}-{size_key}-{weighting}", "group": group or f"{short}-{task_key}",
            "tags": [t[:64] for t in tags]}  # W&B limits tags to 64 characters


def find_manifest(train_file: str, explicit: str | None) -> tuple[str | None, Any]:
    """The dataset manifest of ``train_file``, parsed; (None, None) when there is none.

    ``xtask-safety data build`` writes ``<build>/manifest.json`` and the sets under ``<build>/train/``,
    so the train file's directory and its two parents are searched, then ``<train_file>.manifest.json``.
    """
    if explicit:
        candidates = [Path(explicit)]
    else:
        tf = Path(train_file).resolve()
        candidates = [tf.with_name(tf.name + ".manifest.json")]
        candidates += [d / "manifest.json" for d in (tf.parent, *list(tf.parents)[1:3])]
    for path in candidates:
        if path.is_file():
            try:
                return str(path), json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: malformed dataset manifest ({exc})") from None
    if explicit:
        raise ConfigError(f"data_manifest: {explicit} not found")
    return None, None


def manifest_entry(manifest: Any, manifest_path: str | None, train_file: str, sha256: str) -> dict[str, Any] | None:
    """The manifest's entry for this training file (matched by path or content hash), if it lists one."""
    sets = manifest.get("sets") if isinstance(manifest, dict) else None
    if not isinstance(sets, list) or not manifest_path:
        return None
    target = Path(train_file).resolve()
    for entry in sets:
        if not isinstance(entry, dict):
            continue
        rel = entry.get("file")
        if entry.get("sha256") == sha256 or (isinstance(rel, str) and (Path(manifest_path).parent / rel).resolve() == target):
            return entry
    return None


def check_trackers(report_to: list[str]) -> None:
    for tracker in report_to:
        module, pip_name = TRACKER_PACKAGES.get(tracker, (None, None))
        if module and importlib.util.find_spec(module) is None and not (
            tracker == "tensorboard" and importlib.util.find_spec("tensorboardX")
        ):
            raise ConfigError(f"report_to {tracker}: the package is not installed (pip install {pip_name})")


def start_wandb(output_dir: str, identity: dict[str, Any], config: dict[str, Any], project: str | None,
                resume: bool) -> Any:
    """Open the W&B run the trainer's callback will log into (main process only)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    id_file = out / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if resume and id_file.is_file() else _new_run_id()
    root = Path(os.environ.get("WANDB_DIR") or out)
    root.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project or os.environ.get("WANDB_PROJECT") or "xtask-safety",
        name=identity["name"], group=identity["group"], tags=identity["tags"], job_type="train",
        config={"xtask": config}, dir=str(root), id=run_id, resume="allow",
    )
    id_file.write_text(run_id + "\n")
    return run


def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def finish_wandb(summary: dict[str, Any]) -> None:
    import wandb

    if wandb.run is not None:
        wandb.run.summary.update({f"xtask/{k}": v for k, v in summary.items() if isinstance(v, (int, float, str))})
        wandb.finish()
