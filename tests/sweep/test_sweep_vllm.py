"""A sweep with ``backend: vllm``: generation runs in the vLLM environment's interpreter (a child process),
with the sweep's engine options; the sweep's own process never imports vLLM."""

from __future__ import annotations

import sys

import pytest
from sweep_helpers import events, write_sweep

from xtask_safety.records import read_jsonl
from xtask_safety.sweep.cli import run_sweep


def test_vllm_cells_run_the_generate_command_with_the_engine_options(small_corpus, tmp_path):
    from xtask_safety.sweep.cli import load_plan
    from xtask_safety.sweep.stages import Context, vllm_generate_argv

    cfg = write_sweep(tmp_path, "embedded", small_corpus, backend="vllm", tensor_parallel_size=2,
                      gpu_memory_utilization=0.5, enforce_eager=True, max_model_len=900)
    plan, _ = load_plan(["--config", str(cfg)])
    cell = next(c for c in plan.cells if not c.is_base)
    argv = vllm_generate_argv(Context(plan, events=None), cell, tmp_path / "adapter", tmp_path / "gen.jsonl")
    flags = dict(zip(argv[::2], argv[1::2], strict=True))
    assert flags["--backend"] == "vllm" and flags["--adapter"] == str(tmp_path / "adapter")
    assert (flags["--tensor_parallel_size"], flags["--gpu_memory_utilization"], flags["--enforce_eager"]) == (
        "2", "0.5", "true")
    assert flags["--max_model_len"] == "900" and flags["--dtype"] == "float32" and flags["--on_too_long"] == "skip"
    assert flags["--input"] == str(plan.grid_path) and flags["--max_new_tokens"] == "4"


@pytest.mark.slow
def test_sweep_generates_through_vllm_for_real(small_corpus, tmp_path, vllm_python):
    from xtask_safety.generate.backends import BackendSpec, build_backend
    from xtask_safety.generate.base import SamplingConfig
    from xtask_safety.generate.run import Run, generate_runs
    from xtask_safety.records import read_records

    cfg = write_sweep(tmp_path, "embedded", small_corpus, backend="vllm", vllm_python=vllm_python,
                      defended=["summarize"], sizes=[2], mixed_sizes=[], train_overrides={"max_steps": 1},
                      max_new_tokens=8, report=False)
    outcome = run_sweep(["--config", str(cfg)])["outcome"]
    assert outcome.missing == [] and len(outcome.finished) == 2
    assert "vllm" not in sys.modules
    gens = sorted((tmp_path / "sweep" / "generations").glob("*.jsonl"))
    assert len(gens) == 2
    evs = [e for e in events(tmp_path / "sweep") if e["stage"] == "generate"]
    assert sorted(e["action"] for e in evs) == ["run", "run"]
    from xtask_safety.sweep.cli import load_plan

    grid = read_records(load_plan(["--config", str(cfg)])[0].grid_path)
    base_rows = None
    for path in gens:
        rows = [row for _, row in read_jsonl(path)]
        assert [r["id"] for r in rows] == [r.id for r in grid]
        assert all(r["meta"]["generation"]["backend"] == "vllm" for r in rows)
        if rows[0]["meta"]["generation"].get("adapter") is None:
            base_rows = {r["id"]: r["response"] for r in rows}
    assert base_rows is not None
    # the base cell's vLLM answers are the Transformers backend's greedy answers
    backend = build_backend("transformers", BackendSpec(dtype="float32", batch_size=12))
    (ref,) = generate_runs(grid, backend, [Run(tmp_path / "ref.jsonl")], SamplingConfig(max_new_tokens=8),
                           progress=False)
    same = sum(base_rows[r["id"]] == r["response"] for r in ref) / len(ref)
    assert same >= 0.95, f"sweep vLLM base answers equal the Transformers backend's on {same:.0%}"
