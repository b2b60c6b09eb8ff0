"""Seconds per reading of the first-token decision margin: the reading as it is during training (the frozen
lower layers' output stored at the first reading and replayed; each document's shared opening read once for
all its tasks; longest prompts first; last-position logits only) against the readings before it (shared
openings, every layer run; every prompt read whole), same model, same prompts.

The development-slice readings of step selection and calibration run this pass up to 13 times per seed
in the demo's longer profiles and 8 times in `make demo`. Prompts are the demo corpus's documents under the five
tasks with the paper's instructions as the evaluation grid builds them, document by document as a development file lists them
(``--docs_per_domain`` 14: the longer profiles' 210 prompts); the model is the embedded SmolLM2-135M-Instruct
with a LoRA adapter on its top 15 layers, as during training. The stored states are recorded by one reading
before the timed ones (timed apart: it is the first reading of a training run); the adapter's LoRA-B weights
are then moved off zero, as training moves them, so that the replayed top layers read something new. The
readings alternate ``--repeats`` times so that a shared machine's load hits them alike. Reported: median
seconds per reading, the speed-ups (target >= 1.5x for the replayed reading over the shared-opening one), the
margins (the replayed reading must equal the shared-opening one bitwise; the whole-prompt one may differ in
float noise, and its decisions only at margins within 1e-4 nats of zero). Writes docs/benchmarks/decision.md.

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
    from xtask_safety.train.margin import FrozenLayerStates, decision_margins

    loaded = load_model("embedded")
    layers = loaded.model.config.num_hidden_layers
    model = get_peft_model(loaded.model, LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM", layers_to_transform=list(range(layers - 15, layers)),
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    model.eval()
    tok, recs, refusals = loaded.tokenizer, records(args.docs_per_domain), load_refusals()
    lengths = [len(tok(r.prompt())["input_ids"]) for r in recs]
    states = FrozenLayerStates()

    def read(**kw) -> list[float]:
        return [d.margin for d in decision_margins(model, tok, recs, refusals, batch_size=args.batch_size, **kw)]

    t = time.perf_counter()
    read(states=states)  # the first reading of a run: every layer, the lower layers' output stored
    recording = time.perf_counter() - t
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # what training does to the adapter: its LoRA-B weights leave zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    readings = {
        "whole": lambda: read(share_prefix=False),
        "shared": lambda: read(),
        "frozen": lambda: read(states=states),
    }
    times: dict[str, list[float]] = {k: [] for k in readings}
    margins: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, reading in readings.items():
            t = time.perf_counter()
            margins[name] = reading()
            times[name].append(time.perf_counter() - t)
    pairs = list(zip(*(margins[k] for k in readings), strict=True))
    diff = max(max(m) - min(m) for m in pairs)
    agree = sum(len({x < 0 for x in m}) == 1 for m in pairs)
    split = [max(abs(x) for x in m) for m in pairs if len({x < 0 for x in m}) > 1]  # decisions that differ
    sec = {k: round(median(v), 2) for k, v in times.items()}
    res = {"prompts": len(recs), "tokens_min_median_max": (min(lengths), int(median(lengths)), max(lengths)),
           "seconds": sec, "all_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
           "recording_s": round(recording, 2),
           "speedup_over_shared": round(sec["shared"] / sec["frozen"], 2),
           "speedup_over_whole": round(sec["whole"] / sec["frozen"], 2),
           "frozen_equals_shared": margins["frozen"] == margins["shared"],
           "max_margin_diff": diff, "decisions_agree": agree, "split_margins": split, "machine": machine(),
           "threads": torch.get_num_threads()}
    print(res)
    # a decision may differ only where every reading's margin is within float noise of zero
    ok = (res["speedup_over_shared"] >= TARGET and res["frozen_equals_shared"] and all(m <= 1e-4 for m in split)
          and math.isfinite(diff))
    if not args.no_write:
        from xtask_safety.records import atomic_write_text

        atomic_write_text(DOC, f"""# Benchmark: development-slice readings of the decision margin

`benchmarks/bench_decision_reading.py --docs_per_domain {args.docs_per_domain} --repeats {args.repeats}` \
({time.strftime('%Y-%m-%d')}; {res['machine']}).

One reading = the first-token margin of {res['prompts']} prompts (the demo corpus's documents under the five
tasks as the evaluation grid builds them — the cloze prompt shows the document minus its last sentence, the case
prompt a re-cased copy, so four of a document's five prompts share its opening —, paper instructions; tokens per prompt before the chat template, min / median / max {res['tokens_min_median_max'][0]} /
{res['tokens_min_median_max'][1]} / {res['tokens_min_median_max'][2]}) on the embedded SmolLM2-135M-Instruct with
a LoRA adapter on its top 15 of {layers} layers, batches of {args.batch_size}, as the longer demo profiles read their
development slice up to 13 times per seed (`make demo`: 8 readings of 90 prompts).

| reading | median seconds | all runs |
|---|---|---|
| every prompt whole: longest first, last-position logits only (`logits_to_keep=1`) | {sec['whole']} | {res['all_s']['whole']} |
| each document's shared opening read once, its cache serving the task endings; every layer | {sec['shared']} | {res['all_s']['shared']} |
| now, during training: the same, the frozen lower {layers - 15} layers' output stored at the run's first reading and replayed | {sec['frozen']} | {res['all_s']['frozen']} |

The reading that stores the states (a run's first) took {res['recording_s']} s. Speed-up of the replayed
reading: **{res['speedup_over_shared']}×** over the shared-opening reading (target ≥ {TARGET}×:
{'met' if res['speedup_over_shared'] >= TARGET else 'not met'}), {res['speedup_over_whole']}× over the whole-prompt one
(the first reading, in input order with every position's logits, took 115–127 s on 2026-12-07). Replayed and
shared-opening margins bitwise equal: {res['frozen_equals_shared']}. The readings agree on {agree} of
{res['prompts']} decisions; largest margin difference {diff:.2e} nats (the whole-prompt batching sums in another
order){_split_note(split)}.
""")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
