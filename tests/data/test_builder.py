from collections import Counter

import pytest

from xtask_safety.data.builder import (
    BuildConfig,
    build_defense_set,
    build_eval_grid,
    load_refusals,
    match_genres,
    trim_words,
)
from xtask_safety.data.corpus import load_corpus_file, load_demo_corpus, split_corpus
from xtask_safety.errors import DataError
from xtask_safety.records import write_jsonl
from xtask_safety.tasks import TASK_NAMES, TASKS


def _build(docs, tasks, mal, ben, seed=0):
    return build_defense_set(docs, BuildConfig(tasks=tasks, malicious_per_task=mal, benign_per_task=ben, seed=seed),
                             load_refusals())


def test_mixed_set_counts_targets_and_no_leakage(small_corpus):
    docs = load_corpus_file(small_corpus)
    train, held = split_corpus(docs, eval_per_domain=2)
    rows = _build(train, list(TASK_NAMES), mal=4, ben=4)
    counts = Counter((r.task, r.domain) for r in rows)
    for t in TASK_NAMES:
        assert counts[(t, "malicious")] == 4
        assert counts[(t, "news")] + counts[(t, "useful")] == 4
    held_ids = {d.id for d in held}
    assert not held_ids & {r.meta["doc_id"] for r in rows}
    for r in rows:
        task = TASKS[r.task]
        if r.domain == "malicious":
            assert r.response.startswith("I") and "{verb}" not in r.response
        else:
            assert r.response.startswith(task.lead_in) and r.reference and r.reference in r.response


def test_single_task_set_and_determinism(small_corpus, tmp_path):
    docs = load_corpus_file(small_corpus)
    a = _build(docs, ["summarize"], mal=5, ben=2)
    assert {r.task for r in a} == {"summarize"} and sum(r.domain == "malicious" for r in a) == 5
    write_jsonl(tmp_path / "a.jsonl", a)
    write_jsonl(tmp_path / "b.jsonl", _build(docs, ["summarize"], mal=5, ben=2))
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert _build(docs, ["summarize"], mal=5, ben=2, seed=1) != a


def test_sizes_are_nested(small_corpus):
    docs = load_corpus_file(small_corpus)
    small = {r.id: r for r in _build(docs, list(TASK_NAMES), mal=2, ben=2)}
    large = {r.id: r for r in _build(docs, list(TASK_NAMES), mal=6, ben=4)}
    assert set(small) < set(large)
    assert all(small[k] == large[k] for k in small)  # same phrasing, refusal and target


def test_size_larger_than_available_is_an_error(small_corpus):
    with pytest.raises(DataError, match="only 8 available"):
        _build(load_corpus_file(small_corpus), ["case"], mal=9, ben=1)


def test_eval_grid_is_paired_across_tasks(small_corpus):
    docs = load_corpus_file(small_corpus)
    grid = build_eval_grid(docs, list(TASK_NAMES))
    assert len(grid) == len(docs) * 5
    per_doc = Counter(r.meta["doc_id"] for r in grid)
    assert set(per_doc.values()) == {5}
    summ = next(r for r in grid if r.task == "summarize")
    assert summ.instruction == "Summarize the above article briefly in 3 sentences."


def test_trim_words_keeps_whole_sentences():
    text = "One two three. Four five six. Seven eight nine."
    assert trim_words(text, 7) == "One two three. Four five six."
    assert trim_words(text, 2) == "One two three."
    assert trim_words(text, None) == text


def test_match_genres_follows_the_shares_in_every_prefix():
    items = [("news report", i) for i in range(12)] + [("email", i) for i in range(4)] + [("letter", 0)]
    out = match_genres(items, lambda x: x[0], {"news report": 0.5, "email": 0.5})
    assert sorted(out) == sorted(items)  # a reordering, nothing lost
    assert [g for g, _ in out[:8]] == ["news report", "email"] * 4  # half and half while emails last
    assert [i for g, i in out if g == "email"] == [0, 1, 2, 3]  # each genre keeps its own order
    assert out[-1] == ("letter", 0)  # a genre with no share comes last


def test_genre_match_moves_benign_rows_towards_the_malicious_genres():
    docs = load_demo_corpus("main")
    mal_genres = {d.genre for d in docs if d.domain == "malicious"}
    assert mal_genres  # the demo corpus labels genres

    def genre_gap(share: float) -> float:
        cfg = BuildConfig(tasks=list(TASK_NAMES), malicious_per_task=24, benign_per_task=24, genre_match=share)
        rows = build_defense_set(docs, cfg, load_refusals())
        genre = {d.id: d.genre for d in docs}
        refuse = Counter(genre[r.meta["doc_id"]] for r in rows if r.meta["target"] == "refusal")
        answer = Counter(genre[r.meta["doc_id"]] for r in rows if r.meta["target"] == "answer")
        return sum(abs(refuse[g] - answer[g]) for g in {*refuse, *answer}) / len(rows)

    gaps = [genre_gap(s) for s in (0.0, 0.5, 1.0)]
    assert gaps[0] > gaps[1] > gaps[2]  # total-variation distance of the two genre mixes shrinks


def test_genre_matched_sizes_stay_nested():
    docs = load_demo_corpus("main")
    small, large = (build_defense_set(docs, BuildConfig(tasks=list(TASK_NAMES), malicious_per_task=n,
                                                         benign_per_task=n, genre_match=0.5), load_refusals())
                    for n in (8, 24))
    large_ids = {r.id for r in large}
    assert {r.id for r in small} <= large_ids
