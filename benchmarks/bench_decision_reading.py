"""Seconds per reading of the first-token decision margin: the reading as it is (each document's shared
opening read once for all its tasks, longest prompts first, last-position logits only) against the two
readings before it (every prompt read whole, length-sorted; and the first one: batches in input order, logits
of every position), same model, same prompts.

The development-slice readings of step selection and calibration run this pass up to 13 times per seed
in the demo's longer profiles and 8 times in `make demo`. Prompts are the demo corpus's documents under the five
tasks with the paper's instructions as the evaluation grid builds them, document by document as a development file lists them
(``--docs_per_domain`` 14: the longer profiles' 210 prompts); the model is the embedded SmolLM2-135M-Instruct
with a LoRA adapter on its top 15 layers, as during training. The readings alternate ``--repeats`` times so
that a shared machine's load hits them alike. Reported: median seconds per reading, the speed-ups (target
>= 1.5x over the reading before), the largest margin difference and the decisions that agree (all, but for margins within 1e-4 nats of zero).
Writes docs/benchmarks/decision.md.

    nice -n 19 python benchmarks/bench_decision_reading.py
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_common import machine, median  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks" / "decision.md"
TARGET = 1.5


def records(docs_per_domain: int) -> list:
    """The evaluation grid's records of the last documents per domain, as a development file lists them (the
    cloze prompt shows the document minus its last sentence, the case prompt a re-cased one)."""
    from xtask_safety.data.builder import build_eval_grid
    from xtask_safety.data.corpus import load_demo_corpus
    from xtask_safety.tasks import TASK_NAMES

    by_domain: dict[str, list] = {}
    for doc in load_demo_corpus("main"):
        by_domain.setdefault(doc.domain, []).append(doc)
    return build_eval_grid([doc for dom in sorted(by_domain) for doc in by_domain[dom][-docs_per_domain:]],
                           list(TASK_NAMES))


def earlier_reading(model, tokenizer, recs, refusals, batch_size: int) -> list[float]:
    """The reading as it was: batches in input order, the full logits tensor."""
    import torch

    from xtask_safety.models import format_prompt
    from xtask_safety.tasks import get_task
    from xtask_safety.train.margin import _first_token

    prompts = [format_prompt(tokenizer, r.prompt()) for r in recs]
    refuse_ids = sorted({_first_token(tokenizer, prompts[0], t.format(verb="do")) for t in refusals})
    answer_ids = {t: _first_token(tokenizer, prompts[0], get_task(t).lead_in) for t in {r.task for r in recs}}
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out = []
    with torch.no_grad():
        for start in range(0, len(recs), batch_size):
            enc = tokenizer(prompts[start:start + batch_size], add_special_tokens=False, padding=True,
                            return_tensors="pt")
            logp = torch.log_softmax(model(**enc).logits[:, -1, :].float(), dim=-1)
            for j, rec in enumerate(recs[start:start + batch_size]):
                out.append(float(logp[j, answer_ids[rec.task]] - torch.logsumexp(logp[j, refuse_ids], dim=0)))
    tokenizer.padding_side = side
    return out


def _split_note(split: list[float]) -> str:
    if not split:
        return ""
    return (f"; the {len(split)} that differ sit on the threshold: no reading's margin is further than "
            f"{max(split):.1e} nats from zero")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs_per_domain", type=int, default=14)
    p.add_argument("--batch_size", type=int, default=16, help="as decision_margins' default")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no_write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    from xtask_safety.data.builder import load_refusals
    from xtask_safety.models import load_model
    from xtask_safety.train.margin import decision_margins

    loaded = load_model("embedded")
    layers = loaded.model.config.num_hidden_layers
    model = get_peft_model(loaded.model, LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM", layers_to_transform=list(range(layers - 15, layers)),
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    model.eval()
    tok, recs, refusals = loaded.tokenizer, records(args.docs_per_domain), load_refusals()
    lengths = [len(tok(r.prompt())["input_ids"]) for r in recs]
    readings = {
        "earlier": lambda: earlier_reading(model, tok, recs, refusals, args.batch_size),
        "whole": lambda: [d.margin for d in decision_margins(model, tok, recs, refusals, batch_size=args.batch_size,
                                                              share_prefix=False)],
        "shared": lambda: [d.margin for d in decision_margins(model, tok, recs, refusals, batch_size=args.batch_size)],
    }
    times: dict[str, list[float]] = {k: [] for k in readings}
    margins: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, read in readings.items():
            t = time.perf_counter()
            margins[name] = read()
            times[name].append(time.perf_counter() - t)
    pairs = list(zip(*(margins[k] for k in readings), strict=True))
    diff = max(max(m) - min(m) for m in pairs)
    agree = sum(len({x < 0 for x in m}) == 1 for m in pairs)
    split = [max(abs(x) for x in m) for m in pairs if len({x < 0 for x in m}) > 1]  # decisions that differ
    sec = {k: round(median(v), 2) for k, v in times.items()}
    res = {"prompts": len(recs), "tokens_min_median_max": (min(lengths), int(median(lengths)), max(lengths)),
           "seconds": sec, "all_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
           "speedup_over_whole": round(sec["whole"] / sec["shared"], 2),
           "speedup_over_earlier": round(sec["earlier"] / sec["shared"], 2),
           "max_margin_diff": diff, "decisions_agree": agree, "split_margins": split, "machine": machine(),
           "threads": torch.get_num_threads()}
    print(res)
    # a decision may differ only where every reading's margin is within float noise of zero
    ok = res["speedup_over_whole"] >= TARGET and all(m <= 1e-4 for m in split) and math.isfinite(diff)
    if not args.no_write:
        from xtask_safety.records import atomic_write_text

        atomic_write_text(DOC, f"""# Benchmark: development-slice readings of the decision margin

`benchmarks/bench_decision_reading.py --docs_per_domain {args.docs_per_domain} --repeats {args.repeats}` \
({time.strftime('%Y-%m-%d')}; {res['machine']}).

One reading = the first-token margin of {res['prompts']} prompts (the demo corpus's documents under the five
tasks as the evaluation grid builds them — the cloze prompt shows the document minus its last sentence, the case
prompt a re-cased copy, so four of a document's five prompts share its opening —, paper instructions; tokens per prompt before the chat template, min / median / max {res['tokens_min_median_max'][0]} /
{res['tokens_min_median_max'][1]} / {res['tokens_min_median_max'][2]}) on the embedded SmolLM2-135M-Instruct with
a LoRA adapter on its top 15 layers, batches of {args.batch_size}, as the longer demo profiles read their
development slice up to 13 times per seed (`make demo`: 8 readings of 90 prompts).

| reading | median seconds | all runs |
|---|---|---|
| first: input order, logits of every position | {sec['earlier']} | {res['all_s']['earlier']} |
| every prompt whole: longest first, last-position logits only (`logits_to_keep=1`) | {sec['whole']} | {res['all_s']['whole']} |
| now: each document's shared opening read once, its cache serving the task endings | {sec['shared']} | {res['all_s']['shared']} |

Speed-up of the reading now: **{res['speedup_over_whole']}×** over the whole-prompt reading (target ≥ {TARGET}×:
{'met' if res['speedup_over_whole'] >= TARGET else 'not met'}), {res['speedup_over_earlier']}× over the first. The three
readings agree on {agree} of {res['prompts']} decisions; largest margin difference {diff:.2e} nats (the batchings
differ, so the sums run in a different order){_split_note(split)}.
""")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
