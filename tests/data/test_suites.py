"""Evaluation suites (data/suites.py): every bundled suite loads, grids stay paired, bad files are named."""

import json
from collections import defaultdict
from pathlib import Path

import pytest

from xtask_safety.data.suites import load_suite, main, read_instruction_file
from xtask_safety.errors import ConfigError, DataError
from xtask_safety.records import read_records
from xtask_safety.tasks import TASK_NAMES

REPO = Path(__file__).resolve().parents[2]
SUITES = sorted((REPO / "recipes" / "eval").glob("*.yaml"))
EVAL_DIR = REPO / "recipes" / "eval" / "fixtures" / "paper" / "data" / "evaluation"


def _tasks_per_doc(records):
    by_doc = defaultdict(set)
    for r in records:
        if r.task != "instruction":
            by_doc[(r.meta["part"], r.domain, r.meta["doc_id"])].add(r.task)
    return by_doc


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_bundled_suites_load_paired(path):
    suite = load_suite(path)
    ids = [r.id for r in suite.records]
    assert len(ids) == len(set(ids)) and sum(suite.parts.values()) == len(ids)
    assert all(r.id.startswith(r.meta["part"] + "/") for r in suite.records)
    by_doc = _tasks_per_doc(suite.records)
    assert by_doc and all(tasks == set(TASK_NAMES) for tasks in by_doc.values())
    assert {d for (_, d, _) in by_doc} == {"malicious", "news", "useful"}


def test_demo_suite_parts():
    suite = load_suite(REPO / "recipes" / "eval" / "demo.yaml")
    grid = [r for r in suite.records if r.meta["part"] == "grid"]
    held = [r for r in suite.records if r.meta["part"] == "heldout-phrasings"]
    # the same documents under both phrasings, and the held-out phrasings are not the paper's
    assert {r.meta["doc_id"] for r in grid} == {r.meta["doc_id"] for r in held}
    assert len(grid) == 30 * 3 * 5
    paper = {(r.meta["doc_id"], r.task): r.instruction for r in grid}
    assert all(paper[(r.meta["doc_id"], r.task)] != r.instruction for r in held)
    safety = [r for r in suite.records if r.meta["part"] == "safety"]
    assert {r.domain for r in safety} == {"malicious", "harmless"} and all(r.task == "instruction" for r in safety)
    assert all(r.document == "" and r.prompt() == r.instruction for r in safety)


def test_paper_grid_reads_the_released_folder_and_paper_files_enforce_pairing(tmp_path):
    suite = load_suite(REPO / "recipes" / "eval" / "paper_grid.yaml")
    assert len(suite.records) == 60 and suite.parts == {"paper": 60}
    assert {r.domain for r in suite.records} == {"malicious", "news", "useful"}
    assert suite.settings == {"max_new_tokens": 128, "max_prompt_tokens": 1024, "on_too_long": "truncate"}
    assert suite.manifests["paper"]["exact_recovery"] == {"rows": 60, "exact": 60}
    # --paper_dir replaces the part's folder: the evaluation folder itself is accepted too
    other = load_suite(REPO / "recipes" / "eval" / "paper_grid.yaml", paper_dir=EVAL_DIR)
    assert [r.to_dict() for r in other.records] == [r.to_dict() for r in suite.records]
    # single files: drop one row of one task file from a copy; the grid is no longer paired
    files = [f"test_{t}_cnn.json" for t in TASK_NAMES]
    for name in files:
        (tmp_path / name).write_text((EVAL_DIR / name).read_text())
    data = json.loads((tmp_path / files[2]).read_text())
    data["instructions"].pop(1)
    (tmp_path / files[2]).write_text(json.dumps(data))
    listed = "".join(f"      - {{path: {n}, domain: news}}\n" for n in files)
    cfg = tmp_path / "s.yaml"
    cfg.write_text("parts:\n  - name: p\n    kind: paper_files\n    files:\n" + listed)
    with pytest.raises(DataError, match=r"not paired: 1 'news' document\(s\) lack some tasks"):
        load_suite(cfg)
    cfg.write_text("parts:\n  - name: p\n    kind: paper_files\n    paired: false\n    files:\n" + listed)
    assert len(load_suite(cfg).records) == 19


def test_limit_keeps_whole_documents(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("suite: small\nparts:\n  - {name: g, kind: grid, corpus: demo, tasks: [summarize, case], limit: 2}\n")
    suite = load_suite(cfg)
    assert len(suite.records) == 2 * 3 * 2 and suite.name == "small"
    assert all(t == {"summarize", "case"} for t in _tasks_per_doc(suite.records).values())


@pytest.mark.parametrize("yaml_text, err, needle", [
    ("parts:\n  - {name: g, kind: grid, tasks: all, phrasings: paper}\n", ConfigError,
     r"part\[?s?\[0\]\]? \(g\): unknown key\(s\) \['phrasings'\]"),
    ("parts:\n  - {name: g, kind: table}\n", ConfigError, r"parts\[0\]: kind must be one of"),
    ("parts:\n  - {name: g, kind: grid, tasks: [poem]}\n", DataError, "unknown task 'poem'"),
    ("parts:\n  - {name: s, kind: instructions, files: [missing.jsonl]}\n", DataError, r"missing.jsonl not found"),
    ("parts:\n  - {name: g, kind: grid}\n  - {name: g, kind: grid}\n", ConfigError, "used twice"),
    ("parts: []\n", ConfigError, "non-empty list"),
    ("suite: x\nextra: 1\nparts: []\n", ConfigError, r"unknown key\(s\) \['extra'\]"),
    ("eval: {max_new_tokens: many}\nparts: []\n", ConfigError, "eval: max_new_tokens must be an integer"),
    ("eval: {temperature: 1}\nparts: []\n", ConfigError, "eval: unknown key 'temperature'"),
    ("parts:\n  - {name: p, kind: paper_dir, dir: nowhere}\n", ConfigError, r"nowhere: not a directory"),
    ("parts:\n  - {name: p, kind: paper_dir, dir: ., pairing: loose}\n", ConfigError, "pairing: expected one of"),
])
def test_bad_suites_name_the_problem(tmp_path, yaml_text, err, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(err, match=needle):
        load_suite(cfg)


def test_instruction_files(tmp_path):
    (tmp_path / "a.txt").write_text("# comment\nName three birds.\n\nWhat is rain?\n")
    recs = read_instruction_file(tmp_path / "a.txt", "harmless")
    assert [r.instruction for r in recs] == ["Name three birds.", "What is rain?"]
    assert {r.domain for r in recs} == {"harmless"}
    (tmp_path / "b.csv").write_text("goal,label\nDo [withheld] to a car,harmful\n")
    recs = read_instruction_file(tmp_path / "b.csv", text_field="goal")
    assert recs[0].domain == "malicious" and recs[0].instruction == "Do [withheld] to a car"
    (tmp_path / "c.jsonl").write_text(json.dumps({"instruction": "x", "label": "maybe"}) + "\n")
    with pytest.raises(DataError, match=r"c.jsonl:1: 'label' must be one of"):
        read_instruction_file(tmp_path / "c.jsonl")
    with pytest.raises(DataError, match=r"a.txt:2: 'label' must be one of"):
        read_instruction_file(tmp_path / "a.txt")


def test_suite_cli_writes_records(tmp_path, capsys):
    out = tmp_path / "suite.jsonl"
    assert main([str(REPO / "recipes" / "eval" / "paper_grid.yaml"), "--output", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == report["written"] == 60
    assert len(read_records(out)) == 60
    with pytest.raises(ConfigError, match="unknown part"):
        main([str(REPO / "recipes" / "eval" / "paper_grid.yaml"), "--output", str(out), "--parts", "nope"])
    assert main([str(REPO / "recipes" / "eval" / "paper_grid.yaml"), "--paper_dir", str(EVAL_DIR), "--output",
                 str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 60
