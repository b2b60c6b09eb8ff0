"""``xtask-safety data build --config recipes/data/<name>.yaml``: a whole family of defense sets.

From the recipe's sources the build

1. loads documents, instruction data and evaluation files, each tagged with domain and source;
2. removes exact and near-duplicate documents and instruction rows;
3. holds ``eval_per_domain`` documents of each domain out for evaluation, and removes every
   training document or instruction row that matches an evaluation document (leakage);
4. builds single-task sets for every task at ``sizes`` and mixed-task sets at ``mixed_sizes``
   (per task), nested by construction (checked), with refusals from the pool or a model;
5. mixes the same ``instruction_rows`` rows of instruction data into every set;
6. shortens over-long documents to fit ``max_length`` tokens (never the instruction or answer);
7. checks the written training sets once more for leakage, and writes the sets, the evaluation grids,
   optional paper-format exports, ``manifest.json`` and the dataset card ``README.md``.

Everything is computed in memory and written to a temporary directory that is renamed into place,
so a failed build leaves nothing behind. The same recipe and seed give the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from xtask_safety import faults
from xtask_safety.choices import check_choices
from xtask_safety.data import card
from xtask_safety.data.builder import BuildConfig, build_defense_set, build_eval_grid, load_refusals
from xtask_safety.data.corpus import CorpusDoc, split_corpus, stable_order
from xtask_safety.data.hygiene import deduplicate, find_leaks
from xtask_safety.data.refusals import (
    Generator,
    Judge,
    RefusalReport,
    apply_refusals,
    count_fallbacks,
    generate_refusals,
)
from xtask_safety.data.sources import LoadedSource, load_sources, parse_sources
from xtask_safety.errors import ConfigError, DataError
from xtask_safety.records import MALICIOUS, Record, os_reason, remove_stale_temps, temp_sibling
from xtask_safety.tasks import TASKS, parse_task_list


@dataclass
class DataBuildArguments:
    """A data recipe (``recipes/data/*.yaml``). ``sources`` entries: see :mod:`xtask_safety.data.sources`."""

    output_dir: str = field(default="", metadata={"help": "Build directory (created; must not exist unless --overwrite)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing build directory."})
    name: str = field(default="", metadata={"help": "Dataset name for the card (default: the directory name)."})
    # A YAML list of mappings in a recipe; a JSON string on the command line (the parser needs one type).
    sources: str | None = field(default=None, metadata={"help": "Sources: a YAML list in the recipe, or a JSON "
                                                          "list on the command line."})
    seed: int = field(default=0, metadata={"help": "Seed for every sample and split."})
    # sets
    tasks: str = field(default="all", metadata={"help": "Tasks (comma-separated or 'all')."})
    sizes: list[int] = field(default_factory=lambda: [10, 100, 500, 1000, 2000],
                             metadata={"help": "Single-task set sizes (refusal rows)."})
    mixed_sizes: list[int] = field(default_factory=lambda: [2, 20, 100, 400],
                                   metadata={"help": "Mixed-task set sizes (refusal rows per task)."})
    benign_ratio: float = field(default=1.0, metadata={"help": "Benign task rows per refusal row (0: none)."})
    benign_domains: list[str] = field(default_factory=lambda: ["news", "useful"],
                                      metadata={"help": "Benign document domains for benign task rows."})
    benign_shares: list[float] | None = field(default=None, metadata={"help": "Share per benign domain."})
    phrasings: Literal["paper", "train", "all"] = field(default="train", metadata={"help": "paper | train | all (all: held-out ones too)."})
    exclude_phrasings: list[str] = field(default_factory=list,
                                         metadata={"help": "Further phrasings kept out of training."})
    layout: Literal["after", "before", "mixed"] = field(default="after", metadata={"help": "after | before | mixed."})
    lead_in: bool = field(default=True, metadata={"help": "Benign answers open with the task's lead-in."})
    target_max_words: int | None = field(default=None, metadata={"help": "Trim benign references."})
    genre_match: float = field(default=0.0, metadata={"help": "Pull benign documents towards the malicious genre mix "
                                                        "(0: the sources' own mix, 1: the malicious mix)."})
    document_max_words: int | None = field(default=None, metadata={"help": "Cut documents to N words first."})
    whole_document_tasks: list[str] = field(default_factory=list, metadata={
        "help": "Tasks whose training documents document_max_words leaves whole (e.g. cloze)."})
    marker_dropout: float = field(default=0.0, metadata={
        "help": "Probability of replacing each withholding marker ([withheld], [redacted], ...) in a training "
                "document by neutral wording, every domain alike (0: keep them)."})
    marker_match: bool = field(default=False, metadata={
        "help": "Leave each malicious training document only as many markers as a benign one carries (a count "
                "drawn from the benign documents), so markers say nothing about the label."})
    instruction_rows: int | None = field(default=None,
                                         metadata={"help": "Instruction-data rows per set (None: all)."})
    eval_per_domain: int = field(default=0, metadata={"help": "Documents per domain held out for evaluation."})
    # refusals
    refusals: Literal["pool", "model"] = field(default="pool", metadata={"help": "pool (bundled or refusal_pool) | model."})
    refusal_pool: str | None = field(default=None, metadata={"help": "Refusal pool file (one per line)."})
    refusal_model: str | None = field(default=None, metadata={"help": "Model that samples refusals."})
    refusal_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (paper: 0.7)."})
    refusal_max_new_tokens: int = field(default=96, metadata={"help": "Tokens per sampled refusal."})
    refusal_attempts: int = field(default=2, metadata={"help": "Samples per row until one is a refusal."})
    refusal_fallback: Literal["pool", "drop"] = field(default="pool", metadata={"help": "pool | drop for rows with no refusal."})
    refusal_system_prompt: str | None = field(default=None, metadata={"help": "System prompt when sampling."})
    refusal_batch_size: int = field(default=16, metadata={"help": "Generation batch size."})
    # truncation
    max_length: int | None = field(default=None, metadata={"help": "Token budget per row (None: no truncation)."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer: model path/id or 'embedded'."})
    truncation: Literal["head", "head_tail"] = field(default="head", metadata={"help": "head | head_tail."})
    head_fraction: float = field(default=0.5, metadata={"help": "head_tail: share of kept words from the start."})
    reserve_tokens: int = field(default=8, metadata={"help": "Tokens kept free for end-of-turn/EOS."})
    prompt_template: Literal["chat", "alpaca"] = field(default="chat", metadata={"help": "chat | alpaca (as in training)."})
    system_prompt: str | None = field(default=None, metadata={"help": "System prompt (as in training)."})
    # hygiene and outputs
    dedup: Literal["near", "exact", "none"] = field(default="near", metadata={"help": "near | exact | none."})
    near_dup_threshold: float = field(default=0.8, metadata={"help": "Jaccard of word 5-grams."})
    leakage: Literal["remove", "error"] = field(default="remove", metadata={"help": "remove | error (training docs matching eval docs)."})
    export_paper: bool = field(default=False, metadata={"help": "Also write saferpaca and evaluation JSON files."})

    def validate(self) -> None:
        if not self.output_dir:
            raise ConfigError("output_dir: required")
        for key in ("sizes", "mixed_sizes"):
            values = getattr(self, key) or []
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ConfigError(f"{key}: expected positive integers, got {values}")
            setattr(self, key, sorted(set(values)))
        if not self.sizes and not self.mixed_sizes:
            raise ConfigError("sizes, mixed_sizes: both empty, nothing to build")
        if self.benign_ratio < 0:
            raise ConfigError("benign_ratio: must be >= 0")
        for key in ("genre_match", "marker_dropout"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{key}: expected a number from 0 to 1, got {getattr(self, key)}")
        check_choices(self)
        if self.instruction_rows is not None and self.instruction_rows < 0:
            raise ConfigError("instruction_rows: must be >= 0")
        known = {p for t in TASKS.values() for p in t.phrasings(include_heldout=True)}
        unknown = [p for p in self.exclude_phrasings if p not in known]
        if unknown:
            raise ConfigError(f"exclude_phrasings: {unknown[0]!r} is not a phrasing of any task (use the {{pos}} form)")


@dataclass
class BuildResult:
    output_dir: Path
    manifest: dict[str, Any]
    sets: dict[str, list[Record]]  # relative file name -> rows
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------ steps


def _dedup_docs(docs: list[CorpusDoc], mode: str, threshold: float) -> tuple[list[CorpusDoc], dict[str, Any]]:
    res = deduplicate([d.document for d in docs], mode, threshold)
    conflicts = sum(docs[a].domain != docs[b].domain for a, b, *_ in [*res.exact, *res.near])
    info = {"exact": len(res.exact), "near": len(res.near), "cross_domain": conflicts,
            "examples": [[docs[a].id, docs[b].id] for a, b, *_ in [*res.exact, *res.near][:5]]}
    return [docs[i] for i in res.keep], info


def _instruction_text(r: Record) -> str:
    return f"{r.instruction}\n{r.document}\n{r.response or ''}"


def _check_nested(name: str, small: list[Record], large: list[Record]) -> None:
    big = {r.id: r for r in large}
    for r in small:
        if big.get(r.id) != r:
            raise DataError(f"{name}: sizes are not nested (row {r.id!r}); with benign_shares, the largest-"
                            "remainder split can change between sizes: adjust benign_shares or benign_ratio")


def _size_error(exc: DataError, what: str) -> DataError:
    return DataError(f"{what}: {exc}")


def build_sets(
    docs: list[CorpusDoc], args: DataBuildArguments, tasks: list[str], pool: list[str]
) -> dict[str, tuple[str, list[str], int, list[Record]]]:
    """Defense rows of every set: name -> (kind, tasks, size, rows)."""
    out: dict[str, tuple[str, list[str], int, list[Record]]] = {}

    def cfg(task_list: list[str], n: int) -> BuildConfig:
        return BuildConfig(
            tasks=task_list, malicious_per_task=n, benign_per_task=round(args.benign_ratio * n),
            benign_domains=tuple(args.benign_domains),
            benign_shares=tuple(args.benign_shares) if args.benign_shares else None,
            phrasings=args.phrasings, layout=args.layout, lead_in=args.lead_in,
            target_max_words=args.target_max_words, document_max_words=args.document_max_words,
            seed=args.seed, exclude_phrasings=tuple(args.exclude_phrasings), genre_match=args.genre_match,
            marker_dropout=args.marker_dropout, marker_match=args.marker_match,
            whole_document_tasks=tuple(args.whole_document_tasks),
        )

    plans = [("single", [t], f"single-{t}", args.sizes) for t in tasks]
    if args.mixed_sizes and len(tasks) > 1:
        plans.append(("mixed", tasks, "mixed", args.mixed_sizes))
    for kind, task_list, stem, sizes in plans:
        prev = None
        for n in sizes:
            try:
                rows = build_defense_set(docs, cfg(task_list, n), pool)
            except DataError as exc:
                raise _size_error(exc, f"{'sizes' if kind == 'single' else 'mixed_sizes'} {n} ({stem})") from None
            name = f"train/{stem}-{n}.jsonl"
            if prev is not None:
                _check_nested(name, prev, rows)
            out[name] = (kind, task_list, n, rows)
            prev = rows
    return out


def _load_tokenizer(args: DataBuildArguments) -> Any:
    from xtask_safety.models import load_tokenizer, offline_defaults, resolve_model_path

    name = args.tokenizer or args.refusal_model
    if not name:
        raise ConfigError("max_length: set tokenizer (a model path, HF id or 'embedded') to measure tokens")
    offline_defaults()
    return load_tokenizer(resolve_model_path(name))


def _jsonl(rows: list[Record], cache: dict[str, str]) -> str:
    parts = []
    for r in rows:
        line = cache.get(r.id)
        if line is None:  # a shallow dict: dataclasses.asdict deep-copies every meta value
            line = json.dumps({k: getattr(r, k) for k in _FIELDS}, ensure_ascii=False) + "\n"
            cache[r.id] = line
        parts.append(line)
    return "".join(parts)


_FIELDS = [f.name for f in fields(Record)]


def _order_key(seed: int):
    memo: dict[str, str] = {}

    def key(rid: str) -> str:
        k = memo.get(rid)
        if k is None:
            k = memo[rid] = hashlib.sha256(f"{seed}:{rid}".encode()).hexdigest()
        return k

    return key


# ----------------------------------------------------------------------------------------- the build

# set file name -> (kind, tasks, size, defense rows), as made by build_sets
_Plans = dict[str, tuple[str, list[str], int, list[Record]]]


@dataclass
class _Inputs:
    """Loaded documents and rows as the hygiene steps leave them, with their counts for the manifest."""

    loaded: list[LoadedSource]
    train_docs: list[CorpusDoc]
    eval_docs: list[CorpusDoc]
    eval_records: list[Record]
    instr: list[Record]
    heldout: list[CorpusDoc] = field(default_factory=list)
    never_held: set[tuple[str, str]] = field(default_factory=set)  # (source, id) of ``holdout: false`` sources
    eval_texts: list[str] = field(default_factory=list)
    doc_dups: dict[str, Any] = field(default_factory=dict)
    instr_dups: dict[str, int] = field(default_factory=dict)
    removed_documents: int = 0
    removed_instruction_rows: int = 0


def run_build(
    args: DataBuildArguments,
    *,
    generator: Generator | None = None,
    judge: Judge | None = None,
    tokenizer: Any = None,
    log=print,
) -> BuildResult:
    """Build every set of a recipe; ``generator``/``judge`` are needed for ``refusals: model``."""
    t0 = time.time()
    out_dir, tasks, loaded = _check_and_load(args, generator, judge, tokenizer)
    inputs = _split_roles(loaded)
    _deduplicate(inputs, args)  # 2. duplicates
    _remove_leakage(inputs, args)  # 3. held-out documents and leakage
    plans, refusal_report = _defense_sets(inputs.train_docs, args, tasks, generator, judge, log)  # 4.
    chosen_instr = _choose_instructions(inputs.instr, args)  # 5. the same rows in every set
    trunc_info = None
    if args.max_length:  # 6. truncation, once per distinct row
        plans, chosen_instr, trunc_info = _truncate(plans, chosen_instr, args, tokenizer, log)
    sets = _order_sets(plans, chosen_instr, args.seed)
    final_check = _final_leak_check(sets, inputs.eval_texts, args)  # 7.
    eval_files = _eval_files(inputs, tasks, args.seed)
    manifest = _manifest(args, out_dir, inputs, chosen_instr, refusal_report, trunc_info, final_check)
    result = _write(out_dir, args, plans, sets, eval_files, manifest)
    result.seconds = time.time() - t0
    return result


def _check_and_load(
    args: DataBuildArguments, generator: Generator | None, judge: Judge | None, tokenizer: Any
) -> tuple[Path, list[str], list[LoadedSource]]:
    """Check the recipe before any work (load nothing if it cannot build), then load its sources."""
    args.validate()
    out_dir = Path(args.output_dir)
    if out_dir.exists() and not args.overwrite:
        raise DataError(f"{out_dir}: already exists; pass --overwrite true to replace it")
    tasks = parse_task_list(args.tasks)
    specs = parse_sources(args.sources)
    if not specs:
        raise ConfigError("sources: at least one document source is required")
    if args.max_length and tokenizer is None and not (args.tokenizer or args.refusal_model):
        raise ConfigError("max_length: set tokenizer (a model path, HF id or 'embedded') to measure tokens")
    if args.refusals == "model" and (generator is None or judge is None):
        raise ConfigError("refusals: model needs a generator and a judge (the CLI wires refusal_model)")
    loaded: list[LoadedSource] = load_sources(specs)
    faults.point("data.loaded")
    return out_dir, tasks, loaded


def _split_roles(loaded: list[LoadedSource]) -> _Inputs:
    """Training and evaluation documents and rows of the loaded sources, by their ``role``."""
    train_docs = [d for s in loaded if s.spec.role == "train" for d in s.docs]
    eval_docs = [d for s in loaded if s.spec.role == "eval" for d in s.docs]
    eval_records = [r for s in loaded if s.spec.role == "eval" for r in s.records]
    instr = [r for s in loaded if s.spec.role == "train" for r in s.records]
    if not any(d.domain == MALICIOUS for d in train_docs):
        raise DataError("sources: no training documents with domain 'malicious'")
    never = {(d.source, d.id) for s in loaded if s.spec.role == "train" and not s.spec.holdout for d in s.docs}
    return _Inputs(loaded, train_docs, eval_docs, eval_records, instr, never_held=never)


def _deduplicate(inputs: _Inputs, args: DataBuildArguments) -> None:
    """Drop duplicate documents and instruction rows; evaluation documents only exact duplicates."""
    inputs.train_docs, inputs.doc_dups = _dedup_docs(inputs.train_docs, args.dedup, args.near_dup_threshold)
    eval_mode = "exact" if args.dedup != "none" else "none"
    inputs.eval_docs, _ = _dedup_docs(inputs.eval_docs, eval_mode, args.near_dup_threshold)
    res = deduplicate([_instruction_text(r) for r in inputs.instr], args.dedup, args.near_dup_threshold)
    inputs.instr_dups = {"exact": len(res.exact), "near": len(res.near)}
    inputs.instr = [inputs.instr[i] for i in res.keep]


def _remove_leakage(inputs: _Inputs, args: DataBuildArguments) -> None:
    """Hold documents out, then drop (or, ``leakage: error``, refuse) training items matching evaluation."""
    if args.eval_per_domain:
        fixed = [d for d in inputs.train_docs if (d.source, d.id) in inputs.never_held]
        pool = [d for d in inputs.train_docs if (d.source, d.id) not in inputs.never_held]
        train, inputs.heldout = split_corpus(pool, args.eval_per_domain, args.seed)
        inputs.train_docs = train + fixed
    train_docs, instr = inputs.train_docs, inputs.instr
    eval_texts = ([d.document for d in inputs.heldout + inputs.eval_docs]
                  + [r.document for r in inputs.eval_records])
    leaks = find_leaks([d.document for d in train_docs], eval_texts, args.near_dup_threshold,
                       near=args.dedup == "near")
    ileaks = find_leaks([f"{r.instruction}\n{r.document}" for r in instr], eval_texts, args.near_dup_threshold,
                        near=args.dedup == "near")
    if (leaks or ileaks) and args.leakage == "error":
        first = train_docs[leaks[0].train_index].id if leaks else instr[ileaks[0].train_index].id
        raise DataError(f"leakage: {len(leaks) + len(ileaks)} training items match evaluation documents "
                        f"(first: {first!r}); set leakage: remove to drop them")
    bad = {x.train_index for x in leaks}
    inputs.train_docs = [d for i, d in enumerate(train_docs) if i not in bad]
    ibad = {x.train_index for x in ileaks}
    inputs.instr = [r for i, r in enumerate(instr) if i not in ibad]
    inputs.eval_texts = eval_texts
    inputs.removed_documents, inputs.removed_instruction_rows = len(bad), len(ibad)


def _defense_sets(
    train_docs: list[CorpusDoc],
    args: DataBuildArguments,
    tasks: list[str],
    generator: Generator | None,
    judge: Judge | None,
    log: Callable[[str], object],
) -> tuple[_Plans, RefusalReport]:
    """Every set's defense rows; ``refusals: model`` samples once per distinct malicious row."""
    pool = load_refusals(args.refusal_pool)
    plans = build_sets(train_docs, args, tasks, pool)
    refusal_report = RefusalReport(mode="pool", requested=len({r.id for *_, rows in plans.values()
                                                                 for r in rows if r.is_malicious}))
    if args.refusals == "model":
        union = list({r.id: r for *_, rows in plans.values() for r in rows if r.is_malicious}.values())
        log(f"[data build] sampling refusals for {len(union)} malicious rows (temperature {args.refusal_temperature})")
        accepted, refusal_report = generate_refusals(union, generator, judge, args.refusal_attempts)
        count_fallbacks(union, accepted, refusal_report, args.refusal_fallback)
        refusal_report.settings = {"model": args.refusal_model, "temperature": args.refusal_temperature,
                                   "attempts": args.refusal_attempts, "fallback": args.refusal_fallback}
        plans = {k: (kind, tl, n, apply_refusals(rows, accepted, refusal_report, args.refusal_fallback))
                 for k, (kind, tl, n, rows) in plans.items()}
        log(f"[data build] refusals kept: {refusal_report.kept} of {refusal_report.requested}")
    return plans, refusal_report


def _choose_instructions(instr: list[Record], args: DataBuildArguments) -> list[Record]:
    """The instruction rows of every set: all, or the first ``instruction_rows`` in seeded order."""
    chosen_instr = stable_order(instr, args.seed)
    if args.instruction_rows is not None:
        if args.instruction_rows > len(chosen_instr):
            raise DataError(f"instruction_rows: {args.instruction_rows} requested, only {len(chosen_instr)} "
                            "instruction rows available after deduplication")
        chosen_instr = chosen_instr[: args.instruction_rows]
    return chosen_instr


def _truncate(
    plans: _Plans, chosen_instr: list[Record], args: DataBuildArguments, tokenizer: Any,
    log: Callable[[str], object],
) -> tuple[_Plans, list[Record], dict[str, Any]]:
    """Shorten every distinct row once to ``max_length`` tokens; dropped rows leave every set they were in."""
    from xtask_safety.data.truncate import make_length_fn, truncate_rows

    tok = tokenizer if tokenizer is not None else _load_tokenizer(args)
    union = list({r.id: r for *_, rows in plans.values() for r in rows}.values()) + chosen_instr
    fixed, report = truncate_rows(union, make_length_fn(tok, args.prompt_template, args.system_prompt),
                                  args.max_length, args.truncation, args.head_fraction,
                                  reserve_tokens=args.reserve_tokens)
    by_id = {r.id: r for r in fixed}
    plans = {k: (kind, tl, n, [by_id[r.id] for r in rows if r.id in by_id])
             for k, (kind, tl, n, rows) in plans.items()}
    chosen_instr = [by_id[r.id] for r in chosen_instr if r.id in by_id]
    trunc_info = {**report.to_dict(), "tokenizer": args.tokenizer or args.refusal_model,
                  "prompt_template": args.prompt_template, "reserve_tokens": args.reserve_tokens}
    log(f"[data build] truncation: {report.shortened} of {report.checked} rows shortened, "
        f"{len(report.dropped)} dropped (max_length {args.max_length})")
    return plans, chosen_instr, trunc_info


def _order_sets(plans: _Plans, chosen_instr: list[Record], seed: int) -> dict[str, list[Record]]:
    """Each set's defense rows and the instruction rows, shuffled by a seeded hash of the row id."""
    key = _order_key(seed)
    sets: dict[str, list[Record]] = {}
    for name, (_, _, _, rows) in plans.items():
        sets[name] = sorted(rows + chosen_instr, key=lambda r: key(r.id))
    return sets


def _final_leak_check(
    sets: dict[str, list[Record]], eval_texts: list[str], args: DataBuildArguments
) -> tuple[int, int]:
    """Check every distinct training document once more; (texts checked, leaks found) for the manifest."""
    train_texts = sorted({r.document for rows in sets.values() for r in rows if r.document})
    final = find_leaks(train_texts, eval_texts, args.near_dup_threshold, near=args.dedup == "near")
    if final:
        raise DataError(f"leakage: a training row matches an evaluation document after the build "
                        f"({train_texts[final[0].train_index][:60]!r}); report this as a bug")
    return len(train_texts), len(final)


def _eval_files(inputs: _Inputs, tasks: list[str], seed: int) -> dict[str, list[Record]]:
    """The evaluation grids over held-out and evaluation documents, and the imported evaluation rows."""
    grid_docs = inputs.heldout + inputs.eval_docs
    eval_files: dict[str, list[Record]] = {}
    if grid_docs:
        eval_files["eval/grid-paper.jsonl"] = build_eval_grid(grid_docs, tasks, "paper", seed=seed)
        eval_files["eval/grid-heldout.jsonl"] = build_eval_grid(grid_docs, tasks, "heldout", seed=seed)
    if inputs.eval_records:
        eval_files["eval/imported.jsonl"] = inputs.eval_records
    return eval_files


def _manifest(
    args: DataBuildArguments,
    out_dir: Path,
    inputs: _Inputs,
    chosen_instr: list[Record],
    refusal_report: RefusalReport,
    trunc_info: dict[str, Any] | None,
    final_check: tuple[int, int],
) -> dict[str, Any]:
    """``manifest.json`` with empty file lists (``sets``, ``eval_files``, ``paper_files``) for _write."""
    from xtask_safety import __version__

    training_texts_checked, final_leaks = final_check
    return {
        "name": args.name or out_dir.name,
        "tool": {"name": "xtask-safety", "version": __version__, "libraries": _library_versions(args)},
        "seed": args.seed,
        "recipe": {k: v for k, v in asdict(args).items() if k not in ("output_dir", "overwrite")},
        "sources": [s.summary() for s in inputs.loaded],
        "hygiene": {
            "dedup": args.dedup, "near_dup_threshold": args.near_dup_threshold,
            "documents": inputs.doc_dups, "instructions": inputs.instr_dups,
            "leakage": {"eval_texts": len(inputs.eval_texts), "removed_documents": inputs.removed_documents,
                        "removed_instruction_rows": inputs.removed_instruction_rows,
                        "training_texts_checked": training_texts_checked, "final_leaks": final_leaks},
        },
        "documents": {"train": len(inputs.train_docs), "heldout": len(inputs.heldout),
                      "eval_sources": len(inputs.eval_docs)},
        "instruction_rows": {"available": len(inputs.instr), "per_set": len(chosen_instr)},
        "refusals": refusal_report.to_dict(),
        "truncation": trunc_info,
        "sets": [],
        "eval_files": [],
        "paper_files": [],
    }


def _library_versions(args: DataBuildArguments) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    names = ["numpy", "xxhash"] + (["transformers", "tokenizers"] if args.max_length else [])
    for n in names:
        with contextlib.suppress(PackageNotFoundError):
            out[n] = version(n)
    return out


def _write(out_dir: Path, args: DataBuildArguments, plans, sets, eval_files, manifest) -> BuildResult:
    from xtask_safety.data import formats

    parent = out_dir.resolve().parent
    target = parent / out_dir.name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)  # left by a build that was killed
        tmp = temp_sibling(target, "tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as exc:
        raise DataError(f"{out_dir}: output directory is not writable ({os_reason(exc)})") from None
    try:
        cache: dict[str, str] = {}

        def put(rel: str, text: str) -> str:
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            data = text.encode("utf-8")
            p.write_bytes(data)
            faults.point("data.write")
            return hashlib.sha256(data).hexdigest()

        for name, rows in sets.items():
            kind, task_list, n, defense = plans[name]
            manifest["sets"].append({"file": name, "kind": kind, "tasks": task_list, "size": n, "rows": len(rows),
                                     "defense_rows": len(defense), "counts": card.counts(rows),
                                     "sha256": put(name, _jsonl(rows, cache))})
        for name, rows in eval_files.items():
            manifest["eval_files"].append({"file": name, "rows": len(rows), "counts": card.counts(rows),
                                           "sha256": put(name, _jsonl(rows, {}))})
        if args.export_paper:
            side_cache: dict[str, tuple[str, str]] = {}
            for name, rows in sets.items():
                kind, task_list, n, _ = plans[name]
                rel = f"paper/saferpaca_{n}_{task_list[0] if kind == 'single' else 'mixed'}.json"
                formats.write_saferpaca(tmp / rel, rows, cache=side_cache, atomic=False)
                manifest["paper_files"].append({"file": rel, "rows": len(rows), "from": name})
            grid = eval_files.get("eval/grid-paper.jsonl", [])
            for dom in sorted({r.domain for r in grid}):
                for task in sorted({r.task for r in grid}):
                    rows = [r for r in grid if r.domain == dom and r.task == task]
                    rel = f"paper/eval_{dom}_{task}.json"
                    formats.write_paper_eval_file(tmp / rel, rows, atomic=False)
                    manifest["paper_files"].append({"file": rel, "rows": len(rows), "from": "eval/grid-paper.jsonl"})
        put("manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
        put("README.md", card.dataset_card(manifest))
        faults.point("data.publish")
        old = None
        if out_dir.exists():
            old = temp_sibling(target, "old")
            os.replace(out_dir, old)
            faults.point("data.swap")
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # e.g. a full disk: nothing of this build is left behind
            raise DataError(f"{out_dir}: cannot write the build ({exc.strerror or exc})") from None
        raise
    return BuildResult(out_dir, manifest, sets)
