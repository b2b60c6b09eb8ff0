"""The GPU recipes train for a step on a tiny model on CPU (8-bit and 4-bit bases through bitsandbytes),
each weighting strategy is selectable from a recipe, and completion-only loss is a switch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from datasets import Dataset
from train_helpers import REPO, adapter, moved
from trl import SFTConfig

from xtask_safety.models import load_tokenizer
from xtask_safety.records import read_records
from xtask_safety.tasks import INSTRUCTION_TASK, TASK_NAMES
from xtask_safety.train.collator import WeightedCollator
from xtask_safety.train.dataset import to_sft_rows
from xtask_safety.train.run import parse_train_args, train
from xtask_safety.train.trainer import WeightedSFTTrainer
from xtask_safety.train.weights import assign_weights

needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")


def _gpu_recipe_on_cpu(recipe: str, model: str, train_file: Path, out: Path) -> list[str]:
    """A GPU recipe as users run it, with only the machine-specific fields changed."""
    return ["--config", str(REPO / "recipes" / recipe / "config.yaml"), "--model_name_or_path", model,
            "--train_file", str(train_file), "--output_dir", str(out), "--use_cpu", "true", "--bf16", "false",
            "--report_to", "none", "--max_steps", "1", "--global_batch_size", "8", "--max_length", "128",
            "--save_strategy", "no", "--activation_checkpointing", "false", "--learning_rate", "0.01",
            "--warmup_steps", "0"]


@needs_bnb
@pytest.mark.parametrize(("variant", "bits"), [("paper", "8bit"), ("qlora", "4bit")])
def test_quantized_recipes_train_a_step_on_cpu(variant, bits, tiny_model_dir, train_file, tmp_path):
    out = tmp_path / variant
    margs, dargs, sft = parse_train_args(_gpu_recipe_on_cpu(f"llama-2-7b/{variant}", tiny_model_dir, train_file, out))
    summary = train(margs, dargs, sft, progress=False)
    assert summary["quantization"] == bits
    assert summary["quantized_layers"] >= 14  # all 7 linear layers of both blocks are bitsandbytes layers
    # global batch 8 = micro-batch 4 (from the recipe) x 2 accumulation steps on one process
    assert (summary["gradient_accumulation_steps"], summary["global_step"]) == (2, 1)
    assert summary["completion_only_loss"] is False  # the paper trains on the whole sequence
    assert moved(adapter(out)) > 0
    if bits == "4bit":
        assert margs.bnb_4bit_quant_type == "nf4" and margs.use_bnb_nested_quant


def test_bf16_lora_recipe_trains_a_step_on_cpu(tiny_model_dir, train_file, tmp_path):
    summary = train(*parse_train_args(_gpu_recipe_on_cpu("llama-2-7b/lora-bf16", tiny_model_dir, train_file,
                                                         tmp_path / "bf16")), progress=False)
    assert summary["quantization"] is None and summary["quantized_layers"] == 0 and summary["global_step"] == 1


def _expected_task_totals(records, strategy, **kw):
    totals = {}
    for r, w in zip(records, assign_weights(records, strategy, **kw), strict=True):
        totals[r.task] = totals.get(r.task, 0.0) + w
    return totals


@pytest.mark.parametrize("strategy", ["uniform", "per_task", "balanced", "ratio"])
def test_each_weighting_strategy_is_selectable_from_a_recipe(strategy, tiny_recipe, train_file, tmp_path):
    cfg = yaml.safe_load(tiny_recipe.read_text())
    cfg.update({"weighting": strategy, "max_steps": 1, "per_device_train_batch_size": 18})  # one batch, every task
    if strategy == "per_task":
        cfg["task_weights"] = {"summarize": 3.0, "instruction": 0.5}
    if strategy == "ratio":
        cfg["defense_ratio"] = 0.25
    recipe = tmp_path / f"{strategy}.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    margs, dargs, sft = parse_train_args(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    assert dargs.weighting == strategy
    summary = train(margs, dargs, sft, progress=False)
    records = read_records(train_file)
    expected = _expected_task_totals(records, strategy, task_weights=cfg.get("task_weights"),
                                     defense_ratio=cfg.get("defense_ratio", 0.5))
    assert summary["weight_per_task"] == pytest.approx(expected)
    totals = summary["weight_per_task"]
    if strategy == "uniform":
        assert totals == {"case": 6.0, "instruction": 6.0, "summarize": 6.0}
    elif strategy == "per_task":
        assert totals == {"case": 6.0, "instruction": 3.0, "summarize": 18.0}
    elif strategy == "balanced":
        assert totals["case"] == pytest.approx(totals["instruction"]) == pytest.approx(totals["summarize"])
    else:
        malicious = sum(w for r, w in zip(records, assign_weights(records, "ratio", defense_ratio=0.25), strict=True)
                        if r.is_malicious)
        assert malicious / sum(totals.values()) == pytest.approx(0.25)
    assert {"summarize", "case", "instruction"} <= set(summary["final_nll"])


@pytest.mark.parametrize("completion_only", [False, True])
def test_completion_only_loss_is_a_switch(completion_only, tiny_model_dir, train_file, tmp_path):
    tok = load_tokenizer(tiny_model_dir, padding_side="right")
    records = read_records(train_file)
    rows = to_sft_rows(records, [1.0] * len(records), "alpaca")
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=128,
                     remove_unused_columns=False, completion_only_loss=completion_only)
    tasks = list(TASK_NAMES) + [INSTRUCTION_TASK]
    trainer = WeightedSFTTrainer(model=tiny_model_dir, args=args, train_dataset=Dataset.from_list(rows),
                                 processing_class=tok, task_names=tasks,
                                 data_collator=WeightedCollator(pad_token_id=tok.pad_token_id, task_names=tasks))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trained = (batch["token_weights"] > 0).sum(dim=1)
    real = batch["attention_mask"].sum(dim=1)
    prompt_len = [len(tok(ALPACA)["input_ids"]) for ALPACA in (rows[i]["prompt"] for i in range(4))]
    if completion_only:
        assert (trained <= real - min(prompt_len) + 1).all()
    else:
        assert (trained == real).all()  # every real token carries loss: prompt and answer
