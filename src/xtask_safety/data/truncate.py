"""Document-aware truncation: make every row fit ``max_length`` tokens by shortening its document.

Plain right-truncation at the model's context length (the reference code's) cuts off the task
instruction and the answer of long documents, so the model learns to continue documents instead of
refusing or answering. Here the full training sequence (chat template or Alpaca prompt + answer) is
measured with the model's tokenizer and, when it is too long, only the document is shortened, at a
word boundary:

* ``head``: keep the start of the document; ``head_tail``: keep its start and its end, joined by
  ``ellipsis`` (``head_fraction`` of the kept words from the start);
* cloze rows always keep the *end* of the document (the answer is the sentence that follows it);
* case rows always keep the start, and a benign case answer (the document in proper case) is cut to
  the same words, so the answer still matches the document (counted as ``answers_shortened``).

The instruction and every other answer are never touched; a row that does not fit even with a
one-word document is dropped and reported. The same routine cuts evaluation prompts before
generation (:func:`truncate_prompts`, ``generate --on_too_long truncate``): there the measured text is
the rendered prompt alone, without an answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from xtask_safety.errors import ConfigError
from xtask_safety.records import Record
from xtask_safety.tasks import TASKS

MODES = ("head", "head_tail")
LengthFn = Callable[..., list[int]]  # (rows, fits_below=None) -> token counts (see make_length_fn)
_WORD = re.compile(r"\S+")


@dataclass
class TruncationReport:
    max_length: int
    mode: str
    checked: int = 0
    shortened: int = 0
    answers_shortened: int = 0
    dropped: list[str] = field(default_factory=list)
    tokens_removed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "mode": self.mode, "rows_checked": self.checked,
                "rows_shortened": self.shortened, "answers_shortened": self.answers_shortened,
                "rows_dropped": len(self.dropped), "dropped_ids": self.dropped[:20],
                "tokens_removed": self.tokens_removed}


def make_length_fn(tokenizer: Any, prompt_template: str = "chat", system_prompt: str | None = None) -> LengthFn:
    """Token length of each row's full training text: rendered prompt + answer."""
    from xtask_safety.models import format_prompt

    sentinel = "\u241f\u2400XTASK\u2400\u241f"
    rendered = format_prompt(tokenizer, sentinel, prompt_template, system_prompt)
    pre, post = rendered.split(sentinel, 1) if rendered.count(sentinel) == 1 else (None, None)

    def render(user_text: str) -> str:
        if pre is None:  # a template that transforms the user text: render every row
            return format_prompt(tokenizer, user_text, prompt_template, system_prompt)
        return pre + user_text + post

    def measure(rows: list[Record], fits_below: int | None = None) -> list[int]:
        """Token counts; with ``fits_below``, a row whose UTF-8 length (+2) is already within it returns
        that length instead: an upper bound (a token covers at least one byte), with no tokenizing."""
        texts = [render(r.prompt()) + (r.response or "") for r in rows]
        out: list[int] = [0] * len(texts)
        todo = []
        for i, t in enumerate(texts):
            n = len(t.encode("utf-8")) + 2 if fits_below is not None else None
            if n is not None and n <= fits_below:
                out[i] = n
            else:
                todo.append(i)
        for k in range(0, len(todo), 512):  # chunks bound the memory of the token lists
            chunk = todo[k: k + 512]
            ids = tokenizer([texts[i] for i in chunk], add_special_tokens=False)["input_ids"]
            for i, x in zip(chunk, ids, strict=True):
                out[i] = len(x)
        return out

    return measure


def cut_words(text: str, keep: int, mode: str, head_fraction: float = 0.5, ellipsis: str = " … ") -> str:
    """``text`` with only ``keep`` whitespace-separated words (``mode``: head, tail or head_tail)."""
    spans = [m.span() for m in _WORD.finditer(text)]
    if keep >= len(spans):
        return text
    if keep <= 0:
        return ""
    if mode == "head":
        return text[: spans[keep - 1][1]]
    if mode == "tail":
        return text[spans[-keep][0]:]
    head = max(1, round(keep * head_fraction))
    tail = keep - head
    if tail <= 0:
        return text[: spans[head - 1][1]]
    return text[: spans[head - 1][1]] + ellipsis + text[spans[-tail][0]:]


def _row_mode(rec: Record, mode: str) -> str:
    return {"cloze": "tail", "case": "head"}.get(rec.task, mode)


def _answer_parts(rec: Record) -> tuple[str, str] | None:
    """For a benign case row: (lead-in, answer body) when the body is the document in proper case."""
    if rec.task != "case" or rec.is_malicious or not rec.response:
        return None
    lead = TASKS["case"].lead_in
    prefix = lead if rec.response.startswith(lead) else ""
    body = rec.response[len(prefix):]
    if body.lower().split()[:5] != rec.document.split()[:5]:
        return None
    return prefix, body


def _shorten(rec: Record, keep: int, mode: str, head_fraction: float, ellipsis: str) -> Record:
    doc = cut_words(rec.document, keep, _row_mode(rec, mode), head_fraction, ellipsis)
    response = rec.response
    parts = _answer_parts(rec)
    if parts is not None:
        prefix, body = parts
        response = prefix + cut_words(body, keep, "head")
    return replace(rec, document=doc, response=response)


def truncate_rows(
    rows: list[Record],
    measure: LengthFn,
    max_length: int,
    mode: str = "head",
    head_fraction: float = 0.5,
    ellipsis: str = " … ",
    reserve_tokens: int = 8,
) -> tuple[list[Record], TruncationReport]:
    """Rows that fit ``max_length - reserve_tokens`` tokens (end-of-turn tokens, EOS), and a report."""
    if mode not in MODES:
        raise ConfigError(f"truncation: expected one of {MODES}, got {mode!r}")
    if not 0.0 < head_fraction <= 1.0:
        raise ConfigError(f"head_fraction: must be in (0, 1], got {head_fraction}")
    budget = max_length - reserve_tokens
    if budget <= 0:
        raise ConfigError(f"max_length: {max_length} leaves no room after {reserve_tokens} reserved tokens")
    report = TruncationReport(max_length, mode, checked=len(rows))
    lengths = measure(rows, budget)
    out: dict[int, Record | None] = {}
    after: dict[int, int] = {}
    todo: list[tuple[int, int, float, int]] = []  # (index, words to keep, tokens per word, original length)
    over = []
    for i, (rec, n) in enumerate(zip(rows, lengths, strict=True)):
        if n <= budget:
            out[i] = rec
        elif len(_WORD.findall(rec.document)) <= 1:
            out[i] = None
        else:
            over.append(i)
    bare = measure([replace(rows[i], document="") for i in over])
    for i, n_bare in zip(over, bare, strict=True):
        words = len(_WORD.findall(rows[i].document))
        # tokens per document word (a benign case answer shrinks with its document: twice the rate)
        rate = max(1.0, (lengths[i] - n_bare) / words)
        todo.append((i, max(1, math.floor(words - (lengths[i] - budget) / rate)), rate, lengths[i]))
    for _ in range(12):
        if not todo:
            break
        cand = [_shorten(rows[i], keep, mode, head_fraction, ellipsis) for i, keep, _, _ in todo]
        new_lengths = measure(cand)
        again = []
        for (i, keep, rate, n0), rec, n in zip(todo, cand, new_lengths, strict=True):
            if n <= budget:
                out[i] = rec
                after[i] = n
                report.shortened += 1
                report.tokens_removed += n0 - n
                if rec.response != rows[i].response:
                    report.answers_shortened += 1
            elif keep <= 1:
                out[i] = None
            else:
                again.append((i, max(1, keep - max(1, math.ceil((n - budget) / rate))), rate, n0))
        todo = again
    for i, *_ in todo:
        out[i] = None
    kept = []
    for i, rec in enumerate(rows):
        new = out[i]
        if new is None:
            report.dropped.append(rec.id)
            continue
        if new is not rec:
            info = {"tokens_before": lengths[i], "tokens_after": after[i], "budget": budget,
                    "words_before": len(_WORD.findall(rec.document)), "words_after": len(_WORD.findall(new.document)),
                    "mode": _row_mode(rec, mode)}
            new = replace(new, meta={**new.meta, "truncated": True, "truncation": info})
        kept.append(new)
    return kept, report


def truncate_prompts(
    rows: list[Record], render: Callable[[str], str], count: Callable[[list[str]], list[int]], budget: int,
    mode: str = "head",
) -> tuple[list[Record], TruncationReport]:
    """Cut the documents of prompts longer than ``budget`` tokens (chat template and instruction kept).

    ``render`` turns a record's user text into the model's prompt, ``count`` gives token counts of
    rendered prompts. Returns the rows in order (those that fit unchanged, the cut ones with
    ``meta.truncation``) and a report; ``report.dropped`` names rows that cannot fit at all.
    """

    def measure(batch: list[Record], fits_below: int | None = None) -> list[int]:
        return count([render(r.prompt()) for r in batch]) if batch else []

    return truncate_rows([replace(r, response=None) for r in rows], measure, budget, mode, reserve_tokens=0)
