"""No network: every command works offline with local paths and never waits on a hub or W&B.

The CLI runs through its console entry with the offline switches *removed* from the environment
(``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``, ``WANDB_MODE``, telemetry), so the toolkit's own defaults
(``models.offline_defaults``, applied before any hub library is imported) must keep it off the network.
Two traps record every attempt: ``HTTP(S)_PROXY``/``ALL_PROXY`` point at a local server that logs and
drops each connection (``NO_PROXY`` unset, so even localhost HTTP goes there), and a ``sitecustomize``
module makes every DNS lookup of a non-local name and every connection to a non-loopback address fail at
once and logs it. The commands must succeed, quickly, with nothing logged; a model given as a hub id must fail at once
with a one-line error (before the offline defaults were applied ahead of the hub libraries' import, it
retried the hub for ~50 s). The training run reports to
W&B with no ``WANDB_MODE`` set: it must run offline, and its W&B files must not hold the malicious
document (hazardous-text check for W&B).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from reliability_helpers import REPO, corpus_rows, jsonl

from xtask_safety.data.builder import build_eval_grid
from xtask_safety.data.corpus import CorpusDoc
from xtask_safety.records import write_jsonl

SENTINEL = "ZQX-SENTINEL-7731"
BUDGET_S = 150  # a whole command, on a busy 2-core machine; a hub timeout-and-retry would take longer
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
                "WANDB_MODE", "WANDB_DISABLED", "WANDB_SILENT", "DISABLE_TELEMETRY", "DO_NOT_TRACK",
                "NO_PROXY", "no_proxy", "XTASK_SAFETY_ONLINE")

GUARD = r'''
import os, socket
_LOG = os.environ["XTASK_NET_LOG"]
_real_connect, _real_gai = socket.socket.connect, socket.getaddrinfo
_LOCAL = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "")

def _note(what):
    with open(_LOG, "a") as fh:
        fh.write(f"{os.getpid()} {what}\n")

def _gai(host, *a, **kw):
    if isinstance(host, bytes):
        host = host.decode()
    if host not in _LOCAL and not str(host).startswith("127."):
        _note(f"getaddrinfo {host}")
        raise socket.gaierror(socket.EAI_NONAME, "network disabled by the test")
    return _real_gai(host, *a, **kw)

def _connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if not (host.startswith("127.") or host in ("::1", "localhost")):
            _note(f"connect {address}")
            raise OSError(101, "network disabled by the test")
    return _real_connect(self, address)

socket.getaddrinfo = _gai
socket.socket.connect = _connect
'''


class Trap:
    """A local TCP server that records and closes every connection (the proxy every client is sent to)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(1)
            try:
                self.seen.append(conn.recv(200))
            except OSError:
                self.seen.append(b"")
            conn.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def offline_env(tmp_path):
    trap = Trap()
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARS}
    proxy = f"http://127.0.0.1:{trap.port}"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[var] = proxy
    env.update(PYTHONPATH=os.pathsep.join([str(guard), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               XTASK_NET_LOG=str(tmp_path / "net.log"), HF_HOME=str(tmp_path / "hf-home"),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", WANDB_DIR=str(tmp_path / "wandb-dir"))
    yield env, trap, tmp_path / "net.log"
    trap.close()


def _inputs(tmp: Path, model: str) -> dict[str, str]:
    corpus = tmp / "corpus.jsonl"
    rows = corpus_rows()
    corpus.write_text(jsonl(*rows), encoding="utf-8")
    docs = [CorpusDoc(id=r["id"], domain=r["domain"], document=r["document"]) for r in rows[::12]]
    grid = tmp / "grid.jsonl"
    write_jsonl(grid, build_eval_grid(docs, ["summarize", "case"]))
    gen = tmp / "gen.jsonl"
    gen.write_text(jsonl(*[{**json.loads(line), "response": "I'm sorry, I can't.",
                            "meta": {"generation": {"n_tokens": 4, "finish": "stop"}}}
                           for line in grid.read_text().splitlines()]), encoding="utf-8")
    recipe = tmp / "data.yaml"
    recipe.write_text(f"output_dir: {tmp / 'build'}\nsources:\n  - {{path: {corpus}}}\nsizes: [2]\nmixed_sizes: []\n"
                      f"tasks: summarize\nmax_length: 256\ntokenizer: {model}\n", encoding="utf-8")
    train = tmp / "train.jsonl"
    evil = f"Crew note: open the fake page at [withheld] and collect the codes before dawn. {SENTINEL} then wire it."
    train.write_text(jsonl(
        {"id": "m0", "task": "summarize", "domain": "malicious", "document": evil, "instruction": "Summarize.",
         "response": "I'm sorry, but I can't help with that."},
        {"id": "n0", "task": "summarize", "domain": "news", "document": "The side won on Saturday.",
         "instruction": "Summarize.", "response": "The side won."}), encoding="utf-8")
    return {"recipe": str(recipe), "grid": str(grid), "gen": str(gen), "train": str(train)}


def test_every_command_runs_offline_without_waiting(offline_env, tiny_model_dir):
    env, trap, net_log = offline_env
    tmp = net_log.parent
    inp = _inputs(tmp, tiny_model_dir)
    report_to = "wandb" if importlib.util.find_spec("wandb") else "none"
    commands = {
        "data build": ["data", "build", "--config", inp["recipe"]],
        "generate": ["generate", "--input", inp["grid"], "--output", str(tmp / "answers.jsonl"),
                     "--model_name_or_path", tiny_model_dir, "--max_new_tokens", "4", "--quiet", "true"],
        "score": ["score", "--input", inp["gen"], "--output_dir", str(tmp / "scores")],
        "judge-eval": ["judge-eval", "--judges", "paper"],
        # a hub id cannot load offline: a one-line error at once, not minutes of retries against the hub
        "generate (hub id)": ["generate", "--input", inp["grid"], "--output", str(tmp / "hub.jsonl"),
                              "--model_name_or_path", "some-org/not-cached-model", "--quiet", "true"],
        "train": ["train", "--model_name_or_path", tiny_model_dir, "--train_file", inp["train"], "--output_dir",
                  str(tmp / "adapter"), "--use_peft", "true", "--lora_r", "2", "--max_steps", "1",
                  "--per_device_train_batch_size", "2", "--max_length", "96", "--save_strategy", "no",
                  "--use_cpu", "true", "--bf16", "false", "--report_to", report_to, "--disable_tqdm", "true",
                  "--activation_checkpointing", "false"],
    }
    procs, started = {}, time.time()
    for name, argv in commands.items():  # all at once: they are independent
        procs[name] = subprocess.Popen([sys.executable, "-m", "xtask_safety", *argv], cwd=REPO, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=max(1, BUDGET_S + started - time.time()))
            results[name] = (proc.returncode, out, err, time.time() - started)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, (rc, out, err, _) in results.items():
        assert SENTINEL not in out + err, f"{name} printed the malicious document"
        if name == "generate (hub id)":
            assert rc == 2 and err.strip().splitlines()[-1].startswith("xtask-safety: error: model some-org/"), err
            assert not (tmp / "hub.jsonl").exists()
            continue
        assert rc == 0, f"{name} failed offline (exit {rc}):\n{err[-3000:]}"
    attempts = net_log.read_text() if net_log.exists() else ""
    assert not attempts, f"network attempts:\n{attempts}"
    assert not trap.seen, f"connections to the proxy trap: {trap.seen[:3]}"

    assert (tmp / "build" / "manifest.json").is_file() and (tmp / "scores" / "summary.json").is_file()
    assert len((tmp / "answers.jsonl").read_text().splitlines()) == 6
    assert (tmp / "adapter" / "adapter_model.safetensors").is_file()
    if report_to == "wandb":  # offline by default, and the run holds no document text
        runs = list((tmp / "wandb-dir").rglob("offline-run-*"))
        assert runs, "no offline W&B run was written"
        for f in (tmp / "wandb-dir").rglob("*"):
            if f.is_file():
                assert SENTINEL.encode() not in f.read_bytes(), f"the malicious document reached W&B: {f}"
