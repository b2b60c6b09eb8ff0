"""Resume after a real SIGKILL, settings checks, prompt-length checks, and merging shard outputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xtask_safety.data.builder import build_eval_grid
from xtask_safety.data.corpus import load_corpus_file
from xtask_safety.errors import ConfigError, DataError
from xtask_safety.generate.base import SamplingConfig
from xtask_safety.generate.cli import main as generate_main
from xtask_safety.generate.cli import merge_main
from xtask_safety.generate.run import generate_to_file, merge_outputs, shard_records
from xtask_safety.generate.transformers_backend import TransformersBackend
from xtask_safety.models import load_model
from xtask_safety.records import write_jsonl
from xtask_safety.tasks import TASK_NAMES

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on a busy machine


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture
def grid(small_corpus):
    return build_eval_grid(load_corpus_file(small_corpus)[:6], list(TASK_NAMES))


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_resume_after_sigkill_is_byte_identical(tiny_model_dir, small_corpus, tmp_path):
    records = build_eval_grid(load_corpus_file(small_corpus)[:10], list(TASK_NAMES))  # 50 prompts
    src = tmp_path / "grid.jsonl"
    write_jsonl(src, records)
    flags = ["--input", str(src), "--model_name_or_path", tiny_model_dir, "--batch_size", "2",
             "--max_new_tokens", "16", "--quiet", "true"]
    ref, out = tmp_path / "ref.jsonl", tmp_path / "killed.jsonl"
    assert generate_main([*flags, "--output", str(ref)]) == 0

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "xtask_safety.cli", "generate", *flags, "--output", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written = out.read_bytes().count(b"\n")
    assert 3 <= written < len(records)

    assert generate_main([*flags, "--output", str(out)]) == 0
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == len(records) and set(ids) == {r.id for r in records}
    assert out.read_bytes() == ref.read_bytes()


def test_sampled_resume_draws_the_same_sample(tiny, grid, tmp_path):
    sampling = SamplingConfig(max_new_tokens=6, do_sample=True, temperature=1.0, seed=7)
    grid = grid[:12]
    full = generate_to_file(grid, TransformersBackend(tiny, batch_size=4), tmp_path / "full.jsonl", sampling,
                            progress=False)
    lines = (tmp_path / "full.jsonl").read_text().splitlines(keepends=True)
    part = tmp_path / "part.jsonl"
    part.write_text("".join(lines[:6]))  # died in the middle of the second batch
    resumed = generate_to_file(grid, TransformersBackend(tiny, batch_size=4), part, sampling, progress=False)
    assert [r["response"] for r in resumed] == [r["response"] for r in full]
    assert part.read_bytes() == (tmp_path / "full.jsonl").read_bytes()


def test_resume_refuses_other_settings(tiny, grid, tmp_path):
    out = tmp_path / "g.jsonl"
    generate_to_file(grid[:3], TransformersBackend(tiny), out, SamplingConfig(max_new_tokens=4), progress=False)
    with pytest.raises(DataError, match="other settings .*max_new_tokens"):
        generate_to_file(grid, TransformersBackend(tiny), out, SamplingConfig(max_new_tokens=5), progress=False)
    with pytest.raises(DataError, match="other settings .*model"):
        generate_to_file(grid, TransformersBackend(tiny), out, SamplingConfig(max_new_tokens=4),
                         run_info={"model": "other"}, progress=False)


def test_too_long_prompts_stop_the_job_or_are_written_as_not_generated(tiny, grid, tmp_path):
    backend = TransformersBackend(tiny, batch_size=4, max_model_len=80)
    lengths = dict(zip([r.id for r in grid], backend.prompt_lengths([backend.render(r.prompt()) for r in grid]),
                       strict=True))
    too_long = {i for i, n in lengths.items() if n + 8 > 80}
    assert 0 < len(too_long) < len(grid)
    out = tmp_path / "g.jsonl"
    with pytest.raises(DataError, match=rf"{len(too_long)} of {len(grid)} prompts do not fit max_model_len 80"):
        generate_to_file(grid, backend, out, SamplingConfig(max_new_tokens=8), progress=False)
    assert not out.exists() or out.read_text() == ""
    rows = generate_to_file(grid, backend, out, SamplingConfig(max_new_tokens=8), progress=False, on_too_long="skip")
    assert [r["id"] for r in rows] == [r.id for r in grid]
    skipped = {r["id"] for r in rows if r["response"] is None}
    assert skipped == too_long
    for r in rows:
        gen = r["meta"]["generation"]
        assert (gen["finish"] == "prompt_too_long") == (r["id"] in too_long)
        if r["id"] in too_long:
            assert gen["prompt_tokens"] == lengths[r["id"]]


def test_shards_merge_into_the_unsharded_output(tiny, grid, tmp_path):
    sampling = SamplingConfig(max_new_tokens=6)
    src = tmp_path / "grid.jsonl"
    write_jsonl(src, grid)
    full = generate_to_file(grid, TransformersBackend(tiny, batch_size=4), tmp_path / "full.jsonl", sampling,
                            progress=False)
    shards = []
    for i in range(3):
        p = tmp_path / f"shard{i}.jsonl"
        generate_to_file(shard_records(grid, f"{i}/3"), TransformersBackend(tiny, batch_size=4), p, sampling,
                         progress=False)
        shards.append(p)
    report = merge_outputs(shards, tmp_path / "merged.jsonl", src)
    assert report["records"] == len(grid) and report["identical_duplicates"] == 0
    merged = [json.loads(x) for x in (tmp_path / "merged.jsonl").read_text().splitlines()]
    assert [r["id"] for r in merged] == [r.id for r in grid]
    assert [r["response"] for r in merged] == [r["response"] for r in full]

    with pytest.raises(DataError, match=r"input ids are in no shard"):
        merge_outputs(shards[:2], tmp_path / "m2.jsonl", src)
    assert not (tmp_path / "m2.jsonl").exists()
    # a shard rerun with other sampling settings cannot be merged
    other = tmp_path / "other.jsonl"
    generate_to_file(shard_records(grid, "2/3"), TransformersBackend(tiny, batch_size=4), other,
                     SamplingConfig(max_new_tokens=5), progress=False)
    with pytest.raises(DataError, match="sampling differs"):
        merge_outputs([shards[0], shards[1], other], tmp_path / "m3.jsonl", src)
    # the same id with two different answers
    bad = tmp_path / "bad.jsonl"
    row = json.loads(shards[0].read_text().splitlines()[0])
    bad.write_text(json.dumps({**row, "response": "something else"}) + "\n")
    with pytest.raises(DataError, match="with a different answer"):
        merge_outputs([shards[0], bad], tmp_path / "m4.jsonl")


def test_merge_cli(tiny_model_dir, grid, tmp_path, capsys):
    src = tmp_path / "grid.jsonl"
    write_jsonl(src, grid[:4])
    flags = ["--input", str(src), "--model_name_or_path", tiny_model_dir, "--max_new_tokens", "3", "--quiet", "true"]
    for i in range(2):
        assert generate_main([*flags, "--shard", f"{i}/2", "--output", str(tmp_path / f"s{i}.jsonl")]) == 0
    capsys.readouterr()
    assert merge_main([str(tmp_path / "s0.jsonl"), str(tmp_path / "s1.jsonl"), "--input", str(src),
                          "--output", str(tmp_path / "m.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 4
    assert _ids(tmp_path / "m.jsonl") == [r.id for r in grid[:4]]


def test_cli_run_names_and_patterns(tmp_path):
    from xtask_safety.generate.cli import GenerateArguments, output_paths, parse_adapters

    args = GenerateArguments(adapters=["a=x", "b=y"], include_base=True)
    assert parse_adapters(args) == [("base", None), ("a", "x"), ("b", "y")]
    with pytest.raises(ConfigError, match=r"need a pattern with \{name\}"):
        output_paths("out.jsonl", ["base", "a"])
    assert output_paths("runs/{name}.jsonl", ["a"]) == [Path("runs/a.jsonl")]
    with pytest.raises(ConfigError, match="expected NAME=DIR"):
        parse_adapters(GenerateArguments(adapters=["nodir"]))
    with pytest.raises(ConfigError, match="not both"):
        parse_adapters(GenerateArguments(adapter="x", adapters=["a=b"]))
