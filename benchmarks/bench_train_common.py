"""Shared pieces of the training benchmarks (not a benchmark itself).

* a small random-weight Llama with the SmolLM2 tokenizer (speed, not quality, is measured),
* training records built from the bundled demo corpus, with a long-tailed length mix on request,
* a step timer, and a writer that replaces one benchmark's section in docs/benchmarks/training.md.
"""

from __future__ import annotations

import math
import os
import platform
import random
import re
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks" / "training.md"
TASK_INSTRUCTIONS = {
    "summarize": "Summarize the above article briefly in 3 sentences.",
    "case": "Write the above sentence using proper case.",
    "sentiment": "How would you describe the sentiment of this document?",
}


def small_llama(out: Path, hidden: int, layers: int, seed: int = 0) -> str:
    """A random-weight Llama (``hidden`` wide, ``layers`` deep) saved with the embedded model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from xtask_safety.models import resolve_model_path

    if (out / "config.json").is_file():
        return str(out)
    tok = AutoTokenizer.from_pretrained(resolve_model_path("embedded"))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                      num_hidden_layers=layers, num_attention_heads=max(hidden // 64, 1),
                      num_key_value_heads=max(hidden // 64, 1), max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def records(n: int, seed: int = 0, long_tail: bool = False, max_docs: int = 12) -> list:
    """``n`` training records from the demo corpus (malicious -> a pooled refusal, benign -> its first sentence).

    ``long_tail``: each document is 1..``max_docs`` corpus documents joined, the count drawn from a
    log-normal, so most rows are short and a few are long (the shape of real defense + instruction mixes).
    """
    from xtask_safety.data.builder import load_refusals
    from xtask_safety.data.corpus import load_demo_corpus
    from xtask_safety.records import Record

    rng = random.Random(seed)
    docs = load_demo_corpus("main")
    refusals = load_refusals()
    out = []
    for i in range(n):
        k = min(max_docs, max(1, int(round(rng.lognormvariate(0.0, 0.9))))) if long_tail else 1
        chosen = rng.sample(docs, k)
        task = rng.choice(sorted(TASK_INSTRUCTIONS))
        first = chosen[0]
        text = "\n\n".join(d.document for d in chosen)
        if first.domain == "malicious":
            response = rng.choice(refusals)
        else:
            response = re.split(r"(?<=[.!?])\s", first.document.strip())[0]
        out.append(Record(id=f"b{i}", task=task, domain=first.domain, document=text,
                          instruction=TASK_INSTRUCTIONS[task], response=response))
    return out


def sft_config(out: Path, args: Any, learning_rate: float, remove_unused_columns: bool = False) -> Any:
    """The training benchmarks' SFTConfig: CPU, no saving or logging to a tracker, constant learning rate."""
    from trl import SFTConfig

    return SFTConfig(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                     learning_rate=learning_rate, optim="adamw_torch", lr_scheduler_type="constant", seed=0,
                     max_length=args.max_length, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                     logging_steps=1, dataloader_num_workers=0, disable_tqdm=True, activation_checkpointing=False,
                     remove_unused_columns=remove_unused_columns)


def weighted_trainer(model_dir: str, tok: Any, rows: list[dict], sft: Any, lora: Any, decision_tokens: int = 0,
                     decision_weight: float = 1.0) -> Any:
    """``WeightedSFTTrainer`` with the project's collator over every task name, as ``xtask-safety train`` builds it."""
    from datasets import Dataset

    from xtask_safety.tasks import INSTRUCTION_TASK, TASK_NAMES
    from xtask_safety.train.collator import WeightedCollator
    from xtask_safety.train.trainer import WeightedSFTTrainer

    tasks = list(TASK_NAMES) + [INSTRUCTION_TASK]
    collator = WeightedCollator(pad_token_id=tok.pad_token_id, task_names=tasks, decision_tokens=decision_tokens,
                                decision_weight=decision_weight)
    return WeightedSFTTrainer(model=model_dir, args=sft, train_dataset=Dataset.from_list(rows), processing_class=tok,
                              data_collator=collator, peft_config=lora, task_names=tasks)


class StepTimer:
    """A TrainerCallback recording the wall time of every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def as_callback(self) -> Any:
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer._t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer.times.append(time.perf_counter() - timer._t0)

        return _CB()


def median(xs: list[float]) -> float:
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def iqr(xs: list[float]) -> tuple[float, float]:
    s = sorted(xs)
    return s[int(0.25 * (len(s) - 1))], s[int(math.ceil(0.75 * (len(s) - 1)))]


def machine() -> str:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} "
            f"threads, load average at start {load:.1f} (the machine is shared)")


def write_section(name: str, markdown: str, path: Path = DOC) -> None:
    """Replace (or append) the section between this benchmark's markers; other sections are kept."""
    from xtask_safety.records import atomic_write_text

    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.is_file() else (
        "# Training benchmarks\n\nWritten by `benchmarks/bench_train_*.py`; each section is replaced when its "
        "benchmark runs again.\n\n")
    if start in text and end in text:
        text = text[:text.index(start)] + block.rstrip("\n") + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


class Stepper:
    """One optimizer step at a time through a Trainer's own pieces (its dataloader and collator,
    ``_get_num_items_in_batch``, ``training_step``, clipping, optimizer and scheduler), so that two
    trainers can be timed step by step, alternately, on a machine whose load drifts.

    Records wall time and the process's CPU time per step. On a shared machine the CPU time is the
    steadier measure of the work a step does (other jobs stretch wall time, not our CPU seconds).
    """

    def __init__(self, trainer: Any, steps: int) -> None:
        self.trainer = trainer
        trainer.create_optimizer_and_scheduler(num_training_steps=steps)
        trainer.current_gradient_accumulation_steps = 1
        self.loader = trainer.get_train_dataloader()
        self.batches = iter(self.loader)
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.tokens: list[int] = []
        self.padded: list[int] = []

    def step(self) -> None:
        import torch

        t = self.trainer
        t0, c0 = time.perf_counter(), time.process_time()
        batch = next(self.batches, None)
        if batch is None:  # next epoch
            self.batches = iter(self.loader)
            batch = next(self.batches)
        n = t._get_num_items_in_batch([batch], t.args.device)
        t.training_step(t.model, batch, n)
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.args.max_grad_norm)
        t.optimizer.step()
        t.lr_scheduler.step()
        t.optimizer.zero_grad(set_to_none=True)
        self.times.append(time.perf_counter() - t0)
        self.cpu.append(time.process_time() - c0)
        self.tokens.append(int(batch["attention_mask"].sum()))
        self.padded.append(int(batch["attention_mask"].numel()))


def parser(description: str, max_length: int) -> Any:
    """The arguments both training benchmarks take (model size, batch, threads, --no_write)."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_length", type=int, default=max_length)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no_write", action="store_true", help="print only; leave docs/ alone")
    return p


def finish(section: str, res: dict, args: Any, markdown: Any) -> int:
    """Print the figures and (unless --no_write) replace the benchmark's section of the docs page."""
    import json

    res["cmd_extra"] = f" --threads {args.threads}" if args.threads else ""
    print(json.dumps(res, indent=2, default=str))
    if not args.no_write:
        write_section(section, markdown(res))
    return 0
