"""``xtask-safety eval``: the paper's grid in one command (import, generate, score, tables), on a tiny model."""

import json
from pathlib import Path

import pytest

from xtask_safety.cli import main
from xtask_safety.evaluate import EvalArguments, pass_rate_table, resolve_settings
from xtask_safety.tasks import TASK_NAMES

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "recipes" / "eval" / "paper_grid.yaml"
CLONE = REPO / "recipes" / "eval" / "fixtures" / "paper"


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on a busy machine


def _table_rows(text: str) -> dict[str, list[str]]:
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and not line.startswith("| domain")}


def test_eval_runs_the_paper_grid_end_to_end(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    flags = ["eval", "--suite", str(SUITE), "--paper_dir", str(CLONE), "--model_name_or_path", tiny_model_dir,
             "--max_new_tokens", "3", "--max_prompt_tokens", "300", "--limit", "2", "--batch_size", "8",
             "--output_dir", str(out), "--quiet", "true"]
    assert main(flags) == 0
    printed = capsys.readouterr().out
    # the table: tasks across, the three domains down, the paper's matcher in brackets
    header = next(line for line in printed.splitlines() if line.startswith("| domain"))
    assert [c.strip() for c in header.split("|")[2:-1]] == [*TASK_NAMES, "n"]
    rows = _table_rows(printed)
    assert set(rows) == {"malicious", "news", "useful"} and all(r[-1] == "2" for r in rows.values())
    results = json.loads((out / "results.json").read_text())
    assert results["settings"] == {"max_new_tokens": 3, "max_prompt_tokens": 300, "on_too_long": "truncate"}
    gen = [json.loads(line) for line in (out / "generations" / "base.jsonl").read_text().splitlines()]
    assert len(gen) == 30 and results["runs"]["base"]["records"] == 30
    cut = sum(bool(r["meta"].get("truncated")) for r in gen)
    assert cut > 0 and results["runs"]["base"]["prompts_truncated"] == cut  # the suite's truncate setting is used
    # every cell of the printed table is the scored summary's rate, for both judges
    summary = json.loads((out / "scores" / "base" / "summary.json").read_text())
    for dom, cells in rows.items():
        for task, cell in zip(TASK_NAMES, cells, strict=False):
            rule = summary["judges"]["rule"]["cells"][task][dom]["rate"]
            paper = summary["judges"]["paper"]["cells"][task][dom]["rate"]
            assert cell == f"{100 * rule:.0f}% ({100 * paper:.0f}%)"
    assert (out / "paper_table.md").read_text().startswith("pass rate, run 'base'")
    assert json.loads((out / "import_manifest_paper.json").read_text())["rows"] == 60
    # a rerun resumes: nothing is generated again, the same table comes out
    before = (out / "generations" / "base.jsonl").read_bytes()
    assert main(flags) == 0
    assert (out / "generations" / "base.jsonl").read_bytes() == before
    assert _table_rows(capsys.readouterr().out) == rows


def test_flags_override_the_suite_settings():
    args = EvalArguments(max_new_tokens=16)
    assert resolve_settings(args, {"max_new_tokens": 128, "on_too_long": "truncate"}) == {
        "max_new_tokens": 16, "max_prompt_tokens": None, "on_too_long": "truncate"}
    assert resolve_settings(EvalArguments(), {}) == {"max_new_tokens": 64, "max_prompt_tokens": None,
                                                     "on_too_long": "error"}


def test_table_has_one_block_per_run():
    cell = {"n": 4, "rate": 0.25}
    summary = {"judges": {j: {"cells": {t: {d: cell for d in ("useful", "malicious")} for t in TASK_NAMES}}
                          for j in ("paper", "rule")}}
    text = pass_rate_table({"base": summary, "d100": summary}, "rule", ["paper", "rule"])
    assert "run 'base'" in text and "run 'd100'" in text
    domains = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")
               and not line.startswith("| domain")]
    assert domains == ["malicious", "useful"] * 2  # the paper's domain order, whatever the summary's


@pytest.mark.parametrize("extra, needle", [
    (["--paper_dir", "/nonexistent/clone"], "/nonexistent/clone: not a directory"),
    (["--adapters", "d100"], "--adapters: expected NAME=DIR"),
    (["--adapters", "d100=/nonexistent/adapter"], "/nonexistent/adapter"),
    (["--backend", "onnx"], "--backend: invalid choice: 'onnx'"),
    (["--on_too_long", "cut"], "invalid choice: 'cut'"),
    (["--primary_judge", "llm"], "primary_judge: 'llm' is not among judges"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, needle):
    out = tmp_path / "eval"
    assert main(["eval", "--suite", str(SUITE), "--output_dir", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, tiny_model_dir) -> str:
    """A LoRA adapter for the tiny model with random (non-zero) weights, so its answers differ from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("tiny-adapter")
    model.save_pretrained(out)
    return str(out)


def test_eval_answers_with_the_base_model_and_every_adapter(tiny_model_dir, tiny_adapter, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--suite", str(SUITE), "--model_name_or_path", tiny_model_dir, "--adapters",
                 f"d4={tiny_adapter}", "--max_new_tokens", "3", "--limit", "1", "--output_dir", str(out),
                 "--quiet", "true"]) == 0
    printed = capsys.readouterr().out
    assert "run 'base'" in printed and "run 'd4'" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"base", "d4"} and all(r["records"] == 15 for r in results["runs"].values())
    base, d4 = ([json.loads(x) for x in (out / "generations" / f"{n}.jsonl").read_text().splitlines()]
                for n in ("base", "d4"))
    assert [r["meta"]["generation"]["adapter"] for r in (base[0], d4[0])] == [None, tiny_adapter]
    assert [r["response"] for r in base] != [r["response"] for r in d4]
    assert (out / "scores" / "d4" / "summary.json").is_file()
