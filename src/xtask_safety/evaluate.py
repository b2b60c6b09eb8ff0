"""``xtask-safety eval``: an evaluation suite end to end, in one command.

    xtask-safety eval --suite recipes/eval/paper_grid.yaml --paper_dir ~/src/<clone> \\
        --adapters d100=runs/adapters/d100 --output_dir runs/eval/paper

1. the suite's records (``data suite``; ``--paper_dir`` points its ``paper_dir`` parts at a clone of the
   paper's repository) are written to ``grid.jsonl``, with each import's manifest;
2. ``generate`` answers them with the base model and every adapter (resumable: a rerun continues
   where it stopped), one file per run in ``generations/``;
3. every run is scored with the paper's matcher and the project's judge (``score/run.py``), into
   ``scores/<run>/``;
4. the pass rates are printed as one table per run: tasks across, domains down (``paper_table.md``,
   ``results.json``).

This module calls the generate and score commands' own functions; it adds no stage of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xtask_safety.choices import check_counts
from xtask_safety.errors import ConfigError
from xtask_safety.tasks import TASK_NAMES

DOMAIN_ORDER = ("malicious", "news", "useful")
DEFAULTS = {"max_new_tokens": 64, "max_prompt_tokens": None, "on_too_long": "error"}


@dataclass
class EvalArguments:
    suite: str = field(default="recipes/eval/paper_grid.yaml", metadata={"help": "Evaluation suite (YAML)."})
    paper_dir: str | None = field(default=None, metadata={
        "help": "A clone of the paper's repository (or its data/evaluation folder) for the suite's paper_dir parts."})
    output_dir: str = field(default="", metadata={"help": "Writes grid.jsonl, generations/, scores/, paper_table.md."})
    model_name_or_path: str = field(default="embedded", metadata={"help": "Base model: HF id, path, .gguf, embedded."})
    adapters: list[str] = field(default_factory=list, metadata={"help": "LoRA adapters as NAME=DIR (one run each)."})
    include_base: bool = field(default=True, metadata={"help": "Also answer with the base model (run 'base')."})
    backend: Literal["transformers", "vllm"] = field(default="transformers", metadata={"help": "transformers (CPU/GPU) or vllm (GPU)."})
    batch_size: int = field(default=8, metadata={"help": "transformers: prompts per batch."})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "Tokens generated per answer (default: the suite's eval setting, else 64)."})
    max_prompt_tokens: int | None = field(default=None, metadata={
        "help": "Prompt budget in tokens (default: the suite's eval setting)."})
    on_too_long: Literal["error", "skip", "truncate"] | None = field(default=None, metadata={
        "help": "error | skip | truncate (default: the suite's eval setting, else error)."})
    limit: int | None = field(default=None, metadata={"help": "Only the first N documents per domain (all tasks)."})
    judges: list[str] = field(default_factory=lambda: ["paper", "rule"], metadata={
        "help": "Judges: paper (the reference code's 13 strings) and rule (ours)."})
    primary_judge: str = field(default="rule", metadata={"help": "Judge of the main table; the others in brackets."})
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})

    def __post_init__(self) -> None:
        check_counts(self, positive=("batch_size", "max_new_tokens", "max_prompt_tokens", "limit"))


def resolve_settings(args: EvalArguments, suite_settings: dict[str, Any]) -> dict[str, Any]:
    """Flags first, then the suite's ``eval:`` mapping, then the defaults."""
    out = {}
    for key, default in DEFAULTS.items():
        flag = getattr(args, key)
        out[key] = flag if flag is not None else suite_settings.get(key, default)
    return out


def run_specs(args: EvalArguments) -> list[str]:
    """Run names in order: base (unless --include_base false), then each adapter's name."""
    names = ["base"] if args.include_base or not args.adapters else []
    for item in args.adapters:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--adapters: expected NAME=DIR, got {item!r}")
        names.append(name.strip())
    if len(set(names)) != len(names):
        raise ConfigError(f"--adapters: run names used twice in {names}")
    return names


def pass_rate_table(summaries: dict[str, dict[str, Any]], primary: str, judges: list[str]) -> str:
    """One Markdown table per run: tasks across, domains down; cells ``primary % (other judges %)``."""
    others = [j for j in judges if j != primary]
    lines = []
    for run, summary in summaries.items():
        tables = summary["judges"]
        domains = [d for d in DOMAIN_ORDER if any(d in c for c in tables[primary]["cells"].values())]
        domains += sorted({d for c in tables[primary]["cells"].values() for d in c} - set(domains))
        tasks = [t for t in TASK_NAMES if t in tables[primary]["cells"]]
        head = f"pass rate, run {run!r}: {primary} judge" + (f" ({', '.join(others)} in brackets)" if others else "")
        lines += [head, "", "| domain | " + " | ".join(tasks) + " | n |", "|---|" + "---|" * (len(tasks) + 1)]
        for d in domains:
            cells, n = [], 0
            for t in tasks:
                cell = tables[primary]["cells"][t].get(d)
                if not cell or not cell.get("n"):
                    cells.append("–")
                    continue
                n = max(n, cell["n"])
                text = _pct(cell["rate"])
                if others:
                    text += " (" + ", ".join(_pct(tables[o]["cells"][t].get(d, {}).get("rate")) for o in others) + ")"
                cells.append(text)
            lines.append(f"| {d} | " + " | ".join(cells) + f" | {n} |")
        lines.append("")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.0f}%"


def _generate(args: EvalArguments, grid: Path, out: Path, settings: dict[str, Any]) -> None:
    from xtask_safety.generate.cli import main as generate_main

    argv = ["--input", str(grid), "--output", str(out / "generations" / "{name}.jsonl"),
            "--model_name_or_path", args.model_name_or_path, "--backend", args.backend,
            "--batch_size", str(args.batch_size), "--max_new_tokens", str(settings["max_new_tokens"]),
            "--on_too_long", settings["on_too_long"], "--quiet", str(args.quiet).lower()]
    if settings["max_prompt_tokens"] is not None:
        argv += ["--max_prompt_tokens", str(settings["max_prompt_tokens"])]
    if args.adapters:
        argv += ["--adapters", *args.adapters, "--include_base", str(args.include_base).lower()]
    generate_main(argv)


def _score(rows: list[dict[str, Any]], judges: list[str], primary: str, out: Path) -> dict[str, Any]:
    from xtask_safety.records import atomic_write_files
    from xtask_safety.score.markdown import summary_markdown
    from xtask_safety.score.run import add_utility, judge_rows, summarize

    scored = add_utility(judge_rows(rows, judges))
    summary = summarize(scored, primary=primary)
    atomic_write_files({
        out / "scored.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scored),
        out / "summary.json": json.dumps(summary, ensure_ascii=False, indent=2) + "\n",
        out / "summary.md": summary_markdown(summary, primary),
    })
    return summary


def main(argv: list[str] | None = None) -> int:
    from xtask_safety.config import parse_recipe
    from xtask_safety.data.suites import limit_documents, load_suite
    from xtask_safety.generate.run import ON_TOO_LONG
    from xtask_safety.models import check_adapter_dir
    from xtask_safety.records import (
        atomic_write_text,
        check_writable_dir,
        read_jsonl,
        write_json,
        write_jsonl,
    )
    from xtask_safety.sweep.stages import resolve_file

    (args,) = parse_recipe((EvalArguments,), list(argv or []), prog="xtask-safety eval")
    if not args.output_dir:
        raise ConfigError("eval: --output_dir is required")
    if args.primary_judge not in args.judges:
        raise ConfigError(f"primary_judge: {args.primary_judge!r} is not among judges {args.judges}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit: must be a positive number of documents, got {args.limit}")
    names = run_specs(args)
    for item in args.adapters:  # before anything is written
        check_adapter_dir(item.partition("=")[2].strip())
    suite = load_suite(resolve_file(args.suite, "--suite"), args.paper_dir)
    settings = resolve_settings(args, suite.settings)
    if settings["on_too_long"] not in ON_TOO_LONG:
        raise ConfigError(f"on_too_long: expected one of {ON_TOO_LONG}, got {settings['on_too_long']!r}")
    records = limit_documents(suite.records, args.limit) if args.limit else suite.records
    out = check_writable_dir(args.output_dir)
    grid = out / "grid.jsonl"
    write_jsonl(grid, records)
    for part, manifest in suite.manifests.items():
        write_json(out / f"import_manifest_{part}.json", manifest)
    _generate(args, grid, out, settings)
    summaries, runs = {}, {}
    for name in names:
        rows = [row for _, row in read_jsonl(out / "generations" / f"{name}.jsonl")]
        summaries[name] = _score(rows, args.judges, args.primary_judge, out / "scores" / name)
        runs[name] = {"records": len(rows),
                      "prompts_truncated": sum(bool((r.get("meta") or {}).get("truncated")) for r in rows),
                      "not_generated": summaries[name]["not_generated"]}
    table = pass_rate_table(summaries, args.primary_judge, args.judges)
    notes = [f"run {n!r}: {r['records']} records, {r['prompts_truncated']} with the document cut to fit the prompt "
             f"budget, {r['not_generated']} not generated" for n, r in runs.items()]
    atomic_write_text(out / "paper_table.md", table + "\n" + "\n".join(notes) + "\n")
    write_json(out / "results.json", {
        "suite": suite.name, "paper_dir": args.paper_dir, "model": args.model_name_or_path,
        "adapters": args.adapters, "settings": settings, "judges": args.judges, "runs": runs,
        "pass_rates": {n: {j: s["judges"][j]["cells"] for j in args.judges} for n, s in summaries.items()},
    })
    print(table)
    print("\n".join(notes))
    return 0
