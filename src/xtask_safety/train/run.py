"""Training entry point.

Three ways in, one code path:

* ``xtask-safety train --config recipe.yaml [--flag value ...]`` (one process),
* ``accelerate launch [--config_file accelerate_configs/X.yaml] -m xtask_safety.train --config ...``,
* ``xtask-safety train --accelerate_config X --config ...``: re-executes itself under ``accelerate launch``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xtask_safety import faults
from xtask_safety.config import DefenseArguments, ModelArguments, parse_recipe
from xtask_safety.errors import ConfigError
from xtask_safety.models import offline_defaults, resolve_model_path
from xtask_safety.records import Record, read_records
from xtask_safety.tasks import INSTRUCTION_TASK, TASK_NAMES
from xtask_safety.train.args import TrainArguments, gradient_accumulation_for

# Training settings that must not change between a crash and ``--resume`` (the fingerprint).
RESUME_SETTINGS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
                   "max_steps", "seed", "data_seed", "max_length", "completion_only_loss", "lr_scheduler_type",
                   "warmup_steps", "optim", "train_sampling_strategy")


def parse_train_args(argv: list[str] | None = None) -> tuple[ModelArguments, DefenseArguments, Any]:
    """(model args, defense args — a :class:`TrainArguments` —, ``trl.SFTConfig``) from a recipe + flags."""
    import torch
    from trl import SFTConfig

    # bf16 defaults to on in TRL; a machine without a GPU cannot train in it, so there it starts off
    # (a recipe or --bf16 still decides).
    defaults = None if torch.cuda.is_available() else {"bf16": False}
    margs, dargs, sft_args = parse_recipe((ModelArguments, TrainArguments, SFTConfig), argv, prog="xtask-safety train",
                                          defaults=defaults)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        dargs._recipe_file = argv[argv.index("--config") + 1]
    return margs, dargs, sft_args


def build_peft_config(margs: ModelArguments, num_layers: int | None) -> Any:
    from trl import get_peft_config

    peft_config = get_peft_config(margs)
    if peft_config is not None and margs.lora_top_layers:
        if not num_layers:
            raise ConfigError("lora_top_layers: cannot read the model's number of layers")
        top = min(margs.lora_top_layers, num_layers)
        peft_config.layers_to_transform = list(range(num_layers - top, num_layers))
        peft_config.layers_pattern = "layers"
    return peft_config


def quantization_config(margs: ModelArguments) -> Any:
    """bitsandbytes 4-bit (QLoRA, NF4 by default) or 8-bit base weights; None for a full-precision base."""
    if not (margs.load_in_4bit or margs.load_in_8bit):
        return None
    if margs.load_in_4bit and margs.load_in_8bit:
        raise ConfigError("load_in_4bit and load_in_8bit: choose one")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("load_in_4bit/load_in_8bit: bitsandbytes is not installed (pip install bitsandbytes==0.50.2)")
    from trl import get_quantization_config

    return get_quantization_config(margs)


def _extra(dargs: DefenseArguments, name: str, default: Any = None) -> Any:
    """A :class:`TrainArguments` field, or its default when given plain DefenseArguments."""
    return getattr(dargs, name, default)


# Imported by :func:`train` right after :func:`offline_defaults` (the HF libraries read its settings when
# imported) and before any input is checked; the helpers below import the names they use from the cache.
@dataclass
class _TrainData:
    """The training records, their weights, and what is recorded about them (hash, profile, data manifest)."""

    records: list[Record]
    weights: list[float]
    task_names: list[str]
    sha256: str
    profile: dict[str, Any]
    manifest_path: str | None
    manifest: Any
    data_set: dict[str, Any] | None


@dataclass
class _Run:
    """What every step of :func:`train` reads: its arguments, the training data, the number of processes."""

    margs: ModelArguments
    dargs: DefenseArguments
    sft_args: Any
    data: _TrainData
    world_size: int


@dataclass
class _TrainerInputs:
    """The model path, tokenizer, datasets and PEFT/quantization configs the trainer is built from."""

    path: str
    tokenizer: Any
    train_ds: Any
    eval_ds: Any
    peft_config: Any
    quant: Any


@dataclass
class _Tracking:
    """The run's identity (name, group) and where it is tracked."""

    identity: dict[str, Any]
    recipe_file: str | None
    use_wandb: bool


def train(margs: ModelArguments, dargs: DefenseArguments, sft_args: Any, progress: bool = True) -> dict[str, Any]:
    """Train a (LoRA) defense; returns a summary with the adapter path and final metrics."""
    offline_defaults()
    from xtask_safety.train import tracking

    data = _load_train_data(dargs)
    world_size = _check_run_settings(dargs, sft_args)
    run = _Run(margs, dargs, sft_args, data, world_size)
    inputs = _prepare_trainer_inputs(run, progress)
    resume, is_main = _resolve_resume(run)
    tracked = _start_tracking(run, resume, is_main)
    trainer = _build_trainer(run, inputs, resume)
    adapter_dir = Path(sft_args.output_dir)
    calibration: dict[str, Any] = {}
    result = _train_and_save(trainer, sft_args, resume, adapter_dir,
                             calibrate=_calibrator(run, calibration) if dargs.decision_calibrate_steps else None)
    summary = _summary(run, trainer, result, resume, adapter_dir, tracked)
    summary["calibration"] = calibration or None
    if trainer.is_world_process_zero():
        write_model_card(adapter_dir, margs, dargs, summary, trainer.state.log_history,
                         recipe_file=tracked.recipe_file, manifest=data.manifest)
    if tracked.use_wandb:
        tracking.finish_wandb(summary)
    return summary


def _load_train_data(dargs: DefenseArguments) -> _TrainData:
    """Read and weight the training records (all of known tasks), hash the file, find its data manifest."""
    from xtask_safety.train import tracking
    from xtask_safety.train.weights import assign_weights

    if not dargs.train_file:
        raise ConfigError("train_file: required (a JSONL file of training records)")
    records = read_records(dargs.train_file)
    weights = assign_weights(records, dargs.weighting, dargs.task_weights, dargs.defense_ratio)
    task_names = list(TASK_NAMES) + [INSTRUCTION_TASK]
    unknown = sorted({r.task for r in records} - set(task_names))
    if unknown:
        raise ConfigError(f"{dargs.train_file}: unknown task(s) {unknown}")
    train_sha = _sha256(dargs.train_file)
    profile = tracking.data_profile(records, weights)
    manifest_path, manifest = tracking.find_manifest(dargs.train_file, _extra(dargs, "data_manifest"))
    data_set = tracking.manifest_entry(manifest, manifest_path, dargs.train_file, train_sha)
    return _TrainData(records, weights, task_names, train_sha, profile, manifest_path, manifest, data_set)


def _check_run_settings(dargs: DefenseArguments, sft_args: Any) -> int:
    """The world size. Refuses launched processes that cannot connect and unusable trackers; derives the
    gradient accumulation from ``global_batch_size`` when one is set."""
    from xtask_safety.train import tracking

    world_size = sft_args.world_size
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > world_size:
        # e.g. FSDP or use_cpu: false on a machine without GPUs: every process would train alone, all
        # writing the same output_dir
        raise ConfigError(f"{launched} processes were launched but they are not connected (no distributed backend "
                          "for this device); on a CPU machine set use_cpu: true (DDP over gloo), or ddp_backend: "
                          "gloo with a DeepSpeed config")
    tracking.check_trackers(sft_args.report_to)
    global_batch = _extra(dargs, "global_batch_size")
    if global_batch:
        sft_args.gradient_accumulation_steps = gradient_accumulation_for(
            global_batch, sft_args.per_device_train_batch_size, world_size)
    return world_size


def _prepare_trainer_inputs(run: _Run, progress: bool) -> _TrainerInputs:
    """Load the tokenizer and datasets; set up model loading (``sft_args``), PEFT and quantization."""
    from xtask_safety.models import load_config, load_tokenizer

    margs, sft_args = run.margs, run.sft_args
    path = resolve_model_path(margs.model_name_or_path, margs.gguf_file)
    tokenizer = load_tokenizer(path, trust_remote_code=sft_args.trust_remote_code, padding_side="right")
    train_ds, eval_ds = _build_datasets(run)
    _set_model_init_kwargs(margs, sft_args)
    num_layers = getattr(load_config(path, trust_remote_code=sft_args.trust_remote_code), "num_hidden_layers", None)
    peft_config = build_peft_config(margs, num_layers)
    quant = quantization_config(margs)
    if not progress:
        sft_args.disable_tqdm = True
    return _TrainerInputs(path, tokenizer, train_ds, eval_ds, peft_config, quant)


def _build_datasets(run: _Run) -> tuple[Any, Any]:
    """The training dataset, and the evaluation one (None without ``eval_file``), as SFT rows."""
    from datasets import Dataset

    from xtask_safety.train.dataset import to_sft_rows

    margs, dargs = run.margs, run.dargs
    rows = to_sft_rows(run.data.records, run.data.weights, margs.prompt_template, margs.system_prompt)
    train_ds = Dataset.from_list(rows)
    eval_ds = None
    if dargs.eval_file:
        eval_records = read_records(dargs.eval_file)
        eval_ds = Dataset.from_list(
            to_sft_rows(eval_records, [r.weight for r in eval_records], margs.prompt_template, margs.system_prompt)
        )
    return train_ds, eval_ds


def _set_model_init_kwargs(margs: ModelArguments, sft_args: Any) -> None:
    """How the trainer loads the base model: dtype, attention, device placement (and the FSDP2 + LoRA fix)."""
    sft_args.remove_unused_columns = False  # keep task/weight for the collator
    sft_args.model_init_kwargs = {
        **(sft_args.model_init_kwargs or {}),
        "dtype": margs.dtype or "float32",
        "trust_remote_code": sft_args.trust_remote_code,
    }
    if margs.attn_implementation:
        sft_args.model_init_kwargs["attn_implementation"] = margs.attn_implementation
    if "device_map" not in sft_args.model_init_kwargs:
        from xtask_safety.train.launch import training_device_map

        state = sft_args.distributed_state
        sft_args.model_init_kwargs["device_map"] = training_device_map(
            state.distributed_type, state.device.type, state.local_process_index)
    if "FSDP" in str(sft_args.distributed_state.distributed_type):
        from xtask_safety.train.fsdp import install_fsdp2_peft_fix

        install_fsdp2_peft_fix()  # FSDP2 + LoRA: keep one FSDP unit per decoder layer


def _resolve_resume(run: _Run) -> tuple[str | None, bool]:
    """The checkpoint to resume from (None: a fresh start), checked against the run's fingerprint, and
    whether this is the main process (which writes the fingerprint)."""
    from xtask_safety.train import checkpoints

    margs, sft_args = run.margs, run.sft_args
    fingerprint = checkpoints.run_fingerprint(run.data.sha256, {
        "model": margs.model_name_or_path, "lora": [margs.use_peft, margs.lora_r, margs.lora_alpha,
                                                    margs.lora_target_modules, margs.lora_top_layers],
        "quantization": [margs.load_in_4bit, margs.load_in_8bit], "weighting": run.dargs.weighting,
        "world_size": run.world_size, **{k: getattr(sft_args, k, None) for k in RESUME_SETTINGS}})
    resume = checkpoints.resolve_resume(sft_args.output_dir, sft_args.resume_from_checkpoint, run.dargs.resume,
                                        fingerprint)
    is_main = sft_args.process_index == 0
    if is_main:
        checkpoints.write_fingerprint(sft_args.output_dir, fingerprint)
    return resume, is_main


def _start_tracking(run: _Run, resume: str | None, is_main: bool) -> _Tracking:
    """Name the run (unless named) and, on the main process, start its wandb run with the full config."""
    from xtask_safety.train import tracking

    margs, dargs, sft_args, data = run.margs, run.dargs, run.sft_args, run.data
    identity = tracking.run_identity(margs.model_name_or_path, data.profile, dargs.weighting, dargs.run_group,
                                     _extra(dargs, "run_tags", []))
    if not sft_args.run_name or sft_args.run_name == sft_args.output_dir:
        sft_args.run_name = identity["name"]
    recipe_file = getattr(dargs, "_recipe_file", None)
    run_config = {
        "recipe_file": recipe_file,
        "recipe_text": Path(recipe_file).read_text(encoding="utf-8") if recipe_file else None,
        "model_args": asdict(margs), "defense_args": asdict(dargs),
        "data": {"train_file": dargs.train_file, "train_file_sha256": data.sha256, **data.profile},
        "data_manifest_file": data.manifest_path, "data_manifest": data.manifest, "data_set": data.data_set,
        "world_size": run.world_size,
    }
    use_wandb = "wandb" in sft_args.report_to and is_main
    if use_wandb:
        tracking.start_wandb(sft_args.output_dir, identity, run_config, _extra(dargs, "wandb_project"),
                             resume=bool(resume))
    return _Tracking(identity, recipe_file, use_wandb)


def _build_trainer(run: _Run, inputs: _TrainerInputs, resume: str | None) -> Any:
    """The weighted SFT trainer, with the decision-margin callback when asked for and the fault hooks armed."""
    from xtask_safety.train.collator import WeightedCollator
    from xtask_safety.train.trainer import WeightedSFTTrainer

    dargs, task_names = run.dargs, run.data.task_names
    collator = WeightedCollator(
        pad_token_id=inputs.tokenizer.pad_token_id,
        task_names=task_names,
        decision_tokens=dargs.decision_tokens,
        decision_weight=dargs.decision_weight,
    )
    trainer = WeightedSFTTrainer(
        model=inputs.path,
        args=run.sft_args,
        train_dataset=inputs.train_ds,
        eval_dataset=inputs.eval_ds,
        processing_class=inputs.tokenizer,
        data_collator=collator,
        peft_config=inputs.peft_config,
        quantization_config=inputs.quant,
        task_names=task_names,
        loss_normalization=dargs.loss_normalization,
        stratify_batches=dargs.stratify_batches,
    )
    if dargs.decision_dev_file:
        trainer.add_callback(_decision_callback(dargs, run.margs, inputs.tokenizer, run.sft_args.output_dir,
                                                fresh=not resume))
    faults.arm_trainer(trainer)
    return trainer


def _train_and_save(trainer: Any, sft_args: Any, resume: str | None, adapter_dir: Path,
                    calibrate: Any = None) -> Any:
    """Train (or restore a run killed after its last step), calibrate the threshold when asked, and save the
    final adapter; the Trainer's result."""
    from xtask_safety.train import checkpoints

    with checkpoints.write_failures_reported(sft_args.output_dir):
        if resume and checkpoints.reached_max_steps(resume, sft_args.max_steps) and not (
                getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False)):
            result = checkpoints.restore_finished(trainer, resume)  # killed after its last step: nothing to train
        else:
            result = trainer.train(resume_from_checkpoint=resume)
        faults.point("train.final")
        if calibrate is not None:
            calibrate(trainer)
        if getattr(trainer, "is_fsdp_enabled", False):
            # checkpoints stay sharded; the final adapter is gathered into one safetensors file (PEFT's FSDP recipe)
            trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model(str(adapter_dir))
    return result


def _summary(run: _Run, trainer: Any, result: Any, resume: str | None, adapter_dir: Path,
             tracked: _Tracking) -> dict[str, Any]:
    """What :func:`train` returns (and the model card records): the adapter, the data, the run's metrics."""
    from xtask_safety.train import checkpoints

    margs, sft_args, data, world_size = run.margs, run.sft_args, run.data, run.world_size
    return {
        "adapter": str(adapter_dir),
        "base_model": margs.model_name_or_path,
        "global_step": trainer.state.global_step,
        # resumed: the Trainer's value covers only the steps since the resume; report the whole run's
        "train_loss": checkpoints.run_mean_loss(trainer.state.log_history) if resume else result.training_loss,
        "train_file_sha256": data.sha256,
        "n_records": len(data.records),
        "resumed_from": resume,
        "run_name": sft_args.run_name,
        "run_group": tracked.identity["group"],
        "world_size": world_size,
        "gradient_accumulation_steps": sft_args.gradient_accumulation_steps,
        "global_batch_size": sft_args.per_device_train_batch_size * sft_args.gradient_accumulation_steps * world_size,
        "distributed_type": str(trainer.accelerator.distributed_type).split(".")[-1],
        "quantization": "4bit" if margs.load_in_4bit else "8bit" if margs.load_in_8bit else None,
        "quantized_layers": _count_quantized(trainer.model),
        "completion_only_loss": sft_args.completion_only_loss,
        "report_to": list(sft_args.report_to),
        "data_manifest": data.manifest_path,
        "data_manifest_sha256": _sha256(data.manifest_path) if data.manifest_path else None,
        "data_set": data.data_set,
        "weight_per_task": data.profile["weight_per_task"],
        "final_nll": _final_task_nll(trainer.state.log_history),
        # the step whose weights were saved when decision_select chose one (None: the last step's)
        "selected_step": next((getattr(cb, "selected_step", None) for cb in trainer.callback_handler.callbacks
                               if getattr(cb, "selected_step", None) is not None), None),
    }


def _decision_callback(dargs: DefenseArguments, margs: ModelArguments, tokenizer: Any, output_dir: str,
                       fresh: bool) -> Any:
    from xtask_safety.data.builder import load_refusals
    from xtask_safety.train.margin import DecisionMarginCallback

    curve = Path(output_dir) / "decision_curve.jsonl"
    if fresh:  # a resumed run appends to the curve it started
        curve.unlink(missing_ok=True)
    return DecisionMarginCallback(read_records(dargs.decision_dev_file), load_refusals(), tokenizer, curve,
                                  every=dargs.decision_eval_steps, start=dargs.decision_eval_start,
                                  template=margs.prompt_template,
                                  system_prompt=margs.system_prompt, select=dargs.decision_select)


def _calibrator(run: _Run, out: dict[str, Any]) -> Any:
    """The post-training threshold calibration (train/calibrate.py) as a function of the trainer; its
    result goes into ``out``. Single-process only: it reads and steps on the main process's model."""
    from xtask_safety.data.builder import load_refusals
    from xtask_safety.train.calibrate import calibrate_threshold
    from xtask_safety.train.margin import DecisionMarginCallback

    if run.world_size > 1:
        raise ConfigError("decision_calibrate_steps: single-process runs only (it steps on one process's model)")
    dargs, margs = run.dargs, run.margs

    def calibrate(trainer: Any) -> None:
        # the decision callback read the same slice during training: its stored lower-layer states serve here
        states = next((cb.states for cb in trainer.callback_handler.callbacks if isinstance(cb, DecisionMarginCallback)),
                      None)
        out.update(calibrate_threshold(
            trainer, read_records(dargs.decision_dev_file), load_refusals(), dargs.decision_calibrate_steps,
            dargs.decision_calibrate_lr, curve=Path(run.sft_args.output_dir) / "decision_curve.jsonl",
            template=margs.prompt_template, system_prompt=margs.system_prompt, seed=run.sft_args.seed,
            states=states))

    return calibrate


def _count_quantized(model: Any) -> int:
    """bitsandbytes layers actually in the model (4-bit ``Linear4bit``, 8-bit ``Linear8bitLt``)."""
    return sum(type(m).__name__ in ("Linear4bit", "Linear8bitLt") and type(m).__module__.startswith("bitsandbytes")
               for m in model.modules())


def _final_task_nll(history: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged per-task NLL (``nll_<task>``) of the run."""
    out: dict[str, float] = {}
    for entry in history:
        out.update({k[4:]: v for k, v in entry.items() if k.startswith("nll_") and isinstance(v, (int, float))})
    return out


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_model_card(
    adapter_dir: Path, margs: ModelArguments, dargs: DefenseArguments, summary: dict[str, Any], history: list,
    recipe_file: str | None = None, manifest: Any = None,
) -> None:
    from xtask_safety.records import atomic_write_text, write_json

    recipe = {"model": asdict(margs), "defense": asdict(dargs), "recipe_file": recipe_file}
    write_json(adapter_dir / "xtask_training.json", {"summary": summary, "recipe": recipe, "log_history": history,
                                                      "data_manifest": manifest})
    quant = {"4bit": f"4-bit {margs.bnb_4bit_quant_type} (QLoRA)", "8bit": "8-bit"}.get(summary.get("quantization") or "",
                                                                                        "none")
    manifest_hash = f" (sha256 `{summary['data_manifest_sha256'][:16]}…`)" if summary.get("data_manifest_sha256") else ""
    nll = ", ".join(f"{t} {v:.3f}" for t, v in (summary.get("final_nll") or {}).items()) or "not logged"
    card = f"""---
library_name: peft
base_model: {margs.model_name_or_path}
tags: [xtask-safety, content-safety, lora]
---
# xtask-safety defense adapter

A LoRA adapter trained by xtask-safety to refuse summarize / translate / sentiment / cloze / case
tasks on malicious documents while still performing them on benign ones.

* base model: `{margs.model_name_or_path}` (quantization: {quant})
* training data: `{dargs.train_file}` (sha256 `{summary['train_file_sha256'][:16]}…`, {summary['n_records']} records)
* data manifest: `{summary.get('data_manifest') or 'none found'}`{manifest_hash}
* recipe: `{recipe_file or 'flags only'}`; run `{summary.get('run_name')}` (group `{summary.get('run_group')}`)
* weighting: `{dargs.weighting}`, loss normalisation `{dargs.loss_normalization}`,
  decision tokens {dargs.decision_tokens} × {dargs.decision_weight};
  loss on {'the completion only' if summary.get('completion_only_loss') is not False else 'the whole sequence'}
* LoRA: r {margs.lora_r}, alpha {margs.lora_alpha}, dropout {margs.lora_dropout},
  targets `{margs.lora_target_modules}`, top layers `{margs.lora_top_layers}`
* processes: {summary.get('world_size', 1)} ({summary.get('distributed_type', 'NO')}), global batch
  {summary.get('global_batch_size', '?')} (gradient accumulation {summary.get('gradient_accumulation_steps', '?')})
* steps: {summary['global_step']}, final train loss {summary['train_loss']:.4f}
* last per-task NLL: {nll}

The full recipe, data manifest and log history are in `xtask_training.json`. Weights are safetensors.
"""
    atomic_write_text(adapter_dir / "README.md", card)


def main(argv: list[str] | None = None) -> int:
    from xtask_safety.train.launch import build_launch_command, exec_launch, under_launcher

    margs, dargs, sft_args = parse_train_args(argv)
    config = _extra(dargs, "accelerate_config")
    if config and not under_launcher():
        exec_launch(build_launch_command(config, _extra(dargs, "accelerate_args", ""),
                                         list(sys.argv[1:] if argv is None else argv)))
    summary = train(margs, dargs, sft_args)
    if sft_args.process_index == 0:
        print(json.dumps(summary, indent=2, default=str))
    return 0
