"""Sweep comparison on synthetic runs with known pass rates: transfer matrix, size curves, report, W&B."""

import importlib.util
import json
from pathlib import Path

import pytest

from xtask_safety.cli import main as cli_main
from xtask_safety.errors import ConfigError
from xtask_safety.report import collect
from xtask_safety.score.run import summarize

TASKS = ["summarize", "translate", "cloze"]
SECRET = "SECRET-TAIL-THAT-MUST-NOT-LEAK"
N = 10  # documents per domain


def _rows(mal: dict[str, float], benign: float) -> list[dict]:
    """Scored rows: per task, N malicious documents passing at ``mal[task]``, N news and N useful at ``benign``."""
    rows = []
    for task in TASKS:
        for dom in ("malicious", "news", "useful"):
            rate = mal.get(task, 1.0) if dom == "malicious" else benign
            for k in range(N):
                passed = k < round(rate * N)
                doc = f"Document {k} of the {dom} set. " + "Filler words follow here. " * 4 + (SECRET if dom == "malicious" else "")
                verdict = {"label": "comply" if passed else "refuse", "passed": passed, "reason": ""}
                rows.append({"id": f"{dom}{k}:{task}", "task": task, "domain": dom, "document": doc,
                             "instruction": "Do it.", "response": ("Here it is. " if passed else "I can't. ")
                             + ("More words. " * 12 + SECRET) * (dom == "malicious"),
                             "judgements": {"rule": verdict, "paper": dict(verdict)}, "utility": {"ok": passed}})
    return rows


RUNS = {  # id: (setting, size per task, malicious pass rate per task, benign pass rate)
    "m__base": ("base", 0, {}, 1.0),
    "m__summarize-n10-uniform-s0": ("summarize", 10, {"summarize": 0.2, "translate": 0.8, "cloze": 0.9}, 0.9),
    "m__summarize-n100-uniform-s0": ("summarize", 100, {"summarize": 0.0, "translate": 0.5, "cloze": 0.6}, 0.8),
    "m__mixed-n20-uniform-s0": ("mixed", 20, {"summarize": 0.1, "translate": 0.1, "cloze": 0.1}, 0.7),
}


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    root = tmp_path / "sweep"
    (root / "cells").mkdir(parents=True)
    for rid, (setting, size, mal, benign) in RUNS.items():
        rows = _rows(mal, benign)
        scores = root / "scores" / rid / "scored.jsonl"
        scores.parent.mkdir(parents=True)
        scores.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tasks = [] if setting == "base" else TASKS if setting == "mixed" else [setting]
        cell = {"id": rid, "model": "/w/m", "model_short": "m", "setting": setting, "defense_tasks": tasks,
                "size_per_task": size, "defense_rows": size * len(tasks), "weighting": None if setting == "base" else "uniform",
                "seed": None if setting == "base" else 0, "sweep": "synthetic", "summary": summarize(rows, primary="rule"),
                "train": None if setting == "base" else {"global_step": 3, "train_loss": 1.25},
                "paths": {"scores": f"scores/{rid}/scored.jsonl"}, "timings_s": {"generate": 1.0, "score": 0.1}}
        (root / "cells" / f"{rid}.json").write_text(json.dumps(cell))
    return root


def test_transfer_matrix_and_size_curves_hold_the_known_rates(sweep_dir):
    col = collect.load_runs([str(sweep_dir)])
    assert col.eval_tasks == TASKS and col.domains == ["malicious", "news", "useful"]
    m = collect.transfer_matrix(col, "m", "uniform")
    assert [(r["setting"], r["defense_rows"]) for r in m["rows"]] == [("base", 0), ("summarize", 100), ("mixed", 60)]
    summ = m["rows"][1]
    assert summ["cells"]["summarize"]["rate"] == 0.0 and summ["cells"]["translate"]["rate"] == 0.5
    assert summ["all"]["n"] == 3 * N and summ["all"]["passed"] == 11
    assert m["rows"][0]["all"]["rate"] == 1.0 and m["rows"][2]["cells"]["cloze"]["rate"] == 0.1
    small = collect.transfer_matrix(col, "m", "uniform", size="10")
    assert [r["setting"] for r in small["rows"]] == ["base", "summarize"]
    benign = collect.transfer_matrix(col, "m", "uniform", domains=col.benign)
    assert benign["rows"][1]["all"]["rate"] == 0.8 and benign["rows"][1]["all"]["n"] == 2 * 3 * N

    curves = collect.size_curves(col, "m", "uniform")
    pts = curves["settings"]["summarize"]
    assert [p["defense_rows"] for p in pts] == [10, 100] and [p["malicious"]["rate"] for p in pts] == [0.2, 0.0]
    assert curves["base"]["summarize"]["malicious"]["rate"] == 1.0
    lo, hi = pts[0]["malicious"]["ci95"]
    assert 0.05 < lo < 0.2 < hi < 0.55  # Wilson interval for 2/10
    util = collect.utility_curves(col, "m", "uniform")
    assert [p["useful"]["rate"] for p in util["tasks"]["cloze"]["summarize"]] == [0.9, 0.8]
    pts = {p["id"]: p for p in collect.tradeoff_points(col, "m")}
    assert pts["m__mixed-n20-uniform-s0"]["malicious"]["rate"] == pytest.approx(0.1)


def test_report_files_open_and_redact_malicious_text(sweep_dir, tmp_path):
    from PIL import Image

    out = tmp_path / "report"
    assert cli_main(["report", str(sweep_dir), "--output_dir", str(out), "--examples", "2"]) == 0
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "| summarize (n=100) | 0% [0%–28%] | 50% [24%–76%] | 60% [31%–83%] | 37% [22%–54%] |" in md
    assert html.count("<table>") >= 6 and "<td>summarize (n=100)</td>" in html and "<img src=\"figures/" in html
    for png in sorted((out / "figures").glob("*.png")):
        with Image.open(png) as im:
            im.verify()
        assert png.with_suffix(".svg").is_file()
    assert {p.stem for p in (out / "figures").glob("*.png")} == {"transfer-m", "size-curve-m", "tradeoff", "utility-m"}
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 4 and results["views"]["transfer"][0]["rows"][1]["setting"] == "summarize"
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(errors="ignore"), f
    assert "[redacted:" in md
    assert cli_main(["report", str(sweep_dir), "--output_dir", str(tmp_path / "shown"), "--show_text", "true"]) == 0
    assert SECRET in (tmp_path / "shown" / "report.md").read_text()


def test_bad_report_inputs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", "--output_dir", str(tmp_path / "o")]) == 2
    assert cli_main(["report", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "give one or more run folders" in err[0] and "is not a sweep folder" in err[1]


def test_wandb_missing_is_a_clear_error(sweep_dir, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install wandb"):
        from xtask_safety.report.wandb_log import import_wandb

        import_wandb()
    assert cli_main(["report", str(sweep_dir), "--output_dir", str(tmp_path / "o"), "--report_to", "wandb"]) == 2
    assert "wandb" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed")
def test_wandb_logs_offline_runs_grouped_by_sweep_with_redacted_tables(sweep_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    out = tmp_path / "report"
    assert cli_main(["report", str(sweep_dir), "--output_dir", str(out), "--report_to", "wandb",
                     "--examples", "0"]) == 0
    runs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == len(RUNS) + 1  # one per run and the report run
    blobs = b"".join(f.read_bytes() for r in runs for f in r.rglob("*") if f.is_file())
    for key in (b"pass/malicious/summarize", b"utility/cloze", b"synthetic", b"records", b"figures/tradeoff",
                b"charts/tradeoff", b"defense_rows"):
        assert key in blobs, key
    assert SECRET.encode() not in blobs  # malicious text is redacted in the per-record tables
