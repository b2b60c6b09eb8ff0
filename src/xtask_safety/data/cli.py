"""``xtask-safety data build|grid|inspect|import|export``.

* ``data build --config recipes/data/NAME.yaml``: a whole family of sets from a data recipe
  (:mod:`xtask_safety.data.pipeline`); ``data build --corpus ... --output FILE`` (no recipe, no
  ``--output_dir``): one defense set from corpus JSONL files, as before.
* ``data grid``: an evaluation grid; ``data inspect PATH``: counts, lengths, redacted rows;
* ``data import`` / ``data export``: the paper's evaluation and saferpaca files <-> records;
  ``data import --paper_dir DIR``: the whole released ``data/evaluation`` folder in one go, with a
  manifest; ``data export --format paper_dir``: records back to that folder's layout.

This is the one module of the data stage allowed to import the generation backend and the judges
(lazily, inside :func:`_model_refusal_fns`), to sample refusals for ``refusals: model``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from xtask_safety.choices import check_counts
from xtask_safety.errors import ConfigError


@dataclass
class DataArguments:
    corpus: list[str] = field(default_factory=lambda: ["demo"], metadata={
        "help": "Corpus JSONL files ('demo' = the bundled demo corpus, 'demo-external' = its external set)."})
    output: str = field(default="", metadata={"help": "Output JSONL."})
    tasks: str = field(default="all", metadata={"help": "Tasks (comma-separated or 'all'); one task = single-task set."})
    malicious_per_task: int = field(default=48, metadata={"help": "build: refusal rows per task."})
    benign_per_task: int = field(default=48, metadata={"help": "build: benign rows per task."})
    phrasings: Literal["paper", "train", "all", "heldout"] = field(default="train", metadata={"help": "build: paper | train | all (grid: paper | heldout)."})
    layout: Literal["after", "before", "mixed"] = field(default="after", metadata={"help": "after | before | mixed (instruction vs document)."})
    lead_in: bool = field(default=True, metadata={"help": "build: benign answers open with a task lead-in."})
    target_max_words: int | None = field(default=None, metadata={"help": "build: trim benign references."})
    refusals: str | None = field(default=None, metadata={"help": "build: refusal pool file (default: bundled)."})
    heldout_per_domain: int = field(default=30, metadata={"help": "Documents per domain kept out of training."})
    split: Literal["train", "heldout", "all"] = field(default="train", metadata={"help": "grid: which split to use (train | heldout | all)."})
    seed: int = field(default=0, metadata={"help": "Seed."})

    def __post_init__(self) -> None:
        check_counts(self, positive=("target_max_words",), non_negative=("malicious_per_task", "benign_per_task", "heldout_per_domain", "seed"))


def _load(paths: list[str]):
    from xtask_safety.data.corpus import load_corpus_file, load_demo_corpus

    docs = []
    for p in paths:
        if p == "demo":
            docs += load_demo_corpus("main")
        elif p == "demo-external":
            docs += load_demo_corpus("external")
        else:
            docs += load_corpus_file(p)
    return docs


@dataclass
class InspectArguments:
    path: str = field(default="", metadata={"help": "Record file, paper-format file or build directory "
                                                    "(also the first positional argument)."})
    rows: int = field(default=3, metadata={"help": "Example rows to show (redacted unless --show_text)."})
    show_text: bool = field(default=False, metadata={"help": "Show malicious documents and answers unredacted."})
    tokenizer: str | None = field(default=None, metadata={"help": "Also report token lengths with this tokenizer."})

    def __post_init__(self) -> None:
        check_counts(self, non_negative=("rows",))


@dataclass
class ConvertArguments:
    input: str = field(default="", metadata={"help": "Input file."})
    output: str = field(default="", metadata={"help": "Output file (export --format paper_dir: a folder)."})
    format: Literal["paper_eval", "saferpaca", "paper_dir"] | None = field(default=None, metadata={"help": "paper_eval | saferpaca (export also: paper_dir)."})
    paper_dir: str | None = field(default=None, metadata={
        "help": "import: a clone of the paper's repository or its data/evaluation folder: all 15 evaluation "
                "files into one JSONL plus <output>.manifest.json."})
    pairing: Literal["strict", "report"] = field(default="strict", metadata={
        "help": "import --paper_dir: strict (a document that differs across task files is an error) or report "
                "(listed in the manifest)."})
    domain: str | None = field(default=None, metadata={"help": "import paper_eval: domain of every row "
                                                        "(default: sidecar or file-name hint)."})
    unattributed: Literal["error", "skip"] = field(default="error", metadata={"help": "import paper_eval: error | skip rows whose "
                                                         "task instruction is not recognised."})
    sidecar: bool = field(default=True, metadata={"help": "export: write the .xtask.jsonl sidecar (lossless)."})


def build_main(rest: list[str]) -> int:
    """``data build --config recipes/data/NAME.yaml``."""
    from xtask_safety.config import parse_recipe
    from xtask_safety.data.pipeline import DataBuildArguments, run_build

    (args,) = parse_recipe((DataBuildArguments,), rest, prog="xtask-safety data build")
    generator = judge = None
    if args.refusals == "model":
        generator, judge = _model_refusal_fns(args)
    result = run_build(args, generator=generator, judge=judge)
    m = result.manifest
    print(json.dumps({
        "output_dir": str(result.output_dir), "sets": len(m["sets"]), "eval_files": len(m["eval_files"]),
        "rows": sum(s["rows"] for s in m["sets"]), "refusals": m["refusals"],
        "truncation": {k: m["truncation"][k] for k in ("rows_shortened", "rows_dropped")} if m["truncation"] else None,
        "leaks": m["hygiene"]["leakage"]["final_leaks"], "seconds": round(result.seconds, 2),
    }))
    return 0


def _model_refusal_fns(args):
    """Generator (Transformers backend, sampling) and judge (rule judge) for ``refusals: model``."""
    from dataclasses import replace as dc_replace

    from xtask_safety.generate.backends import BackendSpec, build_backend
    from xtask_safety.generate.base import SamplingConfig
    from xtask_safety.models import offline_defaults
    from xtask_safety.score.judges import RuleJudge

    if not args.refusal_model:
        raise ConfigError("refusals: model needs refusal_model (a model path, HF id or 'embedded')")
    offline_defaults()
    backend = build_backend("transformers", BackendSpec(
        model=args.refusal_model, batch_size=args.refusal_batch_size, prompt_template=args.prompt_template,
        system_prompt=args.refusal_system_prompt))
    base = SamplingConfig(max_new_tokens=args.refusal_max_new_tokens, do_sample=True,
                          temperature=args.refusal_temperature, seed=args.seed)
    rule = RuleJudge()

    def generate(rows, attempt: int) -> list[str]:
        texts = [backend.render(r.prompt()) for r in rows]
        out: list[str] = [""] * len(texts)
        for b, batch in enumerate(backend.plan(texts)):
            sampling = dc_replace(base, seed=args.seed + 100_003 * attempt + b)
            for i, o in zip(batch, backend.generate_batch([texts[i] for i in batch], sampling, rows=batch),
                            strict=True):
                out[i] = o["text"]
        return out

    def judge(rec, text: str) -> str:
        return rule(text, rec.document, rec.task, rec.instruction).label

    return generate, judge


def inspect_main(rest: list[str]) -> int:
    """``data inspect PATH``."""
    from xtask_safety.config import parse_recipe
    from xtask_safety.data.inspect import inspect_path

    (args,) = parse_recipe((InspectArguments,), rest, prog="xtask-safety data inspect", positional="path")
    if not args.path:
        raise ConfigError("data inspect: expected a PATH (record file, paper-format file or build directory)")
    path = args.path
    tok = None
    if args.tokenizer:
        from xtask_safety.models import load_tokenizer, offline_defaults, resolve_model_path

        offline_defaults()
        tok = load_tokenizer(resolve_model_path(args.tokenizer))
    print(inspect_path(path, args.rows, args.show_text, tok))
    return 0


def import_main(rest: list[str]) -> int:
    return _convert("import", rest)


def export_main(rest: list[str]) -> int:
    return _convert("export", rest)


def set_main(rest: list[str]) -> int:
    """``data set --corpus demo --output train.jsonl``: one defense set from corpus files."""
    return _from_corpus("set", rest)


def grid_main(rest: list[str]) -> int:
    """``data grid --corpus demo --split heldout --output grid.jsonl``."""
    return _from_corpus("grid", rest)


def _convert(action: str, rest: list[str]) -> int:
    from xtask_safety.config import parse_recipe
    from xtask_safety.data import formats
    from xtask_safety.records import read_records, write_jsonl

    (args,) = parse_recipe((ConvertArguments,), rest, prog=f"xtask-safety data {action}")
    if action == "import" and args.paper_dir:
        return _import_paper_dir(args)
    formats_ok = ("paper_eval", "saferpaca") + (("paper_dir",) if action == "export" else ())
    if not args.input or not args.output or args.format not in formats_ok:
        raise ConfigError(f"data {action}: --input, --output and --format ({' | '.join(formats_ok)}) are required"
                          + (", or --paper_dir DIR and --output" if action == "import" else ""))
    if action == "import":
        if args.format == "paper_eval":
            rows = formats.read_paper_eval_file(args.input, args.domain, unattributed=args.unattributed)
            n = write_jsonl(args.output, rows)
        else:
            n = _import_saferpaca(args)
    elif args.format == "paper_dir":
        from xtask_safety.data.paper_release import export_eval_dir

        files = export_eval_dir(read_records(args.input), args.output)
        print(json.dumps({"output": args.output, "files": files}))
        return 0
    else:
        records = read_records(args.input)
        writer = formats.write_paper_eval_file if args.format == "paper_eval" else formats.write_saferpaca
        n = writer(args.output, records, sidecar=args.sidecar)
    print(json.dumps({"output": args.output, "records": n}))
    return 0


def manifest_path(output: str) -> Path:
    """``out/name.jsonl`` -> ``out/name.manifest.json``."""
    p = Path(output)
    return p.with_name(p.name.removesuffix(".jsonl") + ".manifest.json")


def _write_with_manifest(output: str, records: list, manifest: dict) -> None:
    """The records and their manifest, both or neither (temporary files renamed into place)."""
    from xtask_safety.records import atomic_write_files

    atomic_write_files({
        Path(output): "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records),
        manifest_path(output): json.dumps(manifest, ensure_ascii=False, indent=2) + "\n",
    })


def _import_paper_dir(args: ConvertArguments) -> int:
    from xtask_safety.data.paper_release import import_eval_dir

    if not args.output:
        raise ConfigError("data import --paper_dir: --output (a JSONL file) is required")
    if args.input:
        raise ConfigError("data import: give --input FILE or --paper_dir DIR, not both")
    result = import_eval_dir(args.paper_dir, args.pairing)
    _write_with_manifest(args.output, result.records, result.manifest)
    m = result.manifest
    print(json.dumps({"output": args.output, "manifest": str(manifest_path(args.output)), "records": m["rows"],
                      "files": len(m["files"]), "missing_files": m["missing_files"], "documents": m["documents"],
                      "exact_recovery": m["exact_recovery"], "pairing": {k: m["pairing"][k] for k in
                                                                         ("whitespace_only", "mismatches")}}))
    return 0


def _import_saferpaca(args: ConvertArguments) -> int:
    from xtask_safety.data.paper_release import import_saferpaca_release

    result = import_saferpaca_release(args.input)
    _write_with_manifest(args.output, result.records, result.manifest)
    for note in result.manifest.get("notes", []):
        logging.getLogger(__name__).warning(f"data import: {args.input}: {note}")
    return len(result.records)


def _from_corpus(action: str, rest: list[str]) -> int:
    from xtask_safety.config import parse_recipe
    from xtask_safety.data.builder import BuildConfig, build_defense_set, build_eval_grid, load_refusals
    from xtask_safety.data.corpus import split_corpus
    from xtask_safety.records import write_jsonl
    from xtask_safety.tasks import parse_task_list

    (args,) = parse_recipe((DataArguments,), rest, prog=f"xtask-safety data {action}")
    if not args.output:
        raise ConfigError(f"data {action}: --output is required")
    tasks = parse_task_list(args.tasks)
    docs = _load(args.corpus)
    train_docs, heldout = split_corpus(docs, args.heldout_per_domain, args.seed) if args.heldout_per_domain else (docs, [])
    if action == "set":
        cfg = BuildConfig(tasks=tasks, malicious_per_task=args.malicious_per_task,
                          benign_per_task=args.benign_per_task, phrasings=args.phrasings, layout=args.layout,
                          lead_in=args.lead_in, target_max_words=args.target_max_words, seed=args.seed)
        rows = build_defense_set(train_docs, cfg, load_refusals(args.refusals))
    else:
        chosen = {"train": train_docs, "heldout": heldout, "all": docs}.get(args.split)
        phrasing = args.phrasings if args.phrasings in ("paper", "heldout") else "paper"
        rows = build_eval_grid(chosen, tasks, phrasing=phrasing, layout=args.layout, seed=args.seed)
    n = write_jsonl(args.output, rows)
    print(json.dumps({"output": args.output, "records": n}))
    return 0
