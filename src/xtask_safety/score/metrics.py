"""Pass rates per task x domain with Wilson 95% intervals, and paired comparisons."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from scipy.stats import binomtest


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (no continuity correction)."""
    if n == 0:
        return (float("nan"), float("nan"))
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def rate_cell(passed: Iterable[bool], labels: Iterable[str] | None = None) -> dict[str, Any]:
    passed = list(passed)
    k, n = sum(passed), len(passed)
    lo, hi = wilson(k, n)
    cell: dict[str, Any] = {"n": n, "passed": k, "rate": (k / n) if n else float("nan"), "ci95": [lo, hi]}
    if labels is not None:
        counts: dict[str, int] = defaultdict(int)
        for lab in labels:
            counts[lab] += 1
        cell["labels"] = dict(sorted(counts.items()))
    return cell


def pass_table(rows: list[dict[str, Any]], judge: str) -> dict[str, Any]:
    """``{"cells": {task: {domain: cell}}, "by_domain": {domain: cell}}`` for one judge.

    ``by_domain`` pools every task's records (the same documents recur across tasks, so its
    interval is a little optimistic about independence; the per-task cells are exact).
    """
    cells: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cells[r["task"]][r["domain"]].append(r["judgements"][judge])
    out: dict[str, Any] = {"cells": {}, "by_domain": {}}
    pooled: dict[str, list] = defaultdict(list)
    for task, doms in cells.items():
        out["cells"][task] = {}
        for dom, verdicts in doms.items():
            out["cells"][task][dom] = pass_cells(verdicts)
            pooled[dom].extend(verdicts)
    for dom, verdicts in pooled.items():
        cell = pass_cells(verdicts)
        task_rates = [out["cells"][t][dom]["rate"] for t in out["cells"] if dom in out["cells"][t]]
        task_rates = [x for x in task_rates if x == x] or [float("nan")]  # cells with no decided record are NaN
        cell["mean_over_tasks"] = sum(task_rates) / len(task_rates)
        cell["max_over_tasks"] = max(task_rates)
        cell["min_over_tasks"] = min(task_rates)
        out["by_domain"][dom] = cell
    return out


def mcnemar(a: dict[str, bool], b: dict[str, bool]) -> dict[str, Any]:
    """Exact McNemar test on the records both runs share (paired by id)."""
    shared = sorted(set(a) & set(b))
    a_only = sum(1 for i in shared if a[i] and not b[i])
    b_only = sum(1 for i in shared if b[i] and not a[i])
    disc = a_only + b_only
    p = float(binomtest(a_only, disc, 0.5).pvalue) if disc else 1.0
    return {"n_pairs": len(shared), "a_pass_b_fail": a_only, "a_fail_b_pass": b_only, "p_value": p}


def pass_cells(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """A rate cell over the verdicts that have a decision; the others (not generated, unparsed
    model-judge answers) are counted in ``excluded``."""
    decided = [v for v in verdicts if v.get("passed") is not None]
    cell = rate_cell([bool(v["passed"]) for v in decided], [v["label"] for v in verdicts])
    cell["excluded"] = len(verdicts) - len(decided)
    return cell


def paired_table(base: list[dict[str, Any]], rows: list[dict[str, Any]], judge: str) -> dict[str, Any]:
    """Exact McNemar per task x domain and per domain (pooled over tasks) between two runs, paired by id.

    ``q_value`` is the Benjamini-Hochberg adjustment over the task x domain cells (scipy). The pooled
    test treats one document's five tasks as independent pairs, so read it as descriptive.
    """
    from scipy.stats import false_discovery_control

    def decided(rs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in rs if r["judgements"][judge].get("passed") is not None}

    a_map, b_map = decided(base), decided(rows)
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for rid in sorted(set(a_map) & set(b_map)):
        groups[(b_map[rid]["task"], b_map[rid]["domain"])].append(rid)
    out: dict[str, Any] = {"judge": judge, "n_pairs": sum(len(v) for v in groups.values()), "cells": {},
                           "by_domain": {}}

    def test(ids: list[str]) -> dict[str, Any]:
        a = {i: bool(a_map[i]["judgements"][judge]["passed"]) for i in ids}
        b = {i: bool(b_map[i]["judgements"][judge]["passed"]) for i in ids}
        res = mcnemar(a, b)
        res["base_rate"] = sum(a.values()) / len(a)
        res["rate"] = sum(b.values()) / len(b)
        return res

    flat = []
    for (task, dom), ids in sorted(groups.items()):
        cell = test(ids)
        out["cells"].setdefault(task, {})[dom] = cell
        flat.append(cell)
    if flat:
        for cell, q in zip(flat, false_discovery_control([c["p_value"] for c in flat]), strict=True):
            cell["q_value"] = float(q)
    by_dom: dict[str, list[str]] = defaultdict(list)
    for (_, dom), ids in groups.items():
        by_dom[dom].extend(ids)
    for dom, ids in sorted(by_dom.items()):
        out["by_domain"][dom] = test(ids)
    return out


def agreement(rows: list[dict[str, Any]], judges: list[str]) -> dict[str, Any]:
    """How often each pair of judges makes the same pass/fail call, per domain and overall."""
    out: dict[str, Any] = {}
    for x in range(len(judges)):
        for y in range(x + 1, len(judges)):
            a, b = judges[x], judges[y]
            per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # n, same, a only, b only
            for r in rows:
                va, vb = r["judgements"][a].get("passed"), r["judgements"][b].get("passed")
                if va is None or vb is None:
                    continue
                for key in (r["domain"], "all"):
                    c = per[key]
                    c[0] += 1
                    c[1] += va == vb
                    c[2] += bool(va and not vb)
                    c[3] += bool(vb and not va)
            out[f"{a} vs {b}"] = {
                k: {"n": n, "agree": same / n if n else float("nan"), f"{a}_pass_{b}_fail": ao,
                    f"{a}_fail_{b}_pass": bo}
                for k, (n, same, ao, bo) in sorted(per.items())
            }
    return out
