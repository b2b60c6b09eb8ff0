"""Backend construction in one place: device/dtype choice, BOS for plain-text prompts, vLLM's interpreter,
GPUs per shard. CPU tests of logic that decides what happens on a GPU machine."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from xtask_safety.errors import ConfigError
from xtask_safety.generate import backends
from xtask_safety.generate.backends import (
    IN_VLLM_CHILD,
    VLLM_PYTHON_ENV,
    BackendSpec,
    build_backend,
    child_env,
    find_vllm_python,
    shard_gpus,
    vllm_runs_here,
)
from xtask_safety.generate.base import SamplingConfig
from xtask_safety.generate.transformers_backend import TransformersBackend
from xtask_safety.models import LoadedModel, adds_bos, encode_prompts, load_tokenizer, pick_device_and_dtype
from xtask_safety.records import Record, write_jsonl


def test_device_and_dtype_follow_the_hardware(monkeypatch, tiny_model_dir):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device_and_dtype() == ("cuda", "bfloat16")
    assert pick_device_and_dtype("float16") == ("cuda", "float16")
    assert pick_device_and_dtype(device="cpu") == ("cpu", "float32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device_and_dtype() == ("cpu", "float32")
    backend = build_backend("transformers", BackendSpec(model=tiny_model_dir))
    param = next(backend.model.parameters())
    assert param.device.type == "cpu" and param.dtype == torch.float32


def _bos_tokenizer(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    tok.add_bos_token = True  # behave like Llama's tokenizer: BOS in front of plain text
    return tok


def test_plain_text_prompts_get_the_bos_training_saw_once(tiny_model_dir):
    plain = load_tokenizer(tiny_model_dir)
    tok = _bos_tokenizer(tiny_model_dir)
    assert not adds_bos(plain) and adds_bos(tok)
    text = "Below is an instruction.\n\n### Response:\n"
    # TRL tokenizes plain-text training prompts with the tokenizer's defaults: generation must match
    assert encode_prompts(tok, [text], "alpaca") == [tok(text)["input_ids"]]
    assert encode_prompts(tok, [text], "alpaca")[0][0] == tok.bos_token_id
    assert encode_prompts(plain, [text], "alpaca") == [plain(text, add_special_tokens=False)["input_ids"]]
    # a prompt that already starts with BOS (a chat template writing it) never gets a second one
    chat = tok.bos_token + "user\nhi<|im_end|>\n"  # (SmolLM2's BOS is <|im_start|>)
    assert encode_prompts(tok, [chat], "chat")[0].count(tok.bos_token_id) == 1
    assert encode_prompts(tok, [chat], "alpaca")[0].count(tok.bos_token_id) == 1


def test_transformers_backend_generates_from_bos_prompts(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    tok = _bos_tokenizer(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    b = TransformersBackend(LoadedModel(model, tok, tiny_model_dir), batch_size=4, prompt_template="alpaca")
    texts = [b.render(f"Document {k}. Write the next sentence.") for k in range(3)]
    assert b.prompt_lengths(texts) == [len(tok(t)["input_ids"]) for t in texts]
    greedy = b.generate_batch(texts, SamplingConfig(max_new_tokens=5), rows=b.plan(texts)[0])
    beam = b.generate_batch(texts, SamplingConfig(max_new_tokens=5, num_beams=2))
    # the prefix-shared decoder and HF generate see the same BOS-led prompt: greedy first tokens agree
    one = b._hf_generate(texts, SamplingConfig(max_new_tokens=5))
    assert [g["text"] for g in greedy] == [o["text"] for o in one]
    assert len(beam) == 3


def test_shards_spread_over_the_gpus_of_a_node():
    assert shard_gpus("1/4", n_gpus=2, env={}) == (1, [1])
    assert shard_gpus("2/4", n_gpus=2, env={}) == (0, [0])
    assert shard_gpus("3/4", n_gpus=8, tensor_parallel_size=2, env={}) == (3, [6, 7])
    assert shard_gpus("1/2", n_gpus=4, env={"CUDA_VISIBLE_DEVICES": "4,5,6,7"}) == (1, [5])
    assert shard_gpus("1/2", n_gpus=1, env={}) is None  # one GPU: nothing to assign
    assert shard_gpus(None, n_gpus=8, env={}) is None
    assert shard_gpus("0/2", n_gpus=2, tensor_parallel_size=4, env={}) is None


def _fake_python(path: Path, log: Path) -> str:
    """An 'interpreter' that records its arguments and the variables the child gets, then exits 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""#!{sys.executable}
import json, os, sys
json.dump({{"argv": sys.argv[1:], "child": os.environ.get("{IN_VLLM_CHILD}"),
           "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "path": os.environ.get("PYTHONPATH")}},
          open({str(log)!r}, "w"))
""")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_vllm_interpreter_is_found_in_order(tmp_path, monkeypatch):
    monkeypatch.delenv(VLLM_PYTHON_ENV, raising=False)
    monkeypatch.delenv(IN_VLLM_CHILD, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(backends, "REPO", tmp_path / "no-checkout")
    assert find_vllm_python() is None
    monkeypatch.setattr(backends, "vllm_importable", lambda: False)
    with pytest.raises(ConfigError, match="scripts/setup.sh --vllm"):
        vllm_runs_here()
    default = _fake_python(tmp_path / ".venv-vllm" / "bin" / "python", tmp_path / "log.json")
    assert find_vllm_python() == default and not vllm_runs_here()
    other = _fake_python(tmp_path / "elsewhere" / "python", tmp_path / "log.json")
    monkeypatch.setenv(VLLM_PYTHON_ENV, other)
    assert find_vllm_python() == other
    assert find_vllm_python(default) == default  # the flag wins over the variable
    with pytest.raises(ConfigError, match="--vllm_python /nowhere/python: no such interpreter"):
        find_vllm_python("/nowhere/python")
    monkeypatch.setenv(IN_VLLM_CHILD, "1")
    assert vllm_runs_here()  # inside the vLLM interpreter: build the engine here


def test_child_environment():
    env = child_env([3], base={"PYTHONPATH": "/x"})
    assert env[IN_VLLM_CHILD] == "1" and env["CUDA_VISIBLE_DEVICES"] == "3"
    first, rest = env["PYTHONPATH"].split(os.pathsep, 1)
    assert (Path(first) / "xtask_safety" / "generate" / "backends.py").is_file() and rest == "/x"


def test_generate_with_vllm_runs_in_the_vllm_interpreter(tmp_path, monkeypatch):
    """The main environment's command re-runs itself in vLLM's interpreter, on the shard's GPU."""
    from xtask_safety.generate.cli import main

    monkeypatch.delenv(IN_VLLM_CHILD, raising=False)
    log = tmp_path / "child.json"
    python = _fake_python(tmp_path / "venv" / "bin" / "python", log)
    grid = tmp_path / "grid.jsonl"
    write_jsonl(grid, [Record(id="r0", task="cloze", domain="news", document="A day at the quay. Boats came in.",
                              instruction="Write the next sentence.")])
    monkeypatch.setattr(backends, "gpu_count", lambda: 2)
    argv = ["--input", str(grid), "--output", str(tmp_path / "out" / "{name}.jsonl"), "--backend", "vllm",
            "--vllm_python", python, "--shard", "1/2", "--adapters", "a=x", "--include_base", "true"]
    assert main(argv) == 0
    seen = json.loads(log.read_text())
    assert seen["argv"] == ["-m", "xtask_safety", "generate", *argv]
    assert seen["child"] == "1" and seen["gpus"] == "1"
    assert "vllm" not in sys.modules  # the main environment never imported vLLM
    with pytest.raises(ConfigError, match="pattern with"):  # bad input is refused before a child starts
        main([*argv[:3], str(tmp_path / "one.jsonl"), *argv[4:]])
