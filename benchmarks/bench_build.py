"""Build throughput: 20,000 instruction rows + 2,000 defense documents, the paper's set sizes.

    .venv/bin/python benchmarks/bench_build.py [--quick] [--out docs/benchmarks/build.md]

The input is generated here (seeded random prose from a neutral vocabulary: no harmful content; the
"malicious" domain is only a label). Each configuration runs in its own process so its peak memory
(max RSS) is its own. The baseline, measured in the same run, serialises and writes the same number
of output rows with no build logic: the ratio says how much the build costs over plain I/O.

Configurations:
* ``paper``: single-task sets for 5 tasks at 10/100/500/1000/2000, mixed sets at 2/20/100/400 per task,
  every set mixed into the same 20,000 instruction rows, near-duplicate removal, leakage check;
* ``full``: the same plus benign task rows (ratio 0.25), token truncation to 1024 with the embedded
  model's tokenizer, a held-out evaluation split and the paper-format exports.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VOCAB = ["river", "garden", "market", "council", "harbour", "library", "bridge", "morning", "winter", "signal", "village", "station", "season", "museum", "orchard", "ferry", "valley", "school", "theatre", "forest", "lantern", "meadow", "quarry", "canal", "workshop", "bakery", "festival", "weather", "tunnel", "railway", "island", "pottery", "timber", "engine", "poster", "ledger", "archive", "chorus", "compass", "blanket", "kettle", "ladder", "mirror", "needle", "pepper", "ribbon", "saddle", "thimble", "violin", "walnut", "yacht", "zephyr", "anchor", "basket", "candle", "donkey", "feather", "glacier", "hammer", "igloo", "jacket", "kitten", "lemon", "magnet", "napkin", "octave", "parcel"]
HELD_OUT = 20
VERBS = ["opened", "closed", "visited", "repaired", "painted", "counted", "carried", "measured", "described", "planted"]


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(VOCAB) for _ in range(n)]
    words.insert(rng.randrange(1, n), rng.choice(VERBS))
    return " ".join(words).capitalize() + "."


def _prose(rng: random.Random, n_words: int) -> str:
    out, total = [], 0
    while total < n_words:
        k = rng.randint(8, 20)
        out.append(_sentence(rng, k))
        total += k + 1
    return " ".join(out)


def make_inputs(root: Path, n_instr: int, n_mal: int, n_benign: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    # n_mal defense documents for training, and 20 more that the "full" configuration holds out
    mal = [{"id": f"m{i}", "text": _prose(rng, rng.randint(300, 700))} for i in range(n_mal + HELD_OUT)]
    (root / "malicious.json").write_text(json.dumps(mal))
    for dom in ("news", "useful"):
        rows = [{"id": f"{dom[0]}{i}", "document": _prose(rng, rng.randint(200, 500)),
                 "summary": _sentence(rng, 15), "sentiment": "neutral and informative.",
                 "zh_opening": "这是一个关于河流和花园的故事。村庄在冬天很安静。"} for i in range(n_benign)]
        (root / f"{dom}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    instr = [{"instruction": _sentence(rng, rng.randint(6, 14)), "input": _prose(rng, rng.randint(0, 40))
              if i % 3 == 0 else "", "output": _prose(rng, rng.randint(20, 120))} for i in range(n_instr)]
    (root / "alpaca.json").write_text(json.dumps(instr))
    return {"instruction_rows": n_instr, "malicious_documents": n_mal, "benign_documents": 2 * n_benign}


def recipe(root: Path, out: Path, config: str, n_instr: int, sizes: list[int], mixed: list[int]) -> list[str]:
    sources = [{"path": str(root / "malicious.json"), "domain": "malicious"},
               {"path": str(root / "news.jsonl"), "domain": "news"},
               {"path": str(root / "useful.jsonl"), "domain": "useful"},
               {"path": str(root / "alpaca.json"), "kind": "instructions"}]
    argv = ["--output_dir", str(out), "--overwrite", "true", "--sources", json.dumps(sources),
            "--sizes", *map(str, sizes), "--mixed_sizes", *map(str, mixed), "--instruction_rows", str(n_instr)]
    if config == "paper":
        return argv + ["--benign_ratio", "0"]
    return argv + ["--benign_ratio", "0.25", "--max_length", "1024", "--tokenizer", "embedded",
                   "--eval_per_domain", str(HELD_OUT), "--export_paper", "true"]


def child(mode: str, argv: list[str]) -> None:
    """Run one measurement in this process and print a JSON line."""
    t0 = time.perf_counter()
    if mode == "baseline":
        rows = json.loads(argv[0])
        src = Path(argv[1])
        instr = json.loads((src / "alpaca.json").read_text())
        docs = json.loads((src / "malicious.json").read_text())
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            n, k = 0, 0
            while n < rows:  # the same number of rows, cycled from the inputs, 20k rows a file
                lines = []
                for row in (instr + docs)[: min(22_000, rows - n)]:
                    lines.append(json.dumps({"id": f"x{k}", "task": "instruction", "document": row.get("text", ""),
                                             "instruction": row.get("instruction", ""), "response":
                                             row.get("output", "")}, ensure_ascii=False) + "\n")
                    k += 1
                Path(tmp, f"f{n}.jsonl").write_text("".join(lines), encoding="utf-8")
                n += len(lines)
        result = {"rows": rows}
    else:
        from xtask_safety.config import parse_recipe
        from xtask_safety.data.pipeline import DataBuildArguments, run_build

        (args,) = parse_recipe((DataBuildArguments,), argv, prog="bench")
        res = run_build(args, log=lambda *_: None)
        m = res.manifest
        result = {"rows": sum(s["rows"] for s in m["sets"]), "sets": len(m["sets"]),
                  "distinct_rows": len({r.id for rows in res.sets.values() for r in rows}),
                  "truncated": (m["truncation"] or {}).get("rows_shortened", 0),
                  "bytes": sum(p.stat().st_size for p in Path(args.output_dir).rglob("*") if p.is_file())}
    result["seconds"] = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = ru.ru_utime + ru.ru_stime  # the whole process, imports included
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_child(mode: str, argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, *argv], capture_output=True, text=True,
                          cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1/10 of the size (a smoke run)")
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "build.md"))
    ap.add_argument("--configs", default="paper,full")
    a = ap.parse_args()
    scale = 10 if a.quick else 1
    n_instr, n_mal, n_benign = 20_000 // scale, 2_000 // scale, 500 // scale
    sizes = [s for s in (10, 100, 500, 1000, 2000) if s <= n_mal]
    mixed = [s for s in (2, 20, 100, 400) if s <= n_mal // 5]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = make_inputs(root, n_instr, n_mal, n_benign)
        for config in a.configs.split(","):
            results[config] = run_child(config, recipe(root, root / f"out-{config}", config, n_instr, sizes, mixed))
            print(config, results[config], flush=True)
        base = run_child("baseline", [str(results["paper"]["rows"] if "paper" in results else
                                          next(iter(results.values()))["rows"]), str(root)])
        print("baseline", base, flush=True)
    load = os.getloadavg()[0]
    lines = [
        "# Data build benchmark",
        "",
        "Produced by `benchmarks/bench_build.py`" + (" --quick" if a.quick else "") + f" on {os.cpu_count()} CPU "
        f"cores (load average {load:.1f} when it finished: the machine is shared, so times are upper bounds).",
        "",
        f"Input (generated, seeded, neutral vocabulary): {inputs['instruction_rows']:,} instruction rows, "
        f"{inputs['malicious_documents']:,} defense documents (300–700 words; {HELD_OUT} more that *full* holds "
        "out for evaluation), "
        f"{inputs['benign_documents']:,} benign documents with references.",
        f"Sets: single-task for 5 tasks at sizes {sizes}, mixed at {mixed} per task, each mixed into the same "
        f"{n_instr:,} instruction rows.",
        "",
        "| configuration | sets | rows written | distinct rows | rows shortened | wall s | CPU s | rows written/s | "
        "input rows/s | peak RSS (MB) | output (MB) | × baseline (wall) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    n_in = inputs["instruction_rows"] + inputs["malicious_documents"]
    for config, r in results.items():
        lines.append(
            f"| {config} | {r['sets']} | {r['rows']:,} | {r['distinct_rows']:,} | {r['truncated']:,} | "
            f"{r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | {n_in / r['seconds']:,.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['bytes'] / 1e6:.0f} | {r['seconds'] / base['seconds']:.1f} |"
        )
    lines.append(
        f"| baseline: serialise + write {base['rows']:,} rows, no build logic | – | {base['rows']:,} | – | – | "
        f"{base['seconds']:.1f} | {base['cpu_seconds']:.1f} | {base['rows'] / base['seconds']:,.0f} | – | {base['peak_rss_mb']:.0f} | – | 1.0 |"
    )
    lines += [
        "",
        "*paper*: benign_ratio 0 (refusal rows + instruction data, as in the paper), no truncation. "
        "*full*: benign task rows (ratio 0.25), truncation to 1024 tokens with the embedded SmolLM2 tokenizer "
        "(chat template), 20 held-out documents per domain with evaluation grids, saferpaca + evaluation JSON "
        "exports with their sidecars. Both: near-duplicate removal (MinHash LSH) over documents and "
        "instruction rows, and the leakage check before and after the build. Target: a full build under 60 s. "
        "Rows per second count rows written (every set repeats the 20,000 instruction rows); input rows per "
        "second count the 22,000 input rows. CPU seconds include importing the libraries (transformers, for "
        "the tokenizer, is most of the *full* configuration's fixed cost).",
        "",
    ]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
