"""What every generation backend takes and offers: :class:`SamplingConfig` and the :class:`Backend` protocol.

Callers (generation runs, refusal sampling, the model judge) depend on this module only; the
Transformers and vLLM backends implement the protocol, and :func:`xtask_safety.generate.backends.build_backend`
builds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 1.0
    num_beams: int = 1
    seed: int = 0


@runtime_checkable
class Backend(Protocol):
    """A loaded model that answers rendered prompts in planned batches."""

    name: ClassVar[str]
    supports_adapters: ClassVar[bool]  # several adapters in one run (``generate_batch(..., adapters=...)``)
    tokenizer: Any
    max_model_len: int | None  # longest prompt + answer, None when unknown

    def render(self, user_text: str) -> str:
        """The user turn in the model's prompt format (chat template or Alpaca)."""
        ...

    def prompt_lengths(self, texts: list[str]) -> list[int]:
        """Token counts of rendered prompts."""
        ...

    def plan(self, texts: list[str]) -> list[list[int]]:
        """Batches of indices into ``texts``, in the order they are generated (the unit of resume)."""
        ...

    def generate_batch(self, texts: list[str], sampling: SamplingConfig, rows: list[int] | None = None,
                       **kwargs: Any) -> list[dict | None]:
        """One output dict (``text``, ``n_tokens``, ``finish`` ...) per text, in order."""
        ...
