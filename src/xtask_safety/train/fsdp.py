"""FSDP with LoRA: give every decoder layer its own FSDP unit under FSDP2 too.

With a PEFT model, ``Trainer`` replaces accelerate's auto-wrap policy by PEFT's combined policy (a
``functools.partial`` of ``_or_policy``: LoRA layers + transformer layers). FSDP1 understands it; accelerate
1.15's FSDP2 path only recognises ``transformer_auto_wrap_policy`` and ``size_based_auto_wrap_policy``
(``fsdp2_prepare_auto_wrap_policy``), so it returns no policy and the whole model becomes ONE unit:
every GPU gathers all the weights at once. FSDP2 shards parameter by parameter, so LoRA weights need no
unit of their own: after PEFT's update we put back the transformer-layer policy for the class names the
accelerate config gives (``fsdp_transformer_layer_cls_to_wrap``) or the model declares (``_no_split_modules``).
"""

from __future__ import annotations

import functools
from typing import Any


def restore_fsdp2_layer_policy(model: Any, accelerator: Any) -> bool:
    """Under FSDP2, replace a policy accelerate cannot read by the transformer-layer policy; True if replaced."""
    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy, transformer_auto_wrap_policy

    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None or getattr(plugin, "fsdp_version", 1) != 2:
        return False
    fn = plugin.auto_wrap_policy
    fn = fn.func if isinstance(fn, functools.partial) else fn
    if fn in (transformer_auto_wrap_policy, size_based_auto_wrap_policy):
        return False
    plugin.auto_wrap_policy = transformer_auto_wrap_policy
    if not plugin.transformer_cls_names_to_wrap:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        plugin.transformer_cls_names_to_wrap = list(getattr(base, "_no_split_modules", None) or [])
    return True


def install_fsdp2_peft_fix() -> None:
    """Wrap the ``Trainer``'s PEFT/FSDP hook so FSDP2 keeps per-layer units (idempotent)."""
    import transformers.trainer as hf_trainer

    original = hf_trainer.update_fsdp_plugin_peft
    if getattr(original, "_xtask_fsdp2", False):
        return

    @functools.wraps(original)
    def update(model: Any, accelerator: Any) -> None:
        original(model, accelerator)
        restore_fsdp2_layer_policy(model, accelerator)

    update._xtask_fsdp2 = True  # type: ignore[attr-defined]
    hf_trainer.update_fsdp_plugin_peft = update
