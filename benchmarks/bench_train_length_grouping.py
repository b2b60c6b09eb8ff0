"""Tokens/s of length-grouped batches vs plain random-order padding, on a long-tailed length mix.

Two :class:`WeightedSFTTrainer` runs over the same rows differ only in ``train_sampling_strategy``:
``random`` (each batch padded to its longest row) and ``group_by_length`` (transformers'
LengthGroupedSampler: rows of similar length share a batch). Rows are demo-corpus documents joined
1..12 at a time (log-normal count), so most are short and a few approach ``max_length``. Both runs
go through one epoch — the same rows, the same real tokens — one step of each in turn so that a
shared machine's load hits both alike. Reported: real (non-padding) tokens per second, the padding
share, and the speed-up (target >= 1.3x). The padding share of both samplers on a paper-sized set
(20,000 rows of the same mix, sampler only, no model) is reported too. Writes the section
``bench_train_length_grouping`` of docs/benchmarks/training.md.

    nice -n 19 python benchmarks/bench_train_length_grouping.py --rows 160
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_common import Stepper, finish, machine, median, parser, records, small_llama  # noqa: E402

TARGET = 1.3


def make_trainer(strategy: str, model_dir: str, recs: list, args: argparse.Namespace, out: Path):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig

    from xtask_safety.models import load_tokenizer
    from xtask_safety.tasks import INSTRUCTION_TASK, TASK_NAMES
    from xtask_safety.train.collator import WeightedCollator
    from xtask_safety.train.dataset import to_sft_rows
    from xtask_safety.train.trainer import WeightedSFTTrainer

    tok = load_tokenizer(model_dir, padding_side="right")
    sft = SFTConfig(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                    learning_rate=1e-3, optim="adamw_torch", lr_scheduler_type="constant", seed=0,
                    max_length=args.max_length, per_device_train_batch_size=args.batch_size, num_train_epochs=1,
                    dataloader_num_workers=0, disable_tqdm=True, activation_checkpointing=False,
                    remove_unused_columns=False, train_sampling_strategy=strategy)
    tasks = list(TASK_NAMES) + [INSTRUCTION_TASK]
    return WeightedSFTTrainer(
        model=model_dir, args=sft, train_dataset=Dataset.from_list(to_sft_rows(recs, [1.0] * len(recs))),
        processing_class=tok, task_names=tasks, data_collator=WeightedCollator(pad_token_id=tok.pad_token_id, task_names=tasks),
        peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                               task_type="CAUSAL_LM"))


def padding_share(lengths: list[int], batch_size: int, strategy: str, seed: int = 0) -> float:
    """Share of padding positions in one epoch of the sampler's batches (no model)."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    if strategy == "group_by_length":
        g = torch.Generator().manual_seed(seed)
        order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=g))
    else:
        order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    real = padded = 0
    for i in range(0, len(order), batch_size):
        batch = [lengths[j] for j in order[i:i + batch_size]]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return 1 - real / padded


def run(args: argparse.Namespace) -> dict:
    import torch

    from xtask_safety.models import load_tokenizer, offline_defaults

    offline_defaults()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-group-"))
    model_dir = small_llama(work / "model", args.hidden, args.layers)
    recs = records(args.rows, seed=args.seed, long_tail=True)
    strategies = ["random", "group_by_length"]
    steppers = {s: Stepper(make_trainer(s, model_dir, recs, args, work / s), args.rows // args.batch_size)
                for s in strategies}
    lengths = [len(x) for x in steppers["random"].trainer.train_dataset["input_ids"]]
    n_steps = len(steppers["random"].trainer.get_train_dataloader())
    t0 = time.time()
    for i in range(n_steps):
        for s in (strategies if i % 2 == 0 else strategies[::-1]):
            steppers[s].step()
        if i % 5 == 0:
            print(f"step {i}/{n_steps}: " + ", ".join(f"{s} {steppers[s].times[-1]:.2f}s" for s in strategies), flush=True)
    res: dict = {"machine": machine(), "rows": args.rows, "batch_size": args.batch_size, "max_length": args.max_length,
                 "model": f"random Llama, hidden {args.hidden}, {args.layers} layers, LoRA r8 on q,v", "steps": n_steps,
                 "length_median": median(lengths), "length_p90": sorted(lengths)[int(0.9 * (len(lengths) - 1))],
                 "length_max": max(lengths), "length_min": min(lengths), "per_strategy": {}}
    for s in strategies:
        st = steppers[s]
        res["per_strategy"][s] = {"tokens": sum(st.tokens), "seconds": sum(st.times),
                                  "tokens_per_s": sum(st.tokens) / sum(st.times),
                                  "padding_share": 1 - sum(st.tokens) / sum(st.padded)}
    assert res["per_strategy"]["random"]["tokens"] == res["per_strategy"]["group_by_length"]["tokens"]
    res["speedup"] = res["per_strategy"]["group_by_length"]["tokens_per_s"] / res["per_strategy"]["random"]["tokens_per_s"]
    # the same mix at a paper-like size, sampler only
    tok = load_tokenizer(model_dir)
    big = records(args.big_rows, seed=args.seed + 1, long_tail=True)
    big_len = [min(args.max_length, len(tok(r.document + "\n" + r.instruction + " " + r.response)["input_ids"]) + 20)
               for r in big]
    res["big"] = {"rows": args.big_rows, **{s: padding_share(big_len, args.batch_size, s) for s in strategies}}
    res["wall_s"] = time.time() - t0
    return res


def markdown(res: dict) -> str:
    r, g = res["per_strategy"]["random"], res["per_strategy"]["group_by_length"]
    ok = "meets" if res["speedup"] >= TARGET else "misses"
    big = res["big"]
    return f"""## Length-grouped vs random-order batches (tokens/s)

`nice -n 19 python benchmarks/bench_train_length_grouping.py --rows {res['rows']}{res['cmd_extra']}` — {res['model']},
batch {res['batch_size']}, max length {res['max_length']}; {res['rows']} rows, lengths (tokens) min
{res['length_min']}, median {res['length_median']:.0f}, p90 {res['length_p90']}, max {res['length_max']} (demo
documents joined 1–12 at a time, log-normal). One epoch ({res['steps']} steps) per strategy, steps alternated.
CPU: {res['machine']}.

| train_sampling_strategy | real tokens | seconds | real tokens/s | padding share |
|---|---|---|---|---|
| random | {r['tokens']} | {r['seconds']:.0f} | {r['tokens_per_s']:.0f} | {r['padding_share'] * 100:.0f} % |
| group_by_length | {g['tokens']} | {g['seconds']:.0f} | {g['tokens_per_s']:.0f} | {g['padding_share'] * 100:.0f} % |

Speed-up of length grouping: **{res['speedup']:.2f}×** ({ok} the ≥ {TARGET}× target). With fewer rows than one
of the sampler's mega-batches (50 × batch) the whole epoch is sorted; on a paper-sized set
({big['rows']:,} rows of the same mix, sampler only) the padding share is {big['random'] * 100:.0f} % for random
order and {big['group_by_length'] * 100:.0f} % for length grouping, so the gain carries over.
Benchmark wall time {res['wall_s']:.0f} s.
"""


def main() -> int:
    p = parser(__doc__.splitlines()[0], max_length=1024)
    p.add_argument("--rows", type=int, default=160)
    p.add_argument("--big_rows", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    return finish('bench_train_length_grouping', run(args), args, markdown)


if __name__ == "__main__":
    sys.exit(main())
