"""launcher: accelerate trains each cell in its own `accelerate launch` process (here one CPU process)."""

import shutil

from sweep_helpers import actions, events, write_sweep

from xtask_safety.sweep.cli import run_sweep


def test_cells_train_under_accelerate_launch(tiny_model_dir, small_corpus, tmp_path):
    model = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, model)
    cfg = write_sweep(tmp_path, str(model), small_corpus, defended=["summarize"], sizes=[2], report=False,
                      launcher="accelerate", train_overrides={"max_steps": 1},
                      accelerate_args="--cpu --num_processes 1 --num_machines 1 --mixed_precision no "
                                      "--dynamo_backend no")
    outcome = run_sweep(["--config", str(cfg)])["outcome"]
    assert outcome.missing == [] and outcome.counters["train_run"] == 1
    adapter = next((tmp_path / "sweep" / "adapters").iterdir())
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "xtask_sweep_train.json").is_file()
    assert actions(events(tmp_path / "sweep"), "train") == {"tiny__summarize-n2-uniform-s0": ["run"]}
