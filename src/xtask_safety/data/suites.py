"""Evaluation suites described in YAML (``recipes/eval/*.yaml``), turned into one record file.

A suite is a list of *parts*; every record id is prefixed with its part (``grid/n0042:summarize``)
so parts never collide, and ``meta.suite`` / ``meta.part`` say where a record came from::

    suite: demo-eval
    parts:
      - name: grid                  # the paper's 5 tasks x 3 domains on held-out corpus documents
        kind: grid
        corpus: [demo]              # corpus JSONL files (our format), or demo / demo-external
        split: heldout              # all | heldout | train (documents held out per domain, as `data`)
        heldout_per_domain: 30
        tasks: all
        phrasing: paper             # paper | heldout (phrasings kept out of training)
      - name: paper
        kind: paper_dir             # the paper's released data/evaluation folder (15 files)
        dir: ~/src/cross-task-defense       # a clone of the paper's repository, or its data/evaluation
      - name: more
        kind: paper_files           # single files in the paper's {"instructions": [...], "inputs": []} format
        files:
          - {path: eval/test_summarize.json, domain: malicious}
      - name: safety
        kind: instructions          # instruction-only sets: harmful (should be refused) / harmless
        files:
          - {path: fixtures/safety_instructions.jsonl}         # rows with instruction + label
          - {path: more_harmless.txt, label: harmless}         # one instruction per line
      - name: mine
        kind: records               # record files already in our schema
        files: [my_grid.jsonl]

An optional ``eval:`` mapping holds the generation settings ``xtask-safety eval`` uses for the
suite unless its flags say otherwise: ``max_new_tokens``, ``max_prompt_tokens`` and ``on_too_long``
(``error | skip | truncate``).

Paths are relative to the YAML file. Grids stay *paired*: every document appears under every task
(``meta.doc_id`` is shared), and a suite whose paper files break the pairing is refused unless the
part says ``paired: false``. Instruction rows get task ``instruction``; harmful ones domain
``malicious`` (they should be refused, and are redacted like malicious documents), harmless ones
domain ``harmless``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtask_safety.errors import ConfigError, DataError
from xtask_safety.records import MALICIOUS, Record, read_jsonl, read_records

KINDS = ("grid", "paper_dir", "paper_files", "instructions", "records")
INSTRUCTION_LABELS = {"harmful": MALICIOUS, "malicious": MALICIOUS, "harmless": "harmless", "benign": "harmless"}
_COMMON = {"name", "kind", "limit"}
_PART_KEYS = {
    "grid": _COMMON | {"corpus", "split", "heldout_per_domain", "tasks", "phrasing", "layout", "seed", "domains"},
    "paper_dir": _COMMON | {"dir", "pairing", "tasks", "domains"},
    "paper_files": _COMMON | {"files", "paired", "tasks"},
    "instructions": _COMMON | {"files"},
    "records": _COMMON | {"files", "paired"},
}
EVAL_SETTINGS = {"max_new_tokens": int, "max_prompt_tokens": int, "on_too_long": str}
_FILE_KEYS = {"paper_files": {"path", "domain"}, "instructions": {"path", "label", "field", "label_field"},
              "records": {"path"}}


@dataclass
class Suite:
    name: str
    path: Path
    records: list[Record]
    parts: dict[str, int] = field(default_factory=dict)  # part name -> record count
    settings: dict[str, Any] = field(default_factory=dict)  # the suite's ``eval:`` mapping
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # part name -> import manifest

    def summary(self) -> dict[str, Any]:
        cells: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in self.records:
            cells[f"{r.meta['part']}/{r.task}"][r.domain] += 1
        return {"suite": self.name, "records": len(self.records), "parts": self.parts,
                "cells": {k: dict(v) for k, v in sorted(cells.items())}}


def load_suite(path: str | Path, paper_dir: str | Path | None = None) -> Suite:
    """Read a suite YAML and build its records; every problem names the file and the part.

    ``paper_dir`` replaces the ``dir`` of every ``paper_dir`` part (the user's clone of the paper's
    repository, given on the command line)."""
    import yaml

    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: suite not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{path}{f':{mark.line + 1}' if mark else ''}: malformed YAML") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a suite must be a YAML mapping")
    unknown = sorted(set(cfg) - {"suite", "description", "parts", "eval"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; allowed: suite, description, parts, eval")
    settings = _eval_settings(cfg.get("eval") or {}, path)
    name = cfg.get("suite") or path.stem
    parts = cfg.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ConfigError(f"{path}: 'parts' must be a non-empty list")
    records: list[Record] = []
    counts: dict[str, int] = {}
    manifests: dict[str, dict[str, Any]] = {}
    for k, part in enumerate(parts):
        where = f"{path}: parts[{k}]"
        if not isinstance(part, dict):
            raise ConfigError(f"{where}: expected a mapping")
        kind, pname = part.get("kind"), part.get("name")
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(pname, str) or not pname.strip() or "/" in pname:
            raise ConfigError(f"{where}: 'name' must be a non-empty string without '/'")
        if pname in counts:
            raise ConfigError(f"{where}: part name {pname!r} used twice")
        bad = sorted(set(part) - _PART_KEYS[kind])
        if bad:
            raise ConfigError(f"{where} ({pname}): unknown key(s) {bad}; allowed: {sorted(_PART_KEYS[kind])}")
        where = f"{path}: part {pname!r}"
        if kind == "paper_dir" and paper_dir is not None:
            part = {**part, "dir": str(paper_dir), "dir_from_cli": True}
        recs = _BUILDERS[kind](part, path.parent, where)
        if isinstance(recs, tuple):  # records and an import manifest
            recs, manifests[pname] = recs
        limit = part.get("limit")
        if limit is not None:
            if not isinstance(limit, int) or limit < 1:
                raise ConfigError(f"{where}: limit must be a positive integer")
            recs = limit_documents(recs, limit)
        if not recs:
            raise DataError(f"{where}: no records")
        for r in recs:
            r.id = f"{pname}/{r.id}"
            r.meta = {**r.meta, "suite": name, "part": pname}
        counts[pname] = len(recs)
        records.extend(recs)
    return Suite(name=name, path=path, records=records, parts=counts, settings=settings, manifests=manifests)


def _eval_settings(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: 'eval' must be a mapping of {sorted(EVAL_SETTINGS)}")
    for key, value in obj.items():
        kind = EVAL_SETTINGS.get(key)
        if kind is None:
            raise ConfigError(f"{path}: eval: unknown key {key!r}; allowed: {sorted(EVAL_SETTINGS)}")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{path}: eval: {key} must be {'an integer' if kind is int else 'a string'}, "
                              f"got {value!r}")
    return dict(obj)


def limit_documents(recs: list[Record], limit: int) -> list[Record]:
    """Keep the first ``limit`` documents per domain, with all their tasks (pairing survives)."""
    kept: dict[str, list[str]] = defaultdict(list)
    out = []
    for r in recs:
        doc = r.meta.get("doc_id", r.id)
        docs = kept[r.domain]
        if doc not in docs and len(docs) < limit:
            docs.append(doc)
        if doc in docs:
            out.append(r)
    return out


# ------------------------------------------------------------------------------------------- parts


def _files(part: dict[str, Any], base: Path, where: str, kind: str) -> list[dict[str, Any]]:
    files = part.get("files")
    if not isinstance(files, list) or not files:
        raise ConfigError(f"{where}: 'files' must be a non-empty list")
    out = []
    for j, f in enumerate(files):
        spec = {"path": f} if isinstance(f, str) else f
        if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
            raise ConfigError(f"{where}: files[{j}] needs a 'path'")
        bad = sorted(set(spec) - _FILE_KEYS[kind])
        if bad:
            raise ConfigError(f"{where}: files[{j}]: unknown key(s) {bad}; allowed: {sorted(_FILE_KEYS[kind])}")
        p = Path(spec["path"]).expanduser()
        spec = {**spec, "path": p if p.is_absolute() else base / p}
        if not spec["path"].is_file():
            raise DataError(f"{where}: files[{j}]: {spec['path']} not found")
        out.append(spec)
    return out


def _grid(part: dict[str, Any], base: Path, where: str) -> list[Record]:
    from xtask_safety.data.builder import build_eval_grid
    from xtask_safety.data.corpus import load_corpus_file, load_demo_corpus, split_corpus
    from xtask_safety.tasks import parse_task_list

    corpus = part.get("corpus", ["demo"])
    corpus = [corpus] if isinstance(corpus, str) else corpus
    if not isinstance(corpus, list) or not corpus:
        raise ConfigError(f"{where}: 'corpus' must be a file or a list of files")
    docs = []
    for c in corpus:
        if c in ("demo", "demo-external"):
            docs += load_demo_corpus("main" if c == "demo" else "external")
        else:
            p = Path(str(c)).expanduser()
            docs += load_corpus_file(p if p.is_absolute() else base / p)
    domains = part.get("domains")
    if domains is not None:
        docs = [d for d in docs if d.domain in set(domains)]
    split, seed = part.get("split", "all"), int(part.get("seed", 0))
    if split not in ("all", "heldout", "train"):
        raise ConfigError(f"{where}: split must be all, heldout or train, got {split!r}")
    if split != "all":
        n = part.get("heldout_per_domain", 30)
        train, held = split_corpus(docs, int(n), seed)
        docs = held if split == "heldout" else train
    phrasing = part.get("phrasing", "paper")
    if phrasing not in ("paper", "heldout"):
        raise ConfigError(f"{where}: phrasing must be paper or heldout, got {phrasing!r}")
    layout = part.get("layout", "after")
    if layout not in ("after", "before"):
        raise ConfigError(f"{where}: layout must be after or before, got {layout!r}")
    tasks = parse_task_list(part.get("tasks", "all"), f"{where}: tasks")
    return build_eval_grid(docs, tasks, phrasing=phrasing, layout=layout, seed=seed)


def _paper_files(part: dict[str, Any], base: Path, where: str) -> list[Record]:
    try:
        from xtask_safety.data.formats import read_paper_eval_file
    except ImportError:
        raise ConfigError(f"{where}: reading the paper's files needs xtask_safety.data.formats") from None
    from xtask_safety.tasks import parse_task_list

    recs: list[Record] = []
    for spec in _files(part, base, where, "paper_files"):
        recs += read_paper_eval_file(spec["path"], spec.get("domain"))
    if "tasks" in part:
        keep = set(parse_task_list(part["tasks"], f"{where}: tasks"))
        recs = [r for r in recs if r.task in keep]
    _unique(recs, where)
    if part.get("paired", True):
        check_paired(recs, where)
    return recs


def _records(part: dict[str, Any], base: Path, where: str) -> list[Record]:
    recs: list[Record] = []
    for spec in _files(part, base, where, "records"):
        recs += read_records(spec["path"])
    _unique(recs, where)
    if part.get("paired", False):
        check_paired(recs, where)
    return recs


def _instructions(part: dict[str, Any], base: Path, where: str) -> list[Record]:
    recs: list[Record] = []
    for spec in _files(part, base, where, "instructions"):
        recs += read_instruction_file(spec["path"], spec.get("label"), spec.get("field", "instruction"),
                                      spec.get("label_field", "label"))
    _unique(recs, where)
    return recs


def _paper_dir(part: dict[str, Any], base: Path, where: str) -> tuple[list[Record], dict[str, Any]]:
    from xtask_safety.data.paper_release import import_eval_dir
    from xtask_safety.tasks import parse_task_list

    folder = part.get("dir")
    if not isinstance(folder, str) or not folder.strip():
        raise ConfigError(f"{where}: 'dir' must be the path of a clone of the paper's repository (or pass --paper_dir)")
    p = Path(folder).expanduser()
    if not p.is_absolute() and not part.get("dir_from_cli"):
        p = base / p
    imported = import_eval_dir(p, part.get("pairing", "strict"))
    recs = imported.records
    if "tasks" in part:
        keep = set(parse_task_list(part["tasks"], f"{where}: tasks"))
        recs = [r for r in recs if r.task in keep]
    if "domains" in part:
        domains = part["domains"]
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise ConfigError(f"{where}: 'domains' must be a list of domain names")
        recs = [r for r in recs if r.domain in set(domains)]
    return recs, imported.manifest


_BUILDERS = {"grid": _grid, "paper_dir": _paper_dir, "paper_files": _paper_files, "instructions": _instructions,
             "records": _records}


def _unique(recs: list[Record], where: str) -> None:
    seen: set[str] = set()
    for r in recs:
        if r.id in seen:
            raise DataError(f"{where}: duplicate record id {r.id!r} (the same file listed twice?)")
        seen.add(r.id)


def check_paired(recs: list[Record], where: str) -> None:
    """Every document of a domain must appear under every task of that domain (paired comparisons)."""
    tasks_by_domain: dict[str, set[str]] = defaultdict(set)
    docs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in recs:
        doc = r.meta.get("doc_id")
        if not doc:
            raise DataError(f"{where}: record {r.id!r} has no meta.doc_id, so pairing cannot be checked "
                            "(set paired: false)")
        tasks_by_domain[r.domain].add(r.task)
        docs[(r.domain, doc)].add(r.task)
    for (domain, doc), tasks in sorted(docs.items()):
        missing = sorted(tasks_by_domain[domain] - tasks)
        if missing:
            n_bad = sum(1 for (d, _), t in docs.items() if d == domain and t != tasks_by_domain[domain])
            raise DataError(f"{where}: not paired: {n_bad} {domain!r} document(s) lack some tasks (e.g. {doc} "
                            f"has no {', '.join(missing)}); fix the files or set paired: false")


def read_instruction_file(path: Path, label: str | None = None, text_field: str = "instruction",
                          label_field: str = "label") -> list[Record]:
    """Instruction-only rows from .jsonl/.json (objects), .csv (columns) or .txt (one per line)."""
    if label is not None and label not in INSTRUCTION_LABELS:
        raise ConfigError(f"{path}: label must be one of {sorted(INSTRUCTION_LABELS)}, got {label!r}")
    rows: list[tuple[str, dict[str, Any]]] = []
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = [(f"{path}:{n}", obj) for n, obj in read_jsonl(path)]
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of objects")
        rows = [(f"{path}[{i}]", obj) for i, obj in enumerate(data)]
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            rows = [(f"{path}:{i}", obj) for i, obj in enumerate(csv.DictReader(fh), start=2)]
    elif suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [(f"{path}:{i}", {text_field: ln.strip()}) for i, ln in enumerate(lines, start=1)
                if ln.strip() and not ln.lstrip().startswith("#")]
    else:
        raise DataError(f"{path}: instruction files must be .jsonl, .json, .csv or .txt")
    out = []
    for k, (where, obj) in enumerate(rows):
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected an object")
        text = obj.get(text_field)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: missing or empty {text_field!r}")
        lab = obj.get(label_field, label) if label is None else label
        if lab not in INSTRUCTION_LABELS:
            raise DataError(f"{where}: {label_field!r} must be one of {sorted(INSTRUCTION_LABELS)}, got {lab!r}")
        rid = str(obj.get("id") or f"{path.stem}-{k:04d}")
        extra = {key: v for key, v in obj.items() if key not in (text_field, label_field, "id")}
        out.append(Record(id=rid, task="instruction", domain=INSTRUCTION_LABELS[lab], document="",
                          instruction=text.strip(), source=path.name, meta={"label": lab, **extra}))
    if not out:
        raise DataError(f"{path}: no instructions")
    return out


# ---------------------------------------------------------------------------------------------- CLI


@dataclass
class SuiteArguments:
    suite: str = field(default="", metadata={"help": "Suite YAML (recipes/eval/*.yaml)."})
    output: str = field(default="", metadata={"help": "Record JSONL with every part of the suite."})
    parts: list[str] = field(default_factory=list, metadata={"help": "Only these parts (default: all)."})
    paper_dir: str | None = field(default=None, metadata={
        "help": "A clone of the paper's repository (or its data/evaluation folder) for the suite's paper_dir parts."})


def main(argv: list[str] | None = None) -> int:
    """``xtask-safety data suite --suite recipes/eval/demo.yaml --output runs/eval/demo.jsonl``."""
    from xtask_safety.config import parse_recipe
    from xtask_safety.records import write_jsonl

    (args,) = parse_recipe((SuiteArguments,), list(argv or []), prog="xtask-safety data suite", positional="suite")
    if not args.suite or not args.output:
        raise ConfigError("data suite: --suite and --output are required")
    suite = load_suite(args.suite, args.paper_dir)
    recs = suite.records
    if args.parts:
        unknown = sorted(set(args.parts) - set(suite.parts))
        if unknown:
            raise ConfigError(f"--parts: unknown part(s) {unknown}; the suite has {sorted(suite.parts)}")
        recs = [r for r in recs if r.meta["part"] in set(args.parts)]
    write_jsonl(args.output, recs)
    print(json.dumps({"output": args.output, **suite.summary(), "written": len(recs)}))
    return 0
