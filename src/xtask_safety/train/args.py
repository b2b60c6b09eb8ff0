"""Training-only recipe fields: global batch, tracking, launching.

:class:`TrainArguments` extends :class:`xtask_safety.config.DefenseArguments`, so code that expects
the latter (the demo, tests) keeps working with what :func:`~xtask_safety.train.run.parse_train_args`
returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xtask_safety.config import DefenseArguments
from xtask_safety.errors import ConfigError


@dataclass
class TrainArguments(DefenseArguments):
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "Examples per optimizer step over all processes; sets gradient_accumulation_steps = "
                          "global / (per_device_train_batch_size x processes), so a recipe means the same on 1 or 64 GPUs."},
    )
    data_manifest: str | None = field(
        default=None,
        metadata={"help": "Dataset manifest (JSON) attached to the tracker run and model card. Default: "
                          "<train_file>.manifest.json, <train_file stem>.manifest.json or manifest.json beside it."},
    )
    run_tags: list[str] = field(
        default_factory=list, metadata={"help": "Extra tracker tags (model/task/size/weighting tags are automatic)."}
    )
    wandb_project: str | None = field(
        default=None, metadata={"help": "W&B project (default: $WANDB_PROJECT or 'xtask-safety'). W&B runs offline "
                                        "unless WANDB_MODE=online is set."}
    )
    accelerate_config: str | None = field(
        default=None,
        metadata={"help": "Re-launch through `accelerate launch` with this config: a name from accelerate_configs/ "
                          "(single_gpu, multi_gpu, zero2, zero3, fsdp, multi_node, cpu_ddp) or a YAML path."},
    )
    accelerate_args: str = field(
        default="", metadata={"help": "Extra `accelerate launch` flags for --accelerate_config, e.g. '--num_processes 4'."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ConfigError(f"global_batch_size: must be positive, got {self.global_batch_size}")
        tags = [self.run_tags] if isinstance(self.run_tags, str) else list(self.run_tags or [])
        self.run_tags = [t.strip() for tag in tags for t in str(tag).split(",") if t.strip()]


def gradient_accumulation_for(global_batch: int, per_device: int, world_size: int) -> int:
    """GA steps giving ``global_batch`` examples per update; a remainder is a recipe error, not a rounding."""
    per_step = per_device * world_size
    if global_batch % per_step:
        raise ConfigError(
            f"global_batch_size {global_batch} is not a multiple of per_device_train_batch_size {per_device} x "
            f"{world_size} process(es) = {per_step}"
        )
    return global_batch // per_step
