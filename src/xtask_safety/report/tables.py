"""Markdown tables for pass rates (before/after comparisons and single runs)."""

from __future__ import annotations

import math
from typing import Any


def pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}%"


def cell_text(cell: dict[str, Any] | None, with_ci: bool = False) -> str:
    if not cell:
        return "–"
    text = pct(cell["rate"])
    if with_ci:
        lo, hi = cell["ci95"]
        text += f" [{pct(lo)}–{pct(hi)}]"
    return text


def compare_table(
    before: dict[str, Any], after: dict[str, Any], tasks: list[str], domains: list[str], with_ci: bool = False
) -> str:
    """Rows are tasks (+ a mean row); columns are ``domain: before → after``."""
    head = "| task | " + " | ".join(f"{d}: before → after" for d in domains) + " |"
    sep = "|---|" + "---|" * len(domains)
    lines = [head, sep]
    for t in tasks:
        cols = []
        for d in domains:
            b = before["cells"].get(t, {}).get(d)
            a = after["cells"].get(t, {}).get(d)
            cols.append(f"{cell_text(b, with_ci)} → {cell_text(a, with_ci)}")
        lines.append(f"| {t} | " + " | ".join(cols) + " |")
    cols = []
    for d in domains:
        b, a = before["by_domain"].get(d), after["by_domain"].get(d)
        cols.append(f"**{pct(b['mean_over_tasks']) if b else '–'} → {pct(a['mean_over_tasks']) if a else '–'}**")
    lines.append("| **mean over tasks** | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def single_table(table: dict[str, Any], tasks: list[str], domains: list[str]) -> str:
    lines = ["| task | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(cell_text(table["cells"].get(t, {}).get(d), True) for d in domains) + " |")
    lines.append(
        "| **mean over tasks** | "
        + " | ".join(pct(table["by_domain"][d]["mean_over_tasks"]) if d in table["by_domain"] else "–" for d in domains)
        + " |"
    )
    return "\n".join(lines)


def label_table(table: dict[str, Any], domains: list[str]) -> str:
    """How often each judge label occurred, per domain (pooled over tasks)."""
    labels = ("comply", "partial", "refuse", "degenerate")
    lines = ["| domain | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for d in domains:
        counts = table["by_domain"].get(d, {}).get("labels", {})
        lines.append(f"| {d} | " + " | ".join(str(counts.get(lab, 0)) for lab in labels) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- sweep comparison
# Each builder returns ``(headers, rows)`` of plain strings; :func:`md_table` and
# :mod:`xtask_safety.report.document` render them as Markdown or HTML.

Table = tuple[list[str], list[list[str]]]


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    def esc(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _setting_label(row: dict[str, Any]) -> str:
    if row["setting"] == "base":
        return "base (no defense)"
    return f"{row['setting']} (n={row['defense_rows']})"


def transfer_rows(matrix: dict[str, Any], with_ci: bool = True) -> Table:
    """Rows: defended setting; columns: evaluated task j (and all tasks pooled)."""
    tasks = matrix["tasks"]
    headers = ["defense trained on ↓ / evaluated on →", *tasks, "all tasks"]
    rows = [[_setting_label(r), *(cell_text(r["cells"].get(t), with_ci) for t in tasks), cell_text(r["all"], with_ci)]
            for r in matrix["rows"]]
    return headers, rows


def size_rows(curves: dict[str, Any], domains: list[str]) -> Table:
    """Per defended setting and size: pass rate on its own task(s), per domain, with the base model first."""
    headers = ["setting", "refusal rows per task", "refusal rows", "runs", *domains]
    rows = []
    for setting, points in curves["settings"].items():
        base = curves["base"].get(setting)
        if base:
            rows.append([setting, "base", "0", "1", *(cell_text(base.get(d), True) for d in domains)])
        for p in points:
            rows.append([setting, str(p["size_per_task"]), str(p["defense_rows"]), str(p["n_runs"]),
                         *(cell_text(p.get(d), True) for d in domains)])
    return headers, rows


def utility_rows(curves: dict[str, Any]) -> Table:
    """Per evaluated task (columns): utility on benign documents for each setting and size."""
    tasks = list(curves["tasks"])
    headers = ["setting", "refusal rows", *tasks]
    rows = [["base (no defense)", "0", *(cell_text(curves["base"].get(t)) for t in tasks)]] if curves["base"] else []
    settings = list(dict.fromkeys(s for t in tasks for s in curves["tasks"][t]))
    for s in settings:
        points = curves["tasks"][tasks[0]].get(s, [])
        for i, p in enumerate(points):
            rows.append([s, str(p["defense_rows"]),
                         *(cell_text(curves["tasks"][t][s][i]["useful"]) for t in tasks)])
    return headers, rows


def runs_rows(runs: list[Any], judge: str, tasks: list[str], domains: list[str]) -> Table:
    from xtask_safety.report.collect import pass_rate

    headers = ["run", "model", "setting", "refusal rows", "weighting", "seed", "steps", "train loss", *domains]
    rows = []
    for r in runs:
        train = r.train or {}
        loss = train.get("train_loss")
        rows.append([r.id, r.model, r.setting, str(r.defense_rows), r.weighting or "–",
                     "–" if r.seed is None else str(r.seed), str(train.get("global_step", "–")),
                     f"{loss:.3f}" if isinstance(loss, (int, float)) else "–",
                     *(cell_text(pass_rate([r], judge, tasks, [d])) for d in domains)])
    return headers, rows


def labels_rows(runs: list[Any], judge: str, domains: list[str]) -> Table:
    """How each run's answers were judged, per domain: real refusals vs degenerate output vs answers."""
    order = ("refuse", "degenerate", "partial", "comply")
    headers = ["run", *domains]
    rows = []
    for r in runs:
        cols = []
        for d in domains:
            labels = r.summary["judges"][judge]["by_domain"].get(d, {}).get("labels", {})
            shown = [f"{labels[k]} {k}" for k in order if labels.get(k)]
            shown += [f"{v} {k}" for k, v in sorted(labels.items()) if k not in order and v]
            cols.append(" · ".join(shown) or "–")
        rows.append([r.id, *cols])
    return headers, rows
