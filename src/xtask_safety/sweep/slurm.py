"""``--dry_run`` (the plan and the ``accelerate launch`` command of every cell) and ``--emit_slurm``.

The SLURM script is a job array with one task per cell. Each task runs this same sweep restricted
to its cell (``xtask-safety sweep --config X --cells i --report false``): the shared data build is
made once under a file lock, every stage is cached, and a requeued or resubmitted task resumes
where it stopped. Submit the report after the array::

    sbatch --dependency=afterok:<array job id> --wrap "xtask-safety sweep --config X"
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from xtask_safety.sweep.config import Cell
from xtask_safety.sweep.stages import CELL_RECIPE, SweepPlan, launch_command


def train_command(plan: SweepPlan, cell: Cell) -> str:
    cmd = launch_command(plan.args, plan.adapter_dir(cell) / CELL_RECIPE)
    # show the console form: `accelerate launch ...` rather than `<python> -m accelerate.commands.launch ...`
    if cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]:
        cmd = ["accelerate", "launch", *cmd[3:]]
    return shlex.join(cmd)


def plan_text(plan: SweepPlan, statuses: dict[str, str]) -> str:
    from xtask_safety.sweep.stages import REPO

    args = plan.args
    n_train = sum(1 for c in plan.cells if not c.is_base)
    lines = [
        f"sweep {args.name}: {len(plan.cells)} cells ({n_train} defenses to train, "
        f"{len(plan.cells) - n_train} base model evaluation(s)) -> {args.output_dir}",
        f"  data: {args.data_recipe or 'defaults'} -> {plan.build_dir} (eval grid {plan.grid_path.name}: "
        f"{', '.join(args.eval_task_list)}; {args.eval_phrasing} phrasing)",
        f"  training recipe: {_show(plan.train_recipe, REPO)} (launcher: {args.launcher})",
        f"  generation: {args.backend}, {args.max_new_tokens} new tokens; judges: {', '.join(args.judges)} "
        f"(tables: {args.primary_judge})",
        "",
        f"{'#':>3}  {'cell':<58} {'rows':>6}  status",
    ]
    for i, cell in enumerate(plan.cells):
        rows = "-" if cell.is_base else str(cell.defense_rows)
        lines.append(f"{i:>3}  {cell.id:<58} {rows:>6}  {statuses.get(cell.id, '')}")
    lines += ["", "training commands (the cell's recipe is written beside its adapter when the cell runs):"]
    for i, cell in enumerate(plan.cells):
        if not cell.is_base:
            lines.append(f"[{i}] {train_command(plan, cell)}")
    return "\n".join(lines)


def _show(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def slurm_script(plan: SweepPlan, config_path: str | None, cells: list[Cell], script: str = "sweep.sbatch",
                 extra: list[str] | None = None) -> str:
    """A job array, one task per cell; ``extra`` are the command line's recipe overrides, repeated in every task."""
    args = plan.args
    ids = [plan.cells.index(c) for c in cells]
    array = ",".join(str(i) for i in ids) if ids != list(range(ids[0], ids[-1] + 1)) else f"{ids[0]}-{ids[-1]}"
    if args.slurm_max_parallel:
        array += f"%{args.slurm_max_parallel}"
    log_dir = Path(args.output_dir) / "slurm"
    sbatch = [f"--job-name=xtask-sweep-{args.name}", f"--array={array}", "--nodes=1", "--ntasks-per-node=1",
              "--requeue", f"--output={log_dir}/%x-%A_%a.out"]
    given = {a.split("=", 1)[0].split()[0] for a in args.slurm_args}
    if not any(g in given for g in ("--gres", "--gpus", "--gpus-per-node", "-G")):
        sbatch.append("--gres=gpu:1")
    sbatch += args.slurm_args
    config = shlex.quote(config_path) if config_path else "RECIPE.yaml"
    if extra:
        config += " " + shlex.join(extra)
    cell_lines = "\n".join(f"#   {i:>3}  {plan.cells[i].id}" for i in ids)
    return f"""#!/usr/bin/env bash
# SLURM job array for the sweep {args.name!r} ({len(ids)} cells), written by `xtask-safety sweep --emit_slurm`.
#
#   sbatch {shlex.quote(script)}
#   sbatch --dependency=afterok:<array job id> --wrap "${{PYTHON:-python}} -m xtask_safety sweep --config {config}"
#
# The second job finds every cell finished and writes the report. Each task trains, generates and
# scores one cell; a requeued or resubmitted task resumes from its cached stages and checkpoints.
# Cells (array index = plan index, as in `xtask-safety sweep --config {config} --dry_run`):
{cell_lines}
{chr(10).join('#SBATCH ' + s for s in sbatch)}
set -euo pipefail
cd {shlex.quote(str(Path.cwd()))}
mkdir -p {shlex.quote(str(log_dir))}
export WANDB_MODE=${{WANDB_MODE:-offline}}  # compute nodes often have no network: `wandb sync` later
exec ${{PYTHON:-python}} -m xtask_safety sweep --config {config} --cells "$SLURM_ARRAY_TASK_ID" --report false
"""
