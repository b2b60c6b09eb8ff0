"""The mixed-task loss: exactness against SFTTrainer, accumulation invariance, real training."""

from __future__ import annotations

import contextlib

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from xtask_safety.models import load_tokenizer
from xtask_safety.records import Record
from xtask_safety.tasks import INSTRUCTION_TASK, TASK_NAMES
from xtask_safety.train.collator import WeightedCollator
from xtask_safety.train.dataset import to_sft_rows
from xtask_safety.train.trainer import WeightedSFTTrainer

TASKS = list(TASK_NAMES) + [INSTRUCTION_TASK]


def _records(n=4):
    out = []
    for i in range(n):
        dom = "malicious" if i % 2 else "news"
        out.append(Record(
            id=f"r{i}", task=TASK_NAMES[i % 5], domain=dom,
            document=f"A short document number {i}. " + "It has a few words. " * (1 + i),
            instruction="Summarize the above article briefly in 3 sentences.",
            response=("I can't help with this." if dom == "malicious" else "Here is a brief summary: " + "ok " * (2 + i)),
        ))
    return out


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", warmup_steps=0, logging_steps=1,
                seed=0, dataloader_num_workers=0, disable_tqdm=True, max_length=256, remove_unused_columns=False,
                per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=1)
    base.update(kw)
    return SFTConfig(**base)


def _lora():
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def _weighted_trainer(model_dir, tmp_path, weights, **kw):
    tok = load_tokenizer(model_dir, padding_side="right")
    rows = to_sft_rows(_records(len(weights)), weights)
    collator = WeightedCollator(pad_token_id=tok.pad_token_id, task_names=TASKS,
                                decision_tokens=kw.pop("decision_tokens", 0), decision_weight=kw.pop("decision_weight", 1.0))
    return WeightedSFTTrainer(model=model_dir, args=_args(tmp_path, **kw), train_dataset=Dataset.from_list(rows),
                              processing_class=tok, data_collator=collator, peft_config=_lora(), task_names=TASKS)


def _lora_params(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}


def test_all_ones_weights_reproduce_the_plain_sft_loss(tiny_model_dir, tmp_path):
    weighted = _weighted_trainer(tiny_model_dir, tmp_path, [1.0] * 4)
    batch = weighted.data_collator([weighted.train_dataset[i] for i in range(4)])
    plain_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    n_tokens = (batch["labels"][:, 1:] != -100).sum()
    model = weighted.model
    model.eval()
    with torch.no_grad():
        loss_w = weighted.compute_loss(model, dict(batch), num_items_in_batch=weighted._get_num_items_in_batch([batch], "cpu"))
        loss_plain = SFTTrainer.compute_loss(weighted, model, dict(plain_inputs), num_items_in_batch=n_tokens)
        loss_local = weighted.compute_loss(model, dict(batch))
        logits = model(**{k: plain_inputs[k] for k in ("input_ids", "attention_mask")}).logits
        ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                plain_inputs["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert abs(loss_w.item() - loss_plain.item()) <= 1e-6
    assert abs(loss_local.item() - loss_plain.item()) <= 1e-6
    assert abs(loss_w.item() - ref.item()) <= 1e-5


def test_full_training_step_matches_plain_sft_trainer(tiny_model_dir, tmp_path):
    weighted = _weighted_trainer(tiny_model_dir, tmp_path / "w", [1.0] * 4, gradient_accumulation_steps=2,
                                 per_device_train_batch_size=2)
    weighted.train()
    tok = load_tokenizer(tiny_model_dir, padding_side="right")
    rows = [{k: r[k] for k in ("prompt", "completion")} for r in to_sft_rows(_records(4), [1.0] * 4)]
    plain = SFTTrainer(model=tiny_model_dir, args=_args(tmp_path / "p", gradient_accumulation_steps=2,
                                                        per_device_train_batch_size=2, remove_unused_columns=True),
                       train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=_lora())
    plain.train()
    pw, pp = _lora_params(weighted), _lora_params(plain)
    assert pw.keys() == pp.keys()
    assert max((pw[k] - pp[k]).abs().max().item() for k in pw) <= 1e-6


@pytest.mark.parametrize("normalization", ["token", "sample"])
def test_gradient_accumulation_does_not_change_the_update(tiny_model_dir, tmp_path, normalization):
    weights = [1.0, 2.0, 0.5, 3.0]
    one = _weighted_trainer(tiny_model_dir, tmp_path / "a", weights, per_device_train_batch_size=4,
                            gradient_accumulation_steps=1, decision_tokens=2, decision_weight=4.0)
    two = _weighted_trainer(tiny_model_dir, tmp_path / "b", weights, per_device_train_batch_size=2,
                            gradient_accumulation_steps=2, decision_tokens=2, decision_weight=4.0)
    for t in (one, two):
        t.loss_normalization = normalization
        t.train()
    p1, p2 = _lora_params(one), _lora_params(two)
    moved = max(p1[k].abs().max().item() for k in p1 if "lora_B" in k)
    assert moved > 1e-4  # the step did something
    assert max((p1[k] - p2[k]).abs().max().item() for k in p1) <= 1e-6


def test_weights_select_samples(tiny_model_dir, tmp_path):
    """Weight 0 removes a sample from the loss; the weighted mean equals the loss of the rest."""
    t = _weighted_trainer(tiny_model_dir, tmp_path, [1.0, 0.0, 1.0, 0.0])
    batch = t.data_collator([t.train_dataset[i] for i in range(4)])
    keep = t.data_collator([t.train_dataset[i] for i in (0, 2)])
    t.model.eval()
    with torch.no_grad():
        full = t.compute_loss(t.model, dict(batch)).item()
        sub = t.compute_loss(t.model, dict(keep)).item()
    assert full == pytest.approx(sub, abs=1e-5)


def test_per_task_nll_is_logged(tiny_model_dir, tmp_path):
    t = _weighted_trainer(tiny_model_dir, tmp_path, [1.0] * 4, max_steps=2)
    t.train()
    logged = {k for entry in t.state.log_history for k in entry}
    assert {"nll_summarize", "nll_translate"} <= logged


def test_the_lm_head_scores_only_labelled_positions_on_a_cpu_with_the_same_gradients(tiny_model_dir, tmp_path,
                                                                                   monkeypatch):
    """The loss goes through TRL's fused head on the completion positions only, bitwise as over every position."""
    import trl.trainer.utils as trl_utils

    t = _weighted_trainer(tiny_model_dir, tmp_path, [1.0, 2.0, 0.5, 3.0], decision_tokens=2, decision_weight=4.0)
    batch = t.data_collator([t.train_dataset[i] for i in range(4)])
    n_labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert n_labelled < batch["labels"][:, 1:].numel() // 2  # prompts are most of each row
    rows_scored: list[int] = []
    head = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            rows_scored.append(hidden.shape[0])
            return head.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)

    def loss_and_grads(compact: bool):
        if not compact:  # TRL's own choice off Triton devices: every position
            monkeypatch.setattr("xtask_safety.train.trainer._labelled_positions_only", contextlib.nullcontext)
        loss = t.compute_loss(t.model, dict(batch))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}
        t.model.zero_grad(set_to_none=True)
        return loss.detach(), grads

    t.model.eval()  # no dropout: the two passes see the same network
    loss_c, grads_c = loss_and_grads(compact=True)
    loss_f, grads_f = loss_and_grads(compact=False)
    assert rows_scored == [n_labelled, batch["labels"][:, 1:].numel()]
    assert torch.equal(loss_c, loss_f)
    assert grads_c.keys() == grads_f.keys() and grads_c
    assert all(torch.equal(grads_c[k], grads_f[k]) for k in grads_c)
    assert trl_utils._use_triton(torch.device("cpu")) is False  # the switch is restored after the forward
