"""``xtask-safety sweep --config recipes/sweeps/NAME.yaml``: run (or plan, or emit) a sweep.

    xtask-safety sweep --config recipes/sweeps/demo-smollm2.yaml               # local runner + report
    xtask-safety sweep --config recipes/sweeps/demo-smollm2.yaml --dry_run     # plan + accelerate commands
    xtask-safety sweep --config recipes/sweeps/paper-llama2.yaml --emit_slurm sweep.sbatch
    xtask-safety sweep --config recipes/sweeps/paper-llama2.yaml --cells 3 4  # only these cells

A rerun skips finished cells and stages and resumes interrupted ones (see ``xtask_safety.sweep``).
"""

from __future__ import annotations

import sys
from typing import Any

from xtask_safety.sweep.config import SweepArguments, plan_cells, select_cells
from xtask_safety.sweep.stages import SweepPlan, log, make_plan

RUN_ONLY_FLAGS = {"config", "emit_slurm", "dry_run", "cells", "report"}


def passthrough_flags(argv: list[str]) -> list[str]:
    """The command line's recipe overrides (``--key value ...``), without the flags of this invocation."""
    out: list[str] = []
    keep = False
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            keep = name not in RUN_ONLY_FLAGS
        if keep:
            out.append(arg)
    return out


def load_plan(argv: list[str] | None, prog: str = "xtask-safety sweep") -> tuple[SweepPlan, str | None]:
    from xtask_safety.config import parse_recipe

    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = parse_recipe((SweepArguments,), argv, prog=prog)
    config = argv[argv.index("--config") + 1] if "--config" in argv else None
    args.resolve_names(config)
    return make_plan(args, plan_cells(args)), config


def run_sweep(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse, then dry-run, emit a SLURM script, or run the selected cells and write the report."""
    from xtask_safety.models import offline_defaults
    from xtask_safety.sweep import runner, slurm

    offline_defaults()
    plan, config = load_plan(argv)
    args = plan.args
    cells = select_cells(plan.cells, args.cells)
    if args.report_to == "wandb":
        from xtask_safety.report.wandb_log import import_wandb

        import_wandb()  # fail before any work when wandb is missing
    if args.dry_run:
        print(slurm.plan_text(plan, {c.id: runner.status(plan, c) for c in plan.cells}))
        return {"plan": [c.id for c in plan.cells]}
    if args.emit_slurm:
        from pathlib import Path

        from xtask_safety.records import atomic_write_text

        (Path(args.output_dir) / "slurm").mkdir(parents=True, exist_ok=True)  # SLURM needs the log folder at start
        extra = passthrough_flags(list(sys.argv[1:] if argv is None else argv))
        atomic_write_text(args.emit_slurm, slurm.slurm_script(plan, config, cells, args.emit_slurm, extra))
        Path(args.emit_slurm).chmod(0o755)
        log(f"SLURM array script for {len(cells)} cells: {args.emit_slurm} (submit with sbatch)")
        return {"slurm": args.emit_slurm}
    outcome = runner.run_cells(plan, cells, progress=not args.quiet)
    log("this run: " + (", ".join(f"{k} {v}" for k, v in sorted(outcome.counters.items())) or "nothing to do")
        + f" ({outcome.seconds:.0f}s)")
    result: dict[str, Any] = {"outcome": outcome}
    if args.cells:
        return result  # one array task among many: the final, unrestricted run writes the results and report
    from xtask_safety.records import write_json

    results = runner.collect_results(plan)
    write_json(plan.dir.results, results)
    if outcome.missing:
        log(f"{len(outcome.missing)} cells are not finished; the report waits for them")
    elif args.report:
        result["report"] = write_sweep_report(plan)
    return result


def write_sweep_report(plan: SweepPlan) -> dict[str, Any]:
    from xtask_safety.report.cli import ReportArguments, write_report

    args = plan.args
    report_args = ReportArguments(output_dir=str(plan.dir.report), judge=args.primary_judge,
                                  transfer_size=args.transfer_size, show_text=args.show_text,
                                  report_to=args.report_to, wandb_project=args.wandb_project, wandb_group=args.name)
    return write_report([str(plan.dir.root)], report_args)


def main(argv: list[str] | None = None) -> int:
    run_sweep(argv)
    return 0
