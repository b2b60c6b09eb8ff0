"""Sweep comparison: load finished runs and compute the views the report, plots and W&B share.

A *run* is one scored evaluation: a model's base cell or one defense (model x setting x size x
weighting x seed). Runs come from sweep folders (``sweep_results.json``, or ``cells/*.json`` of an
unfinished sweep); a ``xtask-safety demo`` folder is a sweep folder.

Rates pool counts: over tasks and domains when a view pools them, and over seeds for the curves and
the transfer matrix (every seed answers the same documents, so the pooled interval reads as
descriptive; the per-seed points are in the scatter plot and the runs table).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtask_safety.errors import DataError
from xtask_safety.score.metrics import wilson

DOMAINS = ("malicious", "news", "useful")
MALICIOUS = "malicious"
BASE = "base"
MIXED = "mixed"


@dataclass
class RunView:
    id: str
    model: str
    setting: str  # base, a task name, or mixed
    defense_tasks: list[str]
    size_per_task: int
    defense_rows: int
    weighting: str | None
    seed: int | None
    summary: dict[str, Any]
    sweep: str = ""
    train: dict[str, Any] | None = None
    scores: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def is_base(self) -> bool:
        return self.setting == BASE

    @property
    def group(self) -> tuple[str, str, int, str | None]:
        """Runs that differ only in the seed."""
        return (self.model, self.setting, self.size_per_task, self.weighting)

    def label(self) -> str:
        return "base (no defense)" if self.is_base else f"{self.setting} n={self.defense_rows}"


@dataclass
class Collection:
    runs: list[RunView]
    eval_tasks: list[str]
    domains: list[str]
    judge: str
    sources: list[str]
    sweeps: list[str]

    @property
    def benign(self) -> list[str]:
        return [d for d in self.domains if d != MALICIOUS]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.runs))

    @property
    def weightings(self) -> list[str | None]:
        return list(dict.fromkeys(r.weighting for r in self.runs if not r.is_base)) or [None]

    def settings(self) -> list[str]:
        seen = list(dict.fromkeys(r.setting for r in self.runs if not r.is_base))
        return [s for s in self.eval_tasks if s in seen] + [s for s in seen if s not in self.eval_tasks]


# ------------------------------------------------------------------------------------------- loading


def load_runs(paths: list[str], judge: str | None = None) -> Collection:
    runs: list[RunView] = []
    tasks: list[str] = []
    judges: list[str] = []
    sweeps: list[str] = []
    for p in paths:
        found, meta = _load_one(Path(p))
        runs += found
        tasks += [t for t in meta.get("eval_tasks", []) if t not in tasks]
        judges.append(meta.get("primary_judge") or "rule")
        if meta.get("sweep"):
            sweeps.append(meta["sweep"])
    if not runs:
        raise DataError(f"report: no finished runs in {', '.join(paths)}")
    ids = [r.id for r in runs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        # the same cell from two sweeps: keep them apart by sweep name
        for r in runs:
            if r.id in dup:
                r.id = f"{r.sweep}/{r.id}"
    judge = judge or judges[0]
    for r in runs:
        if judge not in r.summary.get("judges", {}):
            raise DataError(f"report: run {r.id} has no {judge!r} verdicts (judges: {sorted(r.summary.get('judges', {}))})")
    if not tasks:
        from xtask_safety.tasks import TASK_NAMES

        found = {t for r in runs for t in r.summary["judges"][judge]["cells"]}
        tasks = [t for t in TASK_NAMES if t in found] + sorted(found - set(TASK_NAMES))
    present = {d for r in runs for d in r.summary["judges"][judge]["by_domain"]}
    domains = [d for d in DOMAINS if d in present] + sorted(present - set(DOMAINS))
    return Collection(runs, tasks, domains, judge, list(paths), sweeps)


def _load_one(path: Path) -> tuple[list[RunView], dict[str, Any]]:
    if path.is_file():
        obj = _read_json(path)
        root = path.parent
    elif (path / "sweep_results.json").is_file():
        obj, root = _read_json(path / "sweep_results.json"), path
    elif (path / "cells").is_dir():
        cells = [_read_json(p) for p in sorted((path / "cells").glob("*.json"))]
        obj, root = {"runs": cells, "sweep": path.name}, path
    else:
        raise DataError(f"report: {path} is not a sweep folder (no sweep_results.json or cells/)")
    if "runs" in obj:
        return [_from_cell(c, root) for c in obj["runs"]], obj
    raise DataError(f"report: {path}: not a sweep results file")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"report: cannot read {path} ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"report: {path}: expected a JSON object")
    return obj


def _from_cell(c: dict[str, Any], root: Path) -> RunView:
    try:
        scores = (c.get("paths") or {}).get("scores")
        return RunView(
            id=c["id"], model=c.get("model_short") or c["model"], setting=c["setting"],
            defense_tasks=list(c.get("defense_tasks") or []), size_per_task=int(c.get("size_per_task") or 0),
            defense_rows=int(c.get("defense_rows") or 0), weighting=c.get("weighting"), seed=c.get("seed"),
            summary=c["summary"], sweep=c.get("sweep", ""), train=c.get("train"),
            scores=(root / scores) if scores else None, timings=c.get("timings_s") or {},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"report: malformed run entry in {root} ({exc})") from None


# ----------------------------------------------------------------------------------------- pooling


def pool(cells: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One rate cell from several (counts summed) with a Wilson 95% interval; None when all are missing."""
    cells = [c for c in cells if c and c.get("n")]
    if not cells:
        return None
    k, n = sum(int(c["passed"]) for c in cells), sum(int(c["n"]) for c in cells)
    lo, hi = wilson(k, n)
    return {"n": n, "passed": k, "rate": k / n, "ci95": [lo, hi]}


def pass_rate(runs: list[RunView], judge: str, tasks: list[str], domains: list[str]) -> dict[str, Any] | None:
    """Pass rate pooled over runs (seeds), tasks and domains."""
    return pool([r.summary["judges"][judge]["cells"].get(t, {}).get(d) for r in runs for t in tasks for d in domains])


def useful_rate(runs: list[RunView], tasks: list[str], domains: list[str]) -> dict[str, Any] | None:
    """Utility: share of benign records answered *and* usable (``score.run.utility_table``), pooled."""
    return pool([((r.summary.get("utility") or {}).get(t, {}).get(d) or {}).get("useful")
                 for r in runs for t in tasks for d in domains])


def groups(col: Collection, model: str, weighting: str | None) -> dict[str, dict[int, list[RunView]]]:
    """setting -> size per task -> runs (the seeds) of one model and weighting."""
    out: dict[str, dict[int, list[RunView]]] = defaultdict(lambda: defaultdict(list))
    for r in col.runs:
        if r.model == model and not r.is_base and r.weighting == weighting:
            out[r.setting][r.size_per_task].append(r)
    return {s: dict(sorted(v.items())) for s, v in out.items()}


def base_runs(col: Collection, model: str) -> list[RunView]:
    return [r for r in col.runs if r.model == model and r.is_base]


# ------------------------------------------------------------------------------------------- views


def size_curves(col: Collection, model: str, weighting: str | None) -> dict[str, Any]:
    """Per defended setting, pass rate on its own task(s) against defense size, per domain (+ benign pooled)."""
    out: dict[str, Any] = {"model": model, "weighting": weighting, "settings": {}, "base": {}}
    base = base_runs(col, model)
    doms = {**{d: [d] for d in col.domains}, "benign": col.benign}
    for setting, by_size in groups(col, model, weighting).items():
        tasks = _own_tasks(setting, col)
        points = []
        for size, runs in by_size.items():
            points.append({"size_per_task": size, "defense_rows": runs[0].defense_rows, "n_runs": len(runs),
                           **{k: pass_rate(runs, col.judge, tasks, v) for k, v in doms.items()}})
        out["settings"][setting] = points
        if base:
            out["base"][setting] = {k: pass_rate(base, col.judge, tasks, v) for k, v in doms.items()}
    return out


def _own_tasks(setting: str, col: Collection) -> list[str]:
    if setting == MIXED:
        return list(col.eval_tasks)
    return [setting]


def transfer_matrix(col: Collection, model: str, weighting: str | None, size: str = "max",
                    domains: list[str] | None = None) -> dict[str, Any]:
    """Rows: base, each defended setting (at ``size``: its largest, or a number of refusal rows); columns:
    the evaluated tasks and their pool. Cells: pass rate on ``domains`` (default malicious)."""
    domains = domains or [MALICIOUS]
    rows = []
    base = base_runs(col, model)
    if base:
        rows.append(_matrix_row("base", 0, 0, base, col, domains))
    for setting, by_size in groups(col, model, weighting).items():
        if size == "max":
            chosen = max(by_size)
        else:
            match = [s for s, runs in by_size.items() if runs[0].defense_rows == int(size)]
            if not match:
                continue
            chosen = match[0]
        runs = by_size[chosen]
        rows.append(_matrix_row(setting, chosen, runs[0].defense_rows, runs, col, domains))
    order = {s: i for i, s in enumerate(["base", *col.settings()])}
    rows.sort(key=lambda r: order.get(r["setting"], len(order)))
    return {"model": model, "weighting": weighting, "domains": domains, "tasks": list(col.eval_tasks), "rows": rows}


def _matrix_row(setting: str, size: int, rows_n: int, runs: list[RunView], col: Collection,
                domains: list[str]) -> dict[str, Any]:
    return {"setting": setting, "size_per_task": size, "defense_rows": rows_n, "n_runs": len(runs),
            "cells": {t: pass_rate(runs, col.judge, [t], domains) for t in col.eval_tasks},
            "all": pass_rate(runs, col.judge, col.eval_tasks, domains)}


def tradeoff_points(col: Collection, model: str) -> list[dict[str, Any]]:
    """One point per run (every seed): malicious vs benign pass rate over all evaluated tasks."""
    pts = []
    for r in col.runs:
        if r.model != model:
            continue
        pts.append({"id": r.id, "setting": r.setting, "defense_rows": r.defense_rows, "weighting": r.weighting,
                    "seed": r.seed, "malicious": pass_rate([r], col.judge, col.eval_tasks, [MALICIOUS]),
                    "benign": pass_rate([r], col.judge, col.eval_tasks, col.benign)})
    return pts


def utility_curves(col: Collection, model: str, weighting: str | None) -> dict[str, Any]:
    """Per evaluated task: utility on benign documents against defense size, one line per setting."""
    out: dict[str, Any] = {"model": model, "weighting": weighting, "tasks": {}, "base": {}}
    base = base_runs(col, model)
    grouped = groups(col, model, weighting)
    for task in col.eval_tasks:
        out["tasks"][task] = {
            setting: [{"size_per_task": s, "defense_rows": runs[0].defense_rows,
                       "useful": useful_rate(runs, [task], col.benign)} for s, runs in by_size.items()]
            for setting, by_size in grouped.items()
        }
        if base:
            out["base"][task] = useful_rate(base, [task], col.benign)
    return out
