"""`xtask-safety data ...` through the console script's entry point: recipes, inspect, import/export, bad input."""

import json
from pathlib import Path

import pytest

from xtask_safety.cli import main
from xtask_safety.config import parse_recipe
from xtask_safety.data.pipeline import DataBuildArguments
from xtask_safety.data.sources import parse_sources

REPO = Path(__file__).resolve().parents[2]
DATA_RECIPES = sorted((REPO / "recipes" / "data").glob("*.yaml"))


def _run(capsys, argv):
    rc = main(["data", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err.strip()


@pytest.mark.parametrize("recipe", DATA_RECIPES, ids=lambda p: p.name)
def test_data_recipes_parse(recipe):
    (args,) = parse_recipe((DataBuildArguments,), ["--config", str(recipe)], prog="data build")
    args.validate()
    assert args.output_dir and args.sizes == sorted(args.sizes)
    assert parse_sources(args.sources)


def test_demo_recipe_builds_and_inspects(tmp_path, capsys):
    out = tmp_path / "demo"
    rc, stdout, err = _run(capsys, ["build", "--config", str(REPO / "recipes/data/demo_mix.yaml"),
                                    "--output_dir", str(out), "--sizes", "4", "8", "--mixed_sizes", "2", "4"])
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["sets"] == 5 * 2 + 2 and summary["leaks"] == 0
    rc, stdout, err = _run(capsys, ["inspect", str(out / "train" / "mixed-4.jsonl"), "--rows", "4"])
    assert rc == 0 and "mixed-4.jsonl: " in stdout and "document_words: min" in stdout
    assert "[redacted:" in stdout  # malicious documents are cut unless --show_text
    rc, stdout, _ = _run(capsys, ["inspect", str(out)])
    assert rc == 0 and "build xtask-safety demo defense sets" in stdout and "eval/grid-paper.jsonl" in stdout
    rc, stdout, _ = _run(capsys, ["inspect", str(out / "paper" / "saferpaca_4_mixed.json"), "--rows", "0"])
    assert rc == 0 and "instruction" in stdout


def test_import_export_commands(tmp_path, capsys):
    rc, _, err = _run(capsys, ["grid", "--corpus", "demo", "--split", "heldout", "--tasks", "cloze,case",
                               "--output", str(tmp_path / "g.jsonl")])
    assert rc == 0, err
    rc, _, _ = _run(capsys, ["export", "--input", str(tmp_path / "g.jsonl"), "--format", "paper_eval",
                             "--output", str(tmp_path / "g.json")])
    assert rc == 0 and (tmp_path / "g.xtask.jsonl").is_file()
    rc, _, _ = _run(capsys, ["import", "--input", str(tmp_path / "g.json"), "--format", "paper_eval",
                             "--output", str(tmp_path / "back.jsonl")])
    assert rc == 0 and (tmp_path / "back.jsonl").read_bytes() == (tmp_path / "g.jsonl").read_bytes()


def test_legacy_build_still_works(tmp_path, capsys):
    rc, stdout, err = _run(capsys, ["set", "--corpus", "demo", "--tasks", "summarize", "--malicious_per_task", "3",
                                    "--benign_per_task", "2", "--output", str(tmp_path / "t.jsonl")])
    assert rc == 0, err and json.loads(stdout)["records"] == 5


@pytest.mark.parametrize(
    "recipe, needle",
    [
        ("sources: [{path: nope.json, domain: news}]\nsizes: [2]\n", "nope.json: file not found"),
        ("sources: [{demo: main}]\nsizes: [2]\nsizez: [3]\n", "unknown recipe key(s) ['sizez']"),
        ("sources: [{demo: main, colum: x}]\nsizes: [2]\n", "sources[0]: unknown key(s) ['colum']"),
        ("sources: [{demo: main}]\nsizes: [5000]\nmixed_sizes: []\n", "sizes 5000 (single-summarize)"),
        ("sources: [{demo: main}]\nsizes: [2]\nmax_length: 64\n", "max_length: set tokenizer"),
    ],
)
def test_bad_recipes_exit_2_with_one_line(tmp_path, capsys, recipe, needle):
    r = tmp_path / "r.yaml"
    r.write_text(f"output_dir: {tmp_path / 'out'}\n" + recipe)
    rc, _, err = _run(capsys, ["build", "--config", str(r)])
    assert rc == 2 and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_inspect_and_convert_errors(tmp_path, capsys):
    rc, _, err = _run(capsys, ["inspect", str(tmp_path / "none.jsonl")])
    assert rc == 2 and "none.jsonl: not found" in err
    rc, _, err = _run(capsys, ["inspect"])
    assert rc == 2 and "expected a PATH" in err
    rc, _, err = _run(capsys, ["export", "--input", "x.jsonl", "--format", "csv", "--output", "y"])
    assert rc == 2 and "--format: invalid choice: 'csv'" in err
