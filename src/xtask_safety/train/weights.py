"""Sample-weighting strategies for the mixed-task loss.

Every strategy returns float weights whose mean over the training set is 1 (``uniform`` and
``per_task`` aside, which are taken as given), so the learning rate keeps its meaning. Weights
already stored in the records multiply the strategy's weights.
"""

from __future__ import annotations

from collections import Counter

from xtask_safety.errors import ConfigError
from xtask_safety.records import Record


def assign_weights(
    records: list[Record],
    strategy: str = "uniform",
    task_weights: dict[str, float] | None = None,
    defense_ratio: float = 0.5,
) -> list[float]:
    n = len(records)
    if strategy == "uniform":
        base = [1.0] * n
    elif strategy == "per_task":
        base = _per_task(records, task_weights)
    elif strategy == "balanced":
        counts = Counter(r.task for r in records)
        k = len(counts)
        base = [n / (k * counts[r.task]) for r in records]
    elif strategy == "ratio":
        n_def = sum(r.is_malicious for r in records)
        n_util = n - n_def
        if n_def == 0 or n_util == 0:
            raise ConfigError("weighting ratio: needs both malicious (defense) and benign (utility) rows")
        w_def, w_util = defense_ratio * n / n_def, (1 - defense_ratio) * n / n_util
        base = [w_def if r.is_malicious else w_util for r in records]
    else:
        raise ConfigError(f"weighting: unknown strategy {strategy!r}")
    return [float(b) * float(r.weight) for b, r in zip(base, records, strict=True)]


def _per_task(records: list[Record], task_weights: dict[str, float] | None) -> list[float]:
    """``task`` keys weight every row of a task; ``task:domain`` keys (``cloze:useful``, ``translate:malicious``)
    one task's rows of one domain and take precedence, so the benign and the refusal side of a task can be
    weighted apart; ``default`` weights the rest (1.0 when absent)."""
    if not task_weights:
        raise ConfigError("weighting per_task: task_weights is empty")
    known = {r.task for r in records} | {f"{r.task}:{r.domain}" for r in records} | {"default"}
    extra = sorted(set(task_weights) - known)
    if extra:
        raise ConfigError(f"task_weights: {extra} do not occur in the training data (keys are a task, "
                          "task:domain or default)")
    default = task_weights.get("default", 1.0)
    return [task_weights.get(f"{r.task}:{r.domain}", task_weights.get(r.task, default)) for r in records]
