"""Fault injection for the crash tests (``tests/faults/``): kill this process at a named point.

The stages call :func:`point` at the few places where a crash matters (between two writes, inside a
checkpoint save, after a batch of answers). Unless ``XTASK_FAULT_AT`` is set it returns at once. With
``XTASK_FAULT_AT=NAME`` or ``NAME:N`` the process sends itself ``SIGKILL`` the N-th time (default: the
first) it reaches point ``NAME``: no ``finally`` block, ``atexit`` handler or buffered write runs, as
with ``kill -9`` or the kernel's out-of-memory killer. Points:

=====================  ==============================================================================
``data.loaded``        data build: sources loaded, nothing written yet
``data.write``         data build: after each file written into the temporary build directory
``data.publish``       data build: temporary directory complete, before it is renamed into place
``data.swap``          data build with ``--overwrite``: the old directory moved aside, the new one not in
``train.step``         training: at the end of each optimizer step (before that step's checkpoint)
``train.checkpoint``   training: inside each checkpoint save (weights and optimizer written, no state)
``train.final``        training: after the last step, before the final adapter is saved
``generate.batch``     generation: after each batch's answers are appended
``generate.row``       generation: after each answer is appended (so also in the middle of a batch)
``jsonl.torn``         any resumable JSONL output: half of a line written, then killed
``score.judged``       scoring: every verdict computed, nothing written
``score.write``        scoring: after each output file is written
=====================  ==============================================================================
"""

from __future__ import annotations

import os
import signal
from typing import IO, Any

ENV = "XTASK_FAULT_AT"
_hits: dict[str, int] = {}


def armed() -> tuple[str, int] | None:
    """``(point, n)`` from ``XTASK_FAULT_AT``, or None when no fault is asked for."""
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return None
    name, sep, nth = spec.rpartition(":")
    if sep and nth.isdigit():
        return name, int(nth)
    return spec, 1


def point(name: str, torn: tuple[IO[str], str] | None = None) -> None:
    """Die here if ``XTASK_FAULT_AT`` names this point (and this is its N-th hit).

    ``torn=(file, line)``: first write the first half of ``line`` to ``file`` and flush it, so the
    process dies in the middle of a record.
    """
    target = armed()
    if target is None or target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != target[1]:
        return
    if torn is not None:
        fh, line = torn
        fh.write(line[: max(1, len(line) // 2)])
        fh.flush()
        os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def arm_trainer(trainer: Any) -> None:
    """Wire the ``train.*`` points into a ``transformers.Trainer`` (only when one of them is asked for)."""
    target = armed()
    if target is None or not target[0].startswith("train."):
        return
    from transformers import TrainerCallback

    class _StepFault(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            point("train.step")

    trainer.add_callback(_StepFault())
    save_rng = trainer._save_rng_state  # the Trainer writes trainer_state.json after this

    def _save_rng_state(output_dir: str) -> None:
        save_rng(output_dir)
        point("train.checkpoint")

    trainer._save_rng_state = _save_rng_state
