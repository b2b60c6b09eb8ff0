import json

import pytest

from xtask_safety.data.builder import build_eval_grid
from xtask_safety.data.corpus import load_corpus_file
from xtask_safety.errors import ConfigError
from xtask_safety.generate.base import SamplingConfig
from xtask_safety.generate.run import generate_to_file, shard_records
from xtask_safety.generate.transformers_backend import TransformersBackend
from xtask_safety.models import check_adapter_dir, load_model
from xtask_safety.tasks import TASK_NAMES


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture
def grid(small_corpus):
    docs = load_corpus_file(small_corpus)[:6]
    return build_eval_grid(docs, list(TASK_NAMES))


def test_prefix_shared_batches_equal_one_at_a_time_hf_generate(tiny, grid):
    backend = TransformersBackend(tiny, batch_size=8)
    texts = [backend.render(r.prompt()) for r in grid]
    sampling = SamplingConfig(max_new_tokens=12)
    batches = backend.plan(texts)
    assert sorted(i for b in batches for i in b) == list(range(len(texts)))
    assert any(len(g) > 1 for b in batches for g in backend._batches[tuple(b)].groups)  # prefixes were shared
    shared = {}
    for b in batches:
        for i, o in zip(b, backend.generate_batch([texts[i] for i in b], sampling, rows=b), strict=True):
            shared[i] = o
    for i, text in enumerate(texts):
        ref = backend._hf_generate([text], sampling)[0]
        assert shared[i]["text"] == ref["text"], i
        assert shared[i]["n_tokens"] == ref["n_tokens"]


def test_generation_resumes_and_writes_every_id_once(tiny, grid, tmp_path):
    out = tmp_path / "gen.jsonl"
    backend = TransformersBackend(tiny, batch_size=4)
    sampling = SamplingConfig(max_new_tokens=6)
    full = generate_to_file(grid, backend, tmp_path / "full.jsonl", sampling, progress=False)
    # a run that died after a few records, mid-line
    lines = (tmp_path / "full.jsonl").read_text().splitlines()
    out.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    resumed = generate_to_file(grid, TransformersBackend(tiny, batch_size=4), out, sampling, progress=False)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(r.id for r in grid) and len(ids) == len(set(ids))
    assert [r["response"] for r in resumed] == [r["response"] for r in full]
    # a rerun generates nothing new
    before = out.read_bytes()
    generate_to_file(grid, backend, out, sampling, progress=False)
    assert out.read_bytes() == before


def test_sampling_is_reproducible(tiny, grid):
    backend = TransformersBackend(tiny, batch_size=8)
    texts = [backend.render(r.prompt()) for r in grid[:4]]
    s = SamplingConfig(max_new_tokens=8, do_sample=True, temperature=1.0, seed=3)
    assert backend.generate_batch(texts, s) == backend.generate_batch(texts, s)


def test_shards_partition_the_records(grid):
    parts = [shard_records(grid, f"{i}/3") for i in range(3)]
    assert sorted(r.id for p in parts for r in p) == sorted(r.id for r in grid)


def test_adapter_directory_checks(tmp_path):
    with pytest.raises(ConfigError, match="directory not found"):
        check_adapter_dir(str(tmp_path / "nope"))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text("{}")
    (tmp_path / "a" / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ConfigError, match="pickled adapter_model.bin, which is not loaded"):
        check_adapter_dir(str(tmp_path / "a"))
