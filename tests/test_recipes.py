"""Every recipe in recipes/ parses; the CPU demo recipe trains for a real step on the embedded model."""

import json
from pathlib import Path

import pytest

from xtask_safety.train.run import parse_train_args, train

REPO = Path(__file__).resolve().parents[1]
# Training recipes; recipes/data (data builds), recipes/eval (evaluation suites), recipes/sweeps and
# recipes/demo (the demo's sweep, data and suite recipes) hold other commands' configs and are parsed by
# those commands' tests (tests/test_demo.py plans the demo recipe).
NOT_TRAINING = {"data", "eval", "sweeps", "demo"}
RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if p.relative_to(REPO / "recipes").parts[0] not in NOT_TRAINING)


def test_there_are_recipes():
    assert RECIPES


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_recipe_parses(recipe, tmp_path):
    # GPU recipes ask for bf16; parsing them on a CPU machine is allowed when bf16 is switched off.
    margs, dargs, sft = parse_train_args(["--config", str(recipe), "--output_dir", str(tmp_path), "--bf16", "false",
                                          "--use_cpu", "true"])
    assert margs.model_name_or_path and sft.learning_rate > 0


def test_demo_recipe_trains_for_a_step(embedded_path, tmp_path):
    from xtask_safety.data.builder import BuildConfig, build_defense_set, load_refusals
    from xtask_safety.data.corpus import load_demo_corpus
    from xtask_safety.records import write_jsonl

    rows = build_defense_set(load_demo_corpus("main"), BuildConfig(tasks=["summarize", "case"], malicious_per_task=2,
                             benign_per_task=2, target_max_words=20), load_refusals())
    write_jsonl(tmp_path / "train.jsonl", rows)
    recipe = REPO / "recipes" / "smollm2-135m" / "demo" / "config_cpu.yaml"
    args = parse_train_args(["--config", str(recipe), "--train_file", str(tmp_path / "train.jsonl"),
                             "--output_dir", str(tmp_path / "adapter"), "--max_steps", "1",
                             "--per_device_train_batch_size", "4", "--save_strategy", "no"])
    summary = train(*args, progress=False)
    assert summary["global_step"] == 1 and summary["train_loss"] > 0
    adapter = tmp_path / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "README.md").is_file()
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["layers_to_transform"] == list(range(15, 30))


def test_every_recipe_directory_has_a_readme():
    for recipe in RECIPES:
        assert (recipe.parent / "README.md").is_file(), f"{recipe.parent} has no README.md"


def test_llama_1_and_llama_2_recipes_differ_only_in_the_model():
    import yaml

    variants = sorted(p.name for p in (REPO / "recipes" / "llama-2-7b").iterdir() if p.is_dir())
    assert {"paper", "qlora", "lora-bf16"} <= set(variants)
    for variant in variants:
        one, two = (yaml.safe_load((REPO / "recipes" / m / variant / "config.yaml").read_text())
                    for m in ("llama-1-7b", "llama-2-7b"))
        diff = {k for k in one.keys() | two.keys() if one.get(k) != two.get(k)}
        assert diff == {"model_name_or_path", "output_dir"}, (variant, diff)


def test_paper_recipes_hold_the_papers_setting():
    for model in ("llama-1-7b", "llama-2-7b"):
        margs, dargs, sft = parse_train_args(["--config", str(REPO / "recipes" / model / "paper" / "config.yaml"),
                                              "--bf16", "false", "--use_cpu", "true"])
        assert (margs.lora_r, margs.lora_alpha, margs.lora_dropout) == (8, 16, 0.05)
        assert sorted(margs.lora_target_modules) == ["q_proj", "v_proj"] and margs.load_in_8bit
        assert (sft.num_train_epochs, sft.learning_rate, sft.max_length) == (3, 3e-4, 1024)
        assert (sft.per_device_train_batch_size, dargs.global_batch_size) == (4, 128)
        assert sft.completion_only_loss is False and margs.prompt_template == "alpaca"
