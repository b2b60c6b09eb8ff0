"""GPU placement decided on a CPU: device_map per training process, FSDP units under PEFT, FSDP configs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml
from train_helpers import REPO

from xtask_safety.train.launch import training_device_map


@pytest.mark.parametrize("kind, device, index, expected", [
    ("NO", "cuda", 0, {"": 0}),            # one process on a multi-GPU node: its own GPU, not "auto"
    ("MULTI_GPU", "cuda", 3, {"": 3}),     # DDP rank 3 of a node
    ("FSDP", "cuda", 1, None),             # sharded set-ups place the weights themselves
    ("DEEPSPEED", "cuda", 1, None),
    ("NO", "cpu", 0, None),
    ("MULTI_GPU", "mps", 0, None),
])
def test_training_device_map(kind, device, index, expected):
    assert training_device_map(kind, device, index) == expected


def test_training_pins_the_model_to_its_process_gpu(tiny_recipe, tmp_path, monkeypatch):
    """The recipe's model_init_kwargs reach SFTTrainer with the pinned device_map (CPU here: None, never 'auto')."""
    import trl

    from xtask_safety.train.run import parse_train_args, train

    seen = {}

    class Stop(Exception):
        pass

    def fake_init(self, *args, **kwargs):
        seen.update(kwargs["args"].model_init_kwargs)
        raise Stop

    monkeypatch.setattr(trl.SFTTrainer, "__init__", fake_init)
    with pytest.raises(Stop):
        train(*parse_train_args(["--config", str(tiny_recipe), "--output_dir", str(tmp_path)]), progress=False)
    assert "device_map" in seen and seen["device_map"] is None


def _peft_llama():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def test_fsdp2_keeps_one_unit_per_decoder_layer_under_peft(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from transformers.distributed.fsdp import update_fsdp_plugin_peft
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from xtask_safety.train.fsdp import install_fsdp2_peft_fix, restore_fsdp2_layer_policy

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    model = _peft_llama()
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                            transformer_cls_names_to_wrap=["LlamaDecoderLayer"])
    acc = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin))
    update_fsdp_plugin_peft(model, acc)  # what Trainer does with a PEFT model
    assert fsdp2_prepare_auto_wrap_policy(plugin, model) is None  # the defect: the model would be ONE unit
    assert restore_fsdp2_layer_policy(model, acc)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    layers = [m for m in model.modules() if isinstance(m, LlamaDecoderLayer)]
    assert len(layers) == 2 and all(policy(m) for m in layers)
    assert not policy(model.base_model.model.lm_head)
    assert not restore_fsdp2_layer_policy(model, acc)  # already a policy FSDP2 reads: left alone
    # the hook is installed once, around the Trainer's own
    import transformers.trainer as hf_trainer

    monkeypatch.setattr(hf_trainer, "update_fsdp_plugin_peft", update_fsdp_plugin_peft)
    install_fsdp2_peft_fix()
    install_fsdp2_peft_fix()
    assert hf_trainer.update_fsdp_plugin_peft.__wrapped__ is update_fsdp_plugin_peft
    plugin.auto_wrap_policy, plugin.transformer_cls_names_to_wrap = None, None
    hf_trainer.update_fsdp_plugin_peft(model, acc)
    assert all(fsdp2_prepare_auto_wrap_policy(plugin, model)(m) for m in layers)  # from _no_split_modules


def test_fsdp_configs():
    """LoRA on FSDP2 and QLoRA on FSDP1, both naming the decoder layer, neither checkpointing twice."""
    from accelerate.commands.config.config_args import load_config_from_file

    lora = load_config_from_file(str(REPO / "accelerate_configs" / "fsdp.yaml")).fsdp_config
    qlora = load_config_from_file(str(REPO / "accelerate_configs" / "fsdp_qlora.yaml")).fsdp_config
    assert lora["fsdp_version"] == 2 and qlora["fsdp_version"] == 1
    for cfg in (lora, qlora):
        assert cfg["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
        assert cfg["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        # accelerate refuses cpu_ram_efficient_loading without sync_module_states
        assert not cfg["fsdp_cpu_ram_efficient_loading"] or cfg["fsdp_sync_module_states"]
        assert cfg["fsdp_activation_checkpointing"] is False  # the recipes checkpoint layers already
    assert qlora["fsdp_use_orig_params"] is False
    for recipe in ("llama-2-7b/qlora", "llama-1-7b/qlora"):
        cfg = yaml.safe_load((REPO / "recipes" / recipe / "config.yaml").read_text())
        assert cfg["bnb_4bit_quant_storage"] == "bfloat16" and cfg["activation_checkpointing"] is True
