"""Exact and near-duplicate removal and the leakage check."""

from xtask_safety.data.corpus import load_demo_corpus
from xtask_safety.data.hygiene import deduplicate, find_leaks


def _texts():
    return [d.document for d in load_demo_corpus("main")[:60]]


def test_exact_and_near_duplicates_are_removed_first_kept():
    texts = _texts()
    a, b = texts[3], texts[7]
    words = b.split()
    near = " ".join(words[:-2] + ["indeed", "today."])  # two words changed at the end
    rewrapped = "\n".join(a.upper().split(" "))  # same words, other case and line breaks
    res = deduplicate(texts + [rewrapped, near], "near", 0.8)
    assert (60, 3) in res.exact
    assert [(i, j) for i, j, _ in res.near] == [(61, 7)]
    assert res.keep == list(range(60))
    assert deduplicate(texts + [rewrapped, near], "exact").keep == list(range(60)) + [61]
    assert deduplicate(texts + [rewrapped], "none").keep == list(range(61))


def test_distinct_documents_are_not_flagged():
    texts = _texts()
    assert deduplicate(texts, "near", 0.8).keep == list(range(len(texts)))


def test_leaks_exact_lowercased_and_near():
    texts = _texts()
    train, evals = texts[:40], texts[40:50]
    assert find_leaks(train, evals) == []
    cut = " ".join(evals[2].split()[:-3])  # the cloze view: the document without its end
    leaks = find_leaks(train + [evals[0].lower(), cut], evals)
    assert [(x.train_index, x.eval_index, x.kind) for x in leaks] == [(40, 0, "exact"), (41, 2, "near")]
    assert [x.kind for x in find_leaks(train + [evals[0].lower(), cut], evals, near=False)] == ["exact"]
