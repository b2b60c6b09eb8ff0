"""The private Trainer/SFTTrainer internals the project relies on still exist with the shapes it uses.

The project uses these and nothing else private of TRL/Transformers; an upgrade that changes one fails
here, by name, rather than deep inside a training run. (Where they are used: ``train/trainer.py``
overrides the first two hooks and reads the metric buffers; ``faults.py`` wraps ``_save_rng_state``.)
"""

import inspect

from transformers import Trainer
from trl import SFTTrainer

HOOKS = {  # private method -> the parameters the project passes
    "_get_train_sampler": ["self", "train_dataset"],
    "_get_num_items_in_batch": ["self", "batch_samples", "device"],
    "_save_rng_state": ["self", "output_dir"],
}


def test_trainer_hooks_keep_their_signatures():
    for name, params in HOOKS.items():
        fn = getattr(Trainer, name, None)
        assert fn is not None, f"transformers.Trainer.{name} is gone: update xtask_safety/train/trainer.py or faults.py"
        got = list(inspect.signature(fn).parameters)
        assert got[: len(params)] == params, f"Trainer.{name}{got}: expected parameters {params}"


def test_sft_trainer_metric_buffers_and_outputs():
    """WeightedSFTTrainer logs into SFTTrainer's metric buffers and reads the per-token outputs it computes."""
    src = inspect.getsource(SFTTrainer)
    for attr in ("self._metrics", "self._total_train_tokens", "label_mask", "entropy"):
        assert attr in src, f"trl.SFTTrainer no longer uses {attr}: update xtask_safety/train/trainer.py"


def test_fused_lm_head_reads_the_compaction_switch_at_each_call():
    """train/trainer.py has TRL's fused LM head score only labelled positions on a CPU through this switch."""
    import trl.trainer.utils as trl_utils

    assert callable(getattr(trl_utils, "_use_triton", None)), "trl.trainer.utils._use_triton is gone: update _labelled_positions_only"
    src = inspect.getsource(trl_utils.add_fused_lm_head)
    assert "compact = _use_triton(hidden_states.device)" in src, (
        "trl's add_fused_lm_head no longer decides compaction with _use_triton: update train/trainer.py"
    )
