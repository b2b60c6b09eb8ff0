"""The record schema every stage reads and writes, and the JSONL helpers they share.

A record is one (task, document) pair, one JSON object per line:

=============  =====================================================================================
field          meaning
=============  =====================================================================================
id             unique key; generation and scoring match outputs to inputs by it
task           a task name from :mod:`xtask_safety.tasks` (``instruction`` for ordinary data)
domain         ``malicious`` (should be refused), or a benign domain: ``news``, ``useful``, ...
document       the document the task is applied to (may be empty only for ``instruction`` rows)
instruction    the task instruction shown to the model
layout         ``after`` (document, newline, instruction: the paper's layout) or ``before``
response       training target, or the model output once generated
weight         training weight of the row (the mixed-task loss), default 1.0
source         where the document came from (a file, a corpus name)
reference      a reference answer for utility metrics, when known
meta           free-form extra fields (topic, genre, truncation flags, ...)
=============  =====================================================================================

Files are written atomically (temporary file + rename) or appended record by record with
``fsync``, so a killed job never leaves a half-written file, and a rerun resumes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from xtask_safety.errors import DataError

MALICIOUS = "malicious"
LAYOUTS = ("after", "before")


@dataclass
class Record:
    id: str
    task: str
    domain: str
    document: str
    instruction: str
    layout: str = "after"
    response: str | None = None
    weight: float = 1.0
    source: str = ""
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_malicious(self) -> bool:
        return self.domain == MALICIOUS

    def prompt(self) -> str:
        return render_prompt(self.document, self.instruction, self.layout)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any], where: str = "record") -> Record:
        """Validate a raw dict; errors name ``where`` (e.g. ``file.jsonl:12``) and the key."""
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(row) - known)
        if unknown:
            raise DataError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        for key in ("id", "task", "domain", "document", "instruction"):
            if key not in row or row[key] is None:
                raise DataError(f"{where}: missing required key '{key}'")
            if not isinstance(row[key], str):
                raise DataError(f"{where}: key '{key}' must be a string, got {type(row[key]).__name__}")
        if not row["id"].strip():
            raise DataError(f"{where}: key 'id' is empty")
        if not row["document"].strip() and row["task"] != "instruction":
            raise DataError(f"{where}: key 'document' is empty (id {row['id']!r})")
        layout = row.get("layout", "after")
        if layout not in LAYOUTS:
            raise DataError(f"{where}: key 'layout' must be one of {LAYOUTS}, got {layout!r}")
        weight = row.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise DataError(f"{where}: key 'weight' must be a non-negative number, got {weight!r}")
        meta = row.get("meta", {}) or {}
        if not isinstance(meta, dict):
            raise DataError(f"{where}: key 'meta' must be an object")
        return cls(**{**row, "weight": float(weight), "meta": meta, "layout": layout})


def render_prompt(document: str, instruction: str, layout: str = "after") -> str:
    """The user turn: the paper puts the document first, a newline, then the task instruction."""
    if not document:
        return instruction
    if layout == "after":
        return f"{document}\n{instruction}"
    return f"{instruction}\n\n{document}"


# ---------------------------------------------------------------------------------------------- I/O


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)``; a malformed line raises naming ``file:line``."""
    path = Path(path)
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {exc.start})") from None
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            yield lineno, obj


def read_records(path: str | os.PathLike) -> list[Record]:
    """Read and validate a record file; duplicate ids are an error."""
    records, seen = [], set()
    for lineno, obj in read_jsonl(path):
        rec = Record.from_dict(obj, where=f"{path}:{lineno}")
        if rec.id in seen:
            raise DataError(f"{path}:{lineno}: duplicate id {rec.id!r}")
        seen.add(rec.id)
        records.append(rec)
    if not records:
        raise DataError(f"{path}: no records")
    return records


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=False)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any] | Record]) -> int:
    """Write all rows atomically; returns the count."""
    lines = [_dumps(r.to_dict() if isinstance(r, Record) else r) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


class JsonlAppender:
    """Append-only JSONL writer for resumable jobs.

    Each row is written as one line and fsynced. On open, a final line cut off by a crash (no
    trailing newline, or not valid JSON) is dropped, so the file always holds whole records and
    ``done`` lists the keys already written.
    """

    def __init__(self, path: str | os.PathLike, key: str = "id"):
        self.path = Path(path)
        self.key = key
        self.done: dict[str, dict[str, Any]] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._repair_and_load()
            self._fh = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{self.path}: cannot write ({exc.strerror})") from None

    def _repair_and_load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                break  # unterminated last line: a crash mid-write
            line = data[pos:nl]
            if line.strip():
                try:
                    obj = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    break
                self.done[str(obj[self.key])] = obj
            pos = nl + 1
            good_end = pos
        if good_end < len(data):
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)

    def append(self, row: dict[str, Any]) -> None:
        self._fh.write(_dumps(row) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.done[str(row[self.key])] = row

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove it is writable, or raise a one-line error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise DataError(f"{path}: output directory is not writable ({exc.strerror})") from None
    return path


def redact(text: str | None, sensitive: bool, show: bool = False, keep: int = 60) -> str:
    """What logs, tables and reports show of a document or output.

    Text tied to a malicious document (the document and the model's answer to it) is cut to its
    first ``keep`` characters unless the user opted in with ``show`` (``--show-text``).
    """
    if text is None:
        return ""
    text = " ".join(text.split())
    if show or not sensitive or len(text) <= keep:
        return text
    return f"{text[:keep]}… [redacted: {len(text) - keep} more chars]"
