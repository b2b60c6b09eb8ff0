"""Stage keys and the layout of a sweep folder.

Every stage's output lives under a name that ends in a hash of the stage's inputs (its own
settings plus the key of the stage it reads from), so a finished stage is found again by
recomputing the key, a changed setting gets a fresh folder instead of mixing two runs, and the
keys can be computed before anything runs (``--dry_run`` and SLURM scripts show the real paths)::

    <output_dir>/
      data/build-<key>/          the data build (train/*.jsonl, eval/*.jsonl, manifest.json)
      data/grid-<key>.jsonl      the evaluation grid every cell answers
      adapters/<cell>-<key>/     LoRA adapter, checkpoints, xtask_sweep_train.json (done marker)
      generations/<cell>-<key>.jsonl   answers, appended record by record (resumable)
      scores/<cell>-<key>/       scored.jsonl, summary.json
      cells/<cell>.json          the cell's result (keys, training summary, pass tables)
      events/<invocation>.jsonl  what each invocation ran and what it reused (one file per process)
      sweep_results.json         every finished cell, for `xtask-safety report`
      report/                    report.md, report.html, figures/
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from xtask_safety.records import JsonlAppender

KEY_CHARS = 12


def stage_key(obj: Any) -> str:
    """A short, stable hash of JSON-serialisable inputs (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:KEY_CHARS]


def text_sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class SweepDir:
    """Paths inside a sweep folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def build(self, key: str) -> Path:
        return self.root / "data" / f"build-{key}"

    def grid(self, key: str) -> Path:
        return self.root / "data" / f"grid-{key}.jsonl"

    def adapter(self, cell_id: str, key: str) -> Path:
        return self.root / "adapters" / f"{cell_id}-{key}"

    def generations(self, cell_id: str, key: str) -> Path:
        return self.root / "generations" / f"{cell_id}-{key}.jsonl"

    def scores(self, cell_id: str, key: str) -> Path:
        return self.root / "scores" / f"{cell_id}-{key}"

    def cell(self, cell_id: str) -> Path:
        return self.root / "cells" / f"{cell_id}.json"

    @property
    def events(self) -> Path:
        return self.root / "events"

    @property
    def results(self) -> Path:
        return self.root / "sweep_results.json"

    @property
    def report(self) -> Path:
        return self.root / "report"


def file_lock(path: Path) -> Any:
    """An exclusive inter-process lock (``filelock``) so concurrent array tasks build shared data once."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


class EventLog:
    """What one invocation did, stage by stage: appended (fsynced) to ``<events dir>/<invocation>.jsonl``
    (a file per process, so concurrent array tasks never share one) and counted.

    ``action`` is ``run`` (computed now), ``resumed`` (continued from partial work) or ``reused``
    (found finished). ``counters`` holds ``<stage>_<action>`` counts of this invocation.
    """

    def __init__(self, folder: Path):
        self.invocation = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self.counters: Counter[str] = Counter()
        self._n = 0
        self._out = JsonlAppender(Path(folder) / f"{self.invocation}.jsonl", key="event")

    def add(self, cell: str, stage: str, action: str, **info: Any) -> None:
        self._n += 1
        self.counters[f"{stage}_{action}"] += 1
        self._out.append({"event": f"{self.invocation}:{self._n}", "invocation": self.invocation, "time": time.time(),
                          "cell": cell, "stage": stage, "action": action, **info})

    def close(self) -> None:
        self._out.close()


def read_events(folder: str | Path) -> list[dict[str, Any]]:
    """Every event of every invocation, oldest invocation first."""
    from xtask_safety.records import read_jsonl

    files = sorted(Path(folder).glob("*.jsonl"), key=lambda p: (p.stem.split("-")[0], p.stat().st_mtime))
    return [obj for f in files for _, obj in read_jsonl(f)]
