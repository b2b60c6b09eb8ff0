"""Walk the bad-input corpus (``bad_input_cases.py``): exit code 2, one line naming what is wrong, no
traceback, nothing left behind. A representative subset also runs through the console entry."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input_cases import CASES, GOOD, _gen, _jl
from reliability_helpers import corpus_rows, fork_cli, jsonl, snapshot, wait_child

from xtask_safety.cli import main

FSIZE_LIMIT = 1500  # bytes a process may write to one file in the "fsize" cases


def _corpus() -> str:
    return jsonl(*corpus_rows())


def _train_rows() -> str:
    rows = []
    for k in range(4):
        rows.append({**GOOD, "id": f"m{k}", "domain": "malicious", "document": f"Use [withheld] on target {k}.",
                     "response": "I'm sorry, I can't help with that."})
        rows.append({**GOOD, "id": f"n{k}", "document": f"The side won match {k}.", "response": "The side won."})
    return _jl(*rows)


COMMON = {"good.jsonl": _jl(GOOD, {**GOOD, "id": "b", "task": "case", "instruction": "Write the above sentence "
                                   "using proper case."}),
          "gen.jsonl": _jl(_gen("a"), _gen("b", domain="malicious")),
          "corpus.jsonl": _corpus(), "train.jsonl": _train_rows()}


@pytest.fixture(scope="module")
def other_adapter(tmp_path_factory, tiny_model_dir) -> str:
    """A LoRA adapter made for a model of another width than the tiny model (saved, never trained)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    out = tmp_path_factory.mktemp("other-adapter")
    model.save_pretrained(out)
    cfg_path = out / "adapter_config.json"
    cfg_json = json.loads(cfg_path.read_text())
    cfg_json["base_model_name_or_path"] = "some-other-model"
    cfg_path.write_text(json.dumps(cfg_json))
    return str(out)


def _subst(value, env: dict[str, str]):
    if isinstance(value, bytes):
        return value
    for key, repl in env.items():
        value = value.replace("{" + key + "}", repl)
    return value


def _enospc(monkeypatch, root: Path) -> None:
    """Every write under ``root`` fails as on a full disk: fsync (after the data went to the page
    cache, as with delayed allocation) and the pathlib writers raise ENOSPC."""
    real_fsync, real_wb, real_wt = os.fsync, pathlib.Path.write_bytes, pathlib.Path.write_text
    root_s = str(root.resolve())

    def under(path) -> bool:
        return str(Path(path).resolve()).startswith(root_s)

    def full() -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fsync(fd):
        if under(os.readlink(f"/proc/self/fd/{fd}")):
            raise full()
        return real_fsync(fd)

    def write_bytes(self, data):
        if under(self):
            raise full()
        return real_wb(self, data)

    def write_text(self, data, *a, **kw):
        if under(self):
            raise full()
        return real_wt(self, data, *a, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    monkeypatch.setattr(pathlib.Path, "write_text", write_text)


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


def _console(argv: list[str], preexec=None, **extra: str) -> tuple[int, str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **extra}
    proc = subprocess.run([sys.executable, "-m", "xtask_safety", *argv], capture_output=True, text=True,
                          timeout=300, env=env, preexec_fn=preexec)
    return proc.returncode, proc.stdout, proc.stderr


PROGRESS = re.compile(r"\d+%\|.*\|")  # a progress bar (loading a model's weights), not a message


def _check(case: dict, rc: int, out: str, err: str, env: dict[str, str], how: str) -> None:
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.search(line)]
    assert rc == 2, f"{how}: exit code {rc}\nstderr: {err[-3000:]}"
    assert "Traceback" not in err and "Traceback" not in out, f"{how}: traceback\n{err[-3000:]}"
    assert len(lines) == 1, f"{how}: expected one line on stderr, got {len(lines)}:\n{err[-3000:]}"
    assert lines[0].startswith("xtask-safety: error: "), lines[0]
    for needle in case["expect"]:
        assert _subst(needle, env) in lines[0], f"{how}: {_subst(needle, env)!r} not in {lines[0]!r}"


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on a busy machine


def test_the_corpus_is_big_and_named_uniquely():
    names = [c["name"] for c in CASES]
    assert len(names) >= 30 and len(set(names)) == len(names)
    assert sum(c.get("mode") in ("console", "fsize") for c in CASES) >= 5  # through the console entry
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text(encoding="utf-8")
    missing = [n for n in names if f"`{n}`" not in doc]
    assert not missing, f"docs/reliability.md does not list: {missing}"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input(case, tmp_path, capsys, monkeypatch, tiny_model_dir, other_adapter):
    if case.get("needs_write_protect") and os.geteuid() == 0:
        pytest.skip("root writes through file permissions")
    env = {"tmp": str(tmp_path), "model": tiny_model_dir, "other_adapter": other_adapter}
    for name, content in {**COMMON, **case.get("files", {})}.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        content = _subst(content, env)
        p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    if case.get("needs_write_protect"):
        (tmp_path / "ro").mkdir(mode=0o500)
    argv = [_subst(a, env) for a in case["argv"]]
    before = snapshot(tmp_path)
    mode = case.get("mode")

    # Under a file-size limit a process must not write anything else: Python would commit a truncated
    # bytecode cache (importlib ignores a short write) that breaks every later import of that module.
    scratch = {"PYTHONDONTWRITEBYTECODE": "1", "XDG_CACHE_HOME": str(tmp_path.parent / "cache"),
               "MPLCONFIGDIR": str(tmp_path.parent / "mpl")}
    if mode == "fsize":
        rc, out, err = _console(argv, preexec=_limit_file_size, **scratch)
        _check(case, rc, out, err, env, "console (file size limit)")
    elif mode == "fsize-fork":
        log = tmp_path.parent / f"{tmp_path.name}.log"  # outside the case directory
        status = wait_child(fork_cli(argv, log, env=scratch, fsize_limit=20_000), timeout=300)
        out = Path(f"{log}.out").read_text()
        _check(case, os.waitstatus_to_exitcode(status), out, log.read_text(), env, "forked (file size limit)")
    else:
        if mode == "enospc":
            _enospc(monkeypatch, tmp_path)
        rc = main(argv)
        cap = capsys.readouterr()
        monkeypatch.undo()
        _check(case, rc, cap.out, cap.err, env, "in-process")
    after = snapshot(tmp_path)
    for path in case.get("may_leave", []):
        if path not in before:
            after.pop(path, None)
    assert after == before, "the failed command changed or left files behind"

    if mode == "console":
        rc, out, err = _console(argv)
        _check(case, rc, out, err, env, "console")
        assert snapshot(tmp_path) == before
