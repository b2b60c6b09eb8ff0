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

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from xtask_safety import faults
from xtask_safety.errors import DataError
from xtask_safety.tasks import check_task_name

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
        return render_prompt(self.document, self.instruction, self.layout, self.meta.get("paper_separator"))

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
        check_task_name(row["task"], where)
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


def render_prompt(document: str, instruction: str, layout: str = "after", separator: str | None = None) -> str:
    """The user turn: the paper puts the document first, a newline, then the task instruction.

    Rows imported from the paper's files carry their exact separator (``meta.paper_separator``: none for
    summarize and translate, a blank line for cloze), so they are shown to the model byte for byte as
    the reference code showed them.
    """
    if not document:
        return instruction
    if layout == "after":
        return f"{document}{chr(10) if separator is None else separator}{instruction}"
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


def os_reason(exc: OSError) -> str:
    """Why a write failed, for a one-line message (``mkdir`` through a file says "File exists")."""
    if isinstance(exc, FileExistsError):
        return "a file is in the way: a parent of the path is not a directory"
    return exc.strerror or str(exc)


def _write_temp(path: Path, text: str) -> str:
    """Write ``text`` to a new temporary file beside ``path`` (fsynced, usual permissions); return its name.

    Errors become a one-line :class:`DataError` and leave no temporary file behind.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({os_reason(exc)})") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise
    return tmp


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it into place.

    A full disk or another write error becomes a one-line :class:`DataError`; ``path`` is then left as
    it was. Temporary files of writers that were killed (their process is gone) are removed first.
    """
    path = Path(path)
    tmp = _write_temp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise


def atomic_write_files(files: dict[Path, str], after_each: Any = None) -> None:
    """Write several files as one unit: every temporary file first, then the renames.

    A write error (a full disk) leaves none of them changed. ``after_each(path)`` runs after each rename.
    """
    written: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path = Path(path)
            written.append((_write_temp(path, text), path))
        for tmp, path in written:
            os.replace(tmp, path)
            if after_each is not None:
                after_each(path)
    except BaseException:
        for tmp, _ in written:
            Path(tmp).unlink(missing_ok=True)
        raise


_TEMP_RE = re.compile(r"\.(\d+)\.(?:[^/]*\.)?(?:tmp|old)$")


def temp_sibling(path: str | os.PathLike, kind: str = "tmp") -> Path:
    """``.<name>.<pid>.<kind>`` beside ``path``: a temporary file or directory that
    :func:`remove_stale_temps` can recognise once its process is gone."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}.{kind}"


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and directories a killed writer left beside ``path``.

    They are named ``.<name>.<pid>[.<random>].tmp`` (or ``.old``); one is stale when no process with
    that id runs on this machine. Returns what was removed.
    """
    path = Path(path)
    removed = []
    prefix = f".{path.name}"
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for p in siblings:
        m = _TEMP_RE.fullmatch(p.name[len(prefix):])
        if not m or _pid_alive(int(m.group(1))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


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

    Each row is written as one line and flushed to the operating system at once, so a killed process
    loses nothing; ``fsync`` (costly on network filesystems, where a vLLM chunk of 2,048 rows fsynced
    one by one took longer than generating it) runs at most once per ``sync_interval`` seconds and on
    close, so a power loss costs at most the last interval's rows. On open, a final line cut off by a crash (no
    trailing newline, or not valid JSON) is dropped, so the file always holds whole records and
    ``done`` lists the keys already written. A malformed line *before* the last one is not a crash
    but a wrong file: that is an error, never a silent truncation. A failed write (a full disk) is
    undone back to the last whole row and raised as a one-line :class:`DataError`.
    """

    def __init__(self, path: str | os.PathLike, key: str = "id", sync_interval: float = 1.0):
        self.path = Path(path)
        self.key = key
        self.sync_interval = sync_interval
        self._last_sync = float("-inf")  # the first row is synced at once: a full disk shows up on row one
        self._unsynced: list[str] = []
        self.done: dict[str, dict[str, Any]] = {}
        self._fh = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._created = not self.path.exists()
            self._repair_and_load()
            self._fh = self.path.open("a", encoding="utf-8")
            self._good_end = self._synced_end = self.path.stat().st_size
        except OSError as exc:
            raise DataError(f"{self.path}: cannot write ({os_reason(exc)})") from None

    def _repair_and_load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        lineno = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                break  # unterminated last line: a crash mid-write
            lineno += 1
            line = data[pos:nl]
            if line.strip():
                try:
                    obj = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    if data[nl + 1:].strip():
                        raise DataError(f"{self.path}:{lineno}: malformed line before the end of the file; "
                                        "not an output this job can resume (write to a new output)") from None
                    break
                if not isinstance(obj, dict) or self.key not in obj:
                    raise DataError(f"{self.path}:{lineno}: expected an object with key '{self.key}'; not an "
                                    "output this job can resume (write to a new output)")
                self.done[str(obj[self.key])] = obj
            pos = nl + 1
            good_end = pos
        if good_end < len(data):
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)

    def append(self, row: dict[str, Any]) -> None:
        line = _dumps(row) + "\n"
        faults.point("jsonl.torn", torn=(self._fh, line))
        try:
            self._fh.write(line)
            self._fh.flush()
        except OSError as exc:
            self._undo(self._good_end)
            raise DataError(f"{self.path}: cannot write ({exc.strerror or exc}); the {len(self.done)} whole "
                            "row(s) before it are kept: rerun to resume") from None
        self._good_end += len(line.encode("utf-8"))
        key = str(row[self.key])
        self.done[key] = row
        self._unsynced.append(key)
        if time.monotonic() - self._last_sync >= self.sync_interval:
            self.sync()

    def sync(self) -> None:
        """fsync the rows appended since the last sync; on failure (a full disk) cut the file back to the last
        synced row and raise a one-line :class:`DataError`."""
        if not self._unsynced:
            return
        try:
            os.fsync(self._fh.fileno())
        except OSError as exc:
            for key in self._unsynced:
                self.done.pop(key, None)
            self._unsynced.clear()
            self._undo(self._synced_end)
            raise DataError(f"{self.path}: cannot write ({exc.strerror or exc}); the {len(self.done)} whole "
                            "row(s) before it are kept: rerun to resume") from None
        self._unsynced.clear()
        self._synced_end = self._good_end
        self._last_sync = time.monotonic()

    def _undo(self, end: int) -> None:
        """After a failed write: close the file and cut it back to a whole row."""
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            os.truncate(self.path, end)

    def close(self, check: bool = True) -> None:
        """Sync what is left and close; ``check=False`` (an error is already on its way) reports nothing."""
        if self._fh is None or self._fh.closed:
            return
        try:
            self.sync()
        except DataError:
            if check:
                raise
        with contextlib.suppress(OSError):
            self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(check=exc_type is None)
        if exc_type is not None and self._created and not self.done:
            self.path.unlink(missing_ok=True)  # a job that failed before its first row leaves no file


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove it is writable, or raise a one-line error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise DataError(f"{path}: output directory is not writable ({os_reason(exc)})") from None
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
