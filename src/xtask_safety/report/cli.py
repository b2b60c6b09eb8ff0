"""``xtask-safety report RUN_DIR... --output_dir DIR``: the comparison report for sweep (and demo) folders.

    xtask-safety report runs/sweeps/demo-smollm2 --output_dir report/
    xtask-safety report runs/sweeps/llama-2 runs/sweeps/llama-1 --output_dir report/ --report_to wandb

Writes ``report.md`` and ``report.html`` (the same tables and figures), ``results.json`` and
``figures/*.png|svg``. Several folders are compared in one report (e.g. one sweep per model).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Literal

from xtask_safety.choices import check_counts
from xtask_safety.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class ReportArguments:
    run_dirs: list[str] = field(default_factory=list, metadata={
        "help": "Sweep folders (sweep_results.json or cells/; a demo folder is one) or sweep_results.json files. "
                "May also be given before the flags."})
    output_dir: str = field(default="", metadata={"help": "Where report.md, report.html, results.json and figures/ go."})
    judge: str | None = field(default=None, metadata={"help": "Judge of the tables (default: the sweep's primary judge)."})
    transfer_size: str = field(default="max", metadata={
        "help": "Defense size of the transfer matrix: 'max' or a number of refusal rows."})
    examples: int = field(default=1, metadata={"help": "Example answers per domain (0: none)."})
    show_text: bool = field(default=False, metadata={"help": "Show malicious documents and answers unredacted."})
    title: str | None = field(default=None, metadata={"help": "Report title."})
    report_to: Literal["none", "wandb"] = field(default="none", metadata={"help": "none or wandb (offline unless WANDB_MODE=online)."})
    wandb_project: str | None = field(default=None, metadata={"help": "W&B project."})
    wandb_group: str | None = field(default=None, metadata={"help": "W&B group (default: the sweep name)."})

    def __post_init__(self) -> None:
        check_counts(self, non_negative=("examples",))


def main(argv: list[str] | None = None) -> int:
    from xtask_safety.config import parse_recipe

    (args,) = parse_recipe((ReportArguments,), list(argv or []), prog="xtask-safety report", positional="run_dirs")
    dirs = list(args.run_dirs)
    if not dirs or not args.output_dir:
        raise ConfigError("report: give one or more run folders and --output_dir")
    write_report(dirs, args)
    return 0


def write_report(dirs: list[str], args: ReportArguments) -> dict:
    from xtask_safety.records import check_writable_dir
    from xtask_safety.report.build import build_report
    from xtask_safety.report.collect import load_runs

    if args.transfer_size != "max" and not str(args.transfer_size).isdigit():
        raise ConfigError(f"transfer_size: expected 'max' or a number, got {args.transfer_size!r}")
    if args.report_to == "wandb":
        from xtask_safety.report.wandb_log import import_wandb

        import_wandb()  # fail before any work when wandb is missing
    col = load_runs(dirs, args.judge)
    out = check_writable_dir(args.output_dir)
    report = build_report(col, out, transfer_size=str(args.transfer_size), show_text=args.show_text,
                          examples=args.examples, title=args.title)
    logger.info(f"[xtask-safety report] {len(col.runs)} runs -> {report['report_md']}, {report['report_html']} "
          f"({len(report['figures'])} figure files)")
    if args.report_to == "wandb":
        from xtask_safety.report.wandb_log import log_to_wandb

        group = args.wandb_group or (col.sweeps[0] if col.sweeps else "xtask-safety-report")
        ids = log_to_wandb(col, report, group, out, project=args.wandb_project, show_text=args.show_text)
        logger.info(f"[xtask-safety report] W&B: {len(ids)} runs in group {group!r} "
              f"(mode {os.environ.get('WANDB_MODE')}; `wandb sync {out / 'wandb'}` uploads offline runs)")
    return report
