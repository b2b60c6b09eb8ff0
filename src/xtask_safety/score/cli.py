"""``xtask-safety score``: judge generated answers, write per-record JSONL and summary tables.

    xtask-safety score --input gen.jsonl --output_dir out [--baseline base_gen.jsonl]
        [--judge_answers judge_answers.jsonl] [--classifier_judge DIR]
    xtask-safety judge-prompts --input gen.jsonl --output judge_prompts.jsonl   # for an LLM judge

Writes ``scored.jsonl`` (every judge's verdict and the utility metrics per record), ``summary.json``
and ``summary.md`` (pass rates with Wilson intervals, utility beside them, judge agreement and, with
``--baseline``, exact McNemar tests paired by id).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from xtask_safety.choices import check_counts
from xtask_safety.errors import ConfigError


@dataclass
class ScoreArguments:
    input: str = field(default="", metadata={"help": "Generated answers (JSONL from `generate`)."})
    output_dir: str = field(default="", metadata={"help": "Writes scored.jsonl, summary.json, summary.md."})
    judges: list[str] = field(default_factory=lambda: ["paper", "rule"], metadata={"help": "Rule judges to run."})
    primary_judge: str = field(default="rule", metadata={"help": "Judge used for the main tables and McNemar."})
    baseline: str | None = field(default=None, metadata={
        "help": "Another run on the same records (generated or scored JSONL): paired McNemar per cell."})
    judge_answers: list[str] = field(default_factory=list, metadata={
        "help": "LLM-judge answers (a `generate` output for `judge-prompts`), as FILE or NAME=FILE (name: llm)."})
    classifier_judge: str | None = field(default=None, metadata={
        "help": "A local sequence-classification model used as a judge (labels: refuse/comply/partial/degenerate)."})
    classifier_label_map: list[str] = field(default_factory=list, metadata={
        "help": "Map classifier labels onto ours, e.g. LABEL_0=comply LABEL_1=refuse."})
    utility: bool = field(default=True, metadata={"help": "Compute per-task utility metrics."})
    model_judge: str | None = field(default=None, metadata={
        "help": "Also judge every answer with a local model (directory, .gguf file or 'embedded'), in this command."})
    model_judge_format: Literal["auto", "xtask", "harmbench", "llama_guard", "classifier"] = field(default="auto", metadata={
        "help": "auto, xtask (our prompt, REFUSE/COMPLY/PARTIAL/DEGENERATE), harmbench (yes/no), llama_guard "
                "(safe/unsafe) or classifier (sequence classification, id2label). auto: classifier when the "
                "checkpoint has a classification head, else xtask."})
    model_judge_name: str = field(default="model", metadata={"help": "Name of the model judge in the outputs."})
    judge_backend: Literal["transformers", "vllm"] = field(default="transformers", metadata={"help": "transformers or vllm (vLLM's interpreter)."})
    judge_batch_size: int = field(default=8, metadata={"help": "Judge prompts per batch."})
    judge_max_new_tokens: int | None = field(default=None, metadata={
        "help": "Tokens the judge may write (default: the format's, e.g. 8 for xtask)."})
    judge_cache: str | None = field(default=None, metadata={
        "help": "JSONL cache of judge verdicts (default: OUTPUT_DIR/model_judge_cache.jsonl); resumable, shareable."})

    def __post_init__(self) -> None:
        check_counts(self, positive=("judge_batch_size", "judge_max_new_tokens"))


@dataclass
class PromptArguments:
    input: str = field(default="", metadata={"help": "Generated answers (JSONL from `generate`)."})
    output: str = field(default="", metadata={"help": "Judge prompts as records, for `xtask-safety generate`."})
    max_document_chars: int = field(default=2000, metadata={"help": "Cut documents in the prompt to this length."})

    def __post_init__(self) -> None:
        check_counts(self, positive=("max_document_chars",))


def _read_rows(path: str) -> list[dict]:
    from xtask_safety.errors import DataError
    from xtask_safety.records import read_jsonl
    from xtask_safety.tasks import check_task_name

    rows = []
    for lineno, obj in read_jsonl(path):
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object")
        for key in ("id", "task", "domain"):
            if not isinstance(obj.get(key), str):
                raise DataError(f"{path}:{lineno}: missing or non-string key '{key}'")
        check_task_name(obj["task"], f"{path}:{lineno}")
        rows.append(obj)
    if not rows:
        raise DataError(f"{path}: no rows")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate ids (merge shard outputs with `xtask-safety merge`)")
    return rows


def _pairs(items: list[str], default: str, what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            name, value = default, item
        if not name or not value:
            raise ConfigError(f"{what}: expected NAME=VALUE or VALUE, got {item!r}")
        out.append((name, value))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    from xtask_safety.config import parse_recipe
    from xtask_safety.records import check_writable_dir

    (args,) = parse_recipe((ScoreArguments,), argv, prog="xtask-safety score")
    if not args.input or not args.output_dir:
        raise ConfigError("score: --input and --output_dir are required")
    answer_files = _pairs(args.judge_answers, "llm", "--judge_answers")
    model_names = [n for n, _ in answer_files] + (["classifier"] if args.classifier_judge else []) + (
        [args.model_judge_name] if args.model_judge else [])
    all_names = list(args.judges) + model_names
    if len(set(all_names)) != len(all_names):
        raise ConfigError(f"judges: names used twice in {all_names}")
    if args.primary_judge not in all_names:
        raise ConfigError(f"primary_judge: {args.primary_judge!r} is not among judges {all_names}")
    label_map = dict(_pairs(args.classifier_label_map, "", "--classifier_label_map"))
    rows = _read_rows(args.input)
    created = not Path(args.output_dir).exists()
    out = check_writable_dir(args.output_dir)
    try:
        return _score(args, rows, out, answer_files, label_map)
    except BaseException:
        if created:  # bad input found after the directory was made: leave nothing behind
            with contextlib.suppress(OSError):
                Path(out).rmdir()
        raise


def _score(args: ScoreArguments, rows: list[dict], out: Path, answer_files: list[tuple[str, str]],
           label_map: dict[str, str]) -> int:
    from xtask_safety import faults
    from xtask_safety.records import atomic_write_files
    from xtask_safety.score.markdown import summary_markdown
    from xtask_safety.score.metrics import paired_table
    from xtask_safety.score.model_judge import ClassifierJudge, verdicts_from_answers
    from xtask_safety.score.run import add_utility, judge_rows, summarize

    extra = {}
    for name, path in answer_files:
        extra[name] = verdicts_from_answers(rows, _read_rows(path), path)
    if args.classifier_judge:
        extra["classifier"] = ClassifierJudge(args.classifier_judge, label_map).judge_many(rows)
    model_judge = None
    if args.model_judge:
        from xtask_safety.score.model_judge_run import ModelJudge, ModelJudgeConfig

        model_judge = ModelJudge(ModelJudgeConfig(
            args.model_judge, args.model_judge_format, args.judge_backend, args.judge_batch_size,
            args.judge_max_new_tokens, args.judge_cache or str(Path(out) / "model_judge_cache.jsonl"),
            label_map=label_map), name=args.model_judge_name)
        extra[args.model_judge_name] = model_judge.judge_many(rows)
    scored = judge_rows(rows, args.judges, extra=extra)
    if args.utility:
        scored = add_utility(scored)
    summary = summarize(scored, primary=args.primary_judge)
    if model_judge is not None:
        summary["model_judge"] = model_judge.stats
    paired = None
    if args.baseline:
        base = _read_rows(args.baseline)
        if not all(args.primary_judge in (r.get("judgements") or {}) for r in base):
            if args.primary_judge not in args.judges:
                raise ConfigError(f"--baseline: {args.baseline} has no {args.primary_judge!r} verdicts; score it "
                                  "with the same judges first")
            base = judge_rows(base, [args.primary_judge])
        paired = paired_table(base, scored, args.primary_judge)
        if paired["n_pairs"] == 0:
            raise ConfigError(f"--baseline: {args.baseline} shares no record ids with {args.input}")
        summary["paired"] = paired
        summary["baseline"] = args.baseline
    md = summary_markdown(summary, args.primary_judge, paired, args.baseline)
    faults.point("score.judged")
    # the three files change together: a full disk leaves the previous ones (or none) in place
    atomic_write_files({
        Path(out) / "scored.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scored),
        Path(out) / "summary.json": json.dumps(summary, ensure_ascii=False, indent=2) + "\n",
        Path(out) / "summary.md": md,
    }, after_each=lambda _: faults.point("score.write"))
    print(md)
    return 0


def prompts_main(argv: list[str]) -> int:
    from xtask_safety.config import parse_recipe
    from xtask_safety.records import write_jsonl
    from xtask_safety.score.model_judge import judge_prompt_records

    (args,) = parse_recipe((PromptArguments,), argv, prog="xtask-safety judge-prompts")
    if not args.input or not args.output:
        raise ConfigError("judge-prompts: --input and --output are required")
    recs = judge_prompt_records(_read_rows(args.input), max_document_chars=args.max_document_chars)
    n = write_jsonl(args.output, recs)
    print(json.dumps({"output": args.output, "records": n}))
    return 0
