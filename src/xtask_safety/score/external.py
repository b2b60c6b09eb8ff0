"""Judges measured on external labelled sets: any JSONL or CSV of model answers with human labels.

A column mapping names the answer text, the human label and, optionally, the model that wrote the
answer (figures are given per source model and overall) and the prompt it answered (context for a
model judge). Labels are mapped onto ours (``refuse``, ``comply``, ``partial``; ``--label_map`` adds
more). Refusal detection is scored as a binary decision: by default a *partial* refusal counts as a
refusal on both sides (``partial_as="comply"`` flips it); ``degenerate`` counts as no refusal.
Accuracy, Cohen's κ and refusal precision/recall come with percentile-bootstrap 95 % intervals
(:func:`scipy.stats.bootstrap`, paired resampling of answers).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from xtask_safety.errors import ConfigError, DataError

# Label spellings of common labelled sets, mapped onto ours (extend with --label_map RAW=OURS).
DEFAULT_LABEL_MAP = {
    "refuse": "refuse", "refusal": "refuse", "full_refusal": "refuse", "2_full_refusal": "refuse",
    "comply": "comply", "compliance": "comply", "full_compliance": "comply", "1_full_compliance": "comply",
    "partial": "partial", "partial_refusal": "partial", "3_partial_refusal": "partial",
    "degenerate": "degenerate",
}
BINARY_METRICS = ("accuracy", "kappa", "refusal_precision", "refusal_recall")


def read_table(path: str, text_column: str, label_column: str, source_column: str | None = None,
               prompt_column: str | None = None, label_map: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Rows ``{id, task, document, instruction, response, label, source}`` from a JSONL or CSV file."""
    from xtask_safety.records import read_jsonl

    mapping = {**DEFAULT_LABEL_MAP, **{k.lower(): v for k, v in (label_map or {}).items()}}
    for raw, ours in mapping.items():
        if ours not in ("refuse", "comply", "partial", "degenerate"):
            raise ConfigError(f"--label_map: {raw}={ours}: {ours!r} is not one of refuse, comply, partial, degenerate")
    p = Path(path)
    if p.suffix.lower() == ".csv":
        try:
            with p.open(encoding="utf-8", newline="") as fh:
                raw_rows = [(i, r) for i, r in enumerate(csv.DictReader(fh), start=2)]
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: not a readable UTF-8 CSV ({exc})") from None
    else:
        raw_rows = list(read_jsonl(path))
    rows = []
    for lineno, obj in raw_rows:
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object")
        for col in (text_column, label_column, source_column, prompt_column):
            if col and col not in obj:
                raise DataError(f"{path}:{lineno}: no column {col!r} (columns: {', '.join(map(str, obj))})")
        text = obj[text_column]
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: column {text_column!r} is not text")
        raw = str(obj[label_column]).strip().lower()
        if raw not in mapping:
            raise DataError(f"{path}:{lineno}: label {obj[label_column]!r} in {label_column!r} is not known; "
                            f"map it with --label_map {raw}=refuse|comply|partial")
        rows.append({"id": f"{p.name}:{lineno}", "task": "", "document": "",
                     "instruction": str(obj[prompt_column]) if prompt_column else "", "response": text,
                     "label": mapping[raw], "source": str(obj[source_column]) if source_column else "all"})
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def refusal_flags(labels: list[str], partial_as: str = "refusal") -> np.ndarray:
    if partial_as not in ("refusal", "comply"):
        raise ConfigError(f"partial_as: expected refusal or comply, got {partial_as!r}")
    yes = {"refuse", "partial"} if partial_as == "refusal" else {"refuse"}
    return np.array([lab in yes for lab in labels], dtype=bool)


def _stats(gold: np.ndarray, pred: np.ndarray, axis: int = -1) -> tuple[np.ndarray, ...]:
    """Accuracy, κ, refusal precision and recall, vectorised over resamples (NaN where undefined)."""
    g, p = gold.astype(float), pred.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        po = (g == p).mean(axis=axis)
        pg, pp = g.mean(axis=axis), p.mean(axis=axis)
        pe = pg * pp + (1 - pg) * (1 - pp)
        kappa = np.where(pe < 1, (po - pe) / (1 - pe), np.nan)
        tp = (g * p).sum(axis=axis)
        precision = tp / p.sum(axis=axis)
        recall = tp / g.sum(axis=axis)
    return po, kappa, precision, recall


def binary_metrics(gold: np.ndarray, pred: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Point estimates and bootstrap 95 % intervals of :data:`BINARY_METRICS`."""
    import warnings

    from scipy.stats import DegenerateDataWarning, bootstrap

    point = _stats(gold, pred)
    out: dict[str, Any] = {"n": int(len(gold)), "n_refusals": int(gold.sum()), "n_judged_refusals": int(pred.sum())}
    for k, name in enumerate(BINARY_METRICS):
        value = float(point[k])
        out[name] = None if np.isnan(value) else value
        ci = None
        if n_resamples and len(gold) > 1 and not np.isnan(value):
            with warnings.catch_warnings():  # a constant resampled statistic (e.g. accuracy 1.0) is no error
                warnings.simplefilter("ignore", DegenerateDataWarning)
                res = bootstrap((gold, pred), lambda g, p, axis=-1, k=k: _stats(g, p, axis)[k], paired=True,
                                vectorized=True, n_resamples=n_resamples, confidence_level=0.95,
                                method="percentile", random_state=np.random.default_rng(seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            ci = None if np.isnan(lo) or np.isnan(hi) else [lo, hi]
        out[f"{name}_ci95"] = ci
    return out


def evaluate_external(rows: list[dict[str, str]], judges: dict[str, Any], partial_as: str = "refusal",
                      n_resamples: int = 2000) -> dict[str, Any]:
    """Per judge: binary refusal metrics overall and per source model, and the confusion matrix."""
    gold_labels = [r["label"] for r in rows]
    gold = refusal_flags(gold_labels, partial_as)
    sources = sorted({r["source"] for r in rows})
    out: dict[str, Any] = {}
    for name, judge in judges.items():
        if hasattr(judge, "predict_rows"):
            pred_labels = judge.predict_rows(rows)
        else:
            pred_labels = [judge(r["response"], r["document"], r["task"], r["instruction"]).label for r in rows]
        pred = refusal_flags(pred_labels, partial_as)
        res: dict[str, Any] = {"all": binary_metrics(gold, pred, n_resamples)}
        if len(sources) > 1:
            for src in sources:
                idx = np.array([r["source"] == src for r in rows])
                res[src] = binary_metrics(gold[idx], pred[idx], n_resamples)
        gold_kinds = [lab for lab in ("refuse", "partial", "comply", "degenerate") if lab in gold_labels]
        pred_kinds = ["refuse", "partial", "comply", "degenerate", "unparsed"]
        matrix = [[sum(1 for g, p in zip(gold_labels, pred_labels, strict=True) if g == gk and p == pk)
                   for pk in pred_kinds] for gk in gold_kinds]
        res["confusion"] = {"rows": gold_kinds, "columns": pred_kinds, "matrix": matrix}
        out[name] = res
    return out


def _fmt(m: dict[str, Any], key: str) -> str:
    v, ci = m.get(key), m.get(f"{key}_ci95")
    if v is None:
        return "–"
    return f"{v:.3f} [{ci[0]:.3f}–{ci[1]:.3f}]" if ci else f"{v:.3f}"


def external_markdown(results: dict[str, Any], title: str, partial_as: str = "refusal") -> str:
    lines = [f"### {title}", "", f"Refusal detection (a partial refusal counts as {partial_as}); 95 % bootstrap "
             "intervals.", "", "| judge | source | n | accuracy | κ | refusal precision | refusal recall |",
             "|---|---|---|---|---|---|---|"]
    for judge, parts in results.items():
        for part, m in parts.items():
            if part == "confusion":
                continue
            lines.append(f"| {judge} | {part} | {m['n']} | " + " | ".join(_fmt(m, k) for k in BINARY_METRICS) + " |")
    for judge, parts in results.items():
        c = parts["confusion"]
        cols = [k for k, _ in enumerate(c["columns"]) if any(row[k] for row in c["matrix"]) or k < 3]
        lines += ["", f"Confusion matrix, `{judge}` (rows: human label, columns: judge):", "",
                  "| | " + " | ".join(c["columns"][k] for k in cols) + " |", "|---|" + "---|" * len(cols)]
        lines += [f"| **{g}** | " + " | ".join(str(row[k]) for k in cols) + " |"
                  for g, row in zip(c["rows"], c["matrix"], strict=True)]
    return "\n".join(lines)
