"""Helpers shared by the training tests (imported as ``train_helpers``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command from the repository root; fail with its output tail if it fails."""
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{args[:6]}... exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def summary_of(output_dir: Path) -> dict:
    return json.loads((output_dir / "xtask_training.json").read_text())["summary"]


def adapter(output_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(output_dir / "adapter_model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max((a[k] - b[k]).abs().max().item() for k in a)


def moved(params: dict) -> float:
    """LoRA B starts at zero: its size after training is how far the adapter moved."""
    return max(v.abs().max().item() for k, v in params.items() if "lora_B" in k)



def wandb_records(run_file: Path) -> list:
    """Records of an offline W&B run file (``run-*.wandb``).

    The file is a LevelDB-style log (7-byte ``:W&B`` header, 32 KiB blocks, records split into
    FULL/FIRST/MIDDLE/LAST chunks with a 7-byte header) of ``wandb_internal_pb2.Record`` protos;
    wandb 0.31 ships no Python reader for it, so the test reads it here.
    """
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, buf, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out
