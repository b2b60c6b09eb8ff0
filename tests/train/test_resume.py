"""Crash safety: a run killed with SIGKILL and resumed ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from train_helpers import PY, REPO, adapter, max_diff, moved, summary_of

from xtask_safety.errors import ConfigError
from xtask_safety.train import checkpoints
from xtask_safety.train.run import parse_train_args, train

# AdamW with warm-up and LoRA dropout: optimizer, scheduler and RNG state all have to come back.
RESUMABLE = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2", "--lora_dropout", "0.1",
             "--optim", "adamw_torch", "--learning_rate", "0.01", "--lr_scheduler_type", "linear",
             "--warmup_steps", "2", "--per_device_train_batch_size", "2"]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_recipe, tmp_path):
    base = ["--config", str(tiny_recipe), *RESUMABLE]
    full = tmp_path / "full"
    ref = train(*parse_train_args([*base, "--output_dir", str(full)]), progress=False)
    assert ref["global_step"] == 6

    out = tmp_path / "killed"
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen([PY, "-m", "xtask_safety.train", *base, "--output_dir", str(out)], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    try:
        while not checkpoints.is_complete(out / "checkpoint-2"):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]
            assert time.time() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # while it trains step 3
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "adapter_model.safetensors").exists()  # the run really did not finish

    resumed = train(*parse_train_args([*base, "--output_dir", str(out), "--resume", "true"]), progress=False)
    assert resumed["resumed_from"] is not None and resumed["resumed_from"].startswith(str(out / "checkpoint-"))
    assert resumed["global_step"] == ref["global_step"] == 6
    final_full, final_resumed = adapter(full), adapter(out)
    assert moved(final_full) > 1e-3
    assert max_diff(final_full, final_resumed) <= 1e-5
    assert summary_of(out)["global_step"] == 6


def _fake_checkpoint(root, step, state=True, weights=True, optimizer=True):
    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    if state:
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if weights:
        (ckpt / "adapter_model.safetensors").write_bytes(b"x")
    if optimizer:
        (ckpt / "optimizer.pt").write_bytes(b"x")
    return ckpt


def test_checkpoints_cut_off_by_a_crash_are_skipped(tmp_path):
    _fake_checkpoint(tmp_path, 2)
    _fake_checkpoint(tmp_path, 4)
    _fake_checkpoint(tmp_path, 6, state=False)  # killed before trainer_state.json
    _fake_checkpoint(tmp_path, 8, optimizer=False)
    torn = _fake_checkpoint(tmp_path, 10)
    (torn / "trainer_state.json").write_text('{"global_st')  # killed while writing it
    _fake_checkpoint(tmp_path, 12, weights=False)
    assert checkpoints.last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert checkpoints.last_complete_checkpoint(tmp_path / "missing") is None
    # numeric, not lexical, order
    _fake_checkpoint(tmp_path, 100)
    assert checkpoints.last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-100")


def test_resume_refuses_checkpoints_of_another_run(tmp_path):
    fp = checkpoints.run_fingerprint("a" * 64, {"learning_rate": 3e-4, "seed": 0})
    checkpoints.write_fingerprint(tmp_path, fp)
    checkpoints.check_fingerprint(tmp_path, checkpoints.run_fingerprint("a" * 64, {"learning_rate": 3e-4, "seed": 0}))
    with pytest.raises(ConfigError, match="different train_file"):
        checkpoints.check_fingerprint(tmp_path, checkpoints.run_fingerprint("b" * 64, {"learning_rate": 3e-4, "seed": 0}))
    with pytest.raises(ConfigError, match="learning_rate"):
        checkpoints.check_fingerprint(tmp_path, checkpoints.run_fingerprint("a" * 64, {"learning_rate": 1e-3, "seed": 0}))
