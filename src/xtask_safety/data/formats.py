"""The reference code's file formats, both ways.

* Evaluation files: ``{"instructions": [document + separator + task instruction, ...], "inputs": []}``.
  The released files join document and instruction with *no* separator for summarize and translate,
  one ``"\\n"`` for sentiment and case, and ``"\\n\\n"`` for cloze (:data:`PAPER_SEPARATORS`).
  Importing splits every row back into document and task by recognising the task instruction at
  its end (any phrasing of :mod:`xtask_safety.tasks`, the "3 sentence" variant of the malicious set,
  or instructions the caller adds), with or without a separator; an instruction-first row
  (``instruction + "\\n\\n" + document``) is recognised too. Rows it cannot attribute are reported:
  an error by default, or a warning naming them when the caller asks to skip them.
* Training ("saferpaca") files: ``[{"instruction", "input", "output"}, ...]``. Defense rows hold the
  whole prompt in ``instruction`` (document, separator, task instruction) and an empty ``input``;
  ordinary instruction data keeps its own instruction/input split.

Whitespace: the document is recovered *exactly*. At the junction, only the task's separator in the
paper's layout is removed: nothing for summarize/translate (everything before the instruction is the
document, a trailing newline included), one newline for sentiment/case, two for cloze; a row of those
three without its paper separator loses one newline (the toolkit's older layout) or nothing. Any
other whitespace, leading or trailing, stays in the document, and a separator other than the task's
paper one is kept in ``meta.paper_separator``, so exporting the records writes every row back
exactly as it was read.

Exports write a *sidecar* ``<name>.xtask.jsonl`` beside the paper-format file with every record
field the paper format cannot hold (id, domain, weight, meta, ...) and a hash of each row's text.
Importing a file with its sidecar gives back exactly the records that were exported; a sidecar that
does not match its file is an error, never silently half-used.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from xtask_safety.data.sources import load_json_file
from xtask_safety.errors import DataError
from xtask_safety.records import Record, atomic_write_text, read_jsonl
from xtask_safety.tasks import PAPER_VARIANTS, TASKS

SIDECAR_SUFFIX = ".xtask.jsonl"
_BEFORE_GAP = re.compile(r"[ \t]*\n\n")
# How the released evaluation files join document and instruction, per task.
PAPER_SEPARATORS = {"summarize": "", "translate": "", "sentiment": "\n", "case": "\n", "cloze": "\n\n"}
_DOMAIN_HINTS = (("malicious", "malicious"), ("harmful", "malicious"), ("cnn", "news"), ("news", "news"),
                 ("useful", "useful"), ("benign", "benign"))


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------------- instruction matching


@dataclass(frozen=True)
class Split:
    task: str
    document: str
    instruction: str  # exactly as it appears in the text
    layout: str
    separator: str  # between document and instruction ("\n" in the paper's files)
    phrasing: str  # paper | variant | train | heldout | extra


class InstructionMatcher:
    """Recognise a task instruction at the end (or start) of a prompt and split the document off."""

    def __init__(self, extra: dict[str, str] | None = None):
        after: dict[str, tuple[str, str]] = {}
        before: dict[str, tuple[str, str]] = {}
        for task in TASKS.values():
            kinds = [(p, "train") for p in task.train_phrasings] + [(p, "heldout") for p in task.heldout_phrasings]
            for phrasing, kind in kinds:
                kind = "paper" if phrasing == task.paper_instruction else kind
                after.setdefault(task.instruction(phrasing, "after").strip(), (task.name, kind))
                before.setdefault(task.instruction(phrasing, "before").strip(), (task.name, kind))
        for text, name in PAPER_VARIANTS.items():
            after.setdefault(text.strip(), (name, "variant"))
        for text, name in (extra or {}).items():
            if name not in TASKS:
                raise DataError(f"extra instruction {text!r}: unknown task {name!r}")
            after[text.strip()] = before[text.strip()] = (name, "extra")
        # Longest first, so an instruction that ends with a shorter one is matched whole.
        self.after = sorted(after.items(), key=lambda kv: -len(kv[0]))
        self.before = sorted(before.items(), key=lambda kv: -len(kv[0]))

    def split(self, text: str) -> Split | None:
        stripped = text.rstrip()
        for cand, (task, kind) in self.after:
            if not stripped.endswith(cand):
                continue
            start = len(stripped) - len(cand)
            prefix = text[:start]
            separator = junction(prefix, task)
            document = prefix[: len(prefix) - len(separator)]
            if document.strip():
                return Split(task, document, text[start:], "after", separator, kind)
        for cand, (task, kind) in self.before:
            if not text.startswith(cand):
                continue
            gap = _BEFORE_GAP.match(text, len(cand))  # the instruction's own trailing spaces, then a blank line
            if gap and text[gap.end():].strip():
                return Split(task, text[gap.end():], text[: gap.end() - 2], "before", "\n\n", kind)
        return None


def paper_separator(task: str) -> str:
    """The separator the released files put between a task's document and instruction."""
    return PAPER_SEPARATORS.get(task, "\n")


def junction(prefix: str, task: str) -> str:
    """The separator at the end of ``prefix`` (the text before the instruction).

    Summarize and translate rows have none in the paper's layout: everything before the instruction
    is the document. Other tasks drop their paper separator when the row has it, else one newline
    (the toolkit's older layout), else nothing. Any other whitespace is the document's.
    """
    expected = paper_separator(task)
    if not expected:
        return ""
    for sep in (expected, "\n"):
        if prefix.endswith(sep) and prefix[: -len(sep)].strip():
            return sep
    return ""


def paper_text(rec: Record) -> str:
    """A record's prompt as the reference code's files hold it."""
    if rec.layout == "before":
        return f"{rec.instruction}\n\n{rec.document}" if rec.document else rec.instruction
    sep = rec.meta.get("paper_separator", paper_separator(rec.task))
    return f"{rec.document}{sep}{rec.instruction}" if rec.document else rec.instruction


_SIDE_FIELDS = [f.name for f in fields(Record) if f.name != "document"]


def _side_row(rec: Record, text: str) -> dict[str, Any]:
    sep = rec.meta.get("paper_separator", paper_separator(rec.task))
    return {"text_sha1": _sha(text), "separator": sep, **{k: getattr(rec, k) for k in _SIDE_FIELDS}}


def _from_side(side: dict[str, Any], text: str, where: str) -> Record:
    side = dict(side)
    side.pop("text_sha1", None)
    instruction, layout = side.get("instruction", ""), side.get("layout", "after")
    # sidecars written before separators were recorded used one newline unless meta said otherwise
    sep = side.pop("separator", None)
    sep = (side.get("meta") or {}).get("paper_separator", "\n") if sep is None else sep
    if layout == "before":
        document = text[len(instruction) + 2:] if text != instruction else ""
    else:
        document = text[: len(text) - len(instruction) - len(sep)] if text != instruction else ""
    return Record.from_dict({**side, "document": document}, where=where)


def _read_sidecar(path: Path, texts: list[str]) -> list[dict[str, Any]] | None:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    rows = [obj for _, obj in read_jsonl(side)]
    if len(rows) != len(texts):
        raise DataError(f"{side}: {len(rows)} rows for {len(texts)} in {path.name}; re-export or delete the sidecar")
    for i, (row, text) in enumerate(zip(rows, texts, strict=True)):
        if not isinstance(row, dict) or row.get("text_sha1") != _sha(text):
            raise DataError(f"{side}:{i + 1}: does not match row {i} of {path.name}; re-export or delete the sidecar")
    return rows


def separator_meta(s: Split) -> dict[str, str]:
    """``{"paper_separator": ...}``: the exact text between document and instruction of a document-first
    row, so the model is shown the row as the file holds it (:meth:`Record.prompt`) and export writes it
    back unchanged."""
    return {"paper_separator": s.separator} if s.layout == "after" else {}


def domain_hint(path: str | os.PathLike) -> str | None:
    """The domain a file name says, if any: the released ``test_<task>.json`` is the malicious set; else a
    hint in the name (malicious/harmful, cnn/news, useful, benign)."""
    name = Path(path).name.lower()
    if name.startswith("test_") and name.removeprefix("test_").removesuffix(".json") in TASKS:
        return "malicious"
    return next((domain for hint, domain in _DOMAIN_HINTS if hint in name), None)


def _infer_domain(path: Path) -> str:
    domain = domain_hint(path)
    if domain is not None:
        return domain
    raise DataError(f"{path}: cannot tell the domain from the file name; pass domain (e.g. malicious, news, useful)")


# ------------------------------------------------------------------------------------- evaluation files


@dataclass
class PaperImport:
    records: list[Record]
    unattributed: list[tuple[int, str]] = field(default_factory=list)  # (row index, opening of the row)


def _doc_ids(splits: list[tuple[int, Split]]) -> dict[int, str]:
    """Group rows by document: the same document recurs under every task (paired evaluation).

    Keys are lower-cased and whitespace-collapsed, so the case task's lower-cased document joins its
    group; a cloze row (the document without its last sentence) joins the one group it is a prefix of.
    """
    norm = {i: " ".join(s.document.lower().split()) for i, s in splits}
    full = sorted({k for i, s in splits for k in [norm[i]] if s.task != "cloze"})
    fullset = set(full)
    ids = {}
    for i, s in splits:
        key = norm[i]
        if s.task == "cloze" and key not in fullset:
            j = bisect.bisect_left(full, key)
            hits = [k for k in full[j: j + 2] if k.startswith(key)]
            if len(hits) == 1:
                key = hits[0]
        ids[i] = "d" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
    return ids


def load_eval_texts(path: Path) -> list[str]:
    """The ``instructions`` strings of an evaluation file, validated (errors name the file and row)."""
    obj = load_json_file(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("instructions"), list):
        raise DataError(f"{path}: expected a JSON object with an 'instructions' list (the paper's evaluation format)")
    texts = obj["instructions"]
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"{path}: instructions[{i}] must be a string, got {type(t).__name__}")
    inputs = obj.get("inputs", [])
    if not isinstance(inputs, list) or any(x not in ("", None) for x in inputs):
        raise DataError(f"{path}: key 'inputs' must be an empty list (documents live in 'instructions')")
    if not texts:
        raise DataError(f"{path}: 'instructions' is empty")
    return texts


def import_paper_eval_file(
    path: str | os.PathLike, domain: str | None = None, extra_instructions: dict[str, str] | None = None
) -> PaperImport:
    """Records for every row whose task is recognised, and the rows that are not."""
    path = Path(path)
    texts = load_eval_texts(path)
    side = _read_sidecar(path, texts)
    if side is not None:
        recs = [_from_side(row, text, f"{sidecar_path(path)}:{i + 1}") for i, (row, text) in
                enumerate(zip(side, texts, strict=True))]
        return PaperImport(recs)
    dom = domain or _infer_domain(path)
    matcher = InstructionMatcher(extra_instructions)
    splits, missing = [], []
    for i, text in enumerate(texts):
        s = matcher.split(text)
        if s is None:
            missing.append((i, " ".join(text.split())[-80:]))
        elif not s.document.strip():
            missing.append((i, "(no document before the instruction)"))
        else:
            splits.append((i, s))
    ids = _doc_ids(splits)
    seen: dict[str, int] = {}
    records = []
    for i, s in splits:
        rid = f"{ids[i]}:{s.task}"
        seen[rid] = seen.get(rid, 0) + 1
        if seen[rid] > 1:
            rid = f"{rid}#{seen[rid]}"
        meta: dict[str, Any] = {"doc_id": ids[i], "phrasing": s.phrasing, "paper_file": path.name, "paper_row": i}
        meta.update(separator_meta(s))
        records.append(Record(id=rid, task=s.task, domain=dom, document=s.document, instruction=s.instruction,
                              layout=s.layout, source=path.name, meta=meta))
    return PaperImport(records, missing)


def read_paper_eval_file(
    path: str | os.PathLike,
    domain: str | None = None,
    *,
    unattributed: str = "error",
    extra_instructions: dict[str, str] | None = None,
) -> list[Record]:
    """Import a released evaluation file into records (task and document recovered for every row).

    ``domain`` defaults to the sidecar's or a hint in the file name (malicious/harmful, cnn/news,
    useful). Rows whose instruction is not recognised raise a :class:`DataError` naming them
    (``unattributed="error"``) or are left out with a warning naming them (``"skip"``).
    """
    if unattributed not in ("error", "skip"):
        raise DataError(f"unattributed: expected 'error' or 'skip', got {unattributed!r}")
    result = import_paper_eval_file(path, domain, extra_instructions)
    if result.unattributed:
        rows = ", ".join(f"instructions[{i}]" for i, _ in result.unattributed[:5])
        more = f" and {len(result.unattributed) - 5} more" if len(result.unattributed) > 5 else ""
        total = len(result.records) + len(result.unattributed)
        msg = (f"{path}: {len(result.unattributed)} of {total} rows have no recognised task instruction "
               f"({rows}{more}; ends with {result.unattributed[0][1]!r})")
        if unattributed == "error":
            raise DataError(msg + "; pass extra_instructions, or unattributed='skip' to import the rest")
        warnings.warn(msg + "; skipped", stacklevel=2)
    return result.records


def _writer(atomic: bool):
    """Atomic (temp + fsync + rename) by default; plain writes inside a build's temporary directory,
    which is renamed into place as a whole."""
    if atomic:
        return atomic_write_text

    def write(path: str | os.PathLike, text: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")

    return write


def write_paper_eval_file(
    path: str | os.PathLike, records: list[Record], sidecar: bool = True, atomic: bool = True
) -> int:
    """Write records as an evaluation file (and the sidecar that makes re-import lossless)."""
    if not records:
        raise DataError(f"{path}: no records to export")
    write = _writer(atomic)
    texts = [paper_text(r) for r in records]
    if sidecar:
        write(sidecar_path(path), "".join(json.dumps(_side_row(r, t), ensure_ascii=False) + "\n"
                                          for r, t in zip(records, texts, strict=True)))
    write(path, json.dumps({"instructions": texts, "inputs": []}, ensure_ascii=False, indent=2) + "\n")
    return len(texts)


# ---------------------------------------------------------------------------------- saferpaca files


def saferpaca_row(rec: Record) -> dict[str, str]:
    if rec.response is None:
        raise DataError(f"record {rec.id!r}: no response (saferpaca rows need an output)")
    if rec.task == "instruction" and rec.layout == "before":
        return {"instruction": rec.instruction, "input": rec.document, "output": rec.response}
    return {"instruction": paper_text(rec), "input": "", "output": rec.response}


def write_saferpaca(
    path: str | os.PathLike,
    records: list[Record],
    sidecar: bool = True,
    cache: dict[str, tuple[str, str]] | None = None,
    atomic: bool = True,
) -> int:
    """Write training records as a saferpaca (Alpaca-format) JSON list, one row per line, plus the sidecar.

    ``cache`` (record id -> serialised row and sidecar row) saves work across files sharing rows.
    """
    if not records:
        raise DataError(f"{path}: no records to export")
    cache = {} if cache is None else cache
    rows, sides = [], []
    for rec in records:
        hit = cache.get(rec.id)
        if hit is None:
            row = saferpaca_row(rec)
            hit = cache[rec.id] = (json.dumps(row, ensure_ascii=False),
                                   json.dumps(_side_row(rec, _saferpaca_key(row)), ensure_ascii=False))
        rows.append(hit[0])
        sides.append(hit[1])
    write = _writer(atomic)
    if sidecar:
        write(sidecar_path(path), "".join(s + "\n" for s in sides))
    write(path, "[\n" + ",\n".join(rows) + "\n]\n")
    return len(rows)


def _saferpaca_key(row: dict[str, str]) -> str:
    return json.dumps([row["instruction"], row["input"], row["output"]], ensure_ascii=False)


def read_saferpaca(
    path: str | os.PathLike,
    *,
    defense_domain: str = "malicious",
    instruction_domain: str = "instruction",
    extra_instructions: dict[str, str] | None = None,
    min_document_words: int = 20,
) -> list[Record]:
    """Import a saferpaca training file.

    Without a sidecar, a row with an empty ``input`` whose ``instruction`` is a document of at least
    ``min_document_words`` words followed by a recognised task instruction becomes a defense row of
    that task (domain ``defense_domain``); every other row is ordinary instruction data.
    """
    path = Path(path)
    obj = load_json_file(path)
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a JSON list of {{instruction, input, output}} objects")
    rows = []
    for i, row in enumerate(obj):
        where = f"{path}[{i}]"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object, got {type(row).__name__}")
        for key in ("instruction", "output"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{where}: key {key!r} missing or not a string")
        if not isinstance(row.get("input", ""), str):
            raise DataError(f"{where}: key 'input' must be a string")
        rows.append({"instruction": row["instruction"], "input": row.get("input", ""), "output": row["output"]})
    if not rows:
        raise DataError(f"{path}: no rows")
    side = _read_sidecar(path, [_saferpaca_key(r) for r in rows])
    if side is not None:
        out = []
        for i, (s, row) in enumerate(zip(side, rows, strict=True)):
            text = row["instruction"] if not row["input"] else f"{row['instruction']}\n\n{row['input']}"
            out.append(_from_side(s, text, f"{sidecar_path(path)}:{i + 1}"))
        return out
    matcher = InstructionMatcher(extra_instructions)
    out = []
    for i, row in enumerate(rows):
        rid = f"{path.stem}:{i}"
        s = matcher.split(row["instruction"]) if not row["input"] else None
        if s is not None and len(s.document.split()) >= min_document_words:
            meta: dict[str, Any] = {"phrasing": s.phrasing, "paper_row": i}
            meta.update(separator_meta(s))
            out.append(Record(id=rid, task=s.task, domain=defense_domain, document=s.document,
                              instruction=s.instruction, layout=s.layout, response=row["output"],
                              source=path.name, meta=meta))
        else:
            out.append(Record(id=rid, task="instruction", domain=instruction_domain, document=row["input"],
                              instruction=row["instruction"], layout="before" if row["input"] else "after",
                              response=row["output"], source=path.name, meta={"paper_row": i}))
    return out
