"""Sources: every format loads into documents/instruction rows tagged with domain and source; bad input
names the file, the row and the column."""

import csv
import json

import pytest

from xtask_safety.data.sources import SourceSpec, load_source, load_sources, parse_sources
from xtask_safety.errors import ConfigError, DataError

NEWS = [
    {"id": "n1", "article": "The council opened a new footbridge on Monday. Cyclists welcomed it.",
     "highlights": "A new footbridge opened.", "label": "news"},
    {"id": "n2", "article": "Heavy rain closed two roads overnight. Crews cleared them by noon.",
     "highlights": "Rain closed roads briefly.", "label": "news"},
]
PAIRS = [  # BeaverTails-style prompt/response rows; operational content withheld
    {"prompt": "How do I get into my neighbour's wifi?", "response": "First scan for [withheld], then [withheld].",
     "is_safe": False},
    {"prompt": "How do I reset my own router?", "response": "Hold the reset button for ten seconds.", "is_safe": True},
]


def _spec(**kw):
    return SourceSpec.from_dict(kw, "sources[0]")


def test_json_jsonl_csv_tsv_parquet_give_the_same_documents(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "n.json").write_text(json.dumps(NEWS))
    (tmp_path / "n.jsonl").write_text("".join(json.dumps(r) + "\n" for r in NEWS))
    for name, delim in (("n.csv", ","), ("n.tsv", "\t")):
        with open(tmp_path / name, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(NEWS[0]), delimiter=delim)
            w.writeheader()
            w.writerows(NEWS)
    pq.write_table(pa.Table.from_pylist(NEWS), tmp_path / "n.parquet")
    results = []
    for name in ("n.json", "n.jsonl", "n.csv", "n.tsv", "n.parquet"):
        src = load_source(_spec(path=str(tmp_path / name), domain="news", text_field="article",
                                refs={"summary": "highlights"}))
        assert src.name == name and src.rows_read == 2 and len(src.sha256) == 64
        assert all(d.source == name and d.domain == "news" for d in src.docs)
        results.append([(d.id, d.document, d.refs) for d in src.docs])
    assert all(r == results[0] for r in results)
    assert results[0][0] == ("n1", NEWS[0]["article"], {"summary": "A new footbridge opened."})


def test_domain_from_a_column_and_where_filter(tmp_path):
    p = tmp_path / "bt.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    src = load_source(_spec(path=str(p), domain="malicious", text_field=["prompt", "response"],
                            where={"is_safe": False}, source="beavertails-like"))
    assert [d.document for d in src.docs] == [PAIRS[0]["prompt"] + "\n\n" + PAIRS[0]["response"]]
    assert src.docs[0].source == "beavertails-like" and src.docs[0].id == "beavertails-like:1"
    q = tmp_path / "labelled.json"
    q.write_text(json.dumps(NEWS))
    src = load_source(_spec(path=str(q), domain_field="label", text_field="article"))
    assert {d.domain for d in src.docs} == {"news"}


def test_text_directory_and_instruction_rows(tmp_path):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("First document.\n")
    (d / "sub" / "b.txt").write_text("Second document.")
    (d / "skip.md").write_text("not a text file")
    src = load_source(_spec(path=str(d), domain="useful"))
    assert [(x.id, x.document) for x in src.docs] == [("a", "First document."), ("sub/b", "Second document.")]
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Sort.", "input": "3 1 2", "output": "1 2 3"},
                                  {"instruction": "Name a colour.", "input": "", "output": "Blue."}]))
    src = load_source(_spec(path=str(alpaca), kind="instructions"))
    a, b = src.records
    assert (a.task, a.domain, a.layout, a.document, a.instruction, a.response) == \
           ("instruction", "instruction", "before", "3 1 2", "Sort.", "1 2 3")
    assert b.prompt() == "Name a colour." and a.prompt() == "Sort.\n\n3 1 2" and a.source == "alpaca.json"


def test_hf_datasets_from_local_paths(tmp_path):
    import datasets

    datasets.Dataset.from_list(NEWS).save_to_disk(str(tmp_path / "saved"))
    src = load_source(_spec(hf=str(tmp_path / "saved"), domain="news", text_field="article"))
    assert [x.id for x in src.docs] == ["n1", "n2"] and src.format == "hf" and len(src.sha256) == 64
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    (repo / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in NEWS))
    src = load_source(_spec(hf=str(tmp_path / "repo"), domain="news", text_field="article", source="cnn-like"))
    assert [x.document for x in src.docs] == [r["article"] for r in NEWS] and src.docs[0].source == "cnn-like"
    with pytest.raises(DataError, match="no-such-dataset-xyz: cannot load dataset"):
        load_source(_spec(hf="no-such-org/no-such-dataset-xyz", domain="news"))


def test_demo_sources():
    main = load_source(_spec(demo="main"))
    assert {d.domain for d in main.docs} == {"malicious", "news", "useful"}
    instr = load_source(_spec(demo="instructions"))
    assert len(instr.records) >= 50 and all(r.task == "instruction" and r.response for r in instr.records)
    balance = load_source(parse_sources([{"demo": "balance", "holdout": False}])[0])
    assert balance.summary()["holdout"] is False and {d.domain for d in balance.docs} == {"malicious", "news", "useful"}
    with pytest.raises(DataError, match=r"demo corpus 'nope': unknown; one of \('main', 'external', 'balance'\)"):
        load_source(_spec(demo="nope"))
    with pytest.raises(ConfigError, match=r"sources\[0\]: holdout must be true or false, got 'no'"):
        parse_sources([{"demo": "main", "holdout": "no"}])


@pytest.mark.parametrize(
    "content, kw, needle",
    [
        ('[{"id": "1", "body": "x"}]', {"text_field": "article"}, r"n.json\[0\]: column 'article' not found \(columns: id, body\)"),
        ('[{"id": "1", "text": "x"}, {"id": "2", "text": "  "}]', {}, r"n.json\[1\]: column 'text' is empty"),
        ('[{"id": "1", "text": "x"}, {"id": "1", "text": "y"}]', {}, r"n.json\[1\]: duplicate id '1'"),
        ('[{"id": "1", "text": 5}]', {}, r"n.json\[0\]: column 'text' must be text, got int"),
        ('[{"id": "1", "blurb": "x"}]', {}, r"n.json\[0\]: no text column"),
        ('{"a": [1], "b": [2]}', {}, r"n.json: expected a JSON list"),
        ('[{"id": "1", "text": "x"}', {}, r"n.json:1: malformed JSON"),
    ],
)
def test_bad_json_sources(tmp_path, content, kw, needle):
    p = tmp_path / "n.json"
    p.write_text(content)
    with pytest.raises(DataError, match=needle):
        load_source(_spec(path=str(p), domain="news", **kw))


def test_bad_csv_and_text_sources(tmp_path):
    p = tmp_path / "n.csv"
    p.write_bytes(b"id,text\n1,fine\n2,caf\xe9\n")
    with pytest.raises(DataError, match=r"n.csv:\d+: not valid UTF-8"):
        load_source(_spec(path=str(p), domain="news"))
    p.write_text("id,text\n1,fine\n2,\n")
    with pytest.raises(DataError, match=r"n.csv:3: column 'text' is empty"):
        load_source(_spec(path=str(p), domain="news"))
    src = load_source(_spec(path=str(p), domain="news", skip_empty=True))
    assert src.rows_skipped == 1 and len(src.docs) == 1
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(DataError, match=r"x.txt: not valid UTF-8"):
        load_source(_spec(path=str(d), domain="news"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="bad.parquet: not a readable Parquet file"):
        load_source(_spec(path=str(tmp_path / "bad.parquet"), domain="news"))


def test_bad_specs_and_id_clashes(tmp_path):
    with pytest.raises(ConfigError, match=r"sources\[0\]: unknown key\(s\) \['colum'\]"):
        parse_sources([{"path": "a.json", "colum": "x"}])
    with pytest.raises(ConfigError, match="exactly one of path, hf or demo"):
        parse_sources([{"path": "a.json", "hf": "b"}])
    with pytest.raises(ConfigError, match="cannot tell the format"):
        load_source(_spec(path=str(tmp_path / "a.xml"), domain="news"))
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"id": "x", "text": "t"}) + "\n")
    q = tmp_path / "b.jsonl"
    q.write_text(json.dumps({"id": "x", "text": "u"}) + "\n")
    specs = parse_sources([{"path": str(p), "domain": "news"}, {"path": str(q), "domain": "news"}])
    with pytest.raises(DataError, match="both hold id 'x'; set id_prefix"):
        load_sources(specs)
    specs[1].id_prefix = "b/"
    assert [d.id for s in load_sources(specs) for d in s.docs] == ["x", "b/x"]
    with pytest.raises(DataError, match="no domain"):
        load_source(_spec(path=str(p)))
