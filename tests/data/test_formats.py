"""The paper's evaluation and saferpaca files: import recovers document and task; export + import is lossless."""

import hashlib
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xtask_safety.data.builder import BuildConfig, build_defense_set, build_eval_grid, load_refusals
from xtask_safety.data.corpus import load_demo_corpus
from xtask_safety.data.formats import (
    PAPER_SEPARATORS,
    InstructionMatcher,
    paper_text,
    read_paper_eval_file,
    read_saferpaca,
    sidecar_path,
    write_paper_eval_file,
    write_saferpaca,
)
from xtask_safety.errors import DataError
from xtask_safety.records import Record
from xtask_safety.tasks import PAPER_VARIANTS, TASK_NAMES, TASKS

VARIANT = next(iter(PAPER_VARIANTS))  # "Summarize the above article briefly in 3 sentence."
# written out here, independently of the importer: how the released files join document and instruction
SEPARATOR = {"summarize": "", "translate": "", "sentiment": "\n", "case": "\n", "cloze": "\n\n"}


def _docs(domain, n):
    return [d for d in load_demo_corpus("main") if d.domain == domain][:n]


def _paper_eval_fixture(tmp_path, domain, n=12):
    """A file in the released layout: document, the task's separator (none for summarize/translate, one
    newline for sentiment/case, two for cloze), the task's paper instruction; the malicious set words the
    summarize instruction with "3 sentence". Cloze and case show the document the way the toolkit's grids
    do (without its last sentence; lower-cased), so pairing is checked on those shapes too."""
    truth, texts = [], []
    for doc in _docs(domain, n):
        for name in TASK_NAMES:
            task = TASKS[name]
            shown, _ = task.make_example(doc.document, doc.refs)
            instr = VARIANT if (name == "summarize" and domain == "malicious") else task.instruction()
            texts.append(shown + SEPARATOR[name] + instr)
            truth.append((shown, name, instr, doc.id))
    path = tmp_path / f"{domain}_eval.json"
    path.write_text(json.dumps({"instructions": texts, "inputs": []}, ensure_ascii=False))
    return path, truth


@pytest.mark.parametrize("domain", ["malicious", "news", "useful"])
def test_import_recovers_document_and_task_of_every_row(tmp_path, domain):
    path, truth = _paper_eval_fixture(tmp_path, domain)
    recs = read_paper_eval_file(path)  # domain from the file name
    assert len(recs) == len(truth)
    for rec, (doc, task, instr, _) in zip(recs, truth, strict=True):
        assert (rec.document, rec.task, rec.instruction, rec.domain) == (doc, task, instr, domain)
        # the model sees the row as the file holds it, and export writes the released layout back
        assert rec.prompt() == paper_text(rec) == doc + SEPARATOR[task] + instr
    # paired evaluation: the rows of one document (cloze and case included) share a doc_id
    groups = {}
    for rec, (*_, doc_id) in zip(recs, truth, strict=True):
        groups.setdefault(doc_id, set()).add(rec.meta["doc_id"])
    assert all(len(v) == 1 for v in groups.values()) and len({next(iter(v)) for v in groups.values()}) == len(groups)
    if domain == "malicious":
        assert {r.meta["phrasing"] for r in recs if r.task == "summarize"} == {"variant"}


def test_unattributed_rows_are_reported_not_dropped(tmp_path):
    doc = _docs("news", 1)[0].document
    texts = [doc + "\nSummarize the above article briefly in 3 sentences.", doc + "\nWrite a poem about this.",
             "Write the next sentence."]
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"instructions": texts, "inputs": []}))
    with pytest.raises(DataError, match=r"2 of 3 rows have no recognised task instruction \(instructions\[1\], "
                                        r"instructions\[2\]"):
        read_paper_eval_file(path, "news")
    with pytest.warns(UserWarning, match=r"instructions\[1\]"):
        recs = read_paper_eval_file(path, "news", unattributed="skip")
    assert [r.task for r in recs] == ["summarize"]
    with pytest.warns(UserWarning, match="1 of 3 rows"):  # an extra instruction the caller knows
        recs = read_paper_eval_file(path, "news", unattributed="skip",
                                    extra_instructions={"Write a poem about this.": "sentiment"})
    assert [r.task for r in recs] == ["summarize", "sentiment"] and recs[1].document == doc
    with pytest.raises(DataError, match="unknown task 'poem'"):
        read_paper_eval_file(path, "news", extra_instructions={"Write a poem about this.": "poem"})


def test_bad_eval_files(tmp_path):
    p = tmp_path / "a_news.json"
    p.write_text('{"instructions": "x", "inputs": []}')
    with pytest.raises(DataError, match="expected a JSON object with an 'instructions' list"):
        read_paper_eval_file(p)
    p.write_text('{"instructions": [1], "inputs": []}')
    with pytest.raises(DataError, match=r"instructions\[0\] must be a string"):
        read_paper_eval_file(p)
    p.write_text('{"instructions": ["a\\nWrite the next sentence."], "inputs": [')
    with pytest.raises(DataError, match=r"a_news.json:1: malformed JSON"):
        read_paper_eval_file(p)
    q = tmp_path / "nohint.json"
    q.write_text('{"instructions": ["a\\nWrite the next sentence."], "inputs": []}')
    with pytest.raises(DataError, match="cannot tell the domain"):
        read_paper_eval_file(q)
    q.write_bytes(b'{"instructions": ["\xff"], "inputs": []}')
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_paper_eval_file(q, "news")


def _grid_records():
    docs = [d for dom in ("malicious", "news", "useful") for d in _docs(dom, 4)]
    grid = build_eval_grid(docs, list(TASK_NAMES), "paper")
    grid += build_eval_grid(docs[:3], ["summarize", "case"], "heldout", layout="before")
    for i, r in enumerate(grid):  # fields the paper format cannot hold must survive too
        r.weight, r.meta = 0.5 + i % 3, {**r.meta, "note": ["x", i]}
    return grid


def test_eval_export_reimport_is_lossless(tmp_path):
    grid = _grid_records()
    path = tmp_path / "grid.json"
    assert write_paper_eval_file(path, grid) == len(grid)
    assert read_paper_eval_file(path) == grid
    # without the sidecar the paper text alone still gives back document, instruction, task and layout
    sidecar_path(path).unlink()
    bare = read_paper_eval_file(path, "any")
    assert [(r.document, r.instruction, r.task, r.layout) for r in bare] == \
           [(r.document, r.instruction, r.task, r.layout) for r in grid]


def test_stale_sidecar_is_an_error(tmp_path):
    grid = _grid_records()[:5]
    path = tmp_path / "g.json"
    write_paper_eval_file(path, grid)
    obj = json.loads(path.read_text())
    obj["instructions"][2] = obj["instructions"][2].replace(".", "!", 1)
    path.write_text(json.dumps(obj))
    with pytest.raises(DataError, match=r"g.xtask.jsonl:3: does not match row 2"):
        read_paper_eval_file(path)


def test_saferpaca_export_reimport_is_lossless(tmp_path):
    docs = load_demo_corpus("main")
    rows = build_defense_set(docs, BuildConfig(tasks=list(TASK_NAMES), malicious_per_task=3, benign_per_task=2,
                                               layout="mixed"), load_refusals())
    rows += [Record(id="instruction:a", task="instruction", domain="instruction", document="3, 1, 2",
                    instruction="Sort the numbers.", layout="before", response="1, 2, 3"),
             Record(id="instruction:b", task="instruction", domain="instruction", document="",
                    instruction="Name a colour.", response="Blue.")]
    path = tmp_path / "saferpaca_3_mixed.json"
    write_saferpaca(path, rows)
    data = json.loads(path.read_text())
    assert set(data[0]) == {"instruction", "input", "output"} and len(data) == len(rows)
    for d, r in zip(data, rows, strict=True):
        if r.task == "instruction":
            assert (d["instruction"], d["input"]) == (r.instruction, r.document)
        elif r.layout == "after":  # the paper's defense rows: the whole prompt in "instruction"
            assert (d["instruction"], d["input"]) == (r.document + SEPARATOR[r.task] + r.instruction, "")
        else:
            assert (d["instruction"], d["input"]) == (r.instruction + "\n\n" + r.document, "")
    assert read_saferpaca(path) == rows
    # without the sidecar: defense rows are recognised by their task instruction, the rest is instruction data
    sidecar_path(path).unlink()
    bare = read_saferpaca(path, min_document_words=5)
    for got, want in zip(bare, rows, strict=True):
        assert (got.task, got.document, got.instruction, got.layout, got.response) == \
               (want.task, want.document, want.instruction, want.layout, want.response)
        assert got.domain == ("instruction" if want.task == "instruction" else "malicious")


def test_saferpaca_bad_rows(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "a", "input": ""}]))
    with pytest.raises(DataError, match=r"s.json\[1\]: key 'output' missing"):
        read_saferpaca(p)


def test_matcher_prefers_the_longest_instruction_and_keeps_exact_text():
    m = InstructionMatcher()
    text = "Doc text here.Translate the above article from English to Chinese: "
    s = m.split(text)
    assert s.task == "translate" and s.instruction.endswith(": ") and s.document == "Doc text here."
    assert m.split("Doc." + VARIANT).task == "summarize"
    assert m.split("Doc with no instruction.") is None


def test_separators_match_the_released_files():
    assert PAPER_SEPARATORS == SEPARATOR


def test_junction_whitespace_stays_with_the_document():
    m = InstructionMatcher()
    # summarize/translate have no separator: a trailing newline or space is the document's own
    assert m.split(" Doc.\nSummarize the above article briefly in 3 sentences.").document == " Doc.\n"
    assert m.split("Doc. Translate the above article from English to Chinese:").document == "Doc. "
    # sentiment drops its one newline; a space before it is the document's
    s = m.split("Doc. \nHow would you describe the sentiment of this document?")
    assert (s.document, s.separator) == ("Doc. ", "\n")
    # a cloze row written with one newline (the toolkit's older layout) loses only that newline
    s = m.split("Doc.\nWrite the next sentence.")
    assert (s.document, s.separator) == ("Doc.", "\n")
    # no separator at all where the paper has one is recognised too, and remembered for export
    s = m.split("Doc.Write the above sentence using proper case.")
    assert (s.task, s.document, s.separator) == ("case", "Doc.", "")


# every instruction the importer must know: the paper's, the malicious set's variant, all phrasings
KNOWN = sorted({(t.instruction(p, "after"), n) for n, t in TASKS.items() for p in t.phrasings(True)}
               | {(text, n) for text, n in PAPER_VARIANTS.items()})
KNOWN_BEFORE = sorted({(t.instruction(p, "before"), n) for n, t in TASKS.items() for p in t.phrasings(True)})
DOCUMENTS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300).filter(str.strip)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=DOCUMENTS, known=st.sampled_from(KNOWN))
def test_any_document_joined_to_any_instruction_imports_back(doc, known):
    """The released layout (document first, the task's separator): document and task come back exactly,
    and export writes the very same string."""
    instruction, task = known
    m = InstructionMatcher()
    text = doc + SEPARATOR[task] + instruction
    s = m.split(text)
    assert s is not None and (s.task, s.document, s.instruction) == (task, doc, instruction)
    rec = Record(id="r", task=task, domain="news", document=s.document, instruction=s.instruction,
                 meta={} if s.separator == SEPARATOR[task] else {"paper_separator": s.separator})
    assert paper_text(rec) == text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=DOCUMENTS, known=st.sampled_from(KNOWN_BEFORE))
def test_any_document_after_any_instruction_imports_back(doc, known):
    """The instruction-first layout (instruction, blank line, document)."""
    instruction, task = known
    m = InstructionMatcher()
    # a document that itself ends with a known instruction reads as the other layout: not this property
    assume(not any(doc.rstrip().endswith(k.strip()) for k, _ in KNOWN))
    s = m.split(instruction + "\n\n" + doc)
    assert s is not None and (s.task, s.document, s.layout) == (task, doc, "before")


def test_sidecars_written_before_separators_were_recorded_still_import(tmp_path):
    """Older exports joined every task with one newline and their sidecars say nothing about it."""
    grid = _grid_records()[:10]
    path = tmp_path / "old.json"
    texts = [r.document + "\n" + r.instruction if r.layout == "after" else r.instruction + "\n\n" + r.document
             for r in grid]
    path.write_text(json.dumps({"instructions": texts, "inputs": []}), encoding="utf-8")
    old_rows = []
    for r, t in zip(grid, texts, strict=True):
        row = {k: v for k, v in r.to_dict().items() if k != "document"}
        old_rows.append(json.dumps({"text_sha1": hashlib.sha1(t.encode()).hexdigest()[:16], **row}))
    sidecar_path(path).write_text("\n".join(old_rows) + "\n", encoding="utf-8")
    assert read_paper_eval_file(path) == grid
