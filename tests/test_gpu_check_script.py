"""scripts/gpu_check.sh rehearsed on a CPU (bf16 off, one process): its plumbing works before a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_rehearsal_on_cpu(tmp_path, embedded_path):
    out = tmp_path / "out"
    env = {**os.environ, "PY": sys.executable, "NGPU": "1", "GPU_CHECK_BENCH": "0",
           "GPU_CHECK_RUNS": "lora-single_gpu qlora-single_gpu", "GPU_CHECK_TRAIN_ARGS": "--bf16 false"}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", str(out), embedded_path], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {r["run"]: r for r in map(json.loads, (out / "gpu_check.jsonl").read_text().splitlines())}
    assert set(rows) == {"bench_gpu tiny", "lora-single_gpu", "qlora-single_gpu"}  # the other runs were not asked for
    assert rows["bench_gpu tiny"]["exit"] == 0 and (out / "gpu-tiny.md").is_file()
    for name in ("lora-single_gpu", "qlora-single_gpu"):
        row = rows[name]
        assert row["exit"] == 0 and row["global_step"] == 3 and row["adapter_saved"], row
    assert rows["lora-single_gpu"]["quantization"] is None
    assert rows["qlora-single_gpu"]["quantization"] == "4bit" and rows["qlora-single_gpu"]["quantized_layers"] > 0
    assert json.loads((out / "versions.json").read_text())["trl"]
