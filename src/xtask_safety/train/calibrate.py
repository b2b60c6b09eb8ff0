"""Setting the refuse-or-answer threshold after training, read on the development slice.

A defense can tell malicious from benign documents well (on the demo's held-out grid the first-token
margin ranks them with an ROC AUC of 0.97-0.98) and still refuse too many benign documents, or too few
malicious ones: where its threshold lands at the end of a short run depends on the seed. Calibration
moves that threshold alone. After training (and step selection) it takes up to ``steps`` small optimizer
steps (each a fresh AdamW step), each on one batch of the training set's own rows: benign rows (answers) while the development
slice shows benign documents refused more often than malicious ones answered, malicious rows (refusals)
otherwise. The slice is read after each step and the best-balanced state, the starting one included, is
kept. The development documents are only read, never trained on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from xtask_safety.records import MALICIOUS, Record
from xtask_safety.train.margin import FrozenLayerStates, balanced_score, decision_margins, refusal_shares


def leaning(shares: dict[str, float]) -> str:
    """``answer`` when benign documents are refused more often (mean over benign domains) than malicious
    ones are answered: the threshold sits too far toward refusing; ``refuse`` otherwise."""
    benign = [s for dom, s in shares.items() if dom != MALICIOUS]
    benign_refused = sum(benign) / len(benign) if benign else 0.0
    malicious_answered = 1.0 - shares.get(MALICIOUS, 1.0)
    return "answer" if benign_refused > malicious_answered else "refuse"


def calibrate_threshold(trainer: Any, dev: list[Record], refusals: list[str], steps: int, lr: float,
                        curve: Path | None = None, template: str = "chat", system_prompt: str | None = None,
                        seed: int = 0, states: FrozenLayerStates | None = None) -> dict[str, Any]:
    """Run the calibration on ``trainer.model`` in place; returns ``{"steps_kept", "score", "start_score"}``.

    Each reading is appended to ``curve`` as ``{"calibration_step", "side", "refuse_share", "score"}``; ties
    keep the earlier state (the smaller change). ``states``: the frozen lower layers' output for ``dev`` from
    the training run's own readings, if any (train/margin.py); otherwise the first reading stores it."""
    import torch

    model, tokenizer, ds = trainer.model, trainer.processing_class, trainer.train_dataset
    domains = ds["domain"]
    rows = {"refuse": [i for i, d in enumerate(domains) if d == MALICIOUS],
            "answer": [i for i, d in enumerate(domains) if d != MALICIOUS]}
    params = [p for p in model.parameters() if p.requires_grad]
    rng = random.Random(seed)
    batch_size = trainer.args.per_device_train_batch_size
    device = next(model.parameters()).device
    states = states if states is not None else FrozenLayerStates()

    def read(step: int, side: str | None) -> tuple[float, dict[str, float]]:
        shares = refusal_shares(decision_margins(model, tokenizer, dev, refusals, template, system_prompt,
                                                 states=states))
        score = balanced_score(shares)
        if curve is not None:
            with open(curve, "a", encoding="utf-8") as f:
                f.write(json.dumps({"calibration_step": step, "side": side, "refuse_share": shares,
                                    "score": round(score, 4)}) + "\n")
        return score, shares

    score, shares = read(0, None)
    start = score
    best = (score, 0, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    was_training = model.training
    for step in range(1, steps + 1):
        side = leaning(shares)
        if not rows[side]:
            break
        idx = rng.sample(rows[side], min(batch_size, len(rows[side])))
        batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in trainer.data_collator([ds[i] for i in idx]).items()}
        model.train()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        # A fresh optimizer each step: momentum carried over would keep pushing the previous step's side
        # after the reading has switched sides (measured: a refusal step followed by an answer step
        # refused more benign documents, not fewer). A first AdamW step moves every weight by about
        # ``lr`` in the direction of its gradient's sign, a step size that does not depend on the loss scale.
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        score, shares = read(step, side)
        if score > best[0]:
            best = (score, step, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    model.train(was_training)
    params_by_name = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in best[2].items():
            params_by_name[name].copy_(value)
    result = {"steps_kept": best[1], "score": round(best[0], 4), "start_score": round(start, 4)}
    if curve is not None:
        with open(curve, "a", encoding="utf-8") as f:
            f.write(json.dumps({"calibration_kept": best[1], "score": result["score"]}) + "\n")
    return result
