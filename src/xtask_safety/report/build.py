"""The sweep report: Markdown + static HTML with the same tables and figures, and ``results.json``.

Sections: the cross-task transfer matrix (table + heatmap), pass rate vs defense size (table + curves
with Wilson bands), the safety-utility trade-off (one point per run), per-task utility vs size, the
paper's 13-string matcher for comparability, every run with its training figures and timings, and a
few redacted examples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtask_safety.records import atomic_write_text, redact, write_json
from xtask_safety.report import collect, plots, tables
from xtask_safety.report.collect import Collection
from xtask_safety.report.document import Block, to_html, to_markdown
from xtask_safety.score.agreement import agreement_line

JUDGE_TEXT = {
    "rule": "the `rule` judge (English and Chinese refusal idioms, quote-aware, with `partial` and `degenerate` "
            "labels; a record passes when it is `comply` or `partial`)",
    "paper": "the paper's 13 refusal strings (case-sensitive substring match)",
}


def _slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9.+_-]+", "-", text).strip("-")


@dataclass
class _Report:
    """The report being assembled: its blocks, the data behind its views, and the figures written so far."""

    col: Collection
    out: Path
    multi_w: bool  # several weightings: name the weighting in headings and figure files
    blocks: list[Block]
    views: dict[str, list[Any]] = field(default_factory=lambda: {
        "transfer": [], "benign_transfer": [], "size_curves": [], "utility_curves": []})
    figures: list[str] = field(default_factory=list)

    @property
    def fig_dir(self) -> Path:
        return self.out / "figures"

    def name(self, model: str, w: str | None) -> str:
        """The heading of one (model, weighting) view; the weighting is named only when there are several."""
        return model + (f", weighting {w}" if self.multi_w else "")

    def fig_stem(self, kind: str, model: str, w: str | None) -> Path:
        return self.fig_dir / _slug(kind, model, w if self.multi_w else None)

    def fig(self, paths: list[Path], caption: str) -> Block:
        """A figure block for ``[png, svg]`` paths, recorded in ``figures`` (relative to the report)."""
        self.figures.extend(str(p.relative_to(self.out)) for p in paths)
        return ("figure", str(paths[0].relative_to(self.out)), str(paths[1].relative_to(self.out)), caption)


def build_report(col: Collection, out_dir: str | Path, transfer_size: str = "max", show_text: bool = False,
                 examples: int = 1, title: str | None = None) -> dict[str, Any]:
    """Write ``report.md``, ``report.html``, ``results.json`` and ``figures/*.png|svg``; return what was written."""
    out = Path(out_dir)
    title = title or f"xtask-safety sweep report: {', '.join(col.sweeps) or 'runs'}"
    rep = _Report(col, out, len(col.weightings) > 1, [("h1", title), ("p", _intro(col))])
    _transfer_section(rep, transfer_size)
    _size_section(rep)
    _tradeoff_section(rep)
    _utility_section(rep)
    _paper_section(rep, transfer_size)
    _runs_section(rep, show_text, examples)
    return _write(rep, title)


def _transfer_section(rep: _Report, transfer_size: str) -> None:
    """1. The transfer matrix: malicious and benign pass rates per (model, weighting) with two or more rows."""
    col = rep.col
    rep.blocks.append(("h2", "Cross-task transfer: defense trained on task i, pass rate on task j"))
    rep.blocks.append(("p", "Rows: the task setting the defense was trained on (its "
                            f"{'largest size' if transfer_size == 'max' else transfer_size + ' refusal rows'}); columns: "
                            "the task evaluated. Malicious pass rate: lower is safer. Off-diagonal cells of a single-task "
                            "row show how far a defense carries over to tasks it never saw. [95% Wilson interval]."))
    for model in col.models:
        for w in col.weightings:
            mal = collect.transfer_matrix(col, model, w, transfer_size)
            ben = collect.transfer_matrix(col, model, w, transfer_size, domains=col.benign)
            if len(mal["rows"]) < 2:
                continue
            rep.views["transfer"].append(mal)
            rep.views["benign_transfer"].append(ben)
            name = rep.name(model, w)
            rep.blocks += [("h3", f"{name}: malicious documents"), ("table", tables.transfer_rows(mal)),
                           ("h3", f"{name}: benign documents ({' + '.join(col.benign)}), the cost in utility"),
                           ("table", tables.transfer_rows(ben)),
                           rep.fig(plots.transfer_heatmap([mal, ben], rep.fig_stem("transfer", model, w),
                                                          title=f"Cross-task transfer — {name}"),
                                   f"Transfer matrix, {name}: malicious (left, lower is better) and benign (right, "
                                   "higher is better) pass rates (%)")]


def _size_section(rep: _Report) -> None:
    """2. Pass rate vs defense size, per (model, weighting) with defended settings."""
    col = rep.col
    rep.blocks.append(("h2", "Pass rate vs defense size"))
    rep.blocks.append(("p", "Each defended setting measured on its own task(s) (mixed: all evaluated tasks), pooled "
                            "over seeds; the base model on the same task(s) first. Refusal rows = per task × defended "
                            "tasks."))
    for model in col.models:
        for w in col.weightings:
            curves = collect.size_curves(col, model, w)
            if not curves["settings"]:
                continue
            rep.views["size_curves"].append(curves)
            name = rep.name(model, w)
            rep.blocks += [("h3", name), ("table", tables.size_rows(curves, [*col.domains, "benign"])),
                           rep.fig(plots.size_curve_chart(curves, col.domains, rep.fig_stem("size-curve", model, w),
                                                          title=f"Pass rate vs defense size — {name}"),
                                   f"Pass rate vs defense size, {name} (log x, Wilson 95% bands; dotted: base model)")]


def _tradeoff_section(rep: _Report) -> None:
    """3. The safety–utility trade-off, one point per run."""
    col = rep.col
    points = {m: collect.tradeoff_points(col, m) for m in col.models}
    rep.views["tradeoff"] = [{"model": m, "points": p} for m, p in points.items()]
    rep.blocks += [("h2", "Safety–utility trade-off"),
                   ("p", "One point per run (every seed): malicious pass rate against benign pass rate over all "
                         "evaluated tasks. The ideal defense sits in the top-left corner; the star is the base model."),
                   rep.fig(plots.tradeoff_chart(points, rep.fig_dir / "tradeoff"),
                           "Safety–utility trade-off, one point per run")]


def _utility_section(rep: _Report) -> None:
    """4. Per-task utility vs defense size, per (model, weighting) with any utility figures."""
    col = rep.col
    rep.blocks.append(("h2", "Per-task utility vs defense size"))
    rep.blocks.append(("p", "Share of benign records the model answered **and** whose answer is usable (task-specific "
                            "checks: summary length and compression, Chinese output for translate, a sentiment word, a "
                            "new sentence for cloze, the reference casing for case); pooled over benign domains and "
                            "seeds."))
    for model in col.models:
        for w in col.weightings:
            ucurves = collect.utility_curves(col, model, w)
            if not any(ucurves["tasks"].values()):
                continue
            rep.views["utility_curves"].append(ucurves)
            name = rep.name(model, w)
            rep.blocks += [("h3", name), ("table", tables.utility_rows(ucurves)),
                           rep.fig(plots.utility_chart(ucurves, rep.fig_stem("utility", model, w),
                                                       title=f"Per-task utility vs defense size — {name}"),
                                   f"Utility on benign documents per task, {name}")]


def _paper_section(rep: _Report, transfer_size: str) -> None:
    """5. The transfer matrix under the paper's matcher, when every run was also scored by it."""
    col = rep.col
    if col.judge == "paper" or not all("paper" in r.summary.get("judges", {}) for r in col.runs):
        return
    paper = Collection(col.runs, col.eval_tasks, col.domains, "paper", col.sources, col.sweeps)
    rep.blocks.append(("h2", "The paper's 13-string matcher (for comparability)"))
    rep.blocks.append(("p", "The same transfer matrix (malicious documents) judged by substring matching, as in the "
                            "reference code; it over-states pass rates (it misses refusals in Chinese and counts empty "
                            "or echoed output as processed)."))
    for model in col.models:
        for w in col.weightings:
            m = collect.transfer_matrix(paper, model, w, transfer_size)
            if len(m["rows"]) >= 2:
                rep.blocks += [("h3", rep.name(model, w)), ("table", tables.transfer_rows(m, with_ci=False))]


def _runs_section(rep: _Report, show_text: bool, examples: int) -> None:
    """6. Every run, its judge labels and stage timings, a few examples, and how to read the report."""
    col = rep.col
    rep.blocks += [("h2", "All runs"), ("table", tables.runs_rows(col.runs, col.judge, col.eval_tasks, col.domains)),
                   ("h3", "Judge labels per domain (all tasks): refusals, degenerate output (empty, echo, a lead-in "
                          "only, loops) and answers"),
                   ("table", tables.labels_rows(col.runs, col.judge, col.domains))]
    timing_rows = [[r.id, *(f"{r.timings.get(k, 0):.0f}" if k in r.timings else "–"
                            for k in ("train", "generate", "score"))]
                   for r in col.runs if r.timings]
    if timing_rows:
        rep.blocks += [("h3", "Time per stage (seconds; 0 when the stage was reused from the cache)"),
                       ("table", (["run", "train", "generate", "score"], timing_rows))]
    ex = _examples(col, show_text, examples)
    if ex:
        rep.blocks += [("h2", "Examples" + ("" if show_text else " (malicious documents and answers redacted)")),
                       ("list", ex)]
    rep.blocks += [("h2", "How to read this report"), ("list", _method_notes(col))]


def _write(rep: _Report, title: str) -> dict[str, Any]:
    """Write ``report.md``, ``report.html`` and ``results.json``; return the paths and views."""
    col, out, figures = rep.col, rep.out, rep.figures
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", to_markdown(rep.blocks))
    atomic_write_text(out / "report.html", to_html(rep.blocks, title))
    results = {"title": title, "sources": col.sources, "sweeps": col.sweeps, "judge": col.judge,
               "eval_tasks": col.eval_tasks, "domains": col.domains, "runs": [_run_json(r) for r in col.runs],
               "views": rep.views, "figures": figures}
    write_json(out / "results.json", results)
    return {"report_md": out / "report.md", "report_html": out / "report.html", "results": out / "results.json",
            "figures": [out / f for f in figures], "views": rep.views}


def _intro(col: Collection) -> str:
    n_def = sum(1 for r in col.runs if not r.is_base)
    base = next((r for r in col.runs if r.is_base), col.runs[0])
    cells = base.summary["judges"][col.judge]["cells"]
    per_cell = {d: next((cells[t][d]["n"] for t in cells if d in cells[t]), 0) for d in col.domains}
    docs = ", ".join(f"{n} {d}" for d, n in per_cell.items())
    return (f"{len(col.runs)} runs: {n_def} defenses and {len(col.runs) - n_def} base model evaluation(s); models "
            f"{', '.join(f'`{m}`' for m in col.models)}; defended settings {', '.join(col.settings()) or 'none'}; "
            f"evaluated tasks {', '.join(col.eval_tasks)} with {docs} documents per task (the same documents under "
            f"every task). Pass rate = share of documents the model processed instead of refusing, judged by "
            f"{JUDGE_TEXT.get(col.judge, '`' + col.judge + '`')}. {agreement_line(col.judge)}")


def _method_notes(col: Collection) -> list[str]:
    return [
        "Pass rate: lower is better on `malicious` documents; higher is better on the benign domains "
        f"({', '.join(col.benign)}).",
        "Intervals are 95% Wilson score intervals. Rates pooled over tasks, domains or seeds sum the counts; the same "
        "documents recur under every task and seed, so pooled intervals are descriptive, not independent samples.",
        "Small cells (a few documents) have wide intervals: read differences inside overlapping intervals as noise.",
        "Refusal rows: the number of (instruction, malicious document, refusal) rows in the defense set; every set also "
        "holds benign rows with real answers (see the data recipe's `benign_ratio`).",
    ]


def _run_json(r: collect.RunView) -> dict[str, Any]:
    return {"id": r.id, "sweep": r.sweep, "model": r.model, "setting": r.setting, "defense_tasks": r.defense_tasks,
            "size_per_task": r.size_per_task, "defense_rows": r.defense_rows, "weighting": r.weighting, "seed": r.seed,
            "train": r.train, "timings_s": r.timings, "summary": r.summary}


def _examples(col: Collection, show: bool, per_domain: int) -> list[str]:
    """A few answers of the largest defense (mixed first), read from its scored records if they are at hand."""
    import json

    if per_domain <= 0:
        return []
    candidates = sorted((r for r in col.runs if not r.is_base and r.scores and r.scores.is_file()),
                        key=lambda r: (r.setting == "mixed", r.defense_rows), reverse=True)
    if not candidates:
        return []
    run = candidates[0]
    rows = [json.loads(line) for line in run.scores.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for dom in col.domains:
        for r in [x for x in rows if x.get("domain") == dom][:per_domain]:
            sensitive = dom == "malicious"
            verdict = (r.get("judgements") or {}).get(col.judge, {}).get("label", "?")
            out.append(f"**{run.id}**, {dom} / {r.get('task')} (`{verdict}`): document "
                       f"“{_shown(r.get('document'), sensitive, show, 80)}” → answer "
                       f"“{_shown(r.get('response'), sensitive, show, 120)}”")
    return out


def _shown(text: str | None, sensitive: bool, show: bool, keep: int) -> str:
    """Malicious text is redacted (unless ``show``); benign text is only shortened for the page."""
    if sensitive:
        return redact(text, True, show, keep)
    text = " ".join((text or "").split())
    return text if len(text) <= 2 * keep else text[: 2 * keep] + "…"
