"""Tracking: run names from the data, W&B offline with recipe + manifest in the config, TensorBoard."""

from __future__ import annotations

import importlib.util
import json

import pytest
from train_helpers import summary_of, wandb_records

from xtask_safety.errors import ConfigError
from xtask_safety.records import Record
from xtask_safety.train import tracking
from xtask_safety.train.run import parse_train_args, train


def _recs(spec):
    return [Record(id=f"r{i}", task=t, domain=d, document="x", instruction="y", response="z")
            for i, (t, d) in enumerate(spec)]


def test_run_names_encode_model_task_size_and_weighting():
    single = tracking.data_profile(_recs([("summarize", "malicious")] * 3 + [("summarize", "news")] * 3), [1.0] * 6)
    ident = tracking.run_identity("/weights/Llama-2-7b-hf/", single, "uniform")
    assert ident["name"] == "llama-2-7b-hf-summarize-n3-uniform"
    assert ident["group"] == "llama-2-7b-hf-summarize"
    assert {"model:llama-2-7b-hf", "task:summarize", "size:3", "weighting:uniform", "setting:single"} <= set(ident["tags"])

    five = [("summarize", "malicious"), ("translate", "malicious"), ("sentiment", "malicious"), ("cloze", "malicious"),
            ("case", "malicious")] * 2 + [("instruction", "instruction")] * 4
    mixed = tracking.data_profile(_recs(five), [1.0] * len(five))
    ident = tracking.run_identity("embedded", mixed, "balanced", group="sweep-1", extra_tags=["seed:1"])
    assert ident["name"] == "smollm2-135m-instruct-mixed-n2x5-balanced"
    assert ident["group"] == "sweep-1" and "seed:1" in ident["tags"] and "setting:mixed" in ident["tags"]
    assert mixed["weight_per_task"]["instruction"] == 4.0

    none = tracking.data_profile(_recs([("instruction", "instruction")]), [1.0])
    assert tracking.run_identity("m", none, "ratio")["name"] == "m-nodefense-n0-ratio"


def test_manifest_is_found_beside_a_built_set(tmp_path):
    build = tmp_path / "build"
    (build / "train").mkdir(parents=True)
    set_file = build / "train" / "single-case-10.jsonl"
    set_file.write_text("{}\n")
    manifest = {"name": "b", "sets": [{"file": "train/single-case-10.jsonl", "size": 10, "sha256": "0" * 64}]}
    (build / "manifest.json").write_text(json.dumps(manifest))
    path, found = tracking.find_manifest(str(set_file), None)
    assert path == str(build / "manifest.json") and found == manifest
    assert tracking.manifest_entry(found, path, str(set_file), "f" * 64)["size"] == 10
    assert tracking.find_manifest(str(tmp_path / "elsewhere.jsonl"), None) == (None, None)
    (build / "manifest.json").write_text("{broken")
    with pytest.raises(ConfigError, match="malformed dataset manifest"):
        tracking.find_manifest(str(set_file), None)
    with pytest.raises(ConfigError, match="data_manifest: .* not found"):
        tracking.find_manifest(str(set_file), str(tmp_path / "nope.json"))


def test_a_missing_tracker_package_is_a_config_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="report_to wandb: .*pip install wandb"):
        tracking.check_trackers(["wandb"])
    tracking.check_trackers([])


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None or importlib.util.find_spec("tensorboard") is None,
                    reason="wandb and tensorboard not installed")
def test_wandb_offline_and_tensorboard(tiny_recipe, train_file, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline must be the default, not the test's setting
    monkeypatch.delenv("WANDB_DIR", raising=False)
    manifest = {"name": "fixture build", "seed": 0, "sets": []}
    (train_file.parent / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "run"
    recipe = tmp_path / "tracked.yaml"  # a list of trackers, as a recipe gives it
    recipe.write_text(tiny_recipe.read_text().replace("report_to: none", "report_to: [wandb, tensorboard]"))
    try:
        summary = train(*parse_train_args(["--config", str(recipe), "--output_dir", str(out), "--max_steps", "2",
                                           "--run_tags", "seed:0,smoke", "--run_group", "tests"]), progress=False)
    finally:
        (train_file.parent / "manifest.json").unlink()
    assert summary["run_name"].endswith("-mixed-summarize+case-n3x2-balanced")
    assert summary["data_manifest"] == str(train_file.parent / "manifest.json")
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, "W&B did not write an offline run"
    records = wandb_records(runs[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == summary["run_name"] and run.run_group == "tests" and run.project == "xtask-safety"
    assert {"setting:mixed", "size:3", "weighting:balanced", "task:summarize", "task:case", "seed:0", "smoke"} <= set(run.tags)
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    xtask = config["xtask"]
    assert xtask["recipe_file"] == str(recipe) and "weighting: balanced" in xtask["recipe_text"]
    assert xtask["data_manifest"] == manifest and xtask["data"]["train_file_sha256"] == summary["train_file_sha256"]
    logged = {item.key or "/".join(item.nested_key) for r in records if r.WhichOneof("record_type") == "history"
              for item in r.history.item}
    assert {"train/loss", "train/nll_summarize", "train/nll_case", "train/nll_instruction"} <= logged
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    card = (out / "README.md").read_text()
    assert "manifest.json" in card and summary["run_name"] in card and summary["data_manifest_sha256"][:16] in card
    assert summary_of(out)["report_to"] == ["wandb", "tensorboard"]
