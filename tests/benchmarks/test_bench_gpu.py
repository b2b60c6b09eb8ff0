"""The GPU benchmark kit runs end to end at tiny scale on a CPU, so it is known to work before a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xtask_safety.generate.backends import find_vllm_python

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_kit_at_tiny_scale(tmp_path):
    python = find_vllm_python()
    if python is None and os.environ.get("XTASK_REQUIRE_VLLM") == "1":
        pytest.fail("XTASK_REQUIRE_VLLM=1 but there is no vLLM environment for the kit's vLLM part")
    md, js = tmp_path / "gpu.md", tmp_path / "gpu.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--scale", "tiny", "--output", str(md),
           "--json", str(js), "--work_dir", str(tmp_path / "work"), *([] if python else ["--skip_vllm"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(js.read_text())
    lora, qlora = res["training"]
    assert lora["setting"].startswith("LoRA") and qlora["setting"] == "QLoRA 4-bit NF4"
    for t in (lora, qlora):
        assert t["tokens_per_s"] > 0 and t["peak_memory_gib"] > 0 and t["steps"] == 2
    assert lora["trainable_params"] == qlora["trainable_params"] > 0  # the same LoRA on both bases
    assert res["transformers"]["requests"] == 6 and res["transformers"]["new_tokens"] > 0
    text = md.read_text()
    assert "| QLoRA 4-bit NF4 |" in text and "Transformers (prefix-shared" in text
    if python:
        v = res["vllm"]
        assert v["requests"] == 24 and v["adapters"] == 4 and v["new_tokens"] > 0 and v["requests_per_s"] > 0
        assert "vLLM (`generate --backend vllm`" in text
