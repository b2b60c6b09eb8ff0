"""GPU benchmark kit that needs no model hub: a Llama-2-7B-shaped model with random weights.

What it measures, in one run, on whatever accelerator the machine has:

* LoRA training on a bf16 base and QLoRA training on a 4-bit NF4 base (the recipes' LoRA: r 8, alpha 16,
  q_proj/v_proj, activation checkpointing): training tokens/s and peak accelerator memory;
* generation through the project's own ``generate`` command with ``--backend vllm`` (run in the vLLM
  environment's interpreter), several random LoRA adapters in one engine, prompts drawn from the paper's
  document-length distribution; and the Transformers backend on a subset of the same prompts, one adapter.

The model is built from a ``LlamaConfig`` (7B shape: 32 layers, hidden 4096, MLP 11008, 32 heads) with
random weights and the embedded model's tokenizer, so nothing is downloaded. Random weights give the
same FLOPs and memory as trained ones; generation runs to ``max_new_tokens`` (``ignore`` of EOS is not
needed: a random model rarely emits it). ``--scale tiny`` builds a 2-layer model so the whole kit runs
on a CPU (the test-suite does that), proving the script before a GPU is lent.

    python benchmarks/bench_gpu.py --scale 7b --output docs/benchmarks/gpu.md     # one GPU, ~10 min
    python benchmarks/bench_gpu.py --scale tiny --output /tmp/gpu.md               # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

SHAPES = {
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32, "max_position_embeddings": 4096},
    "tiny": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 4, "max_position_embeddings": 2048},
}
# steps, tokens per training row, rows per step, requests for vLLM, new tokens, Transformers subset
PLANS = {
    "7b": {"train_steps": 8, "seq_len": 1024, "batch": 4, "n_requests": 1500, "new_tokens": 128, "hf_subset": 48,
           "adapters": 4, "length_scale": 1.0},
    "tiny": {"train_steps": 2, "seq_len": 64, "batch": 2, "n_requests": 24, "new_tokens": 8, "hf_subset": 6,
             "adapters": 4, "length_scale": 0.1},
}
# Paper's evaluation documents: malicious ~700 tokens on average, news articles (CNN/DailyMail) longer;
# a log-normal around 700 tokens with a long right tail, cut to what a 4k-context model can take.
PAPER_MEAN_TOKENS = 700
PAPER_SIGMA = 0.5


def device_and_dtype() -> tuple[str, str]:
    from xtask_safety.models import pick_device_and_dtype

    return pick_device_and_dtype()


def build_model(scale: str, out: Path, tokenizer: str = "embedded") -> Path:
    """A random-weight Llama of the given shape with a tokenizer (default the embedded model's), saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from xtask_safety.models import resolve_model_path

    if (out / "config.json").is_file():
        return out
    device, dtype = device_and_dtype()
    tok = AutoTokenizer.from_pretrained(resolve_model_path(tokenizer))
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **SHAPES[scale])
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    del model
    _free_accelerator(device)
    return out


def _free_accelerator(device: str) -> int:
    """Collect what earlier stages left (PEFT models hold reference cycles) and start a fresh peak; bytes still
    allocated after that, which the stage's peak then excludes."""
    import gc

    import torch

    gc.collect()
    if not device.startswith("cuda"):
        return 0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def _peak_memory_gib(device: str, resident: int = 0) -> float:
    import resource

    import torch

    if device.startswith("cuda"):
        return (torch.cuda.max_memory_allocated() - resident) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (process peak RSS)


def train_bench(model_dir: Path, quantized: bool, plan: dict) -> dict:
    """Tokens/s of LoRA training steps (forward, backward, AdamW) on random token rows of fixed length."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    device, dtype = device_and_dtype()
    kwargs: dict = {"dtype": getattr(torch, dtype)}
    if quantized:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, dtype), bnb_4bit_quant_storage=getattr(torch, dtype))
        kwargs["device_map"] = {"": 0} if device.startswith("cuda") else None
    resident = _free_accelerator(device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if not quantized:
        model = model.to(device)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size

    def step() -> float:
        ids = torch.randint(0, vocab, (plan["batch"], plan["seq_len"]), generator=gen).to(device)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()  # warm-up (kernels, allocator)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(plan["train_steps"]):
        loss = step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = plan["train_steps"] * plan["batch"] * plan["seq_len"]
    out = {"setting": "QLoRA 4-bit NF4" if quantized else f"LoRA {dtype}", "steps": plan["train_steps"],
           "tokens_per_step": plan["batch"] * plan["seq_len"], "seconds": round(seconds, 2),
           "tokens_per_s": round(tokens / seconds, 1), "peak_memory_gib": round(_peak_memory_gib(device, resident), 2),
           "final_loss": round(loss, 3), "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    model = opt = None  # the step closure holds the cells: empty them so the next stage starts clean
    _free_accelerator(device)
    return out


def paper_lengths(n: int, scale: float, limit: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    mu = math.log(PAPER_MEAN_TOKENS) - PAPER_SIGMA**2 / 2  # so the mean is PAPER_MEAN_TOKENS
    return [max(16, min(limit, int(rng.lognormvariate(mu, PAPER_SIGMA) * scale))) for _ in range(n)]


def make_grid(model_dir: Path, n: int, plan: dict, out: Path) -> Path:
    """Summarize records whose documents have the sampled token lengths (demo corpus text, cut to length)."""
    from transformers import AutoTokenizer

    from xtask_safety.data.corpus import demo_dir
    from xtask_safety.records import Record, write_jsonl
    from xtask_safety.tasks import TASKS

    tok = AutoTokenizer.from_pretrained(model_dir)
    text = " ".join(json.loads(line)["document"] for line in
                    (demo_dir() / "corpus_b.jsonl").read_text(encoding="utf-8").splitlines())
    ids = tok(text, add_special_tokens=False)["input_ids"]
    limit = doc_limit(plan)
    records = []
    for k, length in enumerate(paper_lengths(n, plan["length_scale"], limit)):
        start = (k * 997) % max(1, len(ids) - length)
        doc = tok.decode(ids[start:start + length]).strip()
        records.append(Record(id=f"p{k:04d}", task="summarize", domain="news", document=doc,
                              instruction=TASKS["summarize"].instruction()))
    write_jsonl(out, records)
    return out


def doc_limit(plan: dict) -> int:
    """Longest document in tokens: with the template, instruction and answer it stays under 4,096 positions."""
    return int(3400 * plan["length_scale"])


def make_adapters(model_dir: Path, k: int, out: Path) -> dict[str, str]:
    """``k`` LoRA adapters (r 8 on q_proj/v_proj) with random non-zero weights: different models to serve."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = {}
    device, dtype = device_and_dtype()  # on a GPU: the 7B base in bf16 there, not 28 GB of float32 on the host
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device)
    for i in range(1, k + 1):
        path = out / f"a{i}"
        if not (path / "adapter_model.safetensors").is_file():
            torch.manual_seed(i)
            peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                         init_lora_weights=False, task_type="CAUSAL_LM"))
            peft_model.save_pretrained(path, safe_serialization=True)
            base = peft_model.unload()
        paths[f"a{i}"] = str(path)
    return paths


def vllm_bench(model_dir: Path, grid: Path, adapters: dict[str, str], plan: dict, python: str, work: Path) -> dict:
    """The project's ``generate`` command, vLLM backend, every adapter in one engine (its own interpreter)."""
    from xtask_safety.generate.backends import child_env, generate_command
    from xtask_safety.records import read_jsonl

    out = work / "vllm"
    argv = ["--input", str(grid), "--output", str(out / "{name}.jsonl"), "--model_name_or_path", str(model_dir),
            "--backend", "vllm", "--max_new_tokens", str(plan["new_tokens"]), "--quiet", "true",
            "--max_model_len", str(doc_limit(plan) + 400 + plan["new_tokens"]),
            "--adapters", *(f"{n}={p}" for n, p in adapters.items())]
    t0 = time.perf_counter()
    proc = subprocess.run(generate_command(python, argv), env=child_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_gpu: vLLM generation failed:\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [row for n in adapters for _, row in read_jsonl(out / f"{n}.jsonl")]
    new_tokens = sum(r["meta"]["generation"]["n_tokens"] for r in rows)
    gen_s = summary.get("generate_seconds") or wall
    return {"requests": len(rows), "adapters": len(adapters), "new_tokens": new_tokens, "wall_seconds": round(wall, 1),
            "generate_seconds": round(gen_s, 1), "requests_per_s": round(len(rows) / gen_s, 2),
            "tokens_per_s": round(new_tokens / gen_s, 1)}


def hf_bench(model_dir: Path, grid: Path, adapter: str, plan: dict, work: Path) -> dict:
    """The Transformers backend (prefix-shared batches, adapter merged) on the first prompts, one adapter."""
    from xtask_safety.generate.backends import BackendSpec, build_backend
    from xtask_safety.generate.base import SamplingConfig
    from xtask_safety.generate.run import Run, generate_runs
    from xtask_safety.records import read_records

    records = read_records(grid)[: plan["hf_subset"]]
    backend = build_backend("transformers", BackendSpec(model=str(model_dir), adapter=adapter, batch_size=16))
    t0 = time.perf_counter()
    (rows,) = generate_runs(records, backend, [Run(work / "hf.jsonl")],
                            SamplingConfig(max_new_tokens=plan["new_tokens"]), progress=False)
    seconds = time.perf_counter() - t0
    new_tokens = sum(r["meta"]["generation"]["n_tokens"] for r in rows)
    return {"requests": len(rows), "new_tokens": new_tokens, "generate_seconds": round(seconds, 1),
            "requests_per_s": round(len(rows) / seconds, 2), "tokens_per_s": round(new_tokens / seconds, 1)}


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def markdown(res: dict) -> str:
    m = res["machine"]
    where = ", ".join(m.get("gpus", [])) or f"CPU only ({m['cpus']} cores)"
    lines = [
        "# GPU benchmark kit", "",
        f"Run {res['date']} with `{res['command']}` on {where}; load average {m['load_average']}; "
        f"torch {m['torch']}. Model: Llama-2-7B shape at scale `{res['scale']}` "
        f"({res['shape']['num_hidden_layers']} layers, hidden {res['shape']['hidden_size']}), random weights, "
        "the embedded model's tokenizer (vocabulary 49,152).", "",
        "## Training (LoRA r 8, alpha 16, q_proj/v_proj, activation checkpointing, AdamW)", "",
        "| setting | steps | tokens/step | tokens/s | peak memory (GiB) |", "|---|---|---|---|---|",
    ]
    for t in res["training"]:
        lines.append(f"| {t['setting']} | {t['steps']} | {t['tokens_per_step']} | {t['tokens_per_s']} | "
                     f"{t['peak_memory_gib']} |")
    mem = ("accelerator memory (`torch.cuda.max_memory_allocated`) above what was still allocated when the setting "
           "started" if m.get("gpus") else "process peak RSS (CPU)")
    lines += ["", f"Peak memory is {mem}. Several GPUs (ZeRO-3 / FSDP) are not measured by this version.", ""]
    lines += ["## Generation: vLLM multi-LoRA vs the Transformers backend", ""]
    v, h = res.get("vllm"), res["transformers"]
    lines += ["| backend | requests | adapters | new tokens | generation s | requests/s | new tokens/s |",
              "|---|---|---|---|---|---|---|"]
    if v:
        lines.append(f"| vLLM (`generate --backend vllm`, one engine) | {v['requests']} | {v['adapters']} | "
                     f"{v['new_tokens']} | {v['generate_seconds']} | {v['requests_per_s']} | {v['tokens_per_s']} |")
    lines.append(f"| Transformers (prefix-shared batches, merged adapter) | {h['requests']} | 1 | {h['new_tokens']} | "
                 f"{h['generate_seconds']} | {h['requests_per_s']} | {h['tokens_per_s']} |")
    if v:
        lines += ["", f"vLLM / Transformers, requests per second: **{v['requests_per_s'] / h['requests_per_s']:.1f}×** "
                  f"(vLLM wall time including engine start: {v['wall_seconds']} s). Prompt lengths follow a "
                  f"log-normal with mean {PAPER_MEAN_TOKENS} tokens × {res['plan']['length_scale']} (the paper's "
                  "documents); greedy decoding."]
    else:
        lines += ["", "vLLM was not measured: no vLLM environment (`bash scripts/setup.sh --vllm`)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SHAPES), default="7b")
    p.add_argument("--output", default="docs/benchmarks/gpu.md")
    p.add_argument("--json", default=None, help="Also write the figures as JSON.")
    p.add_argument("--work_dir", default="runs/bench-gpu", help="Model, adapters, prompts and outputs.")
    p.add_argument("--vllm_python", default=None, help="vLLM environment's interpreter (default: as `generate`).")
    p.add_argument("--skip_vllm", action="store_true", help="Measure training and the Transformers backend only.")
    p.add_argument("--tokenizer", default="embedded",
                   help="Tokenizer of the random model: `embedded` or a local directory (a machine without the GGUF).")
    args = p.parse_args(argv)

    from xtask_safety.generate.backends import find_vllm_python
    from xtask_safety.models import offline_defaults

    offline_defaults()
    plan = PLANS[args.scale]
    work = Path(args.work_dir) / args.scale
    work.mkdir(parents=True, exist_ok=True)
    python = None if args.skip_vllm else find_vllm_python(args.vllm_python)
    model_dir = build_model(args.scale, work / "model", args.tokenizer)
    res: dict = {"scale": args.scale, "shape": SHAPES[args.scale], "plan": plan, "machine": machine(),
                 "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "command": "python benchmarks/bench_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    res["training"] = [train_bench(model_dir, False, plan), train_bench(model_dir, True, plan)]
    adapters = make_adapters(model_dir, plan["adapters"], work / "adapters")
    grid = make_grid(model_dir, plan["n_requests"] // plan["adapters"], plan, work / "prompts.jsonl")
    for old in (work / "vllm").glob("*.jsonl"):
        old.unlink()
    (work / "hf.jsonl").unlink(missing_ok=True)
    if python:
        res["vllm"] = vllm_bench(model_dir, grid, adapters, plan, python, work)
    res["transformers"] = hf_bench(model_dir, grid, adapters["a1"], plan, work)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(markdown(res), encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"training": res["training"], "transformers": res["transformers"], "vllm": res.get("vllm")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
