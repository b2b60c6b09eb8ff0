"""A full recipe build from local fixture files in the paper's formats (and the other source formats):
single-task sets for all five tasks and mixed sets at three nested sizes, deterministic, counted,
truncated without touching instructions or answers, with zero train/eval leakage."""

import csv
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from xtask_safety.data.builder import MARKER
from xtask_safety.data.corpus import load_demo_corpus
from xtask_safety.data.hygiene import find_leaks
from xtask_safety.data.pipeline import DataBuildArguments, run_build
from xtask_safety.data.truncate import make_length_fn
from xtask_safety.errors import ConfigError, DataError
from xtask_safety.records import read_records
from xtask_safety.tasks import TASK_NAMES, TASKS

SIZES = [4, 8, 16]
MIXED = [2, 4, 8]
MAX_LENGTH = 300


@pytest.fixture(scope="module")
def tokenizer(embedded_path):
    from xtask_safety.models import load_tokenizer

    return load_tokenizer(embedded_path)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """Malicious documents as a JSON list and a directory of text files, news as CSV (CNN/DM columns),
    useful documents as JSONL, instruction data as a saferpaca file, evaluation sets as the paper's
    evaluation files (which reuse 6 training documents per domain: they must be removed)."""
    root = tmp_path_factory.mktemp("fixtures")
    docs = load_demo_corpus("main")
    by = {d: [x for x in docs if x.domain == d] for d in ("malicious", "news", "useful")}
    (root / "malicious.json").write_text(json.dumps([{"id": d.id, "text": d.document} for d in by["malicious"][:100]]))
    txt = root / "malicious_txt"
    txt.mkdir()
    for d in by["malicious"][100:]:
        (txt / f"{d.id}.txt").write_text(d.document, encoding="utf-8")
    with open(root / "news.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "article", "highlights", "sentiment", "zh_opening"])
        for d in by["news"]:
            w.writerow([d.id, d.document, d.refs["summary"], d.refs["sentiment"], d.refs["zh_opening"]])
    (root / "useful.jsonl").write_text("".join(json.dumps({"id": d.id, "document": d.document, **d.refs},
                                                          ensure_ascii=False) + "\n" for d in by["useful"]))
    instr = [json.loads(x) for x in (Path(__file__).parents[2] / "src/xtask_safety/data/demo/instructions.jsonl")
             .read_text().splitlines()]
    (root / "saferpaca_Instructions.json").write_text(json.dumps(
        [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in instr]))
    eval_docs = {}
    for dom in ("malicious", "news", "useful"):
        chosen = by[dom][-6:]  # also present in the training sources
        eval_docs[dom] = [d.document for d in chosen]
        texts = [d.document + "\n" + TASKS[t].instruction() for d in chosen for t in TASK_NAMES]
        (root / f"eval_{dom}.json").write_text(json.dumps({"instructions": texts, "inputs": []}))
    return root, eval_docs


def _args(root: Path, out: Path, **kw) -> DataBuildArguments:
    sources = [
        {"path": str(root / "malicious.json"), "domain": "malicious", "source": "mal-json"},
        {"path": str(root / "malicious_txt"), "domain": "malicious", "source": "mal-txt"},
        {"path": str(root / "news.csv"), "domain": "news", "text_field": "article",
         "refs": {"summary": "highlights", "sentiment": "sentiment", "zh_opening": "zh_opening"}},
        {"path": str(root / "useful.jsonl"), "domain": "useful"},
        {"path": str(root / "saferpaca_Instructions.json"), "kind": "instructions", "format": "saferpaca"},
    ] + [{"path": str(root / f"eval_{d}.json"), "format": "paper_eval", "role": "eval", "domain": d}
         for d in ("malicious", "news", "useful")]
    base = dict(output_dir=str(out), sources=sources, sizes=SIZES, mixed_sizes=MIXED, benign_ratio=1.0,
                instruction_rows=40, eval_per_domain=5, layout="mixed", max_length=MAX_LENGTH,
                tokenizer="embedded", export_paper=True, seed=3, target_max_words=60, name="fixture build")
    return DataBuildArguments(**{**base, **kw})


@pytest.fixture(scope="module")
def built(fixtures, tokenizer, tmp_path_factory):
    root, eval_docs = fixtures
    out = tmp_path_factory.mktemp("builds")
    a = run_build(_args(root, out / "a"), tokenizer=tokenizer, log=lambda *_: None)
    b = run_build(_args(root, out / "b"), tokenizer=tokenizer, log=lambda *_: None)
    return a, b, eval_docs, root, out


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_every_set_is_built_with_the_right_counts(built):
    a, *_ = built
    names = {s["file"] for s in a.manifest["sets"]}
    assert names == {f"train/single-{t}-{n}.jsonl" for t in TASK_NAMES for n in SIZES} | \
                    {f"train/mixed-{n}.jsonl" for n in MIXED}
    for s in a.manifest["sets"]:
        rows = read_records(a.output_dir / s["file"])
        c = Counter((r.task, r.domain) for r in rows)
        assert c[("instruction", "instruction")] == 40
        for t in s["tasks"]:
            assert c[(t, "malicious")] == s["size"]
            assert c[(t, "news")] + c[(t, "useful")] == s["size"]
            assert abs(c[(t, "news")] - c[(t, "useful")]) <= 1
        assert len(rows) == s["rows"] == s["size"] * 2 * len(s["tasks"]) + 40
        assert {t: dict(v) for t, v in s["counts"].items()} == \
               {t: {d: n for (tt, d), n in sorted(c.items()) if tt == t} for t in {tt for tt, _ in c}}
        assert {r.source for r in rows} <= {"mal-json", "mal-txt", "news.csv", "useful.jsonl",
                                            "saferpaca_Instructions.json"}
    card = (a.output_dir / "README.md").read_text()
    assert "Content warning" in card and "train/mixed-8.jsonl" in card
    src = {s["source"]: s for s in a.manifest["sources"]}
    assert len(src["news.csv"]["sha256"]) == 64 and src["eval_news.json"]["role"] == "eval"
    assert a.manifest["tool"]["version"] and a.manifest["seed"] == 3


def test_sizes_are_nested(built):
    a, *_ = built
    for stem in [f"single-{t}" for t in TASK_NAMES] + ["mixed"]:
        sizes = MIXED if stem == "mixed" else SIZES
        sets = [{r.id: r for r in a.sets[f"train/{stem}-{n}.jsonl"]} for n in sizes]
        for small, large in zip(sets, sets[1:], strict=False):
            assert set(small) < set(large)
            assert all(small[k] == large[k] for k in small)  # same phrasing, refusal, target, truncation


def test_same_seed_same_bytes_other_seed_other_sets(built, tokenizer):
    a, b, _, root, out = built
    assert _tree(a.output_dir) == _tree(b.output_dir)
    c = run_build(_args(root, out / "c", seed=4, sizes=[4], mixed_sizes=[2]), tokenizer=tokenizer,
                  log=lambda *_: None)
    assert c.sets["train/single-summarize-4.jsonl"] != a.sets["train/single-summarize-4.jsonl"]


def test_truncation_keeps_instruction_and_answer(built, tokenizer):
    a, _, _, root, out = built
    trunc = a.manifest["truncation"]
    assert trunc["rows_shortened"] > 0 and trunc["rows_dropped"] == 0
    plain = run_build(_args(root, out / "plain", max_length=None), tokenizer=tokenizer, log=lambda *_: None)
    measure = make_length_fn(tokenizer, "chat")
    for name, rows in a.sets.items():
        ref = {r.id: r for r in plain.sets[name]}
        assert set(ref) == {r.id for r in rows}
        assert max(measure(rows)) <= MAX_LENGTH - 8
        for r in rows:
            o = ref[r.id]
            assert r.instruction == o.instruction and r.layout == o.layout
            if r.meta.get("truncation"):
                assert len(r.document) < len(o.document)
                keep_end = r.task == "cloze"
                assert (o.document.endswith(r.document) if keep_end else o.document.startswith(r.document))
            else:
                assert r == o
            if r.task == "case" and not r.is_malicious and r.meta.get("truncation"):
                assert o.response.startswith(r.response)
            else:
                assert r.response == o.response


def test_zero_leakage(built):
    a, _, eval_docs, *_ = built
    leak = a.manifest["hygiene"]["leakage"]
    assert leak["removed_documents"] == 18 and leak["final_leaks"] == 0
    evals = [t for docs in eval_docs.values() for t in docs]
    evals += [r.document for r in read_records(a.output_dir / "eval/grid-paper.jsonl")]
    train_docs = {r.document for rows in a.sets.values() for r in rows if r.document}
    assert not train_docs & set(evals)
    assert find_leaks(sorted(train_docs), evals, 0.8) == []
    held = {r.meta["doc_id"] for r in read_records(a.output_dir / "eval/grid-paper.jsonl")}
    assert not held & {r.meta.get("doc_id") for rows in a.sets.values() for r in rows}
    assert len(read_records(a.output_dir / "eval/imported.jsonl")) == 3 * 6 * 5


def test_paper_exports_round_trip(built):
    from xtask_safety.data.formats import read_paper_eval_file, read_saferpaca

    a, *_ = built
    assert read_saferpaca(a.output_dir / "paper/saferpaca_8_mixed.json") == a.sets["train/mixed-8.jsonl"]
    grid = read_records(a.output_dir / "eval/grid-paper.jsonl")
    got = read_paper_eval_file(a.output_dir / "paper/eval_news_cloze.json")
    assert got == [r for r in grid if r.domain == "news" and r.task == "cloze"]


def test_held_out_phrasings_stay_out_of_training(built):
    a, *_ = built
    heldout = {TASKS[t].instruction(p, lay) for t in TASK_NAMES for p in TASKS[t].heldout_phrasings
               for lay in ("after", "before")}
    used = {r.instruction for rows in a.sets.values() for r in rows if r.task in TASKS}
    assert used and not used & heldout
    assert {r.layout for rows in a.sets.values() for r in rows if r.task in TASKS} == {"after", "before"}
    grid = read_records(a.output_dir / "eval/grid-heldout.jsonl")
    assert {r.instruction for r in grid} <= heldout


def test_bad_recipes_leave_nothing_behind(fixtures, tokenizer, tmp_path):
    root, _ = fixtures
    with pytest.raises(DataError, match=r"sizes 1000 \(single-summarize\).*only \d+ available"):
        run_build(_args(root, tmp_path / "x", sizes=[4, 1000]), tokenizer=tokenizer)
    with pytest.raises(DataError, match="unknown task 'poem'"):
        run_build(_args(root, tmp_path / "x", tasks="summarize,poem"), tokenizer=tokenizer)
    with pytest.raises(DataError, match="leakage: 18 training items match"):
        run_build(_args(root, tmp_path / "x", leakage="error"), tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="sizes: expected positive integers"):
        run_build(_args(root, tmp_path / "x", sizes=[0, 4]), tokenizer=tokenizer)
    with pytest.raises(DataError, match="instruction_rows: 500 requested, only 60"):
        run_build(_args(root, tmp_path / "x", instruction_rows=500, max_length=None))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="already exists"):
        run_build(_args(root, tmp_path / "x", max_length=None))


def test_exclude_phrasings(fixtures, tmp_path):
    root, _ = fixtures
    excl = list(TASKS["summarize"].train_phrasings[1:])
    res = run_build(_args(root, tmp_path / "x", max_length=None, exclude_phrasings=excl, tasks="summarize",
                          sizes=[8], mixed_sizes=[], layout="after"), log=lambda *_: None)
    rows = [r for r in res.sets["train/single-summarize-8.jsonl"] if r.task == "summarize"]
    assert {r.instruction for r in rows} == {TASKS["summarize"].instruction()}
    assert replace(rows[0]) == rows[0]


def test_training_only_source_never_reaches_the_held_out_split(tmp_path):
    """``holdout: false`` (the demo's genre supplement): its documents are trained on, never held out,
    and the held-out documents are exactly those of the build without it."""
    def build(name, sources):
        args = DataBuildArguments(output_dir=str(tmp_path / name), sources=sources, sizes=[], mixed_sizes=[16],
                                  benign_ratio=1.0, eval_per_domain=30, layout="after", target_max_words=15,
                                  document_max_words=60, instruction_rows=0, export_paper=False)
        res = run_build(args, log=lambda *_: None)
        held = {r.meta["doc_id"] for r in read_records(res.output_dir / "eval" / "grid-paper.jsonl")}
        train = {r.meta["doc_id"] for r in res.sets["train/mixed-16.jsonl"]}
        return held, train

    balance = {d.id for d in load_demo_corpus("balance")}
    held_main, _ = build("main", [{"demo": "main"}])
    held, train = build("both", [{"demo": "main"}, {"demo": "balance", "holdout": False}])
    assert held == held_main and not held & balance
    assert train & balance and not train & held


def test_marker_dropout_clears_markers_from_training_documents_only(tmp_path):
    """``marker_dropout: 1``: no withholding marker left in any training row, whatever its domain; the held-out
    documents keep theirs (the grid is evaluated as written)."""
    def build(name, rate):
        args = DataBuildArguments(output_dir=str(tmp_path / name), sources=[{"demo": "main"}], sizes=[],
                                  mixed_sizes=[32], benign_ratio=1.0, eval_per_domain=30, layout="after",
                                  document_max_words=60, instruction_rows=0, export_paper=False, marker_dropout=rate)
        res = run_build(args, log=lambda *_: None)
        return res.sets["train/mixed-32.jsonl"], read_records(res.output_dir / "eval" / "grid-paper.jsonl")

    def marked(rows):
        return Counter(r.domain for r in rows if MARKER.search(r.document))

    kept, grid = build("kept", 0.0)
    dropped, grid_dropped = build("dropped", 1.0)
    assert set(marked(kept)) == {"malicious", "news", "useful"}  # the corpus marks every domain
    assert not marked(dropped)
    assert [r.id for r in dropped] == [r.id for r in kept]  # the same rows, only the markers reworded
    assert [r.document for r in grid_dropped] == [r.document for r in grid] and marked(grid)
    with pytest.raises(ConfigError, match="marker_dropout: expected a number from 0 to 1, got 1.5"):
        DataBuildArguments(output_dir=str(tmp_path / "bad"), marker_dropout=1.5).validate()


def test_marker_match_gives_malicious_rows_the_benign_marker_counts(tmp_path):
    """``marker_match``: malicious training rows carry markers as often as benign ones (a corpus whose malicious
    documents all carry three to five would otherwise let the marker count stand in for intent); benign rows
    and the held-out grid are untouched."""
    def build(name, match):
        args = DataBuildArguments(output_dir=str(tmp_path / name), sources=[{"demo": "main"}], sizes=[],
                                  mixed_sizes=[32], benign_ratio=1.0, eval_per_domain=30, layout="after",
                                  instruction_rows=0, export_paper=False, marker_match=match)
        res = run_build(args, log=lambda *_: None)
        return res.sets["train/mixed-32.jsonl"], read_records(res.output_dir / "eval" / "grid-paper.jsonl")

    def share_marked(rows, malicious):
        rows = [r for r in rows if (r.domain == "malicious") == malicious]
        return sum(bool(MARKER.search(r.document)) for r in rows) / len(rows)

    kept, grid = build("kept", False)
    matched, grid_matched = build("matched", True)
    assert share_marked(kept, True) == 1.0
    assert 0.35 < share_marked(matched, True) < 0.75  # about the benign share, ~0.5 in the demo corpus
    assert abs(share_marked(matched, True) - share_marked(matched, False)) < 0.2
    assert max(len(MARKER.findall(r.document)) for r in matched if r.domain == "malicious") <= 3
    assert [r.document for r in matched if r.domain != "malicious"] == [r.document for r in kept if r.domain != "malicious"]
    assert [r.document for r in grid_matched] == [r.document for r in grid]


def test_whole_document_tasks_keep_their_training_documents_whole(tmp_path):
    """``whole_document_tasks: [cloze]``: cloze rows see whole documents (less the sentence to predict) while the
    other tasks' documents are still cut to ``document_max_words``; the rows, targets and grid stay the same."""
    def build(name, whole):
        args = DataBuildArguments(output_dir=str(tmp_path / name), sources=[{"demo": "main"}], sizes=[],
                                  mixed_sizes=[16], benign_ratio=1.0, eval_per_domain=30, layout="after",
                                  document_max_words=60, instruction_rows=0, export_paper=False,
                                  whole_document_tasks=whole)
        res = run_build(args, log=lambda *_: None)
        return res.sets["train/mixed-16.jsonl"], read_records(res.output_dir / "eval" / "grid-paper.jsonl")

    cut, grid = build("cut", [])
    whole, grid_whole = build("whole", ["cloze"])
    assert [r.document for r in grid_whole] == [r.document for r in grid]
    assert [(r.id, r.document, r.response) for r in whole if r.task != "cloze"] == \
        [(r.id, r.document, r.response) for r in cut if r.task != "cloze"]
    by_id = {r.id: r for r in cut if r.task == "cloze"}
    cloze = [(by_id[r.id], r) for r in whole if r.task == "cloze" and r.id in by_id]
    assert len(cloze) >= 0.9 * len(by_id)  # a document of one sentence within 60 words has no cloze row when cut
    words = [(len(a.document.split()), len(b.document.split())) for a, b in cloze]
    assert all(m <= n for m, n in words) and sum(n for _, n in words) > 1.5 * sum(m for m, _ in words)
    assert sum(b.document.startswith(a.document) and b.document != a.document for a, b in cloze) >= len(cloze) // 2
    assert not any(b.meta["truncated"] for _, b in cloze)
    with pytest.raises(DataError, match="whole_document_tasks: unknown task 'clozee'"):
        build("bad", ["clozee"])
