"""Data-parallel and DeepSpeed runs on CPU end with the parameters of a single-process run.

The global batch is the same everywhere (4 examples per update): 1 process x 4; 2 gloo processes x 2
(launched through ``xtask-safety train --accelerate-config cpu_ddp``); DeepSpeed ZeRO-2 with
2 processes x 1 x 2 accumulation steps (launched with ``accelerate launch -m xtask_safety.train``); ZeRO-3 likewise (marked slow).
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest
from train_helpers import PY, adapter, free_port, max_diff, moved, run_cli, summary_of

from xtask_safety.train.run import parse_train_args, train


@pytest.fixture(scope="module")
def single_process(tiny_recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    summary = train(*parse_train_args(["--config", str(tiny_recipe), "--output_dir", str(out)]), progress=False)
    assert summary["world_size"] == 1 and summary["global_step"] == 3
    params = adapter(out)
    assert moved(params) > 1e-3
    return params


def test_two_gloo_processes_match_one_process(single_process, tiny_recipe, tmp_path):
    out = tmp_path / "ddp"
    run_cli([PY, "-m", "xtask_safety.cli", "train", "--accelerate-config", "cpu_ddp",
             "--accelerate-args", f"--main_process_port {free_port()}",
             "--config", str(tiny_recipe), "--output_dir", str(out), "--per_device_train_batch_size", "2"])
    s = summary_of(out)
    assert (s["world_size"], s["distributed_type"], s["global_step"], s["global_batch_size"]) == (2, "MULTI_CPU", 3, 4)
    assert max_diff(single_process, adapter(out)) <= 1e-5


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="DeepSpeed builds its CPU communication op with a C++ compiler")
@pytest.mark.parametrize("stage", ["zero2", pytest.param("zero3", marks=pytest.mark.slow)])
def test_deepspeed_matches_one_process(stage, single_process, tiny_recipe, tmp_path):
    out = tmp_path / stage
    run_cli([PY, "-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{stage}.yaml",
             "--num_processes", "2", "--main_process_port", str(free_port()),
             "-m", "xtask_safety.train", "--config", str(tiny_recipe), "--output_dir", str(out),
             # DeepSpeed picks its own (CPU) device: use_cpu would make accelerate skip it; gloo for 2 ranks
             "--use_cpu", "false", "--ddp_backend", "gloo",
             "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2"])
    s = summary_of(out)
    assert (s["world_size"], s["distributed_type"], s["global_step"], s["global_batch_size"]) == (2, "DEEPSPEED", 3, 4)
    assert max_diff(single_process, adapter(out)) <= 1e-5
