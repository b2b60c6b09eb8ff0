"""Refusal-judge throughput: answers judged per second on one core.

    .venv/bin/python benchmarks/bench_judge.py [--external FILE --text_column COL] [--repeat 5] \\
        [--out docs/benchmarks/judge.md]

The process is pinned to one CPU core. Inputs: the project's labelled answers (546 document-task
answers with their documents: the echo check reads the document too) and, when given, an external
JSONL/CSV of chat-model answers (longer, no documents; read from its path, never copied). Rates are
answers per CPU second of this process (less sensitive to the shared machine's load than wall time) and
per wall second; the paper's 13-string matcher and the starts-with matcher, timed in the same run,
are the baselines. Target: the rule judge >= 5,000 answers/s on one core.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from xtask_safety.score.external import read_table  # noqa: E402
from xtask_safety.score.judges import get_judges  # noqa: E402
from xtask_safety.score.validate import bundled_labels, read_labels  # noqa: E402


def time_judge(judge, rows: list[tuple[str, str, str]], repeat: int) -> tuple[float, float]:
    """Best of ``repeat`` passes: (answers per CPU second, answers per wall second)."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        for response, document, task in rows:
            judge(response, document, task)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return len(rows) / best_cpu, len(rows) / best_wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--external", help="JSONL/CSV of chat-model answers (e.g. ../shared/judge-dev/xstest_v2_dev.jsonl)")
    ap.add_argument("--text_column", default="completion")
    ap.add_argument("--label_column", default="human_label")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "judge.md"))
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    sets: dict[str, list[tuple[str, str, str]]] = {}
    own = read_labels(bundled_labels()) + read_labels(bundled_labels("judge_labels_holdout.csv"))
    sets["project's labelled answers (with documents)"] = [(r["response"], r["document"], r["task"]) for r in own]
    if args.external:
        ext = read_table(args.external, args.text_column, args.label_column)
        sets[f"{Path(args.external).name} (chat-model answers, no documents)"] = [(r["response"], "", "") for r in ext]

    judges = get_judges(["rule", "startswith", "paper"])
    results = []
    for set_name, rows in sets.items():
        chars = sum(len(r[0]) for r in rows) / len(rows)
        for name, judge in judges.items():
            cpu, wall = time_judge(judge, rows, args.repeat)
            results.append((set_name, len(rows), chars, name, cpu, wall))
            print(f"{set_name}: {name} {cpu:,.0f} answers/CPU-s, {wall:,.0f} answers/s wall", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    lines = ["# Refusal judge throughput", "",
             f"Produced by `{' '.join(['benchmarks/bench_judge.py', *sys.argv[1:]])}` "
             f"on one pinned core of a {os.cpu_count()}-core {platform.machine()} machine shared with other jobs "
             f"(load average {load:.1f} when it finished), Python {platform.python_version()}; best of {args.repeat} "
             "passes.", "",
             "| answers | n | mean characters | judge | answers / CPU second | answers / wall second |",
             "|---|---|---|---|---|---|"]
    for set_name, n, chars, name, cpu, wall in results:
        lines.append(f"| {set_name} | {n} | {chars:.0f} | {name} | {cpu:,.0f} | {wall:,.0f} |")
    rule = {s: cpu for s, _, _, name, cpu, _ in results if name == "rule"}
    lines += ["", "Target: the `rule` judge at ≥ 5,000 answers per second on one core. "
              + "; ".join(f"{s}: {'met' if v >= 5000 else 'NOT met'} ({v:,.0f}/s)" for s, v in rule.items()) + ".",
              "", "CPU seconds are the process's own; wall seconds include time lost to other jobs. CPU time is "
              "not immune to a busy machine either (shared caches): runs of this script under load averages of "
              "8-12 gave 30-40 % lower CPU-second rates, so the load is printed with every run. The `rule` judge reads the opening window for refusal styles, scans only "
              "sentences holding a decline keyword, and runs its degenerate checks (loops, gibberish, echo of the "
              "document); the matchers are substring checks."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
