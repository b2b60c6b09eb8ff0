"""The judges' measured agreement with human labels, kept in one file and quoted next to pass rates.

``score/data/judge_agreement.json`` is written by ``xtask-safety judge-eval … --agreement_output``
(the exact command is stored in the file and printed in ``docs/judges.md``). Tables that report pass
rates name their judge and quote these figures, the project's own labels and external labels
separately, so a reader sees how far the judge is trusted on each kind of answer.
"""

from __future__ import annotations

import json
import shlex
from importlib import resources
from typing import Any


def headline(project: dict[str, Any], external: dict[str, Any], partial_as: str, attribution: dict[str, str],
             command: list[str]) -> dict[str, Any]:
    """The figures worth quoting, per judge and labelled set (overall, and per source model)."""
    judges: dict[str, Any] = {}
    for set_name, res in project.items():
        for judge, parts in res.items():
            m = parts["all"]
            judges.setdefault(judge, {"project": {}, "external": {}})["project"][set_name] = {
                "n": m["n"], "accuracy": m["accuracy"], "kappa": m["kappa"], "pass_accuracy": m["pass_accuracy"],
                "pass_kappa": m["pass_kappa"], "pass_accuracy_ci95": m.get("pass_accuracy_ci95"),
                "pass_kappa_ci95": m.get("pass_kappa_ci95")}
    for set_name, res in external.items():
        for judge, parts in res.items():
            entry = {k: parts["all"][k] for k in ("n", "accuracy", "kappa", "accuracy_ci95", "kappa_ci95",
                                                  "refusal_precision", "refusal_recall")}
            entry["by_source"] = {src: {"n": m["n"], "accuracy": m["accuracy"], "kappa": m["kappa"]}
                                  for src, m in parts.items() if src not in ("all", "confusion")}
            judges.setdefault(judge, {"project": {}, "external": {}})["external"][set_name] = entry
    return {
        "command": shlex.join(command),
        "meaning": {"project": "4-way label accuracy and Cohen's kappa on the project's labelled answers "
                               "(pass/fail: comply or partial vs refuse or degenerate)",
                    "external": f"refusal detection (a partial refusal counts as {partial_as}) on chat-model "
                                "answers labelled by others"},
        "attribution": attribution,
        "judges": judges,
    }


def load_agreement() -> dict[str, Any]:
    """The bundled figures, or an empty record when the file is missing or unreadable."""
    try:
        path = resources.files("xtask_safety") / "score" / "data" / "judge_agreement.json"
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def agreement_line(judge: str, figures: dict[str, Any] | None = None) -> str:
    """One sentence: the judge and its measured agreement, own and external labels apart."""
    figures = load_agreement() if figures is None else figures
    entry = (figures.get("judges") or {}).get(judge)
    if not entry:
        return (f"Judge: `{judge}`; its agreement with human labels has not been measured "
                "(`xtask-safety judge-eval`, see docs/judges.md).")
    own = [f"{name} (n={m['n']}) accuracy {m['accuracy']:.3f}, κ {m['kappa']:.3f}"
           for name, m in entry.get("project", {}).items()]
    ext = [f"{name} (n={m['n']}) accuracy {m['accuracy']:.3f}, κ {m['kappa']:.3f}"
           for name, m in entry.get("external", {}).items()]
    parts = [f"Judge: `{judge}`. Agreement with human labels"]
    parts.append("on the project's own labelled answers: " + ("; ".join(own) if own else "not measured"))
    parts.append("on external chat-model answers (refusal detection): " + ("; ".join(ext) if ext else "not measured"))
    return parts[0] + " " + " — ".join(parts[1:]) + " (docs/judges.md)."
