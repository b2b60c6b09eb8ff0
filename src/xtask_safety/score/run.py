"""Score generated answers: every judge's verdict per record, utility checks, then summary tables."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from xtask_safety.errors import DataError
from xtask_safety.score.judges import get_judges
from xtask_safety.score.metrics import agreement, pass_table, rate_cell
from xtask_safety.score.utility import SUMMARY_METRICS, utility

NOT_GENERATED = {"label": "not_generated", "passed": None, "reason": "prompt too long: not generated"}


def _not_generated(row: dict[str, Any]) -> bool:
    return ((row.get("meta") or {}).get("generation") or {}).get("finish") == "prompt_too_long"


def judge_rows(
    rows: list[dict[str, Any]],
    judges: list[str] | None = None,
    extra: dict[str, list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Add ``judgements = {judge: {label, passed, reason}}`` to each generated row.

    ``extra`` holds verdicts already computed by model judges (one per row, same order). Rows that
    were not generated because their prompt was too long get ``passed: null`` from every judge.
    """
    judge_objs = get_judges(judges)
    for name, verdicts in (extra or {}).items():
        if name in judge_objs:
            raise DataError(f"judge name {name!r} is used twice")
        if len(verdicts) != len(rows):
            raise DataError(f"judge {name!r}: {len(verdicts)} verdicts for {len(rows)} rows")
    out = []
    for k, row in enumerate(rows):
        skip = row.get("response") is None and _not_generated(row)
        if row.get("response") is None and not skip:
            raise DataError(f"record {row.get('id', k)!r}: no 'response' to score (was it generated?)")
        j = {}
        for name, judge in judge_objs.items():
            if skip:
                j[name] = dict(NOT_GENERATED)
                continue
            v = judge(row["response"], row.get("document", ""), row.get("task", ""), row.get("instruction", ""))
            j[name] = {"label": v.label, "passed": v.passed, "reason": v.reason}
        for name, verdicts in (extra or {}).items():
            j[name] = dict(NOT_GENERATED) if skip else verdicts[k]
        out.append({**row, "judgements": j})
    return out


def add_utility(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``utility`` (task-specific metrics and an ``ok`` flag, see :mod:`.utility`) to each row."""
    return [{**r, "utility": utility(r)} for r in rows]


def utility_table(scored: list[dict[str, Any]], judge: str) -> dict[str, Any]:
    """Per task x domain, over the records ``judge`` counts as passed: how many are usable (``ok``),
    the metric means, and ``useful``: passed *and* usable over every decided record."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in scored:
        if r.get("utility") is not None and r["judgements"][judge].get("passed") is not None:
            groups[(r["task"], r["domain"])].append(r)
    out: dict[str, Any] = {}
    for (task, dom), rs in sorted(groups.items()):
        passed = [r for r in rs if r["judgements"][judge]["passed"]]
        cell: dict[str, Any] = {
            "n": len(rs), "n_passed": len(passed),
            "ok_among_passed": rate_cell([bool(r["utility"]["ok"]) for r in passed]),
            "useful": rate_cell([bool(r["judgements"][judge]["passed"] and r["utility"]["ok"]) for r in rs]),
            "metrics": {},
        }
        for m in SUMMARY_METRICS.get(task, ()):
            vals = [r["utility"].get(m) for r in passed]
            vals = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if vals:
                cell["metrics"][m] = sum(vals) / len(vals)
        out.setdefault(task, {})[dom] = cell
    return out


def summarize(scored: list[dict[str, Any]], primary: str | None = None) -> dict[str, Any]:
    """Pass tables for every judge; with utility rows, the utility table (for ``primary``, default the
    first judge); with two or more judges, how often they agree."""
    judges = list(scored[0]["judgements"]) if scored else []
    out: dict[str, Any] = {"n_records": len(scored), "judges": {j: pass_table(scored, j) for j in judges}}
    out["not_generated"] = sum(1 for r in scored if r.get("response") is None)
    if scored and any(r.get("utility") is not None for r in scored):
        out["utility"] = utility_table(scored, primary or judges[0])
        out["utility_judge"] = primary or judges[0]
    if len(judges) > 1:
        out["agreement"] = agreement(scored, judges)
    return _finite(out)


def _finite(obj: Any) -> Any:
    """NaN (an empty cell) becomes null, so summary.json is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
