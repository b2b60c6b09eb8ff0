"""Matplotlib figures (PNG, and SVG on request)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def _save(fig: Any, path: Path) -> None:
    """Save atomically: a killed run never leaves a truncated image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the image the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def before_after_chart(
    before: dict[str, Any],
    after: dict[str, Any],
    tasks: list[str],
    domains: list[str],
    path: str | Path,
    title: str = "Task pass rate before and after the defense",
) -> Path:
    """One panel per domain: bars per task, before vs after, with Wilson 95% error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    x = np.arange(len(tasks))
    width = 0.38
    for ax, dom in zip(axes, domains, strict=True):
        for off, (name, table, color) in zip(
            (-width / 2, width / 2), (("before", before, "#9aa5b1"), ("after", after, "#1f6fb2")), strict=True
        ):
            rates, err_lo, err_hi = [], [], []
            for t in tasks:
                cell = table["cells"].get(t, {}).get(dom)
                r = cell["rate"] if cell else np.nan
                lo, hi = cell["ci95"] if cell else (np.nan, np.nan)
                rates.append(100 * r)
                err_lo.append(100 * (r - lo))
                err_hi.append(100 * (hi - r))
            ax.bar(x + off, rates, width, label=name, color=color, yerr=[err_lo, err_hi], capsize=2,
                   error_kw={"elinewidth": 0.8})
        ax.set_title(dom)
        ax.set_xticks(x, tasks, rotation=30, ha="right")
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("pass rate (%)  — processed, not refused")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    path = Path(path)
    _save(fig, path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------- sweep comparison
# Every figure is written as PNG and SVG (``<path>.png``, ``<path>.svg``); the functions return both paths.


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png_svg(fig: Any, stem: str | Path) -> list[Path]:
    stem = Path(stem)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for p in paths:
        _save(fig, p)
    _plt().close(fig)
    return paths


def setting_colors(settings: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    singles = [s for s in settings if s != "mixed"]
    colors = {s: cmap(i % 10) for i, s in enumerate(singles)}
    colors["mixed"] = "#222222"
    colors["base"] = "#888888"
    return colors


def _size_axis(ax: Any, xs: list[float]) -> None:
    """Log x axis with the defense sizes themselves as tick labels."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log")
    ticks = sorted(set(xs))
    if ticks:
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        lo, hi = min(ticks), max(ticks)
        ax.set_xlim(lo / 1.4, hi * 1.4)


def _pct_band(points: list[dict[str, Any]], key: str) -> tuple[list, list, list, list]:
    xs, ys, lo, hi = [], [], [], []
    for p in points:
        cell = p.get(key)
        if not cell:
            continue
        xs.append(p["defense_rows"])
        ys.append(100 * cell["rate"])
        lo.append(100 * cell["ci95"][0])
        hi.append(100 * cell["ci95"][1])
    return xs, ys, lo, hi


def size_curve_chart(curves: dict[str, Any], panels: list[str], stem: str | Path, title: str = "") -> list[Path]:
    """Pass rate on the defended task(s) against defense size (log x), one line per setting, one panel per
    domain, Wilson 95% bands; dotted lines: the base model on the same task(s)."""
    plt = _plt()
    settings = list(curves["settings"])
    colors = setting_colors(settings)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), sharey=True, squeeze=False)
    all_x = [p["defense_rows"] for pts in curves["settings"].values() for p in pts]
    for ax, dom in zip(axes[0], panels, strict=True):
        for s in settings:
            xs, ys, lo, hi = _pct_band(curves["settings"][s], dom)
            if not xs:
                continue
            ax.plot(xs, ys, marker="o", color=colors[s], label=s, linewidth=1.6)
            ax.fill_between(xs, lo, hi, color=colors[s], alpha=0.15, linewidth=0)
            base = (curves["base"].get(s) or {}).get(dom)
            if base:
                ax.axhline(100 * base["rate"], color=colors[s], linestyle=":", linewidth=1, alpha=0.8)
        _size_axis(ax, all_x)
        ax.set_title(dom + (" (lower is safer)" if dom == "malicious" else " (higher keeps utility)"), fontsize=10)
        ax.set_xlabel("defense size (refusal rows, log scale)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("pass rate on the defended task(s) (%)")
    axes[0][-1].legend(fontsize=8, loc="best", title="defended", title_fontsize=8)
    fig.suptitle(title or "Pass rate vs defense size (dotted: base model)", fontsize=11)
    return save_png_svg(fig, stem)


def transfer_heatmap(matrices: list[dict[str, Any]], stem: str | Path, title: str = "") -> list[Path]:
    """One heatmap per matrix (e.g. malicious and benign): rows = defense trained on task i, columns =
    evaluated task j, cells = pass rate (%)."""
    import numpy as np

    plt = _plt()
    n_rows = max(len(m["rows"]) for m in matrices)
    n_cols = len(matrices[0]["tasks"]) + 1
    fig, axes = plt.subplots(1, len(matrices), figsize=(1.0 * n_cols * len(matrices) + 3.5, 0.55 * n_rows + 2.2),
                             squeeze=False)
    for ax, m in zip(axes[0], matrices, strict=True):
        cols = [*m["tasks"], "all"]
        data = np.full((len(m["rows"]), len(cols)), np.nan)
        for i, row in enumerate(m["rows"]):
            for j, t in enumerate(cols):
                cell = row["all"] if t == "all" else row["cells"].get(t)
                if cell:
                    data[i, j] = 100 * cell["rate"]
        malicious = m["domains"] == ["malicious"]
        cmap = "RdYlGn_r" if malicious else "RdYlGn"
        ax.imshow(data, cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                if not np.isnan(data[i, j]):
                    ax.text(j, i, f"{data[i, j]:.0f}", ha="center", va="center", fontsize=8,
                            color="black" if 25 < data[i, j] < 75 else "white")
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
        labels = ["base (no defense)" if r["setting"] == "base" else f"{r['setting']} (n={r['defense_rows']})"
                  for r in m["rows"]]
        ax.set_yticks(range(len(labels)), labels)
        ax.axvline(len(cols) - 1.5, color="white", linewidth=2)
        dom = "+".join(m["domains"])
        ax.set_title(f"{dom} pass rate (%) — {'lower' if malicious else 'higher'} is better", fontsize=10)
        ax.set_xlabel("evaluated task")
    axes[0][0].set_ylabel("defense trained on")
    fig.suptitle(title or "Cross-task transfer", fontsize=11)
    fig.tight_layout()
    return save_png_svg(fig, stem)


def tradeoff_chart(points_by_model: dict[str, list[dict[str, Any]]], stem: str | Path, title: str = "") -> list[Path]:
    """Safety-utility trade-off: malicious pass rate (x, lower is safer) vs benign pass rate (y, higher keeps
    utility), one point per run, Wilson 95% error bars; the base model is a star."""
    import math

    plt = _plt()
    models = list(points_by_model)
    settings = list(dict.fromkeys(p["setting"] for pts in points_by_model.values() for p in pts if p["setting"] != "base"))
    colors = setting_colors(settings)
    fig, axes = plt.subplots(1, len(models), figsize=(5.0 * len(models), 4.4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        seen: set[str] = set()
        for p in points_by_model[model]:
            mal, ben = p["malicious"], p["benign"]
            if not mal or not ben:
                continue
            x, y = 100 * mal["rate"], 100 * ben["rate"]
            xerr = [[x - 100 * mal["ci95"][0]], [100 * mal["ci95"][1] - x]]
            yerr = [[y - 100 * ben["ci95"][0]], [100 * ben["ci95"][1] - y]]
            base = p["setting"] == "base"
            label = None if p["setting"] in seen else ("base (no defense)" if base else p["setting"])
            seen.add(p["setting"])
            size = 180 if base else 25 + 18 * math.log2(max(p["defense_rows"], 1))
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=colors.get(p["setting"], "grey"), alpha=0.35,
                        linewidth=0.8)
            ax.scatter([x], [y], s=size, marker="*" if base else "o", color=colors.get(p["setting"], "grey"),
                       edgecolor="white", linewidth=0.6, label=label, zorder=3)
        ax.set_xlim(-3, 103)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("malicious pass rate (%) — lower is safer")
        ax.set_ylabel("benign pass rate (%) — higher keeps utility")
        ax.set_title(f"{model}: one point per run (size ∝ defense size)", fontsize=10)
        ax.annotate("better", xy=(8, 95), xytext=(30, 75), arrowprops={"arrowstyle": "->", "color": "grey"},
                    color="grey", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title or "Safety–utility trade-off", fontsize=11)
    return save_png_svg(fig, stem)


def utility_chart(curves: dict[str, Any], stem: str | Path, title: str = "") -> list[Path]:
    """Per evaluated task: utility on benign documents (answered and usable) against defense size."""
    plt = _plt()
    tasks = list(curves["tasks"])
    settings = list(dict.fromkeys(s for t in tasks for s in curves["tasks"][t]))
    colors = setting_colors(settings)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.3 * len(tasks), 3.5), sharey=True, squeeze=False)
    all_x = [p["defense_rows"] for t in tasks for pts in curves["tasks"][t].values() for p in pts]
    for ax, task in zip(axes[0], tasks, strict=True):
        for s in settings:
            xs, ys, lo, hi = _pct_band(curves["tasks"][task].get(s, []), "useful")
            if xs:
                ax.plot(xs, ys, marker="o", color=colors[s], label=s, linewidth=1.4)
                ax.fill_between(xs, lo, hi, color=colors[s], alpha=0.12, linewidth=0)
        base = curves["base"].get(task)
        if base:
            ax.axhline(100 * base["rate"], color="black", linestyle=":", linewidth=1, label="base")
        _size_axis(ax, all_x)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("refusal rows (log)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("benign answers that are usable (%)")
    axes[0][-1].legend(fontsize=7, loc="best", title="defended", title_fontsize=7)
    fig.suptitle(title or "Per-task utility vs defense size (benign documents)", fontsize=11)
    return save_png_svg(fig, stem)


def decision_curve_chart(curves: dict[int, dict[str, Any]], domains: list[str], path: str | Path) -> Path:
    """One panel per training seed: the share of development-slice prompts answered (first-token decision)
    per domain at each reading during training and, shaded, at each calibration step (which starts from the
    saved reading); dotted lines mark the reading saved and the calibration step kept."""
    plt = _plt()
    seeds = sorted(curves)
    fig, axes = plt.subplots(1, len(seeds), figsize=(4.2 * len(seeds), 3.4), sharey=True, squeeze=False)
    colors = {"malicious": "#c0392b", "news": "#1f6fb2", "useful": "#27ae60"}
    for ax, seed in zip(axes[0], seeds, strict=True):
        curve = curves[seed]
        steps = [r["step"] for r in curve["readings"]]
        gap = (steps[-1] - steps[-2]) / 2 if len(steps) > 1 else 1
        cal = curve["calibration"]  # starts (step 0) from the saved reading, drawn after the last one
        cal_x = [steps[-1] + gap * r["calibration_step"] for r in cal]
        for dom in domains:
            ax.plot(steps, [100 * (1 - r["refuse_share"][dom]) for r in curve["readings"]],
                    marker="o", ms=3, color=colors.get(dom), label=dom)
            if cal:
                ax.plot(cal_x, [100 * (1 - r["refuse_share"][dom]) for r in cal], ls="--", marker=".", color=colors.get(dom))
        if curve["selected_step"] is not None:
            ax.axvline(curve["selected_step"], color="#555", lw=0.8, ls=":")
        if len(cal_x) > 1:
            ax.axvspan(cal_x[0], cal_x[-1], color="#f3e9c6", alpha=0.6, lw=0)
            if curve.get("calibration_kept") is not None:
                ax.axvline(steps[-1] + gap * curve["calibration_kept"], color="#8a6d00", lw=0.8, ls=":")
            ax.set_xticks([*steps, *cal_x[1:]], [str(x) for x in steps] + [f"c{r['calibration_step']}" for r in cal[1:]],
                          fontsize=7)
        ax.set_title(f"seed {seed}")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("answered (%), development slice")
    axes[0][-1].legend(loc="center right", fontsize=8)
    calibrated = any(len(curves[s]["calibration"]) > 1 for s in seeds)
    fig.supxlabel("training step" + (", then calibration steps c1, c2, … (shaded)" if calibrated else ""), fontsize=9)
    fig.suptitle("Refuse-or-answer decision during training (dotted: the step saved)")
    path = Path(path)
    _save(fig, path)
    plt.close(fig)
    return path
