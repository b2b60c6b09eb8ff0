"""``xtask-safety train --accelerate_config NAME``: re-run the same command under ``accelerate launch``.

The command becomes ``python -m accelerate.commands.launch --config_file CONFIG [extra flags]
-m xtask_safety.train ARGS`` with the launch flags removed from ``ARGS``; the child processes see
``XTASK_SAFETY_LAUNCHED=1`` (and accelerate's own variables) and train instead of re-launching.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from xtask_safety.errors import ConfigError

LAUNCH_FLAGS = ("--accelerate_config", "--accelerate-config", "--accelerate_args", "--accelerate-args")
LAUNCHED_ENV = "XTASK_SAFETY_LAUNCHED"


def under_launcher() -> bool:
    """True inside a process started by ``accelerate launch``/torchrun (or by our own re-launch)."""
    return any(k in os.environ for k in (LAUNCHED_ENV, "ACCELERATE_MIXED_PRECISION", "LOCAL_RANK"))


def config_dirs() -> list[Path]:
    """Where named configs are looked up: $XTASK_ACCELERATE_CONFIGS, ./accelerate_configs, the copy shipped
    with the package (or the source checkout's)."""
    from xtask_safety.resources import ACCELERATE_CONFIGS, shipped_dirs

    dirs = [Path(p) for p in os.environ.get("XTASK_ACCELERATE_CONFIGS", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "accelerate_configs")
    dirs.extend(shipped_dirs(ACCELERATE_CONFIGS))
    return dirs


def resolve_accelerate_config(name: str) -> Path:
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file() and path.parent == Path("accelerate_configs"):  # accelerate_configs/X.yaml: shipped
            from xtask_safety.resources import ACCELERATE_CONFIGS, shipped_dirs

            path = next((d / path.name for d in shipped_dirs(ACCELERATE_CONFIGS) if (d / path.name).is_file()), path)
        if not path.is_file():
            raise ConfigError(f"accelerate_config: {name} not found")
        return path.resolve()
    available: set[str] = set()
    for d in config_dirs():
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            return candidate.resolve()
        if d.is_dir():
            available.update(p.stem for p in d.glob("*.yaml"))
    choices = ", ".join(sorted(available)) or "none found (is accelerate_configs/ in the working directory?)"
    raise ConfigError(f"accelerate_config: no config named {name!r}; available: {choices}")


def strip_launch_flags(argv: list[str]) -> list[str]:
    """The training arguments without ``--accelerate_config X`` / ``--accelerate_args X`` (any spelling)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in LAUNCH_FLAGS:
            skip = True
            continue
        if arg.split("=", 1)[0] in LAUNCH_FLAGS and "=" in arg:
            continue
        out.append(arg)
    return out


def build_launch_command(config: str, extra_args: str, argv: list[str]) -> list[str]:
    try:
        extra = shlex.split(extra_args or "")
    except ValueError as exc:
        raise ConfigError(f"accelerate_args: {exc}") from None
    cfg = resolve_accelerate_config(config)
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg), *extra,
            "-m", "xtask_safety.train", *strip_launch_flags(argv)]


def exec_launch(cmd: list[str]) -> None:
    """Replace this process with the launcher, so signals (SLURM, Ctrl-C) reach it directly."""
    env = {**os.environ, LAUNCHED_ENV: "1"}
    print("xtask-safety: launching " + shlex.join(cmd), file=sys.stderr, flush=True)
    os.execvpe(cmd[0], cmd, env)


SHARDED = ("FSDP", "DEEPSPEED", "MEGATRON_LM", "XLA")


def training_device_map(distributed_type: object, device_type: str, local_process_index: int) -> dict[str, int] | None:
    """Where a training process loads the model.

    TRL's default ``device_map="auto"`` spreads a single-process model over every visible GPU (a naive
    pipeline, one GPU busy at a time); pin it to this process's GPU instead. CPU/MPS and sharded set-ups
    (FSDP, DeepSpeed), which place the weights themselves, load with ``None``.
    """
    kind = str(getattr(distributed_type, "value", distributed_type))
    if device_type in ("cpu", "mps") or kind in SHARDED:
        return None
    return {"": local_process_index}
