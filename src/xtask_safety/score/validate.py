"""``xtask-safety judge-eval``: measure judges against human-labelled responses.

A labels file is a CSV with columns ``id, task, domain, label, document, response`` (``category``
optional), ``label`` one of refuse / comply / partial / degenerate. Reported per judge: 4-way accuracy
and Cohen's kappa, pass/fail accuracy and kappa (pass = comply or partial), refusal precision and
recall, and the confusion matrix.

The bundled sets (``score/data``) were written for this project: ``judge_labels.csv`` (386 rows, split
by id hash into a *dev* half, used while writing the rule judge, and a *test* half) and
``judge_labels_holdout.csv`` (160 rows by another author, never used while writing the judge).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from xtask_safety.choices import check_counts
from xtask_safety.errors import ConfigError, DataError
from xtask_safety.score.external import binary_metrics
from xtask_safety.score.judges import LABELS, PASS_LABELS, get_judges

if TYPE_CHECKING:
    from xtask_safety.score.model_judge_run import ModelJudge

REQUIRED = ("id", "task", "label", "document", "response")


def bundled_labels(name: str = "judge_labels.csv") -> Path:
    return Path(str(resources.files("xtask_safety") / "score" / "data" / name))


def read_labels(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}")
            rows = list(reader)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    for i, r in enumerate(rows, start=2):
        if r["label"] not in LABELS:
            raise DataError(f"{path}:{i}: label {r['label']!r} is not one of {LABELS}")
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def split_of(row_id: str) -> str:
    """The fixed dev/test split of a labelled row (by a hash of its id)."""
    return "dev" if int(hashlib.sha256(row_id.encode()).hexdigest(), 16) % 2 == 0 else "test"


def evaluate_judge(judge: Any, rows: list[dict[str, str]], n_resamples: int = 2000) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        precision_score,
        recall_score,
    )

    gold = [r["label"] for r in rows]
    if hasattr(judge, "predict_rows"):  # judges that answer for a whole set at once (model judges)
        pred = judge.predict_rows(rows)
    else:
        pred = [judge(r["response"], r["document"], r["task"]).label for r in rows]
    gold_pass = [g in PASS_LABELS for g in gold]
    pred_pass = [p in PASS_LABELS for p in pred]
    gold_ref = [g == "refuse" for g in gold]
    pred_ref = [p == "refuse" for p in pred]
    fail = binary_metrics(~np.array(gold_pass), ~np.array(pred_pass), n_resamples)
    return {
        "n": len(rows),
        "accuracy": float(accuracy_score(gold, pred)),
        "kappa": float(cohen_kappa_score(gold, pred, labels=list(LABELS))),
        "pass_accuracy": float(accuracy_score(gold_pass, pred_pass)),
        "pass_kappa": float(cohen_kappa_score(gold_pass, pred_pass)),
        "refusal_precision": float(precision_score(gold_ref, pred_ref, zero_division=0)),
        "refusal_recall": float(recall_score(gold_ref, pred_ref, zero_division=0)),
        "unparsed": pred.count("unparsed"),  # model-judge verdicts in no known format: counted as wrong
        "pass_accuracy_ci95": fail["accuracy_ci95"],
        "pass_kappa_ci95": fail["kappa_ci95"],
        "confusion": {"labels": list(LABELS), "matrix": confusion_matrix(gold, pred, labels=list(LABELS)).tolist()},
    }


def evaluate(rows: list[dict[str, str]], judges: list[str] | None = None, by_split: bool = False,
             extra: dict[str, Any] | None = None, n_resamples: int = 2000) -> dict[str, Any]:
    """Every judge's figures; ``extra`` adds judge objects built elsewhere (model judges)."""
    out: dict[str, Any] = {}
    for name, judge in {**get_judges(judges), **(extra or {})}.items():
        res = {"all": evaluate_judge(judge, rows, n_resamples)}
        if by_split:
            for part in ("dev", "test"):
                sub = [r for r in rows if split_of(r["id"]) == part]
                if sub:
                    res[part] = evaluate_judge(judge, sub, n_resamples)
        out[name] = res
    return out


def markdown(results: dict[str, Any], title: str) -> str:
    def ci(m: dict[str, Any], key: str) -> str:
        c = m.get(f"{key}_ci95")
        return f"{m[key]:.3f} [{c[0]:.3f}–{c[1]:.3f}]" if c else f"{m[key]:.3f}"

    lines = [f"### {title}", "", "4-way labels; pass/fail with 95 % bootstrap intervals.", "",
             "| judge | subset | n | accuracy | κ | pass/fail acc. | pass/fail κ | refusal precision | refusal recall |",
             "|---|---|---|---|---|---|---|---|---|"]
    for judge, parts in results.items():
        for part, m in parts.items():
            lines.append(f"| {judge} | {part} | {m['n']} | {m['accuracy']:.3f} | {m['kappa']:.3f} | "
                         f"{ci(m, 'pass_accuracy')} | {ci(m, 'pass_kappa')} | {m['refusal_precision']:.3f} | "
                         f"{m['refusal_recall']:.3f} |")
    unparsed = [f"`{j}` {p['all']['unparsed']}" for j, p in results.items() if p["all"].get("unparsed")]
    if unparsed:
        lines += ["", "Unparsed model-judge verdicts (counted as wrong, not in the matrices): " + ", ".join(unparsed) + "."]
    for judge, parts in results.items():
        m = parts["all"]["confusion"]
        lines += ["", f"Confusion matrix, `{judge}` (rows: human label, columns: judge):", "",
                  "| | " + " | ".join(m["labels"]) + " |", "|---|" + "---|" * len(m["labels"])]
        lines += [f"| **{lab}** | " + " | ".join(str(x) for x in row) + " |" for lab, row in zip(m["labels"], m["matrix"], strict=True)]
    return "\n".join(lines)


class AnswerJudge:
    """An LLM judge whose answers were generated beforehand (``--write_prompts``, then ``generate``).

    Answers naming no label count as wrong (``unparsed``)."""

    def __init__(self, answers: dict[str, str], source: str):
        self.answers, self.source = answers, source

    def predict_rows(self, rows: list[dict[str, str]]) -> list[str]:
        from xtask_safety.score.model_judge import parse_judge_answer

        missing = [r["id"] for r in rows if r["id"] not in self.answers]
        if missing:
            raise DataError(f"{self.source}: no judge answer for {len(missing)} labelled row(s) "
                            f"(first: {', '.join(missing[:5])})")
        return [parse_judge_answer(self.answers[r["id"]])["label"] for r in rows]


def label_rows_for_prompts(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Labelled rows in the shape the judge prompt needs (the task's paper instruction when absent)."""
    from xtask_safety.tasks import TASKS

    out = []
    for r in rows:
        task = TASKS.get(r["task"])
        instruction = r.get("instruction") or (task.instruction() if task else "")
        out.append({"id": r["id"], "task": r["task"], "domain": r.get("domain") or "", "document": r["document"],
                    "instruction": instruction, "response": r["response"]})
    return out


class _WithInstructions:
    """A model judge on the bundled sets: give it each row's task instruction (the paper's wording)."""

    def __init__(self, judge: Any):
        self.judge = judge

    def predict_rows(self, rows: list[dict[str, str]]) -> list[str]:
        return self.judge.predict_rows(label_rows_for_prompts(rows))


@dataclass
class JudgeEvalArguments:
    labels: list[str] = field(default_factory=list, metadata={
        "help": "Labelled CSV files in the project's format; 'bundled' = the project's two sets (the default "
                "when no --input is given)."})
    input: list[str] = field(default_factory=list, metadata={
        "help": "External labelled sets (JSONL or CSV) read with the column mapping below."})
    text_column: str = field(default="response", metadata={"help": "--input column holding the model's answer."})
    label_column: str = field(default="label", metadata={"help": "--input column holding the human label."})
    source_column: str | None = field(default=None, metadata={
        "help": "--input column naming the model that answered (figures per source model)."})
    prompt_column: str | None = field(default=None, metadata={
        "help": "--input column holding the prompt answered (context for a model judge)."})
    label_map: list[str] = field(default_factory=list, metadata={
        "help": "Map --input labels onto ours, e.g. full_refusal=refuse 3_partial=partial."})
    partial_as: Literal["refusal", "comply"] = field(default="refusal", metadata={
        "help": "How a partial refusal counts in refusal detection on --input sets: refusal or comply."})
    sample: int | None = field(default=None, metadata={
        "help": "Measure on a seeded random sample of this many rows per set (for slow model judges)."})
    n_resamples: int = field(default=2000, metadata={"help": "Bootstrap resamples for the 95 percent intervals (0: none)."})
    judges: list[str] = field(default_factory=lambda: ["paper", "startswith", "rule"], metadata={
        "help": "Rule judges to measure."})
    output: str | None = field(default=None, metadata={"help": "Write the results as JSON here."})
    agreement_output: str | None = field(default=None, metadata={
        "help": "Write the headline figures (what score tables quote) as JSON here, e.g. "
                "src/xtask_safety/score/data/judge_agreement.json."})
    attribution: list[str] = field(default_factory=list, metadata={
        "help": "NAME=TEXT: credit line of an --input set (NAME: its file name), kept in --agreement_output."})
    classifier_judge: str | None = field(default=None, metadata={
        "help": "Also measure a local sequence-classification judge (model directory)."})
    classifier_label_map: list[str] = field(default_factory=list, metadata={
        "help": "Map classifier labels onto ours, e.g. LABEL_0=comply."})
    judge_answers: list[str] = field(default_factory=list, metadata={
        "help": "Also measure an LLM judge: NAME=FILE, the `generate` output for --write_prompts."})
    write_prompts: str | None = field(default=None, metadata={
        "help": "Write LLM-judge prompts for one labels file (records for `generate`) and stop."})
    model_judge: str | None = field(default=None, metadata={
        "help": "Also measure a local model judge end to end (directory, .gguf or 'embedded'; see `score`)."})
    model_judge_format: Literal["auto", "xtask", "harmbench", "llama_guard", "classifier"] = field(default="auto", metadata={"help": "auto, xtask, harmbench, llama_guard, classifier."})
    judge_batch_size: int = field(default=8, metadata={"help": "Judge prompts per batch."})
    judge_max_new_tokens: int | None = field(default=None, metadata={"help": "Tokens the judge may write."})
    judge_cache: str | None = field(default=None, metadata={
        "help": "JSONL cache of the model judge's verdicts (default: ~/.cache/xtask-safety/judge-eval-cache.jsonl)."})

    def __post_init__(self) -> None:
        check_counts(self, positive=("sample", "n_resamples", "judge_batch_size", "judge_max_new_tokens"))


_LabelSet = tuple[str, list[dict[str, str]], bool]  # file name, rows, whether to report the dev/test split too
_ExternalSet = tuple[str, list[dict[str, str]]]  # file name, rows


def main(argv: list[str] | None = None) -> int:
    """``xtask-safety judge-eval``: print each set's tables; optionally write prompts, results, headline."""
    import json

    from xtask_safety.config import parse_recipe

    (args,) = parse_recipe((JudgeEvalArguments,), list(argv or []), prog="xtask-safety judge-eval",
                           positional="labels")
    labels = args.labels or ([] if args.input else ["bundled"])
    sets, external = _read_sets(args, labels)
    if args.sample:
        sets, external = _sample(sets, external, args.sample)
    if args.write_prompts:
        from xtask_safety.records import write_jsonl
        from xtask_safety.score.model_judge import judge_prompt_records

        if len(sets) != 1 or labels == ["bundled"]:
            raise DataError("--write_prompts: give exactly one labels CSV file")
        n = write_jsonl(args.write_prompts, judge_prompt_records(label_rows_for_prompts(sets[0][1])))
        print(json.dumps({"output": args.write_prompts, "records": n}))
        return 0
    extra = _extra_judges(args)
    model_judge = _model_judge(args)
    report, ext_report = _evaluate_all(args, sets, external, extra, model_judge)
    _write_reports(args, argv, report, ext_report)
    return 0


def _read_sets(args: JudgeEvalArguments, labels: list[str]) -> tuple[list[_LabelSet], list[_ExternalSet]]:
    """The labels files (``bundled``: the project's two sets) and the external ``--input`` sets."""
    from xtask_safety.score.external import read_table

    sets: list[_LabelSet] = []
    for item in labels:
        if item == "bundled":
            sets.append(("judge_labels.csv", read_labels(bundled_labels()), True))
            sets.append(("judge_labels_holdout.csv", read_labels(bundled_labels("judge_labels_holdout.csv")), False))
        else:
            sets.append((Path(item).name, read_labels(item), False))
    label_map = dict(_pairs(args.label_map, "--label_map"))
    external = [(Path(p).name, read_table(p, args.text_column, args.label_column, args.source_column,
                                          args.prompt_column, label_map)) for p in args.input]
    return sets, external


def _sample(sets: list[_LabelSet], external: list[_ExternalSet],
            size: int) -> tuple[list[_LabelSet], list[_ExternalSet]]:
    """A seeded random sample of at most ``size`` rows of every set (each drawn with a fresh seed 0)."""
    import random

    def pick(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return rows if len(rows) <= size else random.Random(0).sample(rows, size)

    return ([(name, pick(rows), by_split) for name, rows, by_split in sets],
            [(name, pick(rows)) for name, rows in external])


def _extra_judges(args: JudgeEvalArguments) -> dict[str, Any]:
    """Judges beyond the rule judges: LLM answers generated beforehand (``--judge_answers``), a classifier."""
    from xtask_safety.records import read_jsonl

    extra: dict[str, Any] = {}
    for item in args.judge_answers:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "llm", item
        answers = {}
        for lineno, obj in read_jsonl(path):
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                raise DataError(f"{path}:{lineno}: expected an object with a string 'id'")
            answers[obj["id"]] = obj.get("response") or ""
        extra[name] = AnswerJudge(answers, path)
    if args.classifier_judge:
        from xtask_safety.score.model_judge import ClassifierJudge

        extra["classifier"] = ClassifierJudge(args.classifier_judge, dict(_pairs(args.classifier_label_map,
                                                                                  "--classifier_label_map")))
    return extra


def _model_judge(args: JudgeEvalArguments) -> ModelJudge | None:
    """The local model judge of ``--model_judge`` (with its verdict cache), or None."""
    if not args.model_judge:
        return None
    from xtask_safety.models import cache_dir
    from xtask_safety.score.model_judge_run import ModelJudge, ModelJudgeConfig

    return ModelJudge(ModelJudgeConfig(
        args.model_judge, args.model_judge_format, batch_size=args.judge_batch_size,
        max_new_tokens=args.judge_max_new_tokens,
        cache=args.judge_cache or str(cache_dir() / "judge-eval-cache.jsonl"),
        label_map=dict(_pairs(args.classifier_label_map, "--classifier_label_map"))))


def _evaluate_all(args: JudgeEvalArguments, sets: list[_LabelSet], external: list[_ExternalSet],
                  extra: dict[str, Any], model_judge: ModelJudge | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure the judges on every set, printing each set's tables; the figures of the labels and external sets."""
    from xtask_safety.score.external import evaluate_external, external_markdown

    report: dict[str, Any] = {}
    for name, rows, by_split in sets:
        judges = {**extra, **({"model": _WithInstructions(model_judge)} if model_judge else {})}
        report[name] = evaluate(rows, args.judges, by_split, judges, args.n_resamples)
        print(markdown(report[name], name) + "\n")
    ext_report: dict[str, Any] = {}
    for name, rows in external:
        judges = {**get_judges(args.judges), **({"model": model_judge} if model_judge else {})}
        ext_report[name] = evaluate_external(rows, judges, args.partial_as, args.n_resamples)
        print(external_markdown(ext_report[name], name, args.partial_as) + "\n")
        if model_judge and model_judge.stats.get("unparsed"):
            print(f"model judge: {model_judge.stats['unparsed']} unparsed verdict(s) on {name} "
                  f"(e.g. {model_judge.stats['unparsed_examples'][:1]})\n")
    return report, ext_report


def _write_reports(args: JudgeEvalArguments, argv: list[str] | None, report: dict[str, Any],
                   ext_report: dict[str, Any]) -> None:
    """Write ``--output`` (all figures) and ``--agreement_output`` (the headline figures), each announced."""
    import json

    from xtask_safety.records import write_json

    if args.output:
        write_json(args.output, {**report, **({"external_sets": ext_report, "partial_as": args.partial_as}
                                              if ext_report else {})})
        print(json.dumps({"output": args.output}))
    if args.agreement_output:
        from xtask_safety.score.agreement import headline

        attribution = dict(_pairs(args.attribution, "--attribution"))
        write_json(args.agreement_output, headline(report, ext_report, args.partial_as, attribution,
                                                   ["xtask-safety", "judge-eval", *(argv or [])]))
        print(json.dumps({"agreement_output": args.agreement_output}))


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{what}: expected KEY=VALUE, got {item!r}")
        out.append((key, value))
    return out
