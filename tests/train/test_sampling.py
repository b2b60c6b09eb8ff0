"""Stratified batches: every window holds each domain in its share, and the trainer uses them."""

from __future__ import annotations

from collections import Counter

from xtask_safety.train.run import parse_train_args, train
from xtask_safety.train.sampling import StratifiedSampler, stratified_order
from xtask_safety.train.trainer import WeightedSFTTrainer


def test_every_window_holds_each_domain_in_its_share():
    keys = ["malicious"] * 40 + ["news"] * 20 + ["useful"] * 20 + ["instruction"] * 80
    order = stratified_order(keys, seed=3)
    assert sorted(order) == list(range(len(keys)))  # a permutation
    for start in range(0, len(order) - 8 + 1):
        counts = Counter(keys[i] for i in order[start:start + 8])
        for key, n in Counter(keys).items():
            assert abs(counts[key] - 8 * n / len(keys)) <= 1.5, (start, counts)


def test_orders_differ_by_epoch_and_repeat_by_seed():
    keys = ["a", "b"] * 30
    s = StratifiedSampler(keys, seed=1)
    first = list(s)
    assert list(StratifiedSampler(keys, seed=1)) == first
    s.set_epoch(1)
    assert list(s) != first and sorted(s) == sorted(first)


def test_trainer_batches_are_stratified(tiny_recipe, tmp_path, monkeypatch):
    margs, dargs, sft = parse_train_args(["--config", str(tiny_recipe), "--output_dir", str(tmp_path / "out"),
                                          "--stratify_batches", "true", "--max_steps", "1"])
    seen = {}
    real = WeightedSFTTrainer._get_train_sampler

    def spy(self, ds=None):
        sampler = real(self, ds)
        seen["sampler"], seen["domains"] = sampler, (ds if ds is not None else self.train_dataset)["domain"]
        return sampler

    monkeypatch.setattr(WeightedSFTTrainer, "_get_train_sampler", spy)
    train(margs, dargs, sft, progress=False)
    assert isinstance(seen["sampler"], StratifiedSampler)
    order = list(seen["sampler"])
    # the tiny set: 6 malicious, 6 news, 6 instruction rows; batches of 4 hold at most 2 of a kind
    for start in range(0, len(order), 4):
        assert max(Counter(seen["domains"][i] for i in order[start:start + 4]).values()) <= 2
