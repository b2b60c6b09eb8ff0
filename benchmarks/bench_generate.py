"""Batched, prefix-shared Transformers generation vs the reference approach, on the same prompts.

Three ways to answer the same paired evaluation prompts (held-out demo documents, every task):

* reference: one prompt at a time with 4-beam search (what the paper's code does);
* one-at-a-time greedy: HF ``generate`` per prompt;
* batched: :class:`TransformersBackend` (prefix groups, shared KV cache, batched greedy decode).

Reports generated tokens per second and prompts per second for each, the speed-ups of the batched
backend over the other two (measured in the same run), and the share of prompts whose batched
greedy output is identical to one-at-a-time greedy. Writes Markdown (and optionally JSON).

    nice -n 19 python benchmarks/bench_generate.py --n_prompts 64 --max_new_tokens 64 \\
        --output docs/benchmarks/generation.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

TARGET_VS_REFERENCE = 5.0
TARGET_VS_GREEDY = 3.0
TARGET_IDENTICAL = 0.95


def build_prompts(n: int, seed: int = 0) -> list:
    from xtask_safety.data.builder import build_eval_grid
    from xtask_safety.data.corpus import load_demo_corpus, split_corpus, stable_order
    from xtask_safety.tasks import TASK_NAMES

    _, held = split_corpus(load_demo_corpus("main"), 30, seed)
    by_domain: dict[str, list] = {}
    for d in stable_order(held, seed):
        by_domain.setdefault(d.domain, []).append(d)
    docs = []
    k = 0
    while len(docs) * len(TASK_NAMES) < n:  # documents from every domain in turn, all tasks each (paired)
        for dom in sorted(by_domain):
            if k < len(by_domain[dom]):
                docs.append(by_domain[dom][k])
        k += 1
    return build_eval_grid(docs, list(TASK_NAMES))[:n]


def run(args: argparse.Namespace) -> dict:
    import torch

    from xtask_safety.generate.base import SamplingConfig
    from xtask_safety.generate.transformers_backend import TransformersBackend
    from xtask_safety.models import load_model, offline_defaults

    offline_defaults()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    backend = TransformersBackend(loaded, batch_size=args.batch_size)
    records = build_prompts(args.n_prompts, args.seed)
    texts = [backend.render(r.prompt()) for r in records]
    prompt_tokens = backend.prompt_lengths(texts)
    greedy = SamplingConfig(max_new_tokens=args.max_new_tokens)
    beams = SamplingConfig(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    backend._hf_generate(texts[:1], SamplingConfig(max_new_tokens=2))  # warm-up (first-call overheads)

    def timed(fn):
        t0 = time.perf_counter()
        outs = fn()
        return outs, time.perf_counter() - t0

    def one_at_a_time(sampling):
        return [backend._hf_generate([t], sampling)[0] for t in texts]

    def batched():
        res: dict[int, dict] = {}
        for b in backend.plan(texts):
            for i, o in zip(b, backend.generate_batch([texts[i] for i in b], greedy, rows=b), strict=True):
                res[i] = o
        return [res[i] for i in range(len(texts))]

    results = {}
    methods = [("greedy_one_at_a_time", lambda: one_at_a_time(greedy)), ("batched", batched)]
    if not args.skip_reference:
        methods.append(("reference_4beam_one_at_a_time", lambda: one_at_a_time(beams)))
    for name, fn in methods:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        outs, secs = timed(fn)
        toks = sum(o["n_tokens"] for o in outs)
        results[name] = {"seconds": secs, "tokens": toks, "tokens_per_s": toks / secs,
                         "prompts_per_s": len(outs) / secs, "texts": [o["text"] for o in outs]}
        print(f"[bench] {name}: {secs:.1f}s, {toks} tokens, {toks / secs:.1f} tok/s", file=sys.stderr, flush=True)
    same = sum(a == b for a, b in zip(results["batched"]["texts"], results["greedy_one_at_a_time"]["texts"],
                                      strict=True))
    out = {
        "settings": {"model": args.model, "n_prompts": len(texts), "max_new_tokens": args.max_new_tokens,
                     "batch_size": args.batch_size, "num_beams": args.num_beams, "threads": args.threads,
                     "prompt_tokens_mean": sum(prompt_tokens) / len(prompt_tokens),
                     "prompt_tokens_max": max(prompt_tokens)},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "load_average": os.getloadavg(), "platform": platform.platform()},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "methods": {k: {kk: vv for kk, vv in v.items() if kk != "texts"} for k, v in results.items()},
        "identical_greedy": same / len(texts),
        "identical_greedy_count": same,
    }
    b = results["batched"]
    out["speedup_vs_greedy"] = b["tokens_per_s"] / results["greedy_one_at_a_time"]["tokens_per_s"]
    if "reference_4beam_one_at_a_time" in results:
        out["speedup_vs_reference"] = b["tokens_per_s"] / results["reference_4beam_one_at_a_time"]["tokens_per_s"]
        out["wall_speedup_vs_reference"] = results["reference_4beam_one_at_a_time"]["seconds"] / b["seconds"]
    out["wall_speedup_vs_greedy"] = results["greedy_one_at_a_time"]["seconds"] / b["seconds"]
    return out


def markdown(res: dict, command: str) -> str:
    s, m = res["settings"], res["methods"]

    def ok(x: float | None, target: float) -> str:
        return "–" if x is None else ("meets" if x >= target else "**misses**") + f" the ≥ {target:g} target"

    rows = []
    labels = {"reference_4beam_one_at_a_time": f"reference: one prompt at a time, {s['num_beams']}-beam",
              "greedy_one_at_a_time": "one prompt at a time, greedy (HF generate)",
              "batched": f"batched, prefix-shared greedy (batch {s['batch_size']})"}
    for k in ("reference_4beam_one_at_a_time", "greedy_one_at_a_time", "batched"):
        if k in m:
            v = m[k]
            rows.append(f"| {labels[k]} | {v['seconds']:.1f} | {v['tokens']} | {v['tokens_per_s']:.1f} | "
                        f"{v['prompts_per_s']:.2f} |")
    ref = res.get("speedup_vs_reference")
    lines = [
        "# Generation benchmark (CPU)", "",
        f"Measured {res['date']} with `{command}`.", "",
        *([f"**A small verification setting** ({s['n_prompts']} prompts, {s['max_new_tokens']} new tokens): the "
           "targets refer to 64 prompts (`--n_prompts 64 --max_new_tokens 64`). With few prompts and short answers "
           "the prompt prefill dominates the time and fewer prompts share a document prefix, so these "
           "ratios are not the benchmark's result.", ""] if s["n_prompts"] < 64 else []),
        f"{s['n_prompts']} prompts: held-out demo documents, every task (paired grid, paper instructions, chat "
        f"template); prompt length mean {s['prompt_tokens_mean']:.0f} / max {s['prompt_tokens_max']} tokens; up to "
        f"{s['max_new_tokens']} new tokens; model `{s['model']}`; {s['threads']} torch thread(s); "
        f"{res['machine']['cpus']} CPUs, load average at the end {', '.join(f'{x:.1f}' for x in res['machine']['load_average'])} "
        "(a shared machine: absolute speeds move with its load, ratios are measured in the same run).", "",
        "| method | seconds | generated tokens | tokens/s | prompts/s |", "|---|---|---|---|---|", *rows, "",
        "| comparison | value | target |", "|---|---|---|",
        f"| batched vs reference, tokens/s | {'–' if ref is None else f'{ref:.1f}×'} | {ok(ref, TARGET_VS_REFERENCE)} |",
        f"| batched vs one-at-a-time greedy, tokens/s | {res['speedup_vs_greedy']:.1f}× | "
        f"{ok(res['speedup_vs_greedy'], TARGET_VS_GREEDY)} |",
        f"| batched vs reference, wall time | {res.get('wall_speedup_vs_reference', math.nan):.1f}× | – |",
        f"| batched vs one-at-a-time greedy, wall time | {res['wall_speedup_vs_greedy']:.1f}× | – |",
        f"| batched greedy output identical to one-at-a-time greedy | {100 * res['identical_greedy']:.0f}% "
        f"({res['identical_greedy_count']}/{s['n_prompts']}) | {ok(res['identical_greedy'], TARGET_IDENTICAL)} |",
        "",
        "Tokens/s counts each method's own generated tokens (beam search returns its best beam, so its token count "
        "differs from greedy); wall time compares the time to answer the same prompts. Outputs that differ between "
        "batched and one-at-a-time greedy differ by floating-point summation order (padding, batch shapes), which "
        "can flip a near-tie between two tokens.", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded", help="Model (default: the embedded SmolLM2-135M-Instruct).")
    p.add_argument("--n_prompts", type=int, default=64)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_beams", type=int, default=4, help="Beam width of the reference approach.")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip_reference", action="store_true", help="Leave out the (slow) 4-beam reference.")
    p.add_argument("--output", default="docs/benchmarks/generation.md", help="Markdown report ('' for none).")
    p.add_argument("--json", default="", help="Also write the raw figures as JSON here.")
    args = p.parse_args(argv)
    res = run(args)
    command = "python benchmarks/bench_generate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = markdown(res, command.strip())
    print(md)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(md, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
