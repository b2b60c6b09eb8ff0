"""The paper's released data folder: every evaluation file at once, and the saferpaca training files.

Evaluation files live in the repository's ``data/evaluation/`` folder, named by task and domain:
``test_<task>.json`` (malicious), ``test_<task>_cnn.json`` (CNN/DailyMail news) and
``test_<task>_useful.json`` (benign, safety-related). The five files of a domain hold the same
documents in the same order, so row ``i`` of every task file of a domain is document ``i`` of that
domain: :func:`import_eval_dir` gives it one ``meta.doc_id`` (``news-007``) shared by its task rows,
after checking that the documents really are the same (pairing), and returns a manifest with the
counts, the attribution of every row and an exact-recovery check (each record written back in the
paper's layout gives the file's string). :func:`export_eval_dir` writes records back to that layout.

Training files ``saferpaca_Instructions_<S>_<N>_<task>.json`` hold ordinary instruction rows (Alpaca),
``S`` short safety rows (a harmful request and its refusal) and ``N`` defense rows (a document and a
task instruction, with a refusal); :func:`import_saferpaca_release` attributes every row to one of
those roles and checks the counts against the file name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtask_safety.data.formats import (
    InstructionMatcher,
    load_eval_texts,
    paper_text,
    read_saferpaca,
    separator_meta,
)
from xtask_safety.errors import ConfigError, DataError
from xtask_safety.records import Record, atomic_write_files
from xtask_safety.tasks import TASK_NAMES

EVAL_NAME = re.compile(r"^test_(?P<task>[a-z]+?)(?:_(?P<suffix>cnn|useful))?\.json$")
DOMAIN_OF_SUFFIX = {None: "malicious", "cnn": "news", "useful": "useful"}
SUFFIX_OF_DOMAIN = {v: k for k, v in DOMAIN_OF_SUFFIX.items()}
DOMAINS = ("malicious", "news", "useful")
TRAIN_NAME = re.compile(r"^saferpaca_Instructions_(?P<safety>\d+)_(?P<defense>\d+)_(?P<task>[a-z]+)\.json$")
PAIRING = ("strict", "report")
# How the short safety rows' answers open (Alpaca answers rarely do): a refusal in the first sentence.
_REFUSAL_OPENING = re.compile(
    r"^\W*(?:I'?m sorry|I am sorry|Sorry|I apologi[sz]e|I cannot|I can ?not|I can't|I won't|I will not|"
    r"I'?m (?:not able|unable)|I am (?:not able|unable)|As an AI|It is not (?:appropriate|ethical|safe)|"
    r"It'?s not (?:appropriate|ethical|safe)|No,? I)", re.IGNORECASE)


def eval_file_name(task: str, domain: str) -> str:
    """``test_<task>[_cnn|_useful].json`` for a task and a domain (malicious, news, useful)."""
    if domain not in SUFFIX_OF_DOMAIN:
        raise DataError(f"domain {domain!r}: the paper's file names know only {', '.join(DOMAINS)}")
    suffix = SUFFIX_OF_DOMAIN[domain]
    return f"test_{task}{'_' + suffix if suffix else ''}.json"


def find_eval_dir(path: str | Path) -> Path:
    """The evaluation folder: ``DIR/data/evaluation`` of a clone, or ``DIR`` itself."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory (expected a clone of the paper's repository or its "
                          "data/evaluation folder)")
    for cand in (root / "data" / "evaluation", root / "evaluation", root):
        if cand.is_dir() and any(EVAL_NAME.match(p.name) for p in cand.iterdir()):
            return cand
    raise DataError(f"{root}: no evaluation files (test_<task>.json, test_<task>_cnn.json, test_<task>_useful.json) "
                    "here or in data/evaluation/")


@dataclass
class ReleaseImport:
    records: list[Record]
    manifest: dict[str, Any] = field(default_factory=dict)


def _first_difference(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


@dataclass
class _EvalTally:
    """What :func:`import_eval_dir` counts over every file and row for its manifest."""

    file_info: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    whitespace_only: list[str] = field(default_factory=list)
    exact: int = 0
    phrasings: Counter = field(default_factory=Counter)
    variants: defaultdict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    seps: defaultdict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    leading_space: Counter = field(default_factory=Counter)


def import_eval_dir(
    path: str | Path, pairing: str = "strict", extra_instructions: dict[str, str] | None = None
) -> ReleaseImport:
    """Every evaluation file of the folder as records, in domain, document, task order, and a manifest.

    Raises :class:`DataError` naming the file and row for a row without a recognised instruction, a row
    whose instruction belongs to another task than its file name, task files of one domain with
    different row counts, and (``pairing="strict"``) a document that differs from the same row of the
    domain's other task files beyond whitespace; ``pairing="report"`` lists those in the manifest.
    """
    if pairing not in PAIRING:
        raise ConfigError(f"pairing: expected one of {PAIRING}, got {pairing!r}")
    folder = find_eval_dir(path)
    files, ignored = _eval_files_by_domain(folder)
    matcher = InstructionMatcher(extra_instructions)
    records: list[Record] = []
    tally = _EvalTally()
    for domain in [d for d in DOMAINS if d in files]:
        tasks, rows = _import_domain(folder, domain, files[domain], matcher, tally)
        _check_pairing(folder, domain, files[domain], tasks, rows, pairing, tally)
        for i in range(len(rows[tasks[0]])):
            records.extend(rows[t][i] for t in tasks)
    if not records:
        raise DataError(f"{folder}: no evaluation files named test_<task>[_cnn|_useful].json")
    return ReleaseImport(records, _eval_manifest(folder, files, ignored, records, tally, pairing))


def _eval_files_by_domain(folder: Path) -> tuple[defaultdict[str, dict[str, Path]], list[str]]:
    """The folder's evaluation files (domain -> task -> file), and its other ``.json`` files."""
    files: defaultdict[str, dict[str, Path]] = defaultdict(dict)  # domain -> task -> file
    ignored = []
    for p in sorted(folder.iterdir()):
        m = EVAL_NAME.match(p.name)
        if not m or m["task"] not in TASK_NAMES:
            if p.suffix == ".json":
                ignored.append(p.name)
            continue
        files[DOMAIN_OF_SUFFIX[m["suffix"]]][m["task"]] = p
    return files, ignored


def _import_domain(
    folder: Path, domain: str, files: dict[str, Path], matcher: InstructionMatcher, tally: _EvalTally
) -> tuple[list[str], dict[str, list[Record]]]:
    """The domain's tasks (in ``TASK_NAMES`` order) and the records of each task file, row by row."""
    tasks = [t for t in TASK_NAMES if t in files]
    texts = {t: load_eval_texts(files[t]) for t in tasks}
    counts = {files[t].name: len(texts[t]) for t in tasks}
    if len(set(counts.values())) > 1:
        raise DataError(f"{folder}: the {domain} task files hold different numbers of rows ({counts}); "
                        "row i of every task file must be the same document")
    rows: dict[str, list[Record]] = {}
    for task in tasks:
        f = files[task]
        rows[task] = [_eval_record(f, i, text, domain, task, matcher, tally)
                      for i, text in enumerate(texts[task])]
        tally.file_info.append({"file": f.name, "domain": domain, "task": task, "rows": len(texts[task]),
                                "sha256": hashlib.sha256(f.read_bytes()).hexdigest()})
    return tasks, rows


def _eval_record(
    f: Path, i: int, text: str, domain: str, task: str, matcher: InstructionMatcher, tally: _EvalTally
) -> Record:
    """Row ``i`` of task file ``f`` as a record of document ``<domain>-<i>``, counted in ``tally``."""
    s = matcher.split(text)
    if s is None:
        tail = " ".join(text.split())[-60:]
        raise DataError(f"{f}: instructions[{i}]: no recognised task instruction at the end "
                        f"(ends with {tail!r})")
    if s.task != task:
        raise DataError(f"{f}: instructions[{i}]: the instruction {s.instruction.strip()!r} is a "
                        f"{s.task} instruction, but the file name says {task}")
    doc_id = f"{domain}-{i:03d}"
    meta = {"doc_id": doc_id, "phrasing": s.phrasing, "paper_file": f.name, "paper_row": i,
            **separator_meta(s)}
    rec = Record(id=f"{doc_id}:{task}", task=task, domain=domain, document=s.document,
                 instruction=s.instruction, layout=s.layout, source=f.name, meta=meta)
    tally.exact += paper_text(rec) == text
    tally.phrasings[s.phrasing] += 1
    tally.variants[task][s.instruction] += 1
    tally.seps[task][s.separator] += 1
    return rec


def _check_pairing(
    folder: Path,
    domain: str,
    files: dict[str, Path],
    tasks: list[str],
    rows: dict[str, list[Record]],
    pairing: str,
    tally: _EvalTally,
) -> None:
    """Compare row ``i`` of every task file with row ``i`` of the domain's first: the same document?"""
    ref = tasks[0]
    for i, base in enumerate(rows[ref]):
        tally.leading_space[domain] += base.document[:1].isspace()
        for task in tasks[1:]:
            other = rows[task][i]
            if other.document == base.document:
                continue
            where = (f"{files[task].name}: instructions[{i}]: document differs from "
                     f"{files[ref].name} instructions[{i}]")
            if other.document.split() == base.document.split():
                tally.whitespace_only.append(where)
                continue
            k = _first_difference(other.document, base.document)
            if pairing == "strict":
                raise DataError(f"{folder}/{where} (first difference at character {k}); the files are not "
                                "paired (pairing: report imports them by position and lists the differences)")
            tally.mismatches.append(f"{where} (first difference at character {k})")


def _eval_manifest(
    folder: Path,
    files: defaultdict[str, dict[str, Path]],
    ignored: list[str],
    records: list[Record],
    tally: _EvalTally,
    pairing: str,
) -> dict[str, Any]:
    """The manifest of :func:`import_eval_dir`."""
    cells: dict[str, dict[str, int]] = defaultdict(dict)
    for r in records:
        cells[r.task][r.domain] = cells[r.task].get(r.domain, 0) + 1
    missing = [eval_file_name(t, d) for d in DOMAINS for t in TASK_NAMES if t not in files.get(d, {})]
    return {
        "source": str(folder),
        "attribution": "Fu et al. 2024, Cross-Task Defense: Instruction-Tuning LLMs for Content Safety "
                       "(NAACL 2024 TrustNLP), released evaluation files",
        "files": tally.file_info, "missing_files": missing, "ignored_files": ignored,
        "rows": len(records), "rows_attributed": len(records),
        "documents": {d: len(records_of) for d, records_of in _docs_by_domain(records).items()},
        "counts": {t: cells[t] for t in TASK_NAMES if t in cells},
        "phrasings": dict(tally.phrasings),
        "instructions": {t: dict(v) for t, v in tally.variants.items()},
        "separators": {t: {json.dumps(k): n for k, n in v.items()} for t, v in tally.seps.items()},
        "documents_with_leading_whitespace": dict(tally.leading_space),
        "exact_recovery": {"rows": len(records), "exact": tally.exact},
        "pairing": {"mode": pairing, "whitespace_only": len(tally.whitespace_only),
                    "mismatches": len(tally.mismatches),
                    "details": (tally.mismatches + tally.whitespace_only)[:50]},
    }


def _docs_by_domain(records: list[Record]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in records:
        out[r.domain].add(r.meta["doc_id"])
    return out


def export_eval_dir(records: list[Record], out_dir: str | Path) -> dict[str, int]:
    """Write records as the paper's evaluation folder (one file per task x domain, input order), atomically."""
    groups: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.task not in TASK_NAMES:
            raise DataError(f"record {r.id!r}: task {r.task!r} has no evaluation file in the paper's layout")
        groups[eval_file_name(r.task, r.domain)].append(paper_text(r))
    if not groups:
        raise DataError(f"{out_dir}: no records to export")
    out = Path(out_dir)
    atomic_write_files({out / name: json.dumps({"instructions": texts, "inputs": []}, ensure_ascii=False, indent=2)
                        + "\n" for name, texts in groups.items()})
    return {name: len(texts) for name, texts in sorted(groups.items())}


# ------------------------------------------------------------------------------------ training files


def is_refusal_opening(text: str) -> bool:
    return bool(_REFUSAL_OPENING.match(text.strip()))


def import_saferpaca_release(
    path: str | Path, extra_instructions: dict[str, str] | None = None, min_document_words: int = 20
) -> ReleaseImport:
    """A saferpaca training file with every row attributed in ``meta.role``.

    ``defense`` rows (a document and a recognised task instruction, task in ``task``), ``safety`` rows
    (no input, not a defense row, an answer that opens with a refusal) and ``instruction`` rows (the
    rest: ordinary instruction data). The manifest compares the counts with the file name's
    (``saferpaca_Instructions_<safety>_<defense>_<task>.json``) when it follows that convention.
    """
    path = Path(path)
    records = read_saferpaca(path, extra_instructions=extra_instructions, min_document_words=min_document_words)
    roles: Counter = Counter()
    defense_tasks: Counter = Counter()
    for r in records:
        if r.task != "instruction":
            role = "defense"
            defense_tasks[r.task] += 1
        elif not r.document and is_refusal_opening(r.response or ""):
            role, r.domain = "safety", "malicious"
        else:
            role = "instruction"
        r.meta = {**r.meta, "role": role}
        roles[role] += 1
    manifest: dict[str, Any] = {
        "source": str(path), "rows": len(records), "roles": {k: roles.get(k, 0) for k in
                                                           ("instruction", "safety", "defense")},
        "defense_tasks": dict(defense_tasks), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    m = TRAIN_NAME.match(path.name)
    if m:
        expected = {"safety": int(m["safety"]), "defense": int(m["defense"]), "task": m["task"]}
        manifest["expected"] = expected
        notes = []
        for role in ("safety", "defense"):
            if roles.get(role, 0) != expected[role]:
                notes.append(f"{roles.get(role, 0)} {role} rows found, the file name says {expected[role]}")
        wrong = sorted(set(defense_tasks) - {expected["task"]}) if expected["task"] in TASK_NAMES else []
        if wrong:
            notes.append(f"defense rows of {wrong} in a file named for {expected['task']}")
        manifest["notes"] = notes
    return ReleaseImport(records, manifest)
