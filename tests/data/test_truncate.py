"""Document-aware truncation with the embedded model's tokenizer: the instruction and the answer stay whole."""

import pytest

from xtask_safety.data.builder import BuildConfig, build_defense_set, load_refusals
from xtask_safety.data.corpus import load_demo_corpus
from xtask_safety.data.truncate import cut_words, make_length_fn, truncate_rows
from xtask_safety.records import Record
from xtask_safety.tasks import TASK_NAMES, TASKS


@pytest.fixture(scope="module")
def tokenizer(embedded_path):
    from xtask_safety.models import load_tokenizer

    return load_tokenizer(embedded_path)


def _rows():
    rows = build_defense_set(load_demo_corpus("main"), BuildConfig(tasks=list(TASK_NAMES), malicious_per_task=6,
                             benign_per_task=6, layout="mixed"), load_refusals())
    long_input = " ".join(f"Item {i} is listed here." for i in range(150))
    rows.append(Record(id="instruction:long", task="instruction", domain="instruction", document=long_input,
                       instruction="Count the items.", layout="before", response="There are 150 items."))
    rows.append(Record(id="instruction:huge", task="instruction", domain="instruction", document="",
                       instruction="Repeat: " + "word " * 400, response="ok"))
    return rows


def test_cut_words_modes():
    text = "one two  three four five six"
    assert cut_words(text, 2, "head") == "one two"
    assert cut_words(text, 2, "tail") == "five six"
    assert cut_words(text, 4, "head_tail", 0.5, " … ") == "one two … five six"
    assert cut_words(text, 9, "head") == text


@pytest.mark.parametrize("mode", ["head", "head_tail"])
def test_truncation_keeps_instruction_and_answer(tokenizer, mode):
    rows = _rows()
    measure = make_length_fn(tokenizer, "chat")
    before = dict(zip([r.id for r in rows], measure(rows), strict=True))
    max_length = 256
    out, report = truncate_rows(rows, measure, max_length, mode, reserve_tokens=8)
    assert report.dropped == ["instruction:huge"]  # its instruction alone is too long: dropped, reported
    assert report.shortened == sum(n > max_length - 8 for rid, n in before.items() if rid != "instruction:huge")
    assert report.shortened >= 10
    assert max(measure(out)) <= max_length - 8
    by_id = {r.id: r for r in rows}
    for r in out:
        orig = by_id[r.id]
        assert r.instruction == orig.instruction and r.layout == orig.layout and r.task == orig.task
        if not r.meta.get("truncation"):
            assert r == orig
            continue
        assert len(r.document) < len(orig.document)
        if r.task == "cloze":  # the answer is the sentence after the document: keep its end
            assert orig.document.endswith(r.document)
        elif r.task == "case" or mode == "head":
            assert orig.document.startswith(r.document)
        else:
            head, tail = r.document.split(" … ")
            assert orig.document.startswith(head) and orig.document.endswith(tail)
        if r.task == "case" and not r.is_malicious:  # the answer is the document in proper case: cut alike
            assert r.response.lower().endswith(r.document) and orig.response.startswith(r.response)
        else:
            assert r.response == orig.response
    # a generous budget changes nothing
    same, rep = truncate_rows(rows[:-1], measure, 4096, mode)
    assert same == rows[:-1] and rep.shortened == 0


def test_length_fn_matches_the_chat_template(tokenizer):
    from xtask_safety.models import format_prompt

    r = _rows()[0]
    text = format_prompt(tokenizer, r.prompt(), "chat") + r.response
    assert make_length_fn(tokenizer)([r]) == [len(tokenizer(text, add_special_tokens=False)["input_ids"])]
    assert TASKS[r.task]
