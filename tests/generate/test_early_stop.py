"""Rows that end early leave the decode batch; the others must still equal one-at-a-time HF generate."""

import pytest

from xtask_safety.data.builder import build_eval_grid
from xtask_safety.data.corpus import load_corpus_file
from xtask_safety.generate.base import SamplingConfig
from xtask_safety.generate.transformers_backend import TransformersBackend
from xtask_safety.models import load_model
from xtask_safety.tasks import TASK_NAMES

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on a busy machine


@pytest.fixture(scope="module")
def lively_model_dir(tmp_path_factory, tiny_model_dir):
    """A tiny Llama with large random weights, so that different prompts get different answers."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("lively-llama")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      initializer_range=0.5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(1)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def test_rows_stopping_early_leave_the_batch_without_changing_the_others(lively_model_dir, small_corpus):
    loaded = load_model(lively_model_dir)  # its own copy: the end-of-sequence token is changed below
    grid = build_eval_grid(load_corpus_file(small_corpus)[:3], list(TASK_NAMES))
    backend = TransformersBackend(loaded, batch_size=16)
    texts = [backend.render(r.prompt()) for r in grid]
    sampling = SamplingConfig(max_new_tokens=10)
    # Make a token that some answer produces mid-way the end-of-sequence token: such rows now stop early.
    outs = []
    for t in texts:
        enc = backend.tokenizer(t, return_tensors="pt", add_special_tokens=False)
        new = loaded.model.generate(**enc, max_new_tokens=10, do_sample=False,
                                    pad_token_id=backend.tokenizer.pad_token_id)
        outs.append(set(new[0, enc["input_ids"].shape[1]:].tolist()))
    stop = next(t for t in sorted(set().union(*outs)) if 0 < sum(t in o for o in outs) < len(outs))
    loaded.tokenizer.eos_token = loaded.tokenizer.convert_ids_to_tokens(stop)
    loaded.model.generation_config.eos_token_id = stop
    batches = backend.plan(texts)
    shared = {}
    for b in batches:
        for i, o in zip(b, backend.generate_batch([texts[i] for i in b], sampling, rows=b), strict=True):
            shared[i] = o
    ref = [backend._hf_generate([t], sampling)[0] for t in texts]
    stopped = [i for i, o in enumerate(ref) if o["n_tokens"] < sampling.max_new_tokens]
    assert 0 < len(stopped) < len(texts)  # some rows stop early, others run on in the same batch
    assert any(len(b) > 1 for b in batches)
    for i in range(len(texts)):
        assert (shared[i]["text"], shared[i]["n_tokens"]) == (ref[i]["text"], ref[i]["n_tokens"]), i
