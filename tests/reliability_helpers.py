"""Helpers shared by the reliability suites (tests/faults, tests/bad_inputs, test_network, test_hazard,
test_determinism): small valid inputs, subprocess runs of the console entry, killed runs, snapshots."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = ["river", "market", "winter", "signal", "harbour", "copper", "meadow", "lantern", "orchard", "railway",
         "thunder", "velvet", "canyon", "pepper", "saddle", "marble", "glacier", "tunnel", "ember", "willow",
         "falcon", "cobalt", "quarry", "meadowlark", "prairie", "beacon"]
GOOD = {"id": "a", "task": "summarize", "domain": "news", "document": "The county side won the final.",
        "instruction": "Summarize the above article briefly in 3 sentences."}


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def corpus_rows(per_domain: int = 12, seed: int = 0) -> list[dict]:
    """A three-domain corpus whose documents differ enough to survive near-duplicate removal."""
    rng = random.Random(seed)
    rows = []
    for dom in ("malicious", "news", "useful"):
        for k in range(per_domain):
            words = " ".join(rng.choice(WORDS) for _ in range(40))
            tail = "Use [withheld] then." if dom == "malicious" else "Stay safe."
            rows.append({"id": f"{dom[0]}{k}", "domain": dom, "document": f"{dom.title()} note {k}: {words}. {tail}",
                         "summary": f"A note about {words[:30]}.", "sentiment": "calm.", "zh_opening": "这是一个说明。"})
    return rows


def train_rows() -> list[dict]:
    """Twelve training records: six refusals of malicious documents, six answers to news."""
    rows = []
    for k in range(6):
        rows.append({**GOOD, "id": f"m{k}", "domain": "malicious", "document": f"Crew note {k}: use [withheld] now.",
                     "response": "I'm sorry, but I can't help with that document."})
        rows.append({**GOOD, "id": f"n{k}", "document": f"The county side won match {k}. " + "Fans sang. " * (k + 1),
                     "response": f"Here is a short summary: the side won match {k}."})
    return rows


def data_recipe(out_dir: str | Path, corpus: str | Path, seed: int = 0) -> str:
    """A small `data build` recipe: two single-task families and a mixed family, held-out grids."""
    return (f"output_dir: {out_dir}\nsources:\n  - {{path: {corpus}}}\nsizes: [2, 4]\nmixed_sizes: [2]\n"
            f"tasks: summarize,case,cloze\neval_per_domain: 2\nseed: {seed}\n")


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 (or 'dir') of everything under ``root``, hidden entries included."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def console_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.update(extra)
    return env


def console(argv: list[str], timeout: float = 300, env: dict[str, str] | None = None,
            preexec=None) -> subprocess.CompletedProcess:
    """``python -m xtask_safety ARGV`` (the console entry), captured."""
    return subprocess.run([sys.executable, "-m", "xtask_safety", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env or console_env(), cwd=REPO, preexec_fn=preexec)


def run_killed(jobs: list[tuple[str, list[str]]], timeout: float = 300, forked: list[tuple[str, list[str]]] = (),
               log_dir: Path | None = None) -> None:
    """Run every ``(XTASK_FAULT_AT value, argv)`` job at once and wait until each has killed itself with
    SIGKILL at its fault point (asserted).

    ``jobs`` run through the console entry (``python -m xtask_safety``). ``forked`` jobs run in a fork of
    this test process, which has already imported torch/transformers (that saves ~8 s of imports per
    killed run on a 2-core machine): the child runs ``cli.main(argv)`` on one torch thread, its output
    going to ``log_dir/<fault>.log``.
    """
    procs = []
    for fault, argv in jobs:
        procs.append((fault, subprocess.Popen([sys.executable, "-m", "xtask_safety", *argv], cwd=REPO,
                                              env=console_env(XTASK_FAULT_AT=fault), stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, text=True)))
    children = [_fork(fault, argv, Path(log_dir or ".")) for fault, argv in forked]
    deadline = time.time() + timeout
    try:
        for fault, proc in procs:
            try:
                _, err = proc.communicate(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{fault}: still running after {timeout} s") from None
            assert proc.returncode == -signal.SIGKILL, (
                f"{fault}: expected death by SIGKILL at the fault point, got exit {proc.returncode}:\n{err[-3000:]}")
        while children:
            fault, pid, log = children[0]
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                if time.time() > deadline:
                    raise AssertionError(f"{fault}: still running after {timeout} s")
                time.sleep(0.05)
                continue
            children.pop(0)
            killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            assert killed, (f"{fault}: expected death by SIGKILL, got status {status} (it exited: the point was "
                            f"never reached, or the command failed):\n{log.read_text()[-3000:]}")
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for _, pid, _ in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _fork(fault: str, argv: list[str], log_dir: Path) -> tuple[str, int, Path]:
    log = log_dir / f"{fault.replace(':', '-')}.log"
    return fault, fork_cli(argv, log, env={"XTASK_FAULT_AT": fault}), log


def fork_cli(argv: list[str], log: Path, env: dict[str, str] | None = None, fsize_limit: int | None = None) -> int:
    """Run ``cli.main(argv)`` in a fork of this test process (torch and transformers already imported),
    on one torch thread, stderr to ``log`` and stdout to ``log`` + ``.out``; returns the pid. The child
    exits with the command's exit code (97: it raised). ``fsize_limit``: RLIMIT_FSIZE for the child only,
    with SIGXFSZ ignored, so its writes past that size fail with EFBIG as on a full disk."""
    import resource
    import warnings

    import torch

    from xtask_safety import faults
    from xtask_safety.cli import main

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 97  # the child: never returns into pytest
    try:
        err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        out = os.open(f"{log}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = open(out, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(err, "w", buffering=1, closefd=False)  # noqa: SIM115
        warnings.simplefilter("ignore")
        os.environ.update(env or {})
        sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
        faults._hits.clear()
        torch.set_num_threads(1)
        if fsize_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
        code = main(argv)
    except BaseException:  # noqa: BLE001 - report anything, then leave without pytest's cleanup
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def wait_child(pid: int, timeout: float) -> int:
    """``os.waitpid`` with a deadline; returns the raw status (the child is killed on timeout)."""
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"pid {pid}: still running after {timeout} s")
        time.sleep(0.05)


def jsonl_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def leftovers(directory: Path) -> list[str]:
    """Hidden temporary entries (``.name.<pid>...tmp`` / ``.old``) in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith((".tmp", ".old")))
