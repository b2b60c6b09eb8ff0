"""Exact and near-duplicate detection, and the train/eval leakage check.

Texts are compared after normalisation (lower case, punctuation dropped, whitespace collapsed), so a
lower-cased copy (the case task) or a re-wrapped copy is an exact duplicate. Near duplicates are
pairs whose word 5-gram sets have a Jaccard similarity at or above a threshold: MinHash signatures
and LSH banding propose candidates, and the exact Jaccard of the 5-gram sets confirms them, so the
reported pairs do not depend on the sketch's luck.

MinHash and banding are written here in numpy, vectorised over all texts, rather than taken from
``datasketch``: its per-shingle Python hashing and per-object LSH calls took most of the time of a
20,000-row build (about 15 CPU seconds to deduplicate the instruction rows alone).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from xtask_safety.errors import ConfigError

_WORD = re.compile(r"\w+", re.UNICODE)
DEDUP_MODES = ("near", "exact", "none")
NUM_PERM = 64
SHINGLE = 5


def normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def exact_key(text: str) -> str:
    return hashlib.sha1(normalize(text).encode("utf-8")).hexdigest()


class Shingler:
    """Word 5-gram fingerprints as sorted unique uint64 arrays.

    Words are hashed once each (xxhash, deterministic across processes; a dependency of ``datasets``)
    and 5-grams are combined with a polynomial over uint64 in numpy.
    """

    _P = 0x100000001B3  # FNV prime: the polynomial base

    def __init__(self, k: int = SHINGLE):
        import numpy as np
        import xxhash

        self.k, self.np, self._xx = k, np, xxhash.xxh64_intdigest
        self._words: dict[str, int] = {}
        self._pow = [np.uint64(pow(self._P, j, 1 << 64)) for j in range(k)]

    def __call__(self, text: str):
        np = self.np
        words = _WORD.findall(text.lower())
        ids = [self._words.get(w) or self._words.setdefault(w, self._xx(w.encode()) | 1) for w in words]
        arr = np.array(ids, dtype=np.uint64)
        if len(arr) < self.k:
            arr = np.array([int(arr.sum()) & ((1 << 64) - 1)] if len(arr) else [], dtype=np.uint64)
            return arr
        n = len(arr) - self.k + 1
        with np.errstate(over="ignore"):
            h = arr[:n] * self._pow[self.k - 1]
            for j in range(1, self.k):
                h = h + arr[j: j + n] * self._pow[self.k - 1 - j]
        return np.unique(h)


def shingles(text: str, k: int = SHINGLE):
    """The fingerprint of one text (see :class:`Shingler`)."""
    return Shingler(k)(text)


def jaccard(a, b) -> float:
    import numpy as np

    if not len(a) or not len(b):
        return 0.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (len(a) + len(b) - inter)



def _bands(threshold: float) -> tuple[int, int]:
    """(bands, rows per band), bands x rows = NUM_PERM, whose S-curve threshold (1/b)^(1/r) is the
    highest not above ``threshold`` (pairs at the threshold are proposed with high probability)."""
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"near_dup_threshold: must be in (0, 1), got {threshold}")
    options = [(b, NUM_PERM // b) for b in range(1, NUM_PERM + 1) if NUM_PERM % b == 0]
    below = [(b, r) for b, r in options if (1 / b) ** (1 / r) <= threshold]
    return max(below, key=lambda br: (1 / br[0]) ** (1 / br[1])) if below else options[-1]


def signatures(shingle_sets: Sequence):
    """MinHash signatures (n x NUM_PERM, uint64): 32-bit shingle values under seeded affine maps
    modulo 2^61 - 1, minimised per text; computed in chunks of about 200k shingles."""
    import numpy as np

    rng = np.random.RandomState(1)
    mersenne, mask = np.uint64((1 << 61) - 1), np.uint64((1 << 32) - 1)
    a = rng.randint(1, (1 << 61) - 1, size=NUM_PERM, dtype=np.uint64)
    b = rng.randint(0, (1 << 61) - 1, size=NUM_PERM, dtype=np.uint64)
    sets = [x if len(x) else np.zeros(1, dtype=np.uint64) for x in shingle_sets]
    out = np.empty((len(sets), NUM_PERM), dtype=np.uint64)
    i = 0
    while i < len(sets):
        j, total = i, 0
        while j < len(sets) and (j == i or total + len(sets[j]) <= 200_000):
            total += len(sets[j])
            j += 1
        h = np.concatenate(sets[i:j])
        hv = (h >> np.uint64(32)) ^ (h & mask)
        with np.errstate(over="ignore"):
            phv = ((np.outer(hv, a) + b) % mersenne) & mask
        starts = np.cumsum([0] + [len(x) for x in sets[i:j - 1]])
        out[i:j] = np.minimum.reduceat(phv, starts, axis=0)
        i = j
    return out


class _LSH:
    """Band the signatures; texts sharing any band are candidates."""

    def __init__(self, threshold: float):
        self.b, self.r = _bands(threshold)
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.b)]

    def keys(self, sig) -> list[bytes]:
        return [sig[k * self.r:(k + 1) * self.r].tobytes() for k in range(self.b)]

    def insert(self, item: int, keys: list[bytes]) -> None:
        for bucket, key in zip(self.buckets, keys, strict=True):
            bucket.setdefault(key, []).append(item)

    def query(self, keys: list[bytes]) -> list[int]:
        found: set[int] = set()
        for bucket, key in zip(self.buckets, keys, strict=True):
            found.update(bucket.get(key, ()))
        return sorted(found)


@dataclass
class DedupResult:
    keep: list[int]  # indices kept, in input order
    exact: list[tuple[int, int]] = field(default_factory=list)  # (dropped, kept)
    near: list[tuple[int, int, float]] = field(default_factory=list)  # (dropped, kept, jaccard)


def deduplicate(texts: Sequence[str], mode: str = "near", threshold: float = 0.8) -> DedupResult:
    """Keep the first of every group of exact (and, with ``mode="near"``, near) duplicates."""
    if mode not in DEDUP_MODES:
        raise ConfigError(f"dedup: expected one of {DEDUP_MODES}, got {mode!r}")
    if mode == "none":
        return DedupResult(list(range(len(texts))))
    first: dict[str, int] = {}
    result = DedupResult([])
    survivors = []
    for i, t in enumerate(texts):
        key = exact_key(t)
        if key in first:
            result.exact.append((i, first[key]))
        else:
            first[key] = i
            survivors.append(i)
    if mode == "exact":
        result.keep = survivors
        return result
    lsh = _LSH(threshold)
    sh = Shingler()
    sets = [sh(texts[i]) for i in survivors]
    kept_sets = {}
    for i, s, sig in zip(survivors, sets, signatures(sets), strict=True):
        keys = lsh.keys(sig)
        best = None
        for j in lsh.query(keys):
            sim = jaccard(s, kept_sets[j])
            if sim >= threshold and (best is None or sim > best[1]):
                best = (j, sim)
        if best is None:
            lsh.insert(i, keys)
            kept_sets[i] = s
            result.keep.append(i)
        else:
            result.near.append((i, best[0], round(best[1], 4)))
    return result


@dataclass
class Leak:
    train_index: int
    eval_index: int
    kind: str  # exact | near
    similarity: float


def find_leaks(train_texts: Sequence[str], eval_texts: Sequence[str], threshold: float = 0.8,
               near: bool = True) -> list[Leak]:
    """Training texts that equal, or nearly equal, an evaluation text."""
    eval_keys: dict[str, int] = {}
    for j, t in enumerate(eval_texts):
        eval_keys.setdefault(exact_key(t), j)
    leaks: list[Leak] = []
    rest = []
    for i, t in enumerate(train_texts):
        j = eval_keys.get(exact_key(t))
        if j is not None:
            leaks.append(Leak(i, j, "exact", 1.0))
        else:
            rest.append(i)
    if not near or not eval_texts or not rest:
        return leaks
    lsh = _LSH(threshold)
    sh = Shingler()
    eval_sets = [sh(t) for t in eval_texts]
    for j, sig in enumerate(signatures(eval_sets)):
        lsh.insert(j, lsh.keys(sig))
    train_sets = [sh(train_texts[i]) for i in rest]
    for i, s, sig in zip(rest, train_sets, signatures(train_sets), strict=True):
        best = None
        for j in lsh.query(lsh.keys(sig)):
            sim = jaccard(s, eval_sets[j])
            if sim >= threshold and (best is None or sim > best[1]):
                best = (j, sim)
        if best is not None:
            leaks.append(Leak(i, best[0], "near", round(best[1], 4)))
    return sorted(leaks, key=lambda x: x.train_index)
