import json

import pytest

from xtask_safety.errors import DataError
from xtask_safety.records import JsonlAppender, Record, read_records, redact, render_prompt, write_jsonl


def _row(**kw):
    base = {"id": "a", "task": "summarize", "domain": "news", "document": "Doc.", "instruction": "Sum."}
    return {**base, **kw}


def test_prompt_layouts():
    assert render_prompt("D", "I", "after") == "D\nI"
    assert render_prompt("D", "I", "before") == "I\n\nD"


@pytest.mark.parametrize(
    "row, needle",
    [
        ({"id": "a", "task": "summarize", "domain": "news", "instruction": "x"}, "missing required key 'document'"),
        (_row(document="   "), "'document' is empty"),
        (_row(colour="red"), "unknown key(s) ['colour']"),
        (_row(weight="2"), "'weight' must be a non-negative number"),
        (_row(weight=-1), "'weight' must be a non-negative number"),
        (_row(layout="sideways"), "'layout' must be one of"),
        (_row(task=3), "'task' must be a string"),
    ],
)
def test_record_validation_names_the_key(row, needle):
    with pytest.raises(DataError, match="f.jsonl:7") as exc:
        Record.from_dict(row, where="f.jsonl:7")
    assert needle in str(exc.value)


def test_weight_int_and_float_mean_the_same():
    assert Record.from_dict(_row(weight=2)).weight == Record.from_dict(_row(weight=2.0)).weight == 2.0


def test_read_records_errors(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(_row()) + "\n{broken\n")
    with pytest.raises(DataError, match=r"r.jsonl:2: malformed JSON"):
        read_records(p)
    p.write_text(json.dumps(_row()) + "\n" + json.dumps(_row()) + "\n")
    with pytest.raises(DataError, match=r"r.jsonl:2: duplicate id 'a'"):
        read_records(p)
    p.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match=r"r.jsonl:1: not valid UTF-8"):
        read_records(p)
    with pytest.raises(DataError, match="file not found"):
        read_records(tmp_path / "missing.jsonl")


def test_write_jsonl_is_atomic_and_leaves_no_temp_files(tmp_path):
    p = tmp_path / "out" / "x.jsonl"
    assert write_jsonl(p, [Record.from_dict(_row(id=str(i))) for i in range(3)]) == 3
    assert [json.loads(line)["id"] for line in p.read_text().splitlines()] == ["0", "1", "2"]
    assert sorted(f.name for f in p.parent.iterdir()) == ["x.jsonl"]


def test_appender_drops_a_torn_last_line_and_resumes(tmp_path):
    p = tmp_path / "gen.jsonl"
    with JsonlAppender(p) as out:
        out.append({"id": "1", "response": "a"})
        out.append({"id": "2", "response": "b"})
    with p.open("a") as fh:  # a crash in the middle of writing record 3
        fh.write('{"id": "3", "resp')
    out = JsonlAppender(p)
    assert set(out.done) == {"1", "2"}
    out.append({"id": "3", "response": "c"})
    out.close()
    ids = [json.loads(line)["id"] for line in p.read_text().splitlines()]
    assert ids == ["1", "2", "3"]


def test_redact_truncates_only_sensitive_text():
    long = "x" * 200
    assert redact(long, sensitive=False) == long
    shown = redact(long, sensitive=True, keep=20)
    assert shown.startswith("x" * 20) and "redacted: 180 more chars" in shown and len(shown) < 60
    assert redact(long, sensitive=True, show=True) == long


def test_appender_fsyncs_per_interval_not_per_row(tmp_path, monkeypatch):
    """Rows reach the OS at once (a killed process loses none); fsync runs per interval and on close."""
    import os

    import xtask_safety.records as records_mod

    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(records_mod.os, "fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    path = tmp_path / "rows.jsonl"
    with JsonlAppender(path) as out:
        for k in range(500):
            out.append({"id": f"r{k}"})
        # flushed, not yet closed: another reader (a resumed job after a kill) sees every row
        assert len(path.read_text().splitlines()) == 500
        assert len(calls) <= 2  # at most one per elapsed second, not one per row
    assert len(calls) >= 1  # close syncs what is left
    calls.clear()
    with JsonlAppender(tmp_path / "each.jsonl", sync_interval=0) as out:
        for k in range(5):
            out.append({"id": f"r{k}"})
    assert len(calls) >= 5  # sync_interval=0: every row, as before
