"""``SFTTrainer`` with the mixed-task (weighted) loss.

Loss over one optimizer step (all micro-batches of the gradient-accumulation window, all processes):

* ``token`` normalisation: ``sum(w_s * t_i * nll_i) / sum(w_s * t_i)`` over completion tokens ``i`` of
  samples ``s`` (``w`` sample weight, ``t`` token weight). With all weights 1 this is exactly
  SFTTrainer's token-mean loss.
* ``sample`` normalisation: ``sum_s w_s * mean_t(nll) / sum_s w_s``, each sample counting once
  whatever its length.

The denominator is computed for the whole window in ``_get_num_items_in_batch`` and all-gathered,
so neither gradient accumulation nor the number of processes changes the update.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import trl.trainer.utils as trl_utils
from trl import SFTTrainer

from xtask_safety.errors import ConfigError
from xtask_safety.train.collator import EXTRA_KEYS
from xtask_safety.train.sampling import StratifiedSampler


class WeightedSFTTrainer(SFTTrainer):
    loss_is_scaled_for_ga = True  # normalised over the whole accumulation window below

    def __init__(self, *args: Any, task_names: list[str], loss_normalization: str = "token",
                 stratify_batches: bool = False, **kwargs: Any):
        self.task_names = list(task_names)
        self.loss_normalization = loss_normalization
        self.stratify_batches = stratify_batches
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """With ``stratify_batches``, batches mix the domains in the set's proportions (train/sampling.py)."""
        if not self.stratify_batches:
            return super()._get_train_sampler(train_dataset)
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if "domain" not in ds.column_names:
            raise ConfigError("stratify_batches: the training rows carry no 'domain' column")
        return StratifiedSampler(ds["domain"], seed=self.args.seed)

    # -- normaliser over the accumulation window ---------------------------------------------------
    def _denominator(self, batch: dict[str, Any]) -> torch.Tensor:
        tw = batch["token_weights"][:, 1:]
        sw = batch["sample_weights"]
        if self.loss_normalization == "token":
            return (tw * sw[:, None]).sum()
        has_tokens = (tw.sum(dim=1) > 0).to(sw.dtype)
        return (sw * has_tokens).sum()

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        if not batch_samples or "token_weights" not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        total = sum(self._denominator(b) for b in batch_samples).to(device)
        if self.args.world_size > 1:
            total = self.accelerator.gather(total.reshape(1)).sum()
        return total

    # -- loss ----------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "token_weights" not in inputs:  # a batch from another collator: plain SFT loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        token_w = inputs.pop("token_weights")[:, 1:]
        sample_w = inputs.pop("sample_weights")
        task_ids = inputs.pop("task_ids")
        for key in EXTRA_KEYS:
            inputs.pop(key, None)
        inputs["use_cache"] = False
        with _labelled_positions_only():
            outputs = model(**inputs, fused_lm_head=True)
        nll = -outputs.log_probs  # (B, T-1), zero on ignored positions
        token_w = token_w.to(nll.dtype)
        sample_w = sample_w.to(nll.dtype)
        if self.loss_normalization == "token":
            numerator = (nll * token_w * sample_w[:, None]).sum()
        else:
            per_sample = (nll * token_w).sum(dim=1) / token_w.sum(dim=1).clamp(min=1e-12)
            numerator = (per_sample * sample_w).sum()
        local = num_items_in_batch is None
        denom = self._denominator({"token_weights": token_w, "sample_weights": sample_w}) if local else num_items_in_batch
        # Clamped so that a batch without trainable tokens reduces to a finite zero rather than 0 / 0.
        loss = numerator / torch.as_tensor(denom, dtype=nll.dtype, device=nll.device).clamp(min=1e-12)
        if not local and self.args.world_size > 1:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients across ranks
        self._log_task_nll(nll.detach(), outputs.label_mask, task_ids)
        self._log_common(outputs, inputs)
        return (loss, outputs) if return_outputs else loss

    def _log_task_nll(self, nll: torch.Tensor, label_mask: torch.Tensor, task_ids: torch.Tensor) -> None:
        mode = "train" if self.model.training else "eval"
        k = len(self.task_names)
        sums = torch.zeros(k, 2, device=nll.device, dtype=torch.float32)
        per_sample = nll.float().sum(dim=1)
        counts = label_mask.float().sum(dim=1)
        sums[:, 0].index_add_(0, task_ids.to(nll.device), per_sample)
        sums[:, 1].index_add_(0, task_ids.to(nll.device), counts)
        sums = self.accelerator.gather_for_metrics(sums.unsqueeze(0)).sum(dim=0)
        for i, task in enumerate(self.task_names):
            if sums[i, 1] > 0:
                self._metrics[mode][f"nll_{task}"].append((sums[i, 0] / sums[i, 1]).item())

    def _log_common(self, outputs: Any, inputs: dict[str, Any]) -> None:
        """The entropy / accuracy / token-count metrics SFTTrainer logs."""
        mode = "train" if self.model.training else "eval"
        num_valid = self.accelerator.gather_for_metrics(outputs.label_mask.sum()).sum()
        entropy_sum = self.accelerator.gather_for_metrics(outputs.entropy.detach().sum()).sum()
        num_correct = self.accelerator.gather_for_metrics(outputs.is_top1.sum()).sum()
        valid = num_valid.item()
        self._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if valid else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((num_correct / num_valid).item() if valid else 0.0)
        if mode == "train":
            n = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += n
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]


@contextmanager
def _labelled_positions_only() -> Iterator[None]:
    """Have TRL's fused LM head score only the positions with a label, on a CPU too.

    TRL scores only labelled positions on Triton devices (CUDA, XPU) and every position elsewhere, which
    keeps tile shapes fixed for compiling backends (Neuron). On a CPU nothing is compiled, and scoring
    every position through a 49k-token vocabulary costs the prompt's length in logits for each completion
    token: 40 % of a demo training step (docs/benchmarks/training.md). The scores, the loss and the
    gradients are bitwise the same either way (tests/train/test_trainer.py). TRL reads the switch
    ``trl.trainer.utils._use_triton`` at each call; it is set for this forward only.
    """
    original = getattr(trl_utils, "_use_triton", None)
    if original is None:  # a TRL without the switch: its own behaviour
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original
