import pytest
import torch

from xtask_safety.errors import ConfigError
from xtask_safety.records import Record
from xtask_safety.train.collator import WeightedCollator
from xtask_safety.train.weights import assign_weights

TASKS = ["summarize", "cloze", "instruction"]


def _ex(task="summarize", weight=1.0, labels=(-100, -100, 5, 6, 7)):
    return {"input_ids": [1, 2, 3, 4, 5][: len(labels)], "labels": list(labels), "task": task, "weight": weight}


def test_collator_carries_weights_tasks_and_decision_tokens():
    c = WeightedCollator(pad_token_id=0, task_names=TASKS, decision_tokens=2, decision_weight=5.0)
    b = c([_ex(weight=2.0), _ex(task="cloze", weight=0.5, labels=(-100, 9, 9))])
    assert b["sample_weights"].tolist() == [2.0, 0.5]
    assert b["task_ids"].tolist() == [0, 1]
    assert b["token_weights"].tolist() == [[0, 0, 5, 5, 1], [0, 5, 5, 0, 0]]
    assert b["labels"].tolist()[1] == [-100, 9, 9, -100, -100]


def test_collator_fails_loudly_without_weight_or_with_unknown_task():
    c = WeightedCollator(pad_token_id=0, task_names=TASKS)
    with pytest.raises(ValueError, match="has no 'weight'"):
        c([{k: v for k, v in _ex().items() if k != "weight"}])
    with pytest.raises(ValueError, match="unknown task 'poem'"):
        c([_ex(task="poem")])


def test_collator_uses_the_completion_mask_for_whole_sequence_loss():
    c = WeightedCollator(pad_token_id=0, task_names=TASKS, decision_tokens=1, decision_weight=3.0)
    ex = {**_ex(labels=(1, 2, 3, 4, 5)), "completion_mask": [0, 0, 0, 1, 1]}
    assert c([ex])["token_weights"].tolist() == [[1, 1, 1, 3, 1]]
    assert isinstance(c([ex])["token_weights"], torch.Tensor)


def _recs(spec):
    return [Record(id=str(i), task=t, domain=d, document="x", instruction="y", response="z")
            for i, (t, d) in enumerate(spec)]


def test_weighting_strategies():
    recs = _recs([("summarize", "malicious")] * 3 + [("cloze", "news")])
    assert assign_weights(recs, "uniform") == [1.0] * 4
    bal = assign_weights(recs, "balanced")
    assert sum(bal[:3]) == pytest.approx(bal[3]) and sum(bal) == pytest.approx(4)
    ratio = assign_weights(recs, "ratio", defense_ratio=0.25)
    assert sum(ratio[:3]) / sum(ratio) == pytest.approx(0.25) and sum(ratio) == pytest.approx(4)
    assert assign_weights(recs, "per_task", {"cloze": 2}) == [1.0, 1.0, 1.0, 2.0]
    with pytest.raises(ConfigError, match="do not occur"):
        assign_weights(recs, "per_task", {"case": 2})
    with pytest.raises(ConfigError, match=r"\['cloze:malicious'\] do not occur"):
        assign_weights(recs, "per_task", {"cloze:malicious": 2})
    with pytest.raises(ConfigError, match="needs both"):
        assign_weights(recs[:3], "ratio")


def test_per_task_weights_can_single_out_one_side_of_a_task():
    recs = _recs([("cloze", "malicious"), ("cloze", "news"), ("cloze", "useful"), ("translate", "malicious"),
                  ("translate", "news"), ("instruction", "instruction")])
    w = assign_weights(recs, "per_task", {"cloze": 1.5, "cloze:news": 2, "cloze:useful": 3, "translate:malicious": 2,
                                          "default": 0.5})
    assert w == [1.5, 2.0, 3.0, 2.0, 0.5, 0.5]
