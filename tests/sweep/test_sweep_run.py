"""A sweep on the tiny model end to end; a second invocation runs nothing; the report opens."""

import json

from sweep_helpers import actions, by_invocation, events, write_sweep

from xtask_safety.cli import main as cli_main
from xtask_safety.sweep.cli import run_sweep

CELLS = ["tiny__base", "tiny__summarize-n2-uniform-s0", "tiny__summarize-n4-uniform-s0", "tiny__mixed-n1-uniform-s0"]


def _png_ok(path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100


def test_sweep_end_to_end_then_a_rerun_does_no_work(tiny_model_dir, small_corpus, tmp_path, capsys):
    import os
    import shutil

    model = tmp_path / "tiny"  # a copy named 'tiny', so cell ids are predictable
    shutil.copytree(tiny_model_dir, model)
    cfg = write_sweep(tmp_path, str(model), small_corpus, train_overrides={"max_steps": 1})
    out = tmp_path / "sweep"

    first = run_sweep(["--config", str(cfg)])["outcome"]
    assert first.missing == [] and sorted(first.finished) == sorted(CELLS)
    c = first.counters
    assert (c["train_run"], c["generate_run"], c["score_run"], c["cell_run"], c["data_run"]) == (3, 4, 4, 4, 1)

    results = json.loads((out / "sweep_results.json").read_text())
    assert [r["id"] for r in results["runs"]] == CELLS
    runs = {r["id"]: r for r in results["runs"]}
    mixed = runs["tiny__mixed-n1-uniform-s0"]
    assert mixed["defense_tasks"] == ["summarize", "cloze"] and mixed["defense_rows"] == 2
    assert mixed["train"]["global_step"] == 1 and runs["tiny__base"]["train"] is None
    # 2 documents x 3 domains x 2 tasks, every judge scored
    assert mixed["summary"]["n_records"] == 12 and set(mixed["summary"]["judges"]) == {"paper", "rule"}
    assert (out / mixed["paths"]["adapter"] / "adapter_model.safetensors").is_file()
    recipe = (out / mixed["paths"]["adapter"] / "sweep_recipe.yaml").read_text()
    assert "train/mixed-1.jsonl" in recipe and "resume: true" in recipe

    report = out / "report"
    md, html = (report / "report.md").read_text(), (report / "report.html").read_text()
    assert "Cross-task transfer" in md and "| summarize (n=4) |" in md and "| mixed (n=2) |" in md
    assert html.count("<table>") >= 5 and "<th>cloze</th>" in html and "summarize (n=4)" in html
    for stem in ("transfer-tiny", "size-curve-tiny", "tradeoff", "utility-tiny"):
        _png_ok(report / "figures" / f"{stem}.png")
        assert (report / "figures" / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    saved = json.loads((report / "results.json").read_text())
    assert [r["setting"] for r in saved["views"]["transfer"][0]["rows"]] == ["base", "summarize", "mixed"]

    # The second invocation finds every cell finished: no model is loaded, nothing trains or generates.
    capsys.readouterr()
    second = run_sweep(["--config", str(cfg)])["outcome"]
    assert second.counters == {"cell_reused": 4}
    assert "training" not in capsys.readouterr().out
    last = by_invocation(events(out))[-1]
    assert actions(last, "train") == {} and actions(last, "generate") == {}

    # A changed generation setting re-generates and re-scores, but reuses the trained adapters.
    third = run_sweep(["--config", str(cfg), "--max_new_tokens", "3", "--report", "false"])["outcome"]
    assert third.counters.get("train_reused") == 3 and "train_run" not in third.counters
    assert third.counters["generate_run"] == 4

    # `xtask-safety report` on the sweep folder, as a user would run it
    assert cli_main(["report", str(out), "--output_dir", str(tmp_path / "rep"), "--examples", "1"]) == 0
    assert (tmp_path / "rep" / "report.html").is_file() and (tmp_path / "rep" / "figures" / "tradeoff.svg").is_file()
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "[redacted:" in text or "malicious documents and answers redacted" in text
    assert not any(p.name.startswith(".") for p in (tmp_path / "rep").rglob("*")), os.listdir(tmp_path / "rep")
