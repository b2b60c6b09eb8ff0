"""SIGKILL during `xtask-safety train` at four points: before the first checkpoint, between checkpoints,
inside a checkpoint save (a torn checkpoint), and after the last step before the final adapter is saved.
Rerunning the same command (it has ``--resume true``) ends with the adapter and per-step losses of an
uninterrupted run: bit-equal on CPU (measured, and asserted exactly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reliability_helpers import jsonl, run_killed, train_rows

from xtask_safety.cli import main
from xtask_safety.train import checkpoints

# AdamW with warm-up and LoRA dropout: optimizer, scheduler and RNG state all have to come back.
POINTS = ["train.step:1", "train.step:3", "train.checkpoint:2", "train.final"]
EXACT = 0.0  # measured: resumed runs match bit for bit on CPU (see docs/reliability.md)


def train_argv(model: str, train_file: Path, out: Path) -> list[str]:
    return ["train", "--model_name_or_path", model, "--train_file", str(train_file), "--output_dir", str(out),
            "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.1",
            "--lora_target_modules", "q_proj", "v_proj", "--max_length", "96", "--per_device_train_batch_size", "2",
            "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--learning_rate", "0.01",
            "--optim", "adamw_torch", "--lr_scheduler_type", "linear", "--warmup_steps", "1", "--logging_steps", "1",
            "--report_to", "none", "--use_cpu", "true", "--bf16", "false", "--seed", "0", "--disable_tqdm", "true",
            "--dataloader_num_workers", "0", "--activation_checkpointing", "false", "--resume", "true"]


def _adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def _losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "xtask_training.json").read_text())["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on a busy machine


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir, capsys):
    train_file = tmp_path / "train.jsonl"
    train_file.write_text(jsonl(*train_rows()), encoding="utf-8")
    outs = {p: tmp_path / p.replace(":", "-").replace(".", "_") for p in POINTS}
    jobs = [(p, train_argv(tiny_model_dir, train_file, outs[p])) for p in POINTS]
    # one killed run goes through the console entry; the others are forks of this process (no imports)
    run_killed(jobs[:1], forked=jobs[1:], log_dir=tmp_path, timeout=600)

    # what each kill left behind
    done = {p: [c.name for c in checkpoints.checkpoints(outs[p]) if checkpoints.is_complete(c)] for p in POINTS}
    assert done == {"train.step:1": [], "train.step:3": ["checkpoint-2"], "train.checkpoint:2": ["checkpoint-2"],
                    "train.final": ["checkpoint-2", "checkpoint-4"]}
    assert (outs["train.checkpoint:2"] / "checkpoint-4").is_dir()  # torn: weights, optimizer, no trainer state
    assert not any((outs[p] / "adapter_model.safetensors").exists() for p in POINTS)

    ref = tmp_path / "ref"
    assert main(train_argv(tiny_model_dir, train_file, ref)) == 0
    want_adapter, want_losses = _adapter(ref), _losses(ref)
    want_summary = json.loads((ref / "xtask_training.json").read_text())["summary"]
    assert sorted(want_losses) == [1, 2, 3, 4]
    assert max(v.abs().max().item() for k, v in want_adapter.items() if "lora_B" in k) > 1e-4  # it trained

    for p in POINTS:
        assert main(train_argv(tiny_model_dir, train_file, outs[p])) == 0, p
        info = json.loads((outs[p] / "xtask_training.json").read_text())["summary"]
        assert info["global_step"] == 4
        assert (info["resumed_from"] is None) == (p == "train.step:1"), (p, info["resumed_from"])
        got = _adapter(outs[p])
        assert got.keys() == want_adapter.keys()
        diff = max((got[k] - want_adapter[k]).abs().max().item() for k in got)
        assert diff <= EXACT, f"{p}: adapter differs from the uninterrupted run by {diff}"
        assert _losses(outs[p]) == want_losses, p
        # the summary's train loss is the whole run's, also after a resume
        assert info["train_loss"] == pytest.approx(want_summary["train_loss"], rel=1e-6), p
