"""The ``xtask-safety`` console script.

Each sub-command parses its own dataclasses with TRL's parser (``--config recipe.yaml`` plus flag
overrides). Bad input ends with a one-line ``xtask-safety: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable

from xtask_safety import __version__
from xtask_safety.errors import XtaskError

USAGE = f"""xtask-safety {__version__} — cross-task content-safety defense for LLMs

usage: xtask-safety COMMAND [--config recipe.yaml] [--flag value ...]

commands:
  demo        the main job: evaluate, train a LoRA defense and evaluate again on the embedded model
  data        defense datasets and evaluation data: data build | grid | suite | inspect | import | export
  train       train a defense from a recipe (same as: accelerate launch -m xtask_safety.train ...)
  generate    batched, resumable, shardable generation (generate merge joins shard outputs)
  score       judge answers, pass rates, utility and paired tests (score prompts: model-judge prompts)
  eval        an evaluation suite end to end: import, generate (base + adapters), score, pass-rate tables
  judge-eval  measure the refusal judges against human-labelled responses (bundled or any CSV/JSONL)
  sweep       grids of data -> train -> generate -> score (models x tasks x sizes x weightings x seeds), cached
  report      tables, transfer matrix, plots (PNG/SVG), HTML/Markdown report and W&B logging for sweep folders

Run `xtask-safety COMMAND --help` for a command's options.
"""


def _demo(argv: list[str]) -> int:
    from xtask_safety.demo import main

    return main(argv)


def _train(argv: list[str]) -> int:
    from xtask_safety.train.run import main

    return main(argv)


def _generate(argv: list[str]) -> int:
    from xtask_safety.generate.cli import main

    return main(argv)


def _score(argv: list[str]) -> int:
    from xtask_safety.score.cli import main

    return main(argv)


def _data(argv: list[str]) -> int:
    from xtask_safety.data.cli import main

    return main(argv)


def _eval(argv: list[str]) -> int:
    from xtask_safety.evaluate import main

    return main(argv)


def _judge_eval(argv: list[str]) -> int:
    from xtask_safety.score.validate import main

    return main(argv)


def _sweep(argv: list[str]) -> int:
    from xtask_safety.sweep.cli import main

    return main(argv)


def _report(argv: list[str]) -> int:
    from xtask_safety.report.cli import main

    return main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "demo": _demo,
    "data": _data,
    "train": _train,
    "generate": _generate,
    "score": _score,
    "eval": _eval,
    "judge-eval": _judge_eval,
    "sweep": _sweep,
    "report": _report,
}


def run_guarded(fn: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run a command; user errors become one line on stderr and exit code 2."""
    try:
        return fn(argv) or 0
    except XtaskError as exc:
        msg = " ".join(str(exc).split())
        _end_progress_bars()
        print(f"xtask-safety: error: {msg}", file=sys.stderr)
        return 2
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
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"xtask-safety: error: unknown command {cmd!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    # Deprecation notices the libraries raise about their own defaults: a user of this tool cannot act on them.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft|accelerate)(\.|$)")
    from xtask_safety.models import offline_defaults

    # Before any command imports huggingface_hub/transformers, which read these variables once, at import.
    offline_defaults()
    return run_guarded(COMMANDS[cmd], rest)


if __name__ == "__main__":
    sys.exit(main())
