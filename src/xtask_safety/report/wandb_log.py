"""W&B dashboard for a sweep: one ``eval`` run per cell and one ``report`` run, grouped by sweep.

* each cell's run carries model / setting / defense tasks / size / weighting / seed in its config,
  pass rates per task x domain (``pass/<domain>/<task>``, ``pass/<domain>/all``) and utility
  (``utility/<task>``) in its summary, and a ``wandb.Table`` of its per-record results (malicious
  documents and answers redacted unless ``show_text``);
* the report run holds the figures (images), the transfer matrices and the runs as tables, and native
  W&B charts (pass rate vs size as line series, the trade-off as a scatter plot).

Run ids are derived from the sweep and cell names, so logging again updates the same runs.
``WANDB_MODE`` defaults to ``offline`` (runs land in ``<dir>/wandb``; ``wandb sync`` uploads them):
nothing waits on a network. wandb is an optional extra, imported only here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from xtask_safety.records import redact
from xtask_safety.report import collect
from xtask_safety.report.collect import Collection

TEXT_CHARS = 400


def import_wandb() -> Any:
    from xtask_safety.train.tracking import check_trackers

    check_trackers(["wandb"])  # a one-line ConfigError naming the pip package when it is missing
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    return wandb


def run_id(group: str, name: str) -> str:
    return hashlib.sha256(f"{group}/{name}".encode()).hexdigest()[:16]


def log_to_wandb(col: Collection, report: dict[str, Any], group: str, out_dir: str | Path,
                 project: str | None = None, show_text: bool = False) -> list[str]:
    """Log every run and the report; returns the W&B run ids."""
    wandb = import_wandb()
    root = Path(os.environ.get("WANDB_DIR") or out_dir)
    root.mkdir(parents=True, exist_ok=True)
    project = project or os.environ.get("WANDB_PROJECT") or "xtask-safety"
    ids = []
    for r in col.runs:
        rid = run_id(group, r.id)
        run = wandb.init(project=project, group=group, name=r.id, id=rid, resume="allow", dir=str(root),
                         job_type="eval", reinit="finish_previous", tags=_tags(r),
                         config={"sweep": r.sweep or group, "model": r.model, "setting": r.setting,
                                 "defense_tasks": r.defense_tasks, "size_per_task": r.size_per_task,
                                 "defense_rows": r.defense_rows, "weighting": r.weighting, "seed": r.seed,
                                 "judge": col.judge, "train": r.train or {}})
        run.summary.update(metrics(col, r))
        table = records_table(wandb, r, col.judge, show_text)
        if table is not None:
            run.log({"records": table})
        run.finish()
        ids.append(rid)
    ids.append(_log_report(wandb, col, report, group, project, root))
    return ids


def _tags(r: collect.RunView) -> list[str]:
    tags = [f"model:{r.model}", f"setting:{r.setting}", f"size:{r.defense_rows}"]
    if r.weighting:
        tags.append(f"weighting:{r.weighting}")
    if r.seed is not None:
        tags.append(f"seed:{r.seed}")
    return [t[:64] for t in tags]


def metrics(col: Collection, r: collect.RunView) -> dict[str, Any]:
    out: dict[str, Any] = {"defense_rows": r.defense_rows, "size_per_task": r.size_per_task}
    for dom in col.domains:
        for task in col.eval_tasks:
            cell = collect.pass_rate([r], col.judge, [task], [dom])
            if cell:
                out[f"pass/{dom}/{task}"] = cell["rate"]
        cell = collect.pass_rate([r], col.judge, col.eval_tasks, [dom])
        if cell:
            out[f"pass/{dom}/all"] = cell["rate"]
            out[f"n/{dom}"] = cell["n"]
    benign = collect.pass_rate([r], col.judge, col.eval_tasks, col.benign)
    if benign:
        out["pass/benign/all"] = benign["rate"]
    for task in col.eval_tasks:
        cell = collect.useful_rate([r], [task], col.benign)
        if cell:
            out[f"utility/{task}"] = cell["rate"]
    for k in ("global_step", "train_loss"):
        if r.train and isinstance(r.train.get(k), (int, float)):
            out[f"train/{k}"] = r.train[k]
    return out


def records_table(wandb: Any, r: collect.RunView, judge: str, show_text: bool) -> Any:
    """Per-record results; malicious documents and answers redacted unless ``show_text``."""
    if not r.scores or not r.scores.is_file():
        return None
    cols = ["id", "task", "domain", "label", "passed", "usable", "document", "response"]
    data = []
    for line in r.scores.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        sensitive = row.get("domain") == "malicious"
        verdict = (row.get("judgements") or {}).get(judge, {})
        usable = (row.get("utility") or {}).get("ok")
        data.append([row.get("id"), row.get("task"), row.get("domain"), verdict.get("label"), verdict.get("passed"),
                     usable, redact(row.get("document"), sensitive, show_text, 80)[:TEXT_CHARS],
                     redact(row.get("response"), sensitive, show_text, 120)[:TEXT_CHARS]])
    return wandb.Table(columns=cols, data=data)


def _log_report(wandb: Any, col: Collection, report: dict[str, Any], group: str, project: str, root: Path) -> str:
    rid = run_id(group, "report")
    run = wandb.init(project=project, group=group, name=f"{group}-report", id=rid, resume="allow", dir=str(root),
                     job_type="report", reinit="finish_previous",
                     config={"sweep": group, "judge": col.judge, "eval_tasks": col.eval_tasks, "runs": len(col.runs)})
    log: dict[str, Any] = {}
    for path in report.get("figures", []):
        if Path(path).suffix == ".png":
            log[f"figures/{Path(path).stem}"] = wandb.Image(str(path))
    views = report.get("views", {})
    for kind in ("transfer", "benign_transfer"):
        for m in views.get(kind, []):
            cols = ["trained on", *m["tasks"], "all"]
            data = [[r["setting"] if r["setting"] == "base" else f"{r['setting']} n={r['defense_rows']}",
                     *((r["cells"].get(t) or {}).get("rate") for t in m["tasks"]), (r["all"] or {}).get("rate")]
                    for r in m["rows"]]
            log[f"tables/{kind}-{m['model']}" + (f"-{m['weighting']}" if m["weighting"] else "")] = wandb.Table(
                columns=cols, data=data)
    for curves in views.get("size_curves", []):
        settings = [s for s, pts in curves["settings"].items() if pts]
        if settings:
            key = f"charts/malicious-vs-size-{curves['model']}" + (f"-{curves['weighting']}" if curves["weighting"] else "")
            log[key] = wandb.plot.line_series(
                xs=[[p["defense_rows"] for p in curves["settings"][s]] for s in settings],
                ys=[[(p["malicious"] or {}).get("rate") for p in curves["settings"][s]] for s in settings],
                keys=settings, title="malicious pass rate vs defense size", xname="refusal rows")
    points = [[p["id"], p["setting"], p["defense_rows"], (p["malicious"] or {}).get("rate"), (p["benign"] or {}).get("rate")]
              for t in views.get("tradeoff", []) for p in t["points"]]
    if points:
        table = wandb.Table(columns=["run", "setting", "defense_rows", "malicious", "benign"], data=points)
        log["tables/runs"] = table
        log["charts/tradeoff"] = wandb.plot.scatter(table, "malicious", "benign", title="safety-utility trade-off")
    run.log(log)
    run.finish()
    return rid
