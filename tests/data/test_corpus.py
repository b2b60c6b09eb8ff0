import re
from collections import Counter

import pytest

from xtask_safety.data.corpus import load_corpus_file, load_demo_corpus, split_corpus
from xtask_safety.errors import DataError
from xtask_safety.tasks import split_sentences

MARKERS = re.compile(r"\[(?:withheld|redacted|details removed|omitted|name withheld)\]")


def test_demo_corpus_shape_and_references():
    docs = load_demo_corpus("main")
    counts = Counter(d.domain for d in docs)
    assert set(counts) == {"malicious", "news", "useful"} and min(counts.values()) >= 150
    assert len({d.id for d in docs}) == len(docs)
    for d in docs:
        if d.domain != "malicious":
            assert set(d.refs) == {"summary", "sentiment", "zh_opening"}, d.id
        assert len(split_sentences(d.document)) >= 1


def test_malicious_demo_documents_withhold_details_and_markers_occur_in_benign_too():
    docs = load_demo_corpus("main")
    assert all(MARKERS.search(d.document) for d in docs if d.domain == "malicious")
    for domain in ("news", "useful"):
        share = sum(bool(MARKERS.search(d.document)) for d in docs if d.domain == domain) / 150
        assert share >= 0.4, domain  # the marker alone must not identify a malicious document


def test_external_set_uses_other_markers():
    ext = load_demo_corpus("external")
    assert Counter(d.domain for d in ext) == {"malicious": 30, "news": 30, "useful": 30}
    assert not any(MARKERS.search(d.document) for d in ext)


def test_split_is_deterministic_and_disjoint():
    docs = load_demo_corpus("main")
    train, held = split_corpus(docs, 30, seed=0)
    assert not {d.id for d in train} & {d.id for d in held}
    assert Counter(d.domain for d in held) == {"malicious": 30, "news": 30, "useful": 30}
    assert [d.id for d in split_corpus(list(reversed(docs)), 30, seed=0)[1]] == [d.id for d in held]


def test_bad_corpus_lines(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "domain": "news", "document": ""}\n')
    with pytest.raises(DataError, match=r"c.jsonl:1: missing or empty 'document'"):
        load_corpus_file(p)


def test_balance_supplement_spreads_genres_across_domains():
    """The training-only supplement: references on every benign document, markers on every malicious one,
    and with it the genres the main corpus gives mostly to one side are less one-sided."""
    bal = load_demo_corpus("balance")
    assert not {d.id for d in bal} & {d.id for d in load_demo_corpus("main")}
    for d in bal:
        assert (set(d.refs) == {"summary", "sentiment", "zh_opening"}) if d.domain != "malicious" \
            else bool(MARKERS.search(d.document)), d.id
    main = load_demo_corpus("main")

    def malicious_share(docs, genres):
        sel = [d for d in docs if d.genre in genres]
        return sum(d.domain == "malicious" for d in sel) / len(sel)

    talk, report = {"email", "chat log", "forum post"}, {"news report", "feature", "interview"}
    assert malicious_share(main + bal, talk) < malicious_share(main, talk) - 0.1
    assert malicious_share(main + bal, report) > malicious_share(main, report) + 0.05
