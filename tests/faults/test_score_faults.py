"""SIGKILL during `xtask-safety score` at three points (verdicts computed, after the first and after the
second output file); the rerun writes the same bytes as an uninterrupted run and leaves no temporary file."""

from __future__ import annotations

import json

from reliability_helpers import jsonl_ids, leftovers, run_killed, snapshot

from xtask_safety.cli import main

POINTS = ["score.judged", "score.write:1", "score.write:2"]
REFUSAL = "I'm sorry, but I can't help with this document."


def _rows(n: int = 30) -> list[dict]:
    rows = []
    for k in range(n):
        dom = ("malicious", "news", "useful")[k % 3]
        task = ("summarize", "translate", "sentiment", "cloze", "case")[k % 5]
        answer = REFUSAL if (dom == "malicious") == (k % 4 != 0) else f"Here is the answer for document {k}."
        rows.append({"id": f"r{k}", "task": task, "domain": dom, "document": f"Document {k} about a match.",
                     "instruction": f"Do {task}.", "layout": "after", "response": answer, "weight": 1.0,
                     "source": "t", "reference": None, "meta": {"generation": {"n_tokens": 9, "finish": "stop"}}})
    return rows


def test_killed_scoring_reruns_to_the_same_bytes(tmp_path, capsys):
    src = tmp_path / "gen.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _rows()), encoding="utf-8")
    old = tmp_path / "old.jsonl"  # a previous scoring of other answers, which the killed runs replace
    old.write_text("".join(json.dumps({**r, "response": REFUSAL}) + "\n" for r in _rows()[:9]), encoding="utf-8")
    ref = tmp_path / "ref"
    assert main(["score", "--input", str(src), "--output_dir", str(ref)]) == 0
    expected = snapshot(ref)
    assert sorted(expected) == ["scored.jsonl", "summary.json", "summary.md"]

    outs = {p: tmp_path / p.replace(":", "-") for p in POINTS}
    for p in POINTS:
        assert main(["score", "--input", str(old), "--output_dir", str(outs[p])]) == 0
    run_killed([(p, ["score", "--input", str(src), "--output_dir", str(outs[p])]) for p in POINTS])
    capsys.readouterr()
    # killed between renames: the files not yet renamed are still temporary files (removed by the rerun)
    assert [len(leftovers(outs[p])) for p in POINTS] == [0, 2, 1]
    assert (outs["score.write:1"] / "scored.jsonl").read_bytes() == (ref / "scored.jsonl").read_bytes()
    for p in POINTS:
        assert main(["score", "--input", str(src), "--output_dir", str(outs[p])]) == 0, p
        assert snapshot(outs[p]) == expected, f"{p}: the rerun differs from an uninterrupted run"
        assert leftovers(outs[p]) == []
        ids = jsonl_ids(outs[p] / "scored.jsonl")
        assert ids == [r["id"] for r in _rows()] and len(set(ids)) == len(ids)
