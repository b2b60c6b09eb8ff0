"""Markdown for ``xtask-safety score``: pass rates with Wilson intervals, utility beside them, judge
agreement and the paired comparison with a baseline run."""

from __future__ import annotations

from typing import Any

from xtask_safety.score.agreement import agreement_line
from xtask_safety.score.utility import HEADLINE


def pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.0f}%"


def _ci(cell: dict[str, Any] | None) -> str:
    if not cell or not cell.get("n"):
        return "–"
    lo, hi = cell["ci95"]
    return f"{pct(cell['rate'])} [{pct(lo)}–{pct(hi)}]"


def pass_rate_table(table: dict[str, Any], tasks: list[str], domains: list[str]) -> str:
    lines = ["| task | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(_ci(table["cells"].get(t, {}).get(d)) for d in domains) + " |")
    lines.append("| **mean over tasks** | " + " | ".join(
        pct(table["by_domain"].get(d, {}).get("mean_over_tasks")) for d in domains) + " |")
    excluded = sum(c.get("excluded", 0) for t in table["cells"].values() for c in t.values())
    if excluded:
        lines.append(f"\n{excluded} record(s) without a decision (not generated, or an unparsed model-judge answer) "
                     "are left out of these rates.")
    return "\n".join(lines)


def label_table(table: dict[str, Any], domains: list[str]) -> str:
    labels = sorted({lab for d in domains for lab in table["by_domain"].get(d, {}).get("labels", {})},
                    key=lambda x: (["comply", "partial", "refuse", "degenerate"] + [x]).index(x))
    lines = ["| domain | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for d in domains:
        counts = table["by_domain"].get(d, {}).get("labels", {})
        lines.append(f"| {d} | " + " | ".join(str(counts.get(lab, 0)) for lab in labels) + " |")
    return "\n".join(lines)


def utility_markdown(util: dict[str, Any], tasks: list[str], domains: list[str]) -> str:
    """Per task: of the passed answers, the share usable, and passed-and-usable over all records."""
    lines = ["| task | metric | " + " | ".join(f"{d}: usable among passed · useful pass · metric" for d in domains)
             + " |", "|---|---|" + "---|" * len(domains)]
    for task in [t for t in tasks if t in util] + [t for t in util if t not in tasks]:
        doms = util[task]
        metric = HEADLINE.get(task, "")
        cols = []
        for d in domains:
            c = doms.get(d)
            if not c:
                cols.append("–")
                continue
            m = c["metrics"].get(metric)
            mtxt = f"{m:.2f}" if m is not None else "–"
            cols.append(f"{_ci(c['ok_among_passed'])} · {_ci(c['useful'])} · {mtxt}")
        lines.append(f"| {task} | {metric or 'format'} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def agreement_markdown(agree: dict[str, Any], domains: list[str]) -> str:
    lines = ["| judges | " + " | ".join(domains + ["all"]) + " |", "|---|" + "---|" * (len(domains) + 1)]
    for pair, per in agree.items():
        cols = []
        for d in domains + ["all"]:
            c = per.get(d)
            if not c or not c["n"]:
                cols.append("–")
                continue
            a, b = pair.split(" vs ")
            cols.append(f"{pct(c['agree'])} ({c[f'{a}_pass_{b}_fail']} / {c[f'{a}_fail_{b}_pass']})")
        lines.append(f"| {pair} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def paired_markdown(paired: dict[str, Any], tasks: list[str], domains: list[str]) -> str:
    def cell(c: dict[str, Any] | None, q: bool = True) -> str:
        if not c:
            return "–"
        txt = f"{pct(c['base_rate'])} → {pct(c['rate'])} (p={c['p_value']:.3g}"
        return txt + (f", q={c['q_value']:.3g})" if q and "q_value" in c else ")")

    lines = ["| task | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(cell(paired["cells"].get(t, {}).get(d)) for d in domains) + " |")
    lines.append("| **pooled** | " + " | ".join(cell(paired["by_domain"].get(d), q=False) for d in domains) + " |")
    return "\n".join(lines)


def summary_markdown(summary: dict[str, Any], judge: str, paired: dict[str, Any] | None = None,
                     baseline: str | None = None) -> str:
    table = summary["judges"][judge]
    tasks = list(table["cells"])
    domains = sorted({d for t in table["cells"].values() for d in t})
    parts = [f"# Pass rates ({judge} judge, 95% Wilson intervals)", "",
             "Share of records the model processed instead of refusing.", "", agreement_line(judge), ""]
    mj = summary.get("model_judge")
    if mj:
        parts += [f"Model judge `{mj['judge']}`: {mj['model']} ({mj['format']} format, prompt version "
                  f"{mj.get('prompt_version', '–')}), {mj['n_judged']} answers judged, **{mj['unparsed']} unparsed "
                  "verdict(s)** (left out of its rates)" + (f", e.g. {mj['unparsed_examples'][0]}"
                                                              if mj.get("unparsed_examples") else "") + ".", ""]
    parts += [pass_rate_table(table, tasks, domains),
             "", "## Labels", "", label_table(table, domains)]
    if summary.get("utility"):
        parts += ["", f"## Utility of the passed answers ({summary['utility_judge']} judge)", "",
                  "*usable among passed*: answers the judge passed that meet the task's format/quality check; "
                  "*useful pass*: passed and usable, over all records; *metric*: the task's mean over passed answers "
                  "(ROUGE-L F1, share of CJK characters, character accuracy). 95% Wilson intervals.", "",
                  utility_markdown(summary["utility"], tasks, domains)]
    if summary.get("agreement"):
        parts += ["", "## Judge agreement on pass/fail", "",
                  "Share of records where two judges make the same call (first passes & second fails / the reverse).",
                  "", agreement_markdown(summary["agreement"], domains)]
    for other in summary["judges"]:
        if other != judge:
            parts += ["", f"## Pass rates, {other} judge", "", agreement_line(other), "",
                      pass_rate_table(summary["judges"][other], tasks, domains)]
    if paired:
        parts += ["", f"## Against the baseline {baseline or ''} ({paired['judge']} judge, exact McNemar, paired by id)",
                  "", f"{paired['n_pairs']} pairs. q: Benjamini-Hochberg over the task x domain cells; the pooled "
                  "row treats one document's tasks as independent pairs.", "",
                  paired_markdown(paired, tasks, domains)]
    return "\n".join(parts) + "\n"
