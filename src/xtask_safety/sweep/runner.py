"""The local runner: every selected cell through data -> train -> generate -> score, then the report.

A cell whose result file exists for the same keys is skipped without loading a model. Otherwise
each stage reuses its finished output or resumes partial output (see :mod:`.stages`). What was run
and what was reused is appended to ``events/<invocation>.jsonl`` and returned as counters.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from xtask_safety.sweep.cache import EventLog
from xtask_safety.sweep.config import Cell
from xtask_safety.sweep.stages import (
    Context,
    SweepPlan,
    generate_cell,
    log,
    prepare_data,
    score_cell,
    train_cell,
)

RESULTS_VERSION = 1


@dataclass
class SweepOutcome:
    output_dir: Path
    counters: dict[str, int] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_cells(plan: SweepPlan, cells: list[Cell], progress: bool = True) -> SweepOutcome:
    from xtask_safety.records import check_writable_dir, write_json

    t0 = time.time()
    root = check_writable_dir(plan.dir.root)
    write_json(root / "sweep.json", {"args": _jsonable(asdict(plan.args)), "cells": [c.describe() for c in plan.cells],
                                     "keys": plan.keys, "data_key": plan.data_key, "grid_key": plan.grid_key})
    events = EventLog(plan.dir.events)
    ctx = Context(plan, events, progress=progress)
    try:
        todo = [c for c in cells if not _cell_done(plan, c, events)]
        if todo:
            prepare_data(ctx)
        bar = tqdm(todo, desc="sweep cells", unit="cell", disable=not progress, dynamic_ncols=True)
        for cell in bar:
            bar.set_postfix_str(cell.id)
            run_cell(ctx, cell)
        bar.close()
    finally:
        events.close()
    finished = [c.id for c in plan.cells if _read_cell(plan, c) is not None]
    return SweepOutcome(root, dict(events.counters), finished, [c.id for c in plan.cells if c.id not in finished],
                        seconds=time.time() - t0)


def _read_cell(plan: SweepPlan, cell: Cell) -> dict[str, Any] | None:
    path = plan.dir.cell(cell.id)
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return result if result.get("keys") == plan.keys[cell.id] else None


def _cell_done(plan: SweepPlan, cell: Cell, events: EventLog) -> bool:
    if _read_cell(plan, cell) is None:
        return False
    events.add(cell.id, "cell", "reused")
    return True


def run_cell(ctx: Context, cell: Cell) -> dict[str, Any]:
    from xtask_safety.records import write_json

    plan = ctx.plan
    t0 = time.time()
    timings: dict[str, float] = {}
    train_summary = None
    adapter = None
    if not cell.is_base:
        train_summary = train_cell(ctx, cell)
        adapter = plan.adapter_dir(cell)
        timings["train"] = time.time() - t0
    summary, timings["generate"], timings["score"] = _evaluate(ctx, cell, adapter, "")
    extra = {}
    for name in plan.extra:
        extra_summary, t_gen, t_score = _evaluate(ctx, cell, adapter, name)
        timings[f"generate@{name}"], timings[f"score@{name}"] = t_gen, t_score
        extra[name] = {"summary": extra_summary, "paths": {
            "generations": _rel(plan.generations(cell, name), plan.dir.root),
            "scores": _rel(plan.scores(cell, name) / "scored.jsonl", plan.dir.root),
            "grid": _rel(plan.grid_file(name), plan.dir.root)}}
    scores = plan.scores(cell)
    root = plan.dir.root
    result = {
        **cell.describe(),
        "sweep": plan.args.name,
        "keys": plan.keys[cell.id],
        "paths": {"adapter": _rel(adapter, root), "generations": _rel(plan.generations(cell), root),
                  "scores": _rel(scores / "scored.jsonl", root), "grid": _rel(plan.grid_path, root)},
        "train": _train_view(train_summary),
        "primary_judge": plan.args.primary_judge,
        "summary": summary,
        "extra_eval": extra,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(plan.dir.cell(cell.id), result)
    ctx.events.add(cell.id, "cell", "run", seconds=round(time.time() - t0, 1))
    mal = summary["judges"][plan.args.primary_judge]["by_domain"].get("malicious", {})
    log(f"{cell.id}: done in {time.time() - t0:.0f}s (malicious pass rate, mean over tasks: "
        f"{100 * (mal.get('mean_over_tasks') or 0):.0f}%)")
    return result


def _evaluate(ctx: Context, cell: Cell, adapter: Path | None, grid_name: str) -> tuple[dict[str, Any], float, float]:
    """Generate (unless already scored) and score one grid; returns the summary and the two stages' seconds."""
    t0 = time.time()
    done = (ctx.plan.scores(cell, grid_name) / "summary.json").is_file()
    rows = None if done else generate_cell(ctx, cell, adapter, grid_name)
    t1 = time.time()
    summary = score_cell(ctx, cell, rows, grid_name)
    return summary, t1 - t0, time.time() - t1


def _train_view(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    keep = ("global_step", "train_loss", "n_records", "train_file_sha256", "resumed_from", "run_name", "run_group",
            "global_batch_size", "weight_per_task", "final_nll", "world_size", "selected_step")
    return {k: summary.get(k) for k in keep}


def _rel(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def collect_results(plan: SweepPlan) -> dict[str, Any]:
    """Every finished cell of the plan, in plan order (``sweep_results.json``)."""
    runs = [r for c in plan.cells if (r := _read_cell(plan, c)) is not None]
    return {"version": RESULTS_VERSION, "sweep": plan.args.name, "eval_tasks": plan.args.eval_task_list,
            "primary_judge": plan.args.primary_judge, "judges": plan.args.judges,
            "planned": [c.id for c in plan.cells], "runs": runs,
            "config": _jsonable(asdict(plan.args))}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def status(plan: SweepPlan, cell: Cell) -> str:
    """What is on disk for a cell: done, trained, a checkpoint, partial answers, or nothing."""
    from xtask_safety.sweep.stages import TRAIN_DONE
    from xtask_safety.train.checkpoints import last_complete_checkpoint

    if _read_cell(plan, cell) is not None:
        return "done"
    if not cell.is_base:
        adapter = plan.adapter_dir(cell)
        if not (adapter / TRAIN_DONE).is_file():
            ckpt = last_complete_checkpoint(adapter)
            return f"resume from {Path(ckpt).name}" if ckpt else "todo"
    gen = plan.generations(cell)
    if gen.is_file():
        return "trained, answers partly written" if not cell.is_base else "answers partly written"
    return "trained" if not cell.is_base else "todo"
