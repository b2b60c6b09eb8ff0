"""Document and instruction sources: JSON, JSONL, CSV/TSV, Parquet, a directory of text files, HF datasets.

A source is described by a small mapping (a recipe's ``sources:`` entry), e.g.::

    {path: news.csv, domain: news, text_field: article, refs: {summary: highlights}}
    {path: beavertails.parquet, domain: malicious, text_field: response, where: {is_safe: false}}
    {hf: ./alpaca_saved, kind: instructions}                 # datasets.load_from_disk / load_dataset
    {path: eval_malicious.json, format: paper_eval, role: eval}
    {demo: main}                                             # the bundled demo corpus
    {demo: balance, holdout: false}                          # training only: never held out

Every document gets a ``domain`` (given, or read from ``domain_field``) and a ``source`` tag (default:
the file or dataset name). Errors name the file, the row and the column.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from xtask_safety.data.corpus import REF_KEYS, CorpusDoc, demo_dir, demo_files, load_demo_corpus
from xtask_safety.errors import ConfigError, DataError
from xtask_safety.records import Record, read_jsonl

FORMATS = ("json", "jsonl", "csv", "tsv", "parquet", "txt", "hf", "paper_eval", "saferpaca", "demo")
KINDS = ("documents", "instructions")
ROLES = ("train", "eval")
TEXT_FIELDS = ("document", "text", "article", "content", "body")
_EXT = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


@dataclass
class SourceSpec:
    """One entry of a recipe's ``sources`` list (see the module docstring)."""

    path: str | None = None
    hf: str | None = None  # HF dataset name, or a local dataset directory
    demo: str | None = None  # main | external | balance | instructions
    format: str | None = None  # default: from the extension / kind
    kind: str = "documents"  # documents | instructions (Alpaca-style instruction, input, output)
    role: str = "train"  # train | eval (evaluation documents: held out of every training set)
    holdout: bool = True  # false: never drawn into the held-out split (a training-only supplement)
    domain: str | None = None
    domain_field: str | None = None
    source: str | None = None  # tag; default: file or dataset name
    text_field: str | list[str] | None = None  # a list is joined with blank lines
    id_field: str | None = None
    id_prefix: str | None = None
    topic_field: str | None = None
    genre_field: str | None = None
    refs: dict[str, str] | None = None  # reference name -> column (summary, sentiment, zh_opening)
    instruction_field: str = "instruction"
    input_field: str | None = "input"
    output_field: str = "output"
    where: dict[str, Any] | None = None  # keep rows whose columns equal these values
    limit: int | None = None
    split: str = "train"  # hf
    subset: str | None = None  # hf configuration name
    pattern: str = "*.txt"  # txt directories
    skip_empty: bool = False  # skip (and count) rows with an empty text instead of failing

    @classmethod
    def from_dict(cls, obj: Any, where: str) -> SourceSpec:
        if isinstance(obj, str):
            obj = {"path": obj}
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}: expected a mapping (path:, hf: or demo:), got {type(obj).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        spec = cls(**obj)
        given = [k for k in ("path", "hf", "demo") if getattr(spec, k)]
        if len(given) != 1:
            raise ConfigError(f"{where}: give exactly one of path, hf or demo")
        if spec.kind not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {KINDS}, got {spec.kind!r}")
        if spec.role not in ROLES:
            raise ConfigError(f"{where}: role must be one of {ROLES}, got {spec.role!r}")
        if not isinstance(spec.holdout, bool):
            raise ConfigError(f"{where}: holdout must be true or false, got {spec.holdout!r}")
        if spec.format is not None and spec.format not in FORMATS:
            raise ConfigError(f"{where}: format must be one of {FORMATS}, got {spec.format!r}")
        if spec.limit is not None and (not isinstance(spec.limit, int) or spec.limit < 1):
            raise ConfigError(f"{where}: limit must be a positive integer")
        if spec.refs is not None and not isinstance(spec.refs, dict):
            raise ConfigError(f"{where}: refs must be a mapping of reference name to column")
        if spec.where is not None and not isinstance(spec.where, dict):
            raise ConfigError(f"{where}: where must be a mapping of column to value")
        return spec

    def resolved_format(self) -> str:
        if self.format:
            return self.format
        if self.demo:
            return "demo"
        if self.hf:
            return "hf"
        p = Path(self.path or "")
        if p.is_dir():
            return "txt"
        fmt = _EXT.get(p.suffix.lower())
        if fmt is None:
            raise ConfigError(f"{self.path}: cannot tell the format from the extension; set format: "
                              f"one of {FORMATS}")
        return fmt

    def tag(self) -> str:
        if self.source:
            return self.source
        if self.demo:
            return f"demo/{self.demo}"
        return Path(self.path).name if self.path else str(self.hf)


@dataclass
class LoadedSource:
    spec: SourceSpec
    name: str
    format: str
    sha256: str
    docs: list[CorpusDoc] = field(default_factory=list)  # documents (train or eval role)
    records: list[Record] = field(default_factory=list)  # instruction rows, or imported evaluation records
    rows_read: int = 0
    rows_skipped: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.name, "kind": self.spec.kind, "role": self.spec.role, "holdout": self.spec.holdout,
            "format": self.format,
            "location": self.spec.path or self.spec.hf or f"demo:{self.spec.demo}",
            "domain": self.spec.domain or (f"column {self.spec.domain_field}" if self.spec.domain_field else None),
            "sha256": self.sha256, "rows_read": self.rows_read, "rows_skipped": self.rows_skipped,
            "documents": len(self.docs), "records": len(self.records),
        }


# ------------------------------------------------------------------------------------- raw rows


def file_sha256(path: Path, pattern: str = "*") -> str:
    """Content hash of a file, or of every matching file under a directory (names included)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob(pattern) if p.is_file()):
            h.update(str(f.relative_to(path)).encode() + b"\0")
            h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    return h.hexdigest()


def read_text_utf8(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte {exc.start})") from None


def load_json_file(path: Path) -> Any:
    text = read_text_utf8(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None


def _rows_json(path: Path) -> Iterator[tuple[str, Any]]:
    obj = load_json_file(path)
    if isinstance(obj, dict):
        lists = [k for k, v in obj.items() if isinstance(v, list)]
        if "instructions" in obj and "inputs" in obj:
            raise DataError(f"{path}: this is a paper evaluation file; set format: paper_eval")
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON list of objects (or an object holding one list)")
        obj = obj[lists[0]]
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(obj).__name__}")
    for i, row in enumerate(obj):
        yield f"{path}[{i}]", row


def _rows_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    for lineno, row in read_jsonl(path):
        yield f"{path}:{lineno}", row


def _rows_csv(path: Path, delimiter: str) -> Iterator[tuple[str, Any]]:
    try:
        fh = path.open(encoding="utf-8", newline="")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    with fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        try:
            if not reader.fieldnames:
                raise DataError(f"{path}: empty file (no header row)")
            for row in reader:
                if None in row:
                    raise DataError(f"{path}:{reader.line_num}: more cells than header columns")
                yield f"{path}:{reader.line_num}", {k: (v if v != "" else None) for k, v in row.items()}
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{reader.line_num + 1}: not valid UTF-8 (byte {exc.start} of a read block)") from None
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None


def _rows_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path} row {i + 1}", row


def _rows_txt(path: Path, pattern: str) -> Iterator[tuple[str, Any]]:
    if not path.is_dir():
        raise DataError(f"{path}: directory not found")
    files = sorted(p for p in path.rglob(pattern) if p.is_file())
    if not files:
        raise DataError(f"{path}: no files matching {pattern!r}")
    for f in files:
        rel = f.relative_to(path).with_suffix("").as_posix()
        yield str(f), {"id": rel, "text": read_text_utf8(f)}


def _rows_hf(spec: SourceSpec) -> Iterator[tuple[str, Any]]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a core dependency
        raise ConfigError("hf sources need the 'datasets' package") from None
    name = str(spec.hf)
    local = Path(name)
    try:
        if local.is_dir() and ((local / "state.json").is_file() or (local / "dataset_dict.json").is_file()):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if spec.split not in ds:
                    raise DataError(f"{name}: no split {spec.split!r} (splits: {', '.join(ds)})")
                ds = ds[spec.split]
        else:
            ds = datasets.load_dataset(name, spec.subset, split=spec.split)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{name}: cannot load dataset ({first}); without a hub, pass a local path") from None
    for i, row in enumerate(ds):
        yield f"{name} row {i + 1}", row


def iter_rows(spec: SourceSpec, fmt: str) -> Iterator[tuple[str, Any]]:
    path = Path(spec.path) if spec.path else None
    if fmt in ("json", "saferpaca"):
        return _rows_json(path)
    if fmt == "jsonl":
        return _rows_jsonl(path)
    if fmt in ("csv", "tsv"):
        return _rows_csv(path, "," if fmt == "csv" else "\t")
    if fmt == "parquet":
        return _rows_parquet(path)
    if fmt == "txt":
        return _rows_txt(path, spec.pattern)
    if fmt == "hf":
        return _rows_hf(spec)
    raise ConfigError(f"format {fmt!r}: not a row format")


# --------------------------------------------------------------------------------- row -> object


def _cell(row: dict[str, Any], col: str, where: str, required: bool = True) -> Any:
    if col not in row:
        if required:
            cols = ", ".join(map(str, row)) or "none"
            raise DataError(f"{where}: column {col!r} not found (columns: {cols})")
        return None
    return row[col]


def _text(row: dict[str, Any], col: str, where: str) -> str | None:
    value = _cell(row, col, where)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: column {col!r} must be text, got {type(value).__name__}")
    return value


def _text_field(spec: SourceSpec, row: dict[str, Any], where: str) -> list[str]:
    if spec.text_field:
        return [spec.text_field] if isinstance(spec.text_field, str) else list(spec.text_field)
    for col in TEXT_FIELDS:
        if col in row:
            return [col]
    raise DataError(f"{where}: no text column (looked for {', '.join(TEXT_FIELDS)}; columns: "
                    f"{', '.join(map(str, row))}); set text_field")


def _matches(row: dict[str, Any], cond: dict[str, Any], where: str) -> bool:
    """Column equality; text cells (CSV) also match the value's text (``false`` matches ``False``)."""

    def eq(cell: Any, value: Any) -> bool:
        if cell == value:
            return True
        return isinstance(cell, str) and not isinstance(value, str) and cell.strip().lower() == str(value).lower()

    return all(eq(_cell(row, k, where), v) for k, v in cond.items())


def _document(spec: SourceSpec, name: str, row: Any, where: str, index: int) -> CorpusDoc | None:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with columns, got {type(row).__name__}")
    parts = [_text(row, col, where) for col in _text_field(spec, row, where)]
    text = "\n\n".join(p.strip() for p in parts if p and p.strip())
    if not text:
        if spec.skip_empty:
            return None
        raise DataError(f"{where}: column {'+'.join(_text_field(spec, row, where))!r} is empty")
    if spec.domain:
        domain = spec.domain
    elif spec.domain_field:
        domain = _text(row, spec.domain_field, where)
    elif "domain" in row:
        domain = _text(row, "domain", where)
    else:
        raise DataError(f"{where}: no domain: set domain (or domain_field) on the source")
    if not domain or not domain.strip():
        raise DataError(f"{where}: column {spec.domain_field or 'domain'!r} is empty")
    id_col = spec.id_field or ("id" if "id" in row else None)
    raw_id = str(_cell(row, id_col, where)) if id_col else f"{name}:{index + 1}"
    if not raw_id.strip() or raw_id == "None":
        raise DataError(f"{where}: column {id_col!r} is empty")
    doc_id = f"{spec.id_prefix}{raw_id}" if spec.id_prefix else raw_id
    ref_cols = spec.refs if spec.refs is not None else {k: k for k in REF_KEYS if row.get(k)}
    refs = {}
    for key, col in ref_cols.items():
        value = _text(row, col, where)
        if value:
            refs[key] = value.strip()
    topic = _text(row, spec.topic_field, where) if spec.topic_field else row.get("topic")
    genre = _text(row, spec.genre_field, where) if spec.genre_field else row.get("genre")
    return CorpusDoc(id=doc_id, domain=domain.strip(), document=text, topic=str(topic or ""),
                     genre=str(genre or ""), source=name, refs=refs)


def _instruction(spec: SourceSpec, name: str, row: Any, where: str, index: int) -> Record | None:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with columns, got {type(row).__name__}")
    instruction = _text(row, spec.instruction_field, where)
    inp = (_text(row, spec.input_field, where) if spec.input_field and spec.input_field in row else None) or ""
    output = _text(row, spec.output_field, where)
    if not instruction or not instruction.strip() or not output or not output.strip():
        if spec.skip_empty:
            return None
        col = spec.instruction_field if not (instruction or "").strip() else spec.output_field
        raise DataError(f"{where}: column {col!r} is empty")
    id_col = spec.id_field
    raw_id = str(_cell(row, id_col, where)) if id_col else str(index + 1)
    prefix = spec.id_prefix if spec.id_prefix is not None else f"{name}:"
    return Record(
        id=f"instruction:{prefix}{raw_id}", task="instruction", domain=spec.domain or "instruction",
        document=inp.strip(), instruction=instruction.strip(), layout="before" if inp.strip() else "after",
        response=output.strip(), source=name, meta={"row": index + 1},
    )


def load_source(spec: SourceSpec) -> LoadedSource:
    """Read one source into documents (``kind: documents``) or records (instructions, paper files)."""
    from xtask_safety.data import formats

    fmt = spec.resolved_format()
    name = spec.tag()
    if fmt == "demo":
        if spec.demo == "instructions":
            path = demo_dir() / "instructions.jsonl"
            inner = SourceSpec(path=str(path), kind="instructions", source=name, domain=spec.domain,
                               limit=spec.limit)
            loaded = load_source(inner)
            loaded.spec, loaded.format = spec, "demo"
            return loaded
        docs = load_demo_corpus(spec.demo)  # main | external | balance
        files = demo_files(spec.demo)
        h = hashlib.sha256(b"".join(bytes.fromhex(file_sha256(f)) for f in files)).hexdigest()
        docs = docs[: spec.limit] if spec.limit else docs
        return LoadedSource(spec, name, fmt, h, docs=docs, rows_read=len(docs))
    path = Path(spec.path) if spec.path else None
    sha = file_sha256(path, spec.pattern) if path else ""
    if fmt == "paper_eval":
        recs = formats.read_paper_eval_file(path, spec.domain)
        recs = recs[: spec.limit] if spec.limit else recs
        return LoadedSource(spec, name, fmt, sha, records=recs, rows_read=len(recs))
    if fmt == "saferpaca":
        recs = formats.read_saferpaca(path, instruction_domain=spec.domain or "instruction")
        kept = [r for r in recs if r.task == "instruction"]
        kept = kept[: spec.limit] if spec.limit else kept
        return LoadedSource(spec, name, fmt, sha, records=kept, rows_read=len(recs),
                            rows_skipped=len(recs) - len(kept))
    out = LoadedSource(spec, name, fmt, sha)
    if fmt == "hf":
        out.sha256 = ""  # filled below from the rows actually read
        rows_hash = hashlib.sha256()
    seen: set[str] = set()
    for index, (where, row) in enumerate(iter_rows(spec, fmt)):
        if fmt == "hf":
            rows_hash.update(json.dumps(row, sort_keys=True, default=str, ensure_ascii=False).encode())
        if spec.where and not _matches(row if isinstance(row, dict) else {}, spec.where, where):
            continue
        out.rows_read += 1
        item = (_document if spec.kind == "documents" else _instruction)(spec, name, row, where, index)
        if item is None:
            out.rows_skipped += 1
            continue
        if item.id in seen:
            raise DataError(f"{where}: duplicate id {item.id!r}")
        seen.add(item.id)
        (out.docs if spec.kind == "documents" else out.records).append(item)  # type: ignore[arg-type]
        if spec.limit and len(seen) >= spec.limit:
            break
    if fmt == "hf":
        out.sha256 = rows_hash.hexdigest()
    if not seen:
        raise DataError(f"{spec.path or spec.hf}: no {spec.kind} (after filters)")
    return out


def load_sources(specs: list[SourceSpec]) -> list[LoadedSource]:
    """Load every source; document ids must be unique across sources (set ``id_prefix`` if not)."""
    loaded = [load_source(s) for s in specs]
    owner: dict[str, str] = {}
    for src in loaded:
        for item in [*src.docs, *src.records]:
            other = owner.get(item.id)
            if other is not None:
                raise DataError(f"sources {other} and {src.name}: both hold id {item.id!r}; set id_prefix on one")
            owner[item.id] = src.name
    return loaded


def parse_sources(value: Any, key: str = "sources") -> list[SourceSpec]:
    """``sources`` from a recipe: a list of mappings (a JSON string from the command line works too)."""
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = [value]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of source mappings")
    return [SourceSpec.from_dict(v, f"{key}[{i}]") for i, v in enumerate(value)]
