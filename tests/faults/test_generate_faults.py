"""SIGKILL during `xtask-safety generate` at three points (between batches, in the middle
of a batch, in the middle of writing a line); rerunning the same command completes the file, and it is
byte-identical to an uninterrupted greedy run on CPU: no answer lost, none duplicated."""

from __future__ import annotations

import pytest
from reliability_helpers import corpus_rows, jsonl_ids, run_killed

from xtask_safety.data.builder import build_eval_grid
from xtask_safety.data.corpus import CorpusDoc
from xtask_safety.generate.cli import main as generate_main
from xtask_safety.records import write_jsonl

# 12 prompts (4 documents x 3 tasks) in batches of at most 3 (prompts of one document share a batch)
POINTS = ["generate.batch:2", "generate.row:8", "jsonl.torn:10"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on a busy machine


def test_killed_generation_resumes_to_identical_bytes(tmp_path, tiny_model_dir, capsys):
    docs = [CorpusDoc(id=r["id"], domain=r["domain"], document=r["document"]) for r in corpus_rows(2)[:4]]
    grid = build_eval_grid(docs, ["summarize", "sentiment", "case"])
    assert len(grid) == 12
    src = tmp_path / "grid.jsonl"
    write_jsonl(src, grid)
    flags = ["--input", str(src), "--model_name_or_path", tiny_model_dir, "--batch_size", "3",
             "--max_new_tokens", "6", "--quiet", "true"]
    ref = tmp_path / "ref.jsonl"
    assert generate_main([*flags, "--output", str(ref)]) == 0
    expected = ref.read_bytes()

    outs = {p: tmp_path / f"{p.replace(':', '-')}.jsonl" for p in POINTS}
    jobs = [(p, ["generate", *flags, "--output", str(outs[p])]) for p in POINTS]
    run_killed(jobs[:1], forked=jobs[1:], log_dir=tmp_path)  # one through the console entry, two forked
    written = {p: outs[p].read_bytes() for p in POINTS}
    assert 2 <= written["generate.batch:2"].count(b"\n") <= 6  # two whole batches
    assert written["generate.row:8"].count(b"\n") == 8
    torn = written["jsonl.torn:10"]
    assert torn.count(b"\n") == 9 and not torn.endswith(b"\n")  # died in the middle of row 10
    for p in POINTS:  # what survived is a prefix of the uninterrupted run
        whole = written[p][: written[p].rfind(b"\n") + 1]
        assert expected.startswith(whole), p

    capsys.readouterr()
    for p in POINTS:
        assert generate_main([*flags, "--output", str(outs[p])]) == 0, p
        assert outs[p].read_bytes() == expected, f"{p}: the resumed file differs from an uninterrupted run"
        ids = jsonl_ids(outs[p])
        assert ids == [r.id for r in grid] or sorted(ids) == sorted(r.id for r in grid)
        assert len(ids) == len(set(ids)) == len(grid)
    names = {x.name for x in tmp_path.iterdir() if not x.name.endswith((".log", ".log.out"))}
    assert names == {"grid.jsonl", "ref.jsonl", *(o.name for o in outs.values())}
