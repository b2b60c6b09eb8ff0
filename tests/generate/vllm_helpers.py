"""Helpers for the real-vLLM tests: random LoRA adapters on the embedded model, a small paired grid."""

from __future__ import annotations

import json
from pathlib import Path

from xtask_safety.records import Record


def make_random_adapter(base_path: str, out: Path, seed: int, rank: int = 8, alpha: int = 16,
                        layers: list[int] | None = None) -> str:
    """A PEFT LoRA with non-zero random weights (no training), saved as safetensors; strong enough that its
    greedy answers differ from the base model's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, bias="none",
                     init_lora_weights=False, layers_to_transform=layers, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(out, safe_serialization=True)
    assert (out / "adapter_model.safetensors").is_file()
    return str(out)


def small_grid(n_docs: int = 3, tasks: tuple[str, ...] = ("summarize", "sentiment", "cloze", "case"),
               words: int = 60) -> list[Record]:
    """Paired records: the first ``n_docs`` demo documents of each of two domains under each task, cut to
    ``words`` words so prompts stay short."""
    from xtask_safety.data.corpus import demo_dir
    from xtask_safety.tasks import TASKS

    docs: list[dict] = []
    for line in (demo_dir() / "corpus_a.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["domain"] in ("malicious", "news") and sum(d["domain"] == row["domain"] for d in docs) < n_docs:
            docs.append(row)
    out = []
    for d in docs:
        text = " ".join(d["document"].split()[:words])
        for t in tasks:
            out.append(Record(id=f"{d['id']}-{t}", task=t, domain=d["domain"], document=text,
                              instruction=TASKS[t].instruction(), meta={"doc_id": d["id"]}))
    return out
