"""Killing a sweep (SIGKILL) after its first defense finished, while the next one trains, then rerunning:
the grid finishes, finished cells are not redone, and the interrupted cell resumes from its checkpoint."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from sweep_helpers import actions, by_invocation, events, write_sweep

from xtask_safety.sweep.cli import run_sweep
from xtask_safety.sweep.stages import TRAIN_DONE
from xtask_safety.train.checkpoints import last_complete_checkpoint

FIRST, SECOND = "tiny__summarize-n2-uniform-s0", "tiny__summarize-n4-uniform-s0"


def _second_has_checkpoint(out) -> bool:
    dirs = list((out / "adapters").glob(f"{SECOND}-*")) if (out / "adapters").is_dir() else []
    return bool(dirs) and last_complete_checkpoint(dirs[0]) is not None


def test_a_killed_sweep_resumes_without_redoing_finished_cells(tiny_model_dir, small_corpus, tmp_path):
    model = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, model)
    # base, then two defenses of two steps each with a checkpoint after every step
    cfg = write_sweep(tmp_path, str(model), small_corpus, defended=["summarize"], report=False)
    out = tmp_path / "sweep"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "xtask_safety", "sweep", "--config", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not _second_has_checkpoint(out):
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it was killed:\n" + (tmp_path / "first.log").read_text()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()

    finished = {p.stem for p in (out / "cells").glob("*.json")}
    assert finished == {"tiny__base", FIRST}
    adapter = next((out / "adapters").glob(f"{SECOND}-*"))
    assert not (adapter / TRAIN_DONE).is_file() and last_complete_checkpoint(adapter)

    second = run_sweep(["--config", str(cfg)])["outcome"]
    assert second.missing == []
    assert len(json.loads((out / "sweep_results.json").read_text())["runs"]) == 3

    first_ev, again = by_invocation(events(out))
    # finished cells are reused whole: no training, generation or scoring again
    assert actions(again, "cell") == {"tiny__base": ["reused"], FIRST: ["reused"], SECOND: ["run"]}
    for stage in ("train", "generate", "score"):
        assert set(actions(again, stage)) == {SECOND}, stage
    # the interrupted defense continued from its checkpoint; each was trained to the end exactly once
    assert actions(again, "train")[SECOND] == ["resumed"]
    assert [e["resumed_from"].rsplit("/", 1)[-1] for e in again if e["stage"] == "train"] == ["checkpoint-1"]
    assert {c: len(a) for c, a in actions(first_ev + again, "train").items()} == {FIRST: 1, SECOND: 1}
    summary = json.loads((adapter / "xtask_training.json").read_text())["summary"]
    assert summary["global_step"] == 2 and summary["resumed_from"].endswith("checkpoint-1")
