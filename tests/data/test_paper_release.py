"""The paper's released data folder: all 15 evaluation files at once, pairing, manifest, export; saferpaca files."""

import json
import shutil
from pathlib import Path

import pytest

from xtask_safety.cli import main
from xtask_safety.data.builder import BuildConfig, build_defense_set, load_refusals
from xtask_safety.data.corpus import load_demo_corpus
from xtask_safety.data.formats import read_paper_eval_file, write_saferpaca
from xtask_safety.data.paper_release import export_eval_dir, import_eval_dir, import_saferpaca_release
from xtask_safety.errors import ConfigError, DataError
from xtask_safety.records import read_records
from xtask_safety.tasks import TASK_NAMES

REPO = Path(__file__).resolve().parents[2]
CLONE = REPO / "recipes" / "eval" / "fixtures" / "paper"
EVAL_DIR = CLONE / "data" / "evaluation"
TRAIN_FILE = CLONE / "data" / "training" / "saferpaca_Instructions_100_4_summarize.json"
# The released layout, written out here independently of the importer.
INSTRUCTION = {"summarize": "Summarize the above article briefly in 3 sentences.",
               "translate": "Translate the above article from English to Chinese: ",
               "sentiment": "How would you describe the sentiment of this document?",
               "cloze": "Write the next sentence.", "case": "Write the above sentence using proper case."}
MALICIOUS_SUMMARIZE = "Summarize the above article briefly in 3 sentence."
SEPARATOR = {"summarize": "", "translate": "", "sentiment": "\n", "case": "\n", "cloze": "\n\n"}
SUFFIX = {"malicious": "", "news": "_cnn", "useful": "_useful"}


def _expected(domain: str, task: str) -> list[str]:
    """The documents of one fixture file, cut off its strings with the literal layout above."""
    texts = json.loads((EVAL_DIR / f"test_{task}{SUFFIX[domain]}.json").read_text(encoding="utf-8"))["instructions"]
    instr = MALICIOUS_SUMMARIZE if (domain, task) == ("malicious", "summarize") else INSTRUCTION[task]
    tail = SEPARATOR[task] + instr
    assert all(t.endswith(tail) for t in texts)
    return [t[: -len(tail)] for t in texts]


@pytest.mark.parametrize("folder", [CLONE, EVAL_DIR], ids=["clone root", "evaluation folder"])
def test_fixture_folder_imports_completely(folder):
    result = import_eval_dir(folder)
    recs, m = result.records, result.manifest
    assert len(m["files"]) == 15 and not m["missing_files"] and not m["ignored_files"]
    assert len(recs) == m["rows"] == m["rows_attributed"] == 60
    assert m["counts"] == {t: {"malicious": 4, "news": 4, "useful": 4} for t in TASK_NAMES}
    # every row attributed to the task and domain of its file, its document exact
    for r in recs:
        name = f"test_{r.task}{SUFFIX[r.domain]}.json"
        assert r.meta["paper_file"] == name and r.source == name
        assert r.document == _expected(r.domain, r.task)[r.meta["paper_row"]]
        assert r.meta["doc_id"] == f"{r.domain}-{r.meta['paper_row']:03d}" and r.id == f"{r.meta['doc_id']}:{r.task}"
    # one id per document, shared by its five task rows
    by_doc = {}
    for r in recs:
        by_doc.setdefault(r.meta["doc_id"], set()).add((r.task, r.document))
    assert len(by_doc) == 12 and all(len({t for t, _ in v}) == 5 and len({d for _, d in v}) == 1
                                     for v in by_doc.values())
    assert m["exact_recovery"] == {"rows": 60, "exact": 60}
    assert m["phrasings"] == {"paper": 56, "variant": 4}
    assert m["documents_with_leading_whitespace"]["malicious"] == 3  # as in the released malicious set
    assert m["pairing"]["mismatches"] == m["pairing"]["whitespace_only"] == 0
    assert {f["file"] for f in m["files"]} == {p.name for p in EVAL_DIR.glob("test_*.json")}
    # the model is shown each row exactly as the released file holds it (the reference code's prompt)
    for r in recs:
        texts = json.loads((EVAL_DIR / r.meta["paper_file"]).read_text(encoding="utf-8"))["instructions"]
        assert r.prompt() == texts[r.meta["paper_row"]]


def test_single_files_import_with_the_domain_from_the_file_name():
    recs = read_paper_eval_file(EVAL_DIR / "test_cloze.json")
    assert {r.domain for r in recs} == {"malicious"} and [r.document for r in recs] == _expected("malicious", "cloze")
    assert {r.domain for r in read_paper_eval_file(EVAL_DIR / "test_case_cnn.json")} == {"news"}


def test_export_reproduces_the_released_files_byte_for_byte(tmp_path):
    recs = import_eval_dir(CLONE).records
    written = export_eval_dir(recs, tmp_path / "evaluation")
    assert written == {p.name: 4 for p in EVAL_DIR.glob("test_*.json")}
    for p in EVAL_DIR.glob("test_*.json"):
        assert (tmp_path / "evaluation" / p.name).read_bytes() == p.read_bytes()


def _copy(tmp_path) -> Path:
    dst = tmp_path / "clone" / "data" / "evaluation"
    shutil.copytree(EVAL_DIR, dst)
    return tmp_path / "clone"


def _edit(path: Path, row: int, fn) -> None:
    obj = json.loads(path.read_text(encoding="utf-8"))
    obj["instructions"][row] = fn(obj["instructions"][row])
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def test_pairing_mismatches_are_reported_by_file_and_row(tmp_path):
    clone = _copy(tmp_path)
    folder = clone / "data" / "evaluation"
    _edit(folder / "test_case_cnn.json", 3, lambda t: t.replace("photographer", "painter", 1))
    with pytest.raises(DataError, match=r"test_case_cnn.json: instructions\[3\]: document differs from "
                                        r"test_summarize_cnn.json instructions\[3\] \(first difference at character"):
        import_eval_dir(clone)
    m = import_eval_dir(clone, pairing="report").manifest
    assert m["pairing"]["mismatches"] == 1 and "test_case_cnn.json: instructions[3]" in m["pairing"]["details"][0]
    # whitespace-only differences are accepted, counted, and each row keeps its own exact text
    _edit(folder / "test_case_cnn.json", 3, lambda t: t.replace("painter", "photographer", 1).replace(". ", ".  ", 1))
    result = import_eval_dir(clone)
    assert result.manifest["pairing"]["whitespace_only"] == 1
    assert result.manifest["exact_recovery"] == {"rows": 60, "exact": 60}


@pytest.mark.parametrize("change, needle", [
    (lambda t: t.replace("Write the next sentence.", "Write a poem."),
     r"test_cloze_useful.json: instructions\[1\]: no recognised task instruction"),
    (lambda t: t.replace("Write the next sentence.", "How would you describe the sentiment of this document?"),
     r"test_cloze_useful.json: instructions\[1\]: the instruction .* is a sentiment instruction, but the file name "
     r"says cloze"),
])
def test_bad_rows_name_the_file_and_row(tmp_path, change, needle):
    clone = _copy(tmp_path)
    _edit(clone / "data" / "evaluation" / "test_cloze_useful.json", 1, change)
    with pytest.raises(DataError, match=needle):
        import_eval_dir(clone)


def test_row_counts_must_agree_and_missing_files_are_listed(tmp_path):
    clone = _copy(tmp_path)
    folder = clone / "data" / "evaluation"
    (folder / "test_translate_useful.json").unlink()
    (folder / "notes.json").write_text("{}")
    m = import_eval_dir(clone).manifest
    assert m["missing_files"] == ["test_translate_useful.json"] and m["ignored_files"] == ["notes.json"]
    assert m["rows"] == 56
    obj = json.loads((folder / "test_case.json").read_text())
    obj["instructions"].pop()
    (folder / "test_case.json").write_text(json.dumps(obj))
    with pytest.raises(DataError, match=r"the malicious task files hold different numbers of rows"):
        import_eval_dir(clone)
    with pytest.raises(DataError, match="no evaluation files"):
        import_eval_dir((tmp_path / "empty").mkdir() or tmp_path / "empty")
    with pytest.raises(ConfigError, match="not a directory"):
        import_eval_dir(tmp_path / "nowhere")


def test_cli_imports_the_folder_with_a_manifest(tmp_path, capsys):
    out = tmp_path / "paper.jsonl"
    assert main(["data", "import", "--paper_dir", str(CLONE), "--output", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 60 and report["files"] == 15 and report["exact_recovery"]["exact"] == 60
    recs = read_records(out)
    assert recs == import_eval_dir(CLONE).records
    manifest = json.loads((tmp_path / "paper.manifest.json").read_text())
    assert manifest["rows"] == 60 and "Fu et al. 2024" in manifest["attribution"]
    # and back: the toolkit's records export to the released layout
    assert main(["data", "export", "--format", "paper_dir", "--input", str(out), "--output", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "test_summarize.json").read_bytes() == (EVAL_DIR / "test_summarize.json").read_bytes()


def test_cli_bad_folder_is_one_line_exit_2_nothing_written(tmp_path, capsys):
    clone = _copy(tmp_path)
    _edit(clone / "data" / "evaluation" / "test_sentiment.json", 3, lambda t: t[: -len(INSTRUCTION["sentiment"])])
    out = tmp_path / "out" / "paper.jsonl"
    assert main(["data", "import", "--paper_dir", str(clone), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "test_sentiment.json: instructions[3]" in err
    assert not out.exists() and not (tmp_path / "out" / "paper.manifest.json").exists()


# ------------------------------------------------------------------------------------ training files


def test_released_training_file_rows_are_attributed():
    result = import_saferpaca_release(TRAIN_FILE)
    m = result.manifest
    assert m["rows"] == 120 and m["roles"] == {"instruction": 16, "safety": 100, "defense": 4}
    assert m["expected"] == {"safety": 100, "defense": 4, "task": "summarize"} and m["notes"] == []
    rows = json.loads(TRAIN_FILE.read_text(encoding="utf-8"))
    defense = [r for r in result.records if r.meta["role"] == "defense"]
    demo = [d.document for d in load_demo_corpus("main") if d.domain == "malicious"][:4]
    assert [r.document for r in defense] == demo and {r.task for r in defense} == {"summarize"}
    assert all(r.domain == "malicious" for r in result.records if r.meta["role"] in ("defense", "safety"))
    for rec, row in zip(result.records, rows, strict=True):
        assert rec.response == row["output"]
        if rec.meta["role"] == "instruction":
            assert (rec.instruction, rec.document) == (row["instruction"], row["input"])


def test_counts_that_disagree_with_the_file_name_are_noted(tmp_path, capsys):
    rows = json.loads(TRAIN_FILE.read_text(encoding="utf-8"))
    path = tmp_path / "saferpaca_Instructions_100_5_translate.json"
    path.write_text(json.dumps(rows[:-1]), encoding="utf-8")
    notes = import_saferpaca_release(path).manifest["notes"]
    assert notes == ["3 defense rows found, the file name says 5",
                     "defense rows of ['summarize'] in a file named for translate"]
    out = tmp_path / "train.jsonl"
    assert main(["data", "import", "--format", "saferpaca", "--input", str(path), "--output", str(out)]) == 0
    assert "3 defense rows found, the file name says 5" in capsys.readouterr().err
    assert json.loads((tmp_path / "train.manifest.json").read_text())["roles"]["safety"] == 100


def test_a_toolkit_set_exports_to_the_released_training_layout(tmp_path):
    docs = load_demo_corpus("main")
    rows = build_defense_set(docs, BuildConfig(tasks=["summarize"], malicious_per_task=6, benign_per_task=0,
                                               phrasings="paper"), load_refusals())
    path = tmp_path / "saferpaca_Instructions_0_6_summarize.json"
    write_saferpaca(path, rows, sidecar=False)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert all(d["input"] == "" and d["instruction"] == r.document + r.instruction for d, r in
               zip(data, rows, strict=True))  # the released layout: no separator before "Summarize"
    result = import_saferpaca_release(path)
    assert result.manifest["roles"]["defense"] == 6 and result.manifest["notes"] == []
    assert [r.document for r in result.records] == [r.document for r in rows]


def test_inspect_redacts_the_released_malicious_files(capsys):
    assert main(["data", "inspect", str(EVAL_DIR / "test_summarize.json"), "--rows", "1"]) == 0
    out = capsys.readouterr().out
    assert "summarize/malicious" in out and "[redacted:" in out
    assert _expected("malicious", "summarize")[0].strip()[-40:] not in out
