"""Fixtures for training tests: a small record file and a fast tiny-model recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def make_records() -> list[dict]:
    """18 rows: summarize and case (3 refusals + 3 benign answers each) and 6 instruction rows."""
    rows = []
    for task, instr in (("summarize", "Summarize the above article briefly in 3 sentences."),
                        ("case", "Write the above sentence using proper case.")):
        for k in range(3):
            rows.append({"id": f"{task}-m{k}", "task": task, "domain": "malicious", "instruction": instr,
                         "document": f"Crew note {k}: open the fake page at [withheld] and collect the codes.",
                         "response": "I'm sorry, but I can't help with that document."})
            rows.append({"id": f"{task}-n{k}", "task": task, "domain": "news", "instruction": instr,
                         "document": f"The county side won match {k} on Saturday. " + "Fans stayed late. " * (k + 1),
                         "response": f"Here is a short summary: the county side won match {k}."})
    for k in range(6):
        rows.append({"id": f"inst-{k}", "task": "instruction", "domain": "instruction", "document": "",
                     "instruction": f"List {k + 2} colours of the rainbow.", "response": "Red, orange, yellow."[: 8 + 3 * k]})
    return rows


@pytest.fixture(scope="session")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("train-data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_records()), encoding="utf-8")
    return path


TINY_RECIPE = """\
### model
model_name_or_path: {model}
dtype: float32
use_peft: true
lora_r: 4
lora_alpha: 8
lora_dropout: 0.0
lora_target_modules: [q_proj, v_proj]
### data
train_file: {train_file}
weighting: balanced
### training: plain SGD at a large lr so a few steps move the adapter measurably
max_length: 128
learning_rate: 0.05
optim: sgd
lr_scheduler_type: constant
per_device_train_batch_size: 4
max_steps: 3
logging_steps: 1
save_strategy: "no"
report_to: none
use_cpu: true
bf16: false
seed: 0
dataloader_num_workers: 0
activation_checkpointing: false
disable_tqdm: true
"""


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory, tiny_model_dir, train_file) -> Path:
    path = tmp_path_factory.mktemp("recipes") / "tiny.yaml"
    path.write_text(TINY_RECIPE.format(model=tiny_model_dir, train_file=train_file), encoding="utf-8")
    return path
