"""The per-build ``manifest.json`` and the dataset card (``README.md``) with its content warning."""

from __future__ import annotations

from collections import Counter
from typing import Any

from xtask_safety.records import Record


def counts(rows: list[Record]) -> dict[str, dict[str, int]]:
    """Rows per task x domain (sorted, so the manifest is byte-stable)."""
    c = Counter((r.task, r.domain) for r in rows)
    out: dict[str, dict[str, int]] = {}
    for (task, domain), n in sorted(c.items()):
        out.setdefault(task, {})[domain] = n
    return out


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def dataset_card(manifest: dict[str, Any]) -> str:
    name = manifest["name"]
    sets = manifest["sets"]
    set_rows = []
    for s in sets:
        c = s["counts"]
        mal = sum(v.get("malicious", 0) for t, v in c.items() if t != "instruction")
        ben = sum(n for t, v in c.items() if t != "instruction" for d, n in v.items() if d != "malicious")
        ins = sum(c.get("instruction", {}).values())
        set_rows.append([f"`{s['file']}`", s["kind"], ", ".join(s["tasks"]), s["size"], mal, ben, ins, s["rows"]])
    src_rows = [[s["source"], s["kind"], s["role"], s["format"], s.get("domain") or "", s["rows_read"],
                 f"`{s['sha256'][:12]}`"] for s in manifest["sources"]]
    hyg = manifest["hygiene"]
    trunc = manifest.get("truncation")
    ref = manifest["refusals"]
    evals = manifest.get("eval_files", [])
    parts = [
        f"# {name}",
        "",
        "> **Content warning.** This dataset pairs task instructions with *malicious* documents (text that "
        "states a harmful goal or procedure) so that a model learns to refuse processing them. Do not "
        "publish or train on it without the review your organisation requires for harmful content; "
        "tools that display it should truncate malicious documents (`xtask-safety data inspect` does).",
        "",
        "Defense training sets for cross-task content-safety instruction tuning (Fu et al. 2024, "
        "*Cross-Task Defense: Instruction-Tuning LLMs for Content Safety*), built by "
        f"xtask-safety {manifest['tool']['version']} with seed {manifest['seed']}.",
        "",
        "Every training file holds refusal rows (a task instruction applied to a malicious document, "
        "answered with a refusal), benign rows of the same tasks answered with reference answers, and "
        "ordinary instruction data. Sizes are **nested**: each smaller set of a kind is a subset of the "
        "larger ones, so size curves compare like with like. Files use the xtask-safety record schema "
        "(JSONL: id, task, domain, document, instruction, layout, response, weight, source, reference, "
        "meta).",
        "",
        "## Training sets",
        "",
        _table(["file", "kind", "tasks", "size", "refusal rows", "benign task rows", "instruction rows", "rows"],
               set_rows),
        "",
        "## Sources",
        "",
        _table(["source", "kind", "role", "format", "domain", "rows read", "sha256"], src_rows),
        "",
        "## How it was built",
        "",
        f"* Phrasings: `{manifest['recipe']['phrasings']}` (held-out phrasings never appear in training); "
        f"layout: `{manifest['recipe']['layout']}`.",
        f"* Refusals: {ref['mode']}"
        + (f" — {ref['kept']} of {ref['requested']} malicious rows got a sampled answer the rule judge labelled "
           f"a refusal; {ref.get('fallback_pool', 0)} kept a pool refusal, {ref.get('dropped', 0)} were dropped."
           if ref["mode"] == "model" else " (the bundled pool, written for this project)."),
        f"* Deduplication ({hyg['dedup']}): {hyg['documents']['exact']} exact and {hyg['documents']['near']} near "
        f"duplicate documents and {hyg['instructions']['exact'] + hyg['instructions']['near']} duplicate "
        "instruction rows removed.",
        f"* Leakage: {hyg['leakage']['removed_documents']} training documents and "
        f"{hyg['leakage']['removed_instruction_rows']} instruction rows that matched an evaluation document "
        f"were removed; the final check found {hyg['leakage']['final_leaks']} leaks in the training files.",
    ]
    if trunc:
        parts.append(
            f"* Truncation to {trunc['max_length']} tokens ({trunc['tokenizer']}, `{trunc['mode']}`): "
            f"{trunc['rows_shortened']} of {trunc['rows_checked']} distinct rows had their document shortened, "
            f"{trunc['rows_dropped']} were dropped; instructions and answers were kept whole."
        )
    else:
        parts.append("* No token truncation (documents are whole).")
    if evals:
        parts += ["", "## Evaluation files", "", _table(["file", "rows"], [[f"`{e['file']}`", e["rows"]] for e in evals])]
    parts += [
        "",
        "## Intended use and limits",
        "",
        "Research on defenses against processing harmful documents. The malicious rows are only as "
        "representative as the sources; check the source licences before redistributing. "
        "`manifest.json` holds every count, the recipe, the content hashes of the sources and of each file.",
        "",
    ]
    return "\n".join(parts)
