"""``xtask-safety data inspect PATH``: counts, length statistics and a few redacted rows.

PATH is a record file (JSONL), a paper-format file (evaluation JSON or saferpaca JSON), or a build
directory (its ``manifest.json`` is summarised and every JSONL file under it inspected).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from xtask_safety.data.card import counts
from xtask_safety.errors import DataError
from xtask_safety.records import Record, read_records, redact


def load_any(path: Path) -> list[Record]:
    from xtask_safety.data import formats
    from xtask_safety.data.sources import load_json_file

    if path.suffix == ".jsonl":
        return read_records(path)
    if path.suffix == ".json":
        obj = load_json_file(path)
        if isinstance(obj, dict) and "instructions" in obj:
            return formats.read_paper_eval_file(path, domain=None if _has_hint(path) else "unknown",
                                                unattributed="skip")
        return formats.read_saferpaca(path)
    raise DataError(f"{path}: expected a .jsonl record file, a .json paper-format file or a build directory")


def _has_hint(path: Path) -> bool:
    from xtask_safety.data.formats import domain_hint, sidecar_path

    return sidecar_path(path).is_file() or domain_hint(path) is not None


def _stats(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    s = sorted(values)
    return {"n": len(s), "min": s[0], "median": statistics.median(s), "mean": round(statistics.fmean(s), 1),
            "p95": s[min(len(s) - 1, int(0.95 * len(s)))], "max": s[-1]}


def summarize(rows: list[Record], tokenizer: Any = None) -> dict[str, Any]:
    words = lambda t: len((t or "").split())  # noqa: E731
    out: dict[str, Any] = {
        "rows": len(rows),
        "counts": counts(rows),
        "document_words": _stats([words(r.document) for r in rows if r.document]),
        "response_words": _stats([words(r.response) for r in rows if r.response]),
        "truncated": sum(bool(r.meta.get("truncated")) for r in rows),
        "layouts": dict(sorted({r.layout: sum(x.layout == r.layout for x in rows) for r in rows}.items())),
    }
    if tokenizer is not None:
        ids = tokenizer([r.prompt() + (r.response or "") for r in rows], add_special_tokens=False)["input_ids"]
        out["tokens"] = _stats([len(x) for x in ids])
    return out


def render(name: str, rows: list[Record], n_show: int, show_text: bool, tokenizer: Any = None) -> str:
    info = summarize(rows, tokenizer)
    lines = [f"== {name}: {info['rows']} rows, {info['truncated']} with a shortened document"]
    domains = sorted({d for v in info["counts"].values() for d in v})
    lines.append("  task \\ domain".ljust(26) + "".join(d[:12].rjust(13) for d in domains))
    for task, by_dom in info["counts"].items():
        lines.append(f"  {task}".ljust(26) + "".join(str(by_dom.get(d, 0)).rjust(13) for d in domains))
    for key in ("document_words", "response_words", "tokens"):
        st = info.get(key)
        if st and st["n"]:
            lines.append(f"  {key}: min {st['min']}, median {st['median']}, mean {st['mean']}, p95 {st['p95']}, "
                         f"max {st['max']} (n={st['n']})")
    step = max(1, len(rows) // max(1, n_show))
    for r in rows[::step][:n_show]:
        lines.append(f"  - [{r.task}/{r.domain}] {r.id}")
        lines.append(f"      document: {redact(r.document, r.is_malicious, show_text)}")
        lines.append(f"      instruction: {r.instruction}")
        if r.response:
            lines.append(f"      response: {redact(r.response, r.is_malicious, show_text, keep=100)}")
    return "\n".join(lines)


def inspect_path(path: str | Path, rows: int = 3, show_text: bool = False, tokenizer: Any = None) -> str:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found")
    if path.is_dir():
        manifest_path = path / "manifest.json"
        out = []
        if manifest_path.is_file():
            m = json.loads(manifest_path.read_text(encoding="utf-8"))
            out.append(f"build {m.get('name')} (xtask-safety {m.get('tool', {}).get('version')}, seed {m.get('seed')})")
            for s in m.get("sources", []):
                out.append(f"  source {s['source']}: {s['kind']}/{s['role']} {s['format']}, {s['rows_read']} rows, "
                           f"sha256 {s['sha256'][:12]}")
            hyg = m.get("hygiene", {})
            if hyg:
                out.append(f"  hygiene: {json.dumps(hyg.get('documents', {}).get('exact'))} exact / "
                           f"{hyg.get('documents', {}).get('near')} near duplicate documents removed; leakage "
                           f"{json.dumps(hyg.get('leakage'))}")
            out.append(f"  refusals: {json.dumps(m.get('refusals'))}")
            if m.get("truncation"):
                t = m["truncation"]
                out.append(f"  truncation: {t['rows_shortened']} of {t['rows_checked']} rows shortened, "
                           f"{t['rows_dropped']} dropped (max_length {t['max_length']})")
        files = sorted(p for p in path.rglob("*.jsonl") if not p.name.endswith(".xtask.jsonl"))
        if not files:
            raise DataError(f"{path}: no record files (*.jsonl) found")
        for i, f in enumerate(files):
            out.append(render(str(f.relative_to(path)), read_records(f), rows if i == 0 else 0, show_text, tokenizer))
        return "\n".join(out)
    return render(path.name, load_any(path), rows, show_text, tokenizer)
