"""Threshold calibration after training: the side each step trains on, the state kept, the curve written."""

from __future__ import annotations

import json

import pytest
import torch
from test_margin import _records

from xtask_safety.errors import ConfigError
from xtask_safety.train import calibrate
from xtask_safety.train.calibrate import leaning
from xtask_safety.train.run import parse_train_args, train


def test_leaning():
    assert leaning({"malicious": 1.0, "news": 0.5, "useful": 0.3}) == "answer"  # benign refused, malicious not answered
    assert leaning({"malicious": 0.6, "news": 0.1, "useful": 0.1}) == "refuse"  # malicious answered more
    assert leaning({"malicious": 0.75, "news": 0.25, "useful": 0.25}) == "refuse"  # equal: lean to refusing


def test_calibration_trains_the_short_side_and_keeps_the_best_state(tiny_recipe, train_file, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in _records()), encoding="utf-8")
    readings = iter([{"malicious": 0.5, "news": 0.0, "useful": 0.0},   # start: malicious answered -> refusal rows
                     {"malicious": 1.0, "news": 1.0, "useful": 1.0},   # step 1: benign refused -> answer rows
                     {"malicious": 1.0, "news": 0.0, "useful": 0.0},   # step 2: the best (score 1.0); a tie
                                                                       # of the two sides -> refusal rows
                     {"malicious": 0.0, "news": 0.0, "useful": 0.0}])  # step 3
    snaps: list[dict[str, torch.Tensor]] = []

    def fake_margins(model, *args, **kwargs):
        snaps.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return []

    monkeypatch.setattr(calibrate, "decision_margins", fake_margins)
    monkeypatch.setattr(calibrate, "refusal_shares", lambda decisions: next(readings))
    sides: list[set[str]] = []
    real = calibrate.calibrate_threshold

    def spy(trainer, *args, **kwargs):
        collate = trainer.data_collator

        def spy_collate(examples):
            sides.append({ex["domain"] for ex in examples})
            return collate(examples)

        trainer.data_collator = spy_collate
        return real(trainer, *args, **kwargs)

    monkeypatch.setattr(calibrate, "calibrate_threshold", spy)
    out = tmp_path / "out"
    margs, dargs, sft = parse_train_args(["--config", str(tiny_recipe), "--output_dir", str(out),
                                          "--decision_dev_file", str(dev), "--decision_calibrate_steps", "3",
                                          "--decision_calibrate_lr", "1e-2"])
    summary = train(margs, dargs, sft, progress=False)
    assert summary["calibration"] == {"steps_kept": 2, "score": 1.0, "start_score": 0.8333}
    # refusal rows, then rows of every other domain (ordinary instruction rows are answered too), then refusals
    assert sides[0] == sides[2] == {"malicious"} and "malicious" not in sides[1]
    curve = [json.loads(line) for line in (out / "decision_curve.jsonl").read_text().splitlines()]
    calib = [p for p in curve if "calibration_step" in p]
    assert [(p["calibration_step"], p["side"]) for p in calib] == [(0, None), (1, "refuse"), (2, "answer"),
                                                                   (3, "refuse")]
    assert curve[-1] == {"calibration_kept": 2, "score": 1.0}
    name = next(n for n in snaps[2] if "lora_B" in n)
    assert not torch.equal(snaps[2][name], snaps[3][name])  # step 3 moved the weights...
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert torch.equal(saved[name.replace(".default", "")], snaps[2][name])  # ...and step 2's were saved


def test_calibration_needs_a_development_file(tiny_recipe, tmp_path):
    with pytest.raises(ConfigError, match="decision_calibrate_steps: needs decision_dev_file"):
        parse_train_args(["--config", str(tiny_recipe), "--output_dir", str(tmp_path / "o"),
                          "--decision_calibrate_steps", "2"])
    with pytest.raises(ConfigError, match="decision_calibrate_lr: must be positive"):
        parse_train_args(["--config", str(tiny_recipe), "--output_dir", str(tmp_path / "o"),
                          "--decision_calibrate_lr", "0"])
