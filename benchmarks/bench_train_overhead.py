"""Step time of the weighted trainer vs plain ``SFTTrainer`` on the same batches.

Three trainers start from the same random-weight Llama and LoRA initialisation and see the same
rows in the same order:

* ``plain``: ``trl.SFTTrainer`` with its own collator;
* ``weighted``: :class:`WeightedSFTTrainer` + :class:`WeightedCollator`, all weights 1 (so the update
  is the plain one: the LoRA parameters at the end are compared);
* ``weighted+``: balanced task weights and the first 2 completion tokens weighted x5 (the demo's setting).

Each optimizer step (collate, loss normaliser, forward/backward with the trainer's loss and metrics,
clipping, optimizer and scheduler step) is run for the three trainers back to back, on the same
batch, in rotating order, so a shared machine's drifting load hits all of them alike. The overhead is
the median over steps of (CPU time of the step / CPU time of the plain step) - 1 (wall time is
reported too; on a shared machine it mostly measures the neighbours); target <= 5 %. Writes the section
``bench_train_overhead`` of docs/benchmarks/training.md.

    nice -n 19 python benchmarks/bench_train_overhead.py --steps 30 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_common import (  # noqa: E402
    Stepper,
    finish,
    iqr,
    machine,
    median,
    parser,
    records,
    sft_config,
    small_llama,
    weighted_trainer,
)

TARGET = 0.05


def make_trainer(kind: str, model_dir: str, recs: list, args: argparse.Namespace, out: Path):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTTrainer

    from xtask_safety.models import load_tokenizer
    from xtask_safety.train.dataset import to_sft_rows
    from xtask_safety.train.weights import assign_weights

    tok = load_tokenizer(model_dir, padding_side="right")
    weights = assign_weights(recs, "balanced") if kind == "weighted+" else [1.0] * len(recs)
    rows = to_sft_rows(recs, weights)
    sft = sft_config(out, args, learning_rate=1e-3, remove_unused_columns=kind == "plain")
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    if kind == "plain":
        ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
        return SFTTrainer(model=model_dir, args=sft, train_dataset=ds, processing_class=tok, peft_config=lora)
    if kind == "weighted+":
        return weighted_trainer(model_dir, tok, rows, sft, lora, decision_tokens=2, decision_weight=5.0)
    return weighted_trainer(model_dir, tok, rows, sft, lora)


def lora_params(trainer) -> dict:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}


def run(args: argparse.Namespace) -> dict:
    import torch

    from xtask_safety.models import offline_defaults

    offline_defaults()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model_dir = small_llama(work / "model", args.hidden, args.layers)
    recs = records(args.steps * args.batch_size, seed=0)
    kinds = ["plain", "weighted", "weighted+"]
    steppers = {k: Stepper(make_trainer(k, model_dir, recs, args, work / k), args.steps) for k in kinds}

    t_start = time.time()
    first_batches_equal = True
    for i in range(args.steps):
        order = kinds[i % 3:] + kinds[:i % 3]  # rotate who goes first
        for kind in order:
            steppers[kind].step()
        first_batches_equal &= steppers["plain"].tokens[-1] == steppers["weighted"].tokens[-1]
        if i % 5 == 0:
            print(f"step {i}: " + ", ".join(f"{k} {steppers[k].times[-1]:.3f}s" for k in kinds), flush=True)
    params = {k: lora_params(steppers[k].trainer) for k in ("plain", "weighted")}
    same_update = max((params["plain"][n] - params["weighted"][n]).abs().max().item() for n in params["plain"])
    keep = slice(args.warmup, None)
    times = {k: steppers[k].times[keep] for k in kinds}
    cpu = {k: steppers[k].cpu[keep] for k in kinds}

    def paired(xs: dict) -> dict:  # per step: the same batch, run back to back
        return {k: [w / p for w, p in zip(xs[k], xs["plain"], strict=True)] for k in kinds if k != "plain"}

    ratios, cpu_ratios = paired(times), paired(cpu)
    med = {k: median(v) for k, v in times.items()}
    return {
        "machine": machine(), "model": f"random Llama, hidden {args.hidden}, {args.layers} layers, LoRA r8 on q,v",
        "batch_size": args.batch_size, "max_length": args.max_length, "steps": args.steps,
        "warmup_dropped": args.warmup, "tokens": sum(steppers["plain"].tokens), "same_batches": first_batches_equal,
        "max_param_diff_weighted_vs_plain": same_update,
        "median_step_s": med, "iqr_step_s": {k: iqr(v) for k, v in times.items()},
        "overhead_wall": {k: median(v) - 1 for k, v in ratios.items()},
        "overhead_wall_iqr": {k: [x - 1 for x in iqr(v)] for k, v in ratios.items()},
        "median_step_cpu_s": {k: median(v) for k, v in cpu.items()},
        "overhead": {k: median(v) - 1 for k, v in cpu_ratios.items()},
        "overhead_iqr": {k: [x - 1 for x in iqr(v)] for k, v in cpu_ratios.items()},
        "overhead_total_cpu": {k: sum(cpu[k]) / sum(cpu["plain"]) - 1 for k in kinds if k != "plain"},
        "wall_s": time.time() - t_start,
    }


def markdown(res: dict) -> str:
    ov, wall = res["overhead"], res["overhead_wall"]
    ok = "meets" if ov["weighted"] <= TARGET else "misses"
    rows = []
    for k in ("plain", "weighted", "weighted+"):
        lo, hi = res["iqr_step_s"][k]
        if k == "plain":
            rows.append(f"| {k} | {res['median_step_cpu_s'][k] * 1000:.0f} | — | — | {res['median_step_s'][k] * 1000:.0f} "
                        f"({lo * 1000:.0f}–{hi * 1000:.0f}) | — |")
            continue
        ci = res["overhead_iqr"][k]
        rows.append(f"| {k} | {res['median_step_cpu_s'][k] * 1000:.0f} | **{ov[k] * 100:+.1f} %** "
                    f"({ci[0] * 100:+.1f} … {ci[1] * 100:+.1f}) | {res['overhead_total_cpu'][k] * 100:+.1f} % | "
                    f"{res['median_step_s'][k] * 1000:.0f} ({lo * 1000:.0f}–{hi * 1000:.0f}) | {wall[k] * 100:+.1f} % |")
    table = "\n".join(rows)
    return f"""## Weighted trainer vs plain `SFTTrainer` (step time)

`nice -n 19 python benchmarks/bench_train_overhead.py --steps {res['steps']}{res['cmd_extra']}` — {res['model']},
batch {res['batch_size']}, max length {res['max_length']}, rows from the demo corpus ({res['tokens']} real tokens),
CPU: {res['machine']}. Each step (collate, loss normaliser, forward/backward with the trainer's loss and metrics,
clipping, optimizer and scheduler) runs for the three trainers back to back on the same batch, in rotating
order; the first {res['warmup_dropped']} steps are dropped. Same batches in every step: {res['same_batches']}.
LoRA parameters after the run, weighted (all weights 1) vs plain: max difference
{res['max_param_diff_weighted_vs_plain']:.1e}.

| trainer | median CPU s/step (ms) | overhead, CPU time: median of per-step ratios (IQR) | overhead, total CPU time | median wall (IQR), ms | overhead, wall (median ratio) |
|---|---|---|---|---|---|
{table}

The weighted trainer {ok} the ≤ {TARGET * 100:.0f} % target ({ov['weighted'] * 100:+.1f} % CPU time per step).
CPU time is the primary measure: the machine is shared, and other jobs stretch wall time (see the wall
columns' spread) but not the CPU seconds a step needs. `weighted+` adds balanced task weights and
decision-token weighting (a per-row Python loop in the collator). Benchmark wall time {res['wall_s']:.0f} s.
"""


def main() -> int:
    p = parser(__doc__.splitlines()[0], max_length=384)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    return finish('bench_train_overhead', run(args), args, markdown)


if __name__ == "__main__":
    sys.exit(main())
