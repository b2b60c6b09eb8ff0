"""Document corpora: the bundled demo corpus and user corpora in the same JSONL format.

A corpus line is ``{"id", "domain", "document", "topic"?, "genre"?, "summary"?, "sentiment"?,
"zh_opening"?}``. The references (summary, sentiment phrase, Chinese translation of the first two
sentences) let benign training rows carry real answers and feed utility metrics.

The demo corpus (``data/demo/corpus_*.jsonl``) was written for this project: its malicious
documents state a harmful goal and the shape of a procedure with every operational detail replaced
by a marker; ``external.jsonl`` is a smaller set written separately, in other genres and with
other markers, to check that a defense generalises beyond the corpus it was trained on.
``balance.jsonl`` is a training-only supplement: benign documents in the genres the main corpus gives
mostly to malicious ones (emails, chat logs, forum posts) and malicious ones in the genres it gives
mostly to news (news reports, features, interviews), so that genre does not stand in for intent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from xtask_safety.errors import DataError
from xtask_safety.records import read_jsonl

REF_KEYS = ("summary", "sentiment", "zh_opening")


@dataclass(frozen=True)
class CorpusDoc:
    id: str
    domain: str
    document: str
    topic: str = ""
    genre: str = ""
    source: str = ""
    refs: dict[str, Any] = field(default_factory=dict)


def demo_dir() -> Path:
    return Path(str(resources.files("xtask_safety") / "data" / "demo"))


def load_corpus_file(path: str | Path, source: str | None = None) -> list[CorpusDoc]:
    path = Path(path)
    docs, seen = [], set()
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object")
        for key in ("id", "domain", "document"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise DataError(f"{where}: missing or empty '{key}'")
        if obj["id"] in seen:
            raise DataError(f"{where}: duplicate id {obj['id']!r}")
        seen.add(obj["id"])
        refs = {k: obj[k] for k in REF_KEYS if obj.get(k)}
        docs.append(
            CorpusDoc(
                id=obj["id"],
                domain=obj["domain"],
                document=obj["document"].strip(),
                topic=obj.get("topic") or "",
                genre=obj.get("genre") or "",
                source=source or path.name,
                refs=refs,
            )
        )
    if not docs:
        raise DataError(f"{path}: no documents")
    return docs


DEMO_CORPORA = ("main", "external", "balance")


def demo_files(which: str) -> list[Path]:
    """The files of a bundled corpus: ``main`` (three domains), ``external`` (the separately written
    check set) or ``balance`` (a training-only supplement that spreads genres across domains)."""
    d = demo_dir()
    if which not in DEMO_CORPORA:
        raise DataError(f"demo corpus {which!r}: unknown; one of {DEMO_CORPORA}")
    files = sorted(d.glob("corpus_*.jsonl")) if which == "main" else [d / f"{which}.jsonl"]
    if not files or not all(f.is_file() for f in files):
        raise DataError(f"demo corpus {which!r}: files missing under {d}")
    return files


def load_demo_corpus(which: str = "main") -> list[CorpusDoc]:
    """The documents of a bundled corpus (see ``demo_files``)."""
    files = demo_files(which)
    docs: list[CorpusDoc] = []
    for f in files:
        docs.extend(load_corpus_file(f, source=f"demo/{f.name}"))
    return docs


def stable_order(items: list[Any], seed: int, key=lambda x: x.id) -> list[Any]:
    """A seeded permutation that does not depend on input order or Python's hash seed."""
    return sorted(items, key=lambda x: hashlib.sha256(f"{seed}:{key(x)}".encode()).hexdigest())


def split_corpus(
    docs: list[CorpusDoc], eval_per_domain: int, seed: int = 0
) -> tuple[list[CorpusDoc], list[CorpusDoc]]:
    """Deterministic train/eval split, ``eval_per_domain`` documents of each domain held out."""
    train, held = [], []
    for domain in sorted({d.domain for d in docs}):
        pool = stable_order([d for d in docs if d.domain == domain], seed)
        if len(pool) <= eval_per_domain:
            raise DataError(f"corpus: domain {domain!r} has {len(pool)} documents, need > {eval_per_domain}")
        held.extend(pool[:eval_per_domain])
        train.extend(pool[eval_per_domain:])
    return train, held
