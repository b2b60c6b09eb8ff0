"""Stratified batches: every batch holds each domain in its share of the training set.

The refuse-or-answer decision sits on the first completion token, and one bias moves it for every
document at once. When a batch happens to be mostly refusal rows (length grouping makes this common:
documents of one domain have similar lengths), a step pushes that bias toward refusing everything,
and the next mostly-benign batch pushes it back; at a CPU-sized learning rate the model swings
between "refuse all" and "answer all" and never learns the document-dependent part. With each batch
mixed in the set's proportions, the bias gradients of the two kinds of row cancel within the step and
what is left is the signal that tells the documents apart.

Rows of each domain are shuffled, then placed at evenly spaced positions ``(k + u) / n`` (``u`` a
random offset per domain) and merged: any window of ``b`` consecutive rows holds each domain's share
of ``b`` rows, give or take one.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator

from torch.utils.data import Sampler


def stratified_order(keys: list[str], seed: int) -> list[int]:
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    placed: list[tuple[float, float, int]] = []
    for key in sorted(groups):
        rows = groups[key]
        rng.shuffle(rows)
        offset = rng.random()
        placed.extend(((k + offset) / len(rows), rng.random(), i) for k, i in enumerate(rows))
    return [i for _, _, i in sorted(placed)]


class StratifiedSampler(Sampler[int]):
    """A new stratified order each epoch, reproducible from ``seed`` and the epoch (so resume works)."""

    def __init__(self, keys: list[str], seed: int = 0):
        self.keys, self.seed, self.epoch = list(keys), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[int]:
        return iter(stratified_order(self.keys, self.seed * 1_000_003 + self.epoch))
