"""The ``xtask-safety`` console script: argparse sub-commands, laid out as trl's own CLI.

The top-level parser only routes. Each command is registered without options (``add_help=False``)
and parses the rest of the line itself with TRL's parser over its dataclasses (``--config
recipe.yaml`` plus flag overrides, :func:`xtask_safety.config.parse_recipe`), so that ``xtask-safety
score --help`` does not import the training stack. Flags are documented with underscores
(``--dry_run``); the dashed spelling (``--dry-run``) is accepted too.

Bad input ends with a one-line ``xtask-safety: error: ...`` on stderr and exit code 2; ``--help``
exits 0 at every level.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from xtask_safety import __version__
from xtask_safety.errors import ConfigError, XtaskError


@dataclass(frozen=True)
class Command:
    """A sub-command: ``target`` (``module:function``) takes the command's own arguments; a group has children."""

    name: str
    help: str
    target: str = ""
    children: tuple[Command, ...] = ()


COMMANDS: tuple[Command, ...] = (
    Command("demo", "the main job: evaluate, train a LoRA defense and evaluate again on the embedded model",
            "xtask_safety.demo:main"),
    Command("data", "defense datasets and evaluation data", children=(
        Command("build", "a family of defense sets and evaluation grids from a data recipe",
                "xtask_safety.data.cli:build_main"),
        Command("set", "one defense set (one JSONL) from corpus files", "xtask_safety.data.cli:set_main"),
        Command("grid", "one evaluation grid (documents x tasks) from corpus files", "xtask_safety.data.cli:grid_main"),
        Command("suite", "the records of an evaluation suite (recipes/eval/*.yaml)", "xtask_safety.data.suites:main"),
        Command("inspect", "counts, lengths and redacted rows of a record file or build",
                "xtask_safety.data.cli:inspect_main"),
        Command("import", "the paper's evaluation/saferpaca files (or its whole data/evaluation folder) -> records",
                "xtask_safety.data.cli:import_main"),
        Command("export", "records -> the paper's file formats", "xtask_safety.data.cli:export_main"),
    )),
    Command("train", "train a defense from a recipe (same as: accelerate launch -m xtask_safety.train ...)",
            "xtask_safety.train.run:main"),
    Command("generate", "batched, resumable, shardable generation (Transformers or vLLM)",
            "xtask_safety.generate.cli:main"),
    Command("merge", "join the outputs of `generate --shard i/n` into one file", "xtask_safety.generate.cli:merge_main"),
    Command("score", "judge answers: pass rates per task x domain, utility, paired tests",
            "xtask_safety.score.cli:main"),
    Command("judge-prompts", "model-judge prompts for answers, to run through any model",
            "xtask_safety.score.cli:prompts_main"),
    Command("eval", "an evaluation suite end to end: import, generate (base + adapters), score, pass-rate tables",
            "xtask_safety.evaluate:main"),
    Command("judge-eval", "measure the refusal judges against human-labelled responses (bundled or any CSV/JSONL)",
            "xtask_safety.score.validate:main"),
    Command("sweep", "grids of data -> train -> generate -> score (models x tasks x sizes x weightings x seeds)",
            "xtask_safety.sweep.cli:main"),
    Command("report", "tables, transfer matrix, plots, HTML/Markdown report and W&B logging for run folders",
            "xtask_safety.report.cli:main"),
)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as :class:`ConfigError` (one line, exit 2) instead of usage + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xtask-safety", allow_abbrev=False,
                     description=f"xtask-safety {__version__}: cross-task content-safety defense for LLMs.",
                     epilog="Run `xtask-safety COMMAND --help` for a command's options.")
    parser.add_argument("-V", "--version", action="version", version=__version__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="More log messages (-vv: debug).")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="Only warnings and errors.")
    _register(parser, COMMANDS, "command")
    return parser


def _register(parser: argparse.ArgumentParser, commands: tuple[Command, ...], dest: str) -> None:
    sub = parser.add_subparsers(dest=dest, metavar="COMMAND", required=True, parser_class=_Parser)
    for cmd in commands:
        if cmd.children:
            group = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, allow_abbrev=False)
            _register(group, cmd.children, f"{dest}.{cmd.name}")
        else:  # the command parses (and documents) its own options
            sub.add_parser(cmd.name, help=cmd.help, add_help=False, allow_abbrev=False)


def resolve(ns: argparse.Namespace) -> tuple[list[str], Command]:
    """The command path chosen on the command line and its leaf command."""
    path, dest, level = [], "command", COMMANDS
    while True:
        name = getattr(ns, dest)
        cmd = next(c for c in level if c.name == name)
        path.append(name)
        if not cmd.children:
            return path, cmd
        dest, level = f"{dest}.{name}", cmd.children


def argv_after(argv: list[str], path: list[str]) -> list[str]:
    """The arguments after the command path (global flags before it stay with the top-level parser)."""
    i = -1
    for name in path:
        i = argv.index(name, i + 1)
    return argv[i + 1:]


def load_target(target: str) -> Callable[[list[str]], int]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


class _ConsoleHandler(logging.StreamHandler):
    """Info on stdout, warnings and errors on stderr; the stream is looked up at each message, so a
    caller that swaps ``sys.stdout`` (a test, a notebook) still sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        out = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        try:
            out.write(self.format(record) + "\n")
            out.flush()
        except Exception:
            self.handleError(record)


def setup_logging(verbose: int = 0, quiet: int = 0) -> None:
    """The ``xtask_safety`` loggers on the console: info (progress) by default, ``-q`` warnings only, ``-vv`` debug."""
    logger = logging.getLogger("xtask_safety")
    logger.setLevel(logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO))
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
        logger.propagate = False


def run_guarded(fn: Callable[[], int | None]) -> int:
    """Run a command; user errors become one line on stderr and exit code 2."""
    try:
        return fn() or 0
    except XtaskError as exc:
        msg = " ".join(str(exc).split())
        _end_progress_bars()
        print(f"xtask-safety: error: {msg}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        print("xtask-safety: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


def _end_progress_bars() -> None:
    """Close progress bars an error interrupted, so the message starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        with contextlib.suppress(Exception):
            bar.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    parsed: dict[str, argparse.Namespace] = {}

    def route() -> int:
        ns, _ = parser.parse_known_args(argv)
        parsed["ns"] = ns
        return 0

    code = run_guarded(route)
    if "ns" not in parsed:
        return code
    ns = parsed["ns"]
    path, cmd = resolve(ns)
    setup_logging(ns.verbose, ns.quiet)
    # Deprecation notices the libraries raise about their own defaults: a user of this tool cannot act on them.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft|accelerate)(\.|$)")
    from xtask_safety.models import offline_defaults

    # Before any command imports huggingface_hub/transformers, which read these variables once, at import.
    offline_defaults()
    rest = argv_after(argv, path)
    return run_guarded(lambda: load_target(cmd.target)(rest))


if __name__ == "__main__":
    sys.exit(main())
