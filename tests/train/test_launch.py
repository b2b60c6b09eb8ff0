"""Launch plumbing: accelerate configs, the --accelerate-config re-launch, SLURM and grid scripts."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from train_helpers import REPO

from xtask_safety.errors import ConfigError
from xtask_safety.train import launch
from xtask_safety.train.run import parse_train_args

CONFIGS = sorted((REPO / "accelerate_configs").glob("*.yaml"))
EXPECTED = {"single_gpu", "multi_gpu", "zero2", "zero3", "fsdp", "fsdp_qlora", "multi_node", "cpu_ddp"}
CPU_PARSE = ["--bf16", "false", "--use_cpu", "true"]  # GPU recipes parse on a CPU machine with these


def test_every_accelerate_config_loads_with_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    assert {p.stem for p in CONFIGS} >= EXPECTED
    for path in CONFIGS:
        cfg = load_config_from_file(str(path))
        # precision belongs to the recipe: a config-level bf16 would silently override `bf16: false`
        assert cfg.mixed_precision == "no", path.name
    kinds = {p.stem: str(load_config_from_file(str(p)).distributed_type).split(".")[-1] for p in CONFIGS}
    assert kinds["zero2"] == kinds["zero3"] == "DEEPSPEED" and kinds["fsdp"] == "FSDP"
    stages = {n: yaml.safe_load((REPO / "accelerate_configs" / f"{n}.yaml").read_text())["deepspeed_config"]["zero_stage"]
              for n in ("zero2", "zero3")}
    assert stages == {"zero2": 2, "zero3": 3}
    multi_node = load_config_from_file(str(REPO / "accelerate_configs" / "multi_node.yaml"))
    assert multi_node.num_machines > 1 and multi_node.num_processes > multi_node.num_machines


def test_cpu_config_starts_several_processes():
    """`use_cpu: true` (like --cpu) makes accelerate fall back to a single process: the config must not say it."""
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "accelerate_configs" / "cpu_ddp.yaml"))
    assert cfg.num_processes >= 2 and not cfg.use_cpu
    assert str(cfg.distributed_type).endswith("MULTI_GPU")


def test_launch_command_strips_its_own_flags_and_resolves_names():
    argv = ["--config", "r.yaml", "--accelerate-config", "cpu_ddp", "--accelerate_args=--num_processes 3",
            "--max_steps", "2", "--accelerate-args", "--main_process_port 1234"]
    cmd = launch.build_launch_command("cpu_ddp", "--num_processes 3 --main_process_port 1234", argv)
    i = cmd.index("-m", 2)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert Path(cmd[cmd.index("--config_file") + 1]) == (REPO / "accelerate_configs" / "cpu_ddp.yaml").resolve()
    assert cmd[cmd.index("--config_file") + 2: i] == ["--num_processes", "3", "--main_process_port", "1234"]
    assert cmd[i + 1:] == ["xtask_safety.train", "--config", "r.yaml", "--max_steps", "2"]
    with pytest.raises(ConfigError, match="no config named 'zero9'.*zero2"):
        launch.build_launch_command("zero9", "", [])
    with pytest.raises(ConfigError, match="not found"):
        launch.resolve_accelerate_config("missing/dir/config.yaml")


def test_launch_flags_are_recipe_fields(tmp_path):
    _, dargs, _ = parse_train_args(["--accelerate-config", "zero3", "--accelerate-args", "--num_processes 4",
                                    "--output_dir", str(tmp_path), *CPU_PARSE])
    assert (dargs.accelerate_config, dargs.accelerate_args) == ("zero3", "--num_processes 4")


def test_no_relaunch_inside_a_launched_process(monkeypatch):
    for var in (launch.LAUNCHED_ENV, "ACCELERATE_MIXED_PRECISION", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not launch.under_launcher()
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # set by every accelerate launcher
    assert launch.under_launcher()


def _dry_run(script: str, args: list[str], **env: str) -> list[list[str]]:
    proc = subprocess.run(["bash", f"scripts/{script}", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "XTASK_DRY_RUN": "1", **env}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


def _training_args(cmd: list[str]) -> list[str]:
    return cmd[cmd.index("xtask_safety.train") + 1:]


def test_slurm_script_starts_one_launcher_per_node(tmp_path):
    recipe = "recipes/llama-2-7b/lora-bf16/config.yaml"
    cmds = _dry_run("slurm_train.sh", [recipe, "--train_file", "my set.jsonl", "--output_dir", str(tmp_path)],
                    SLURM_NNODES="3", GPUS_PER_NODE="4", MAIN_PROCESS_IP="node017")
    assert len(cmds) == 3
    for rank, cmd in enumerate(cmds):
        flag = dict(zip(cmd, cmd[1:], strict=False))
        assert (flag["--machine_rank"], flag["--num_machines"], flag["--num_processes"]) == (str(rank), "3", "12")
        assert flag["--main_process_ip"] == "node017" and flag["--config_file"].endswith("multi_node.yaml")
        margs, dargs, sft = parse_train_args(_training_args(cmd) + CPU_PARSE)
        assert dargs.train_file == "my set.jsonl" and margs.model_name_or_path == "meta-llama/Llama-2-7b-hf"


def test_slurm_steps_run_the_checkout_copy_not_the_spooled_one(tmp_path):
    """Under sbatch "$0" is a spooled copy on the first node only: srun must start the submit directory's script."""
    spool = tmp_path / "spool" / "slurm_script"
    spool.parent.mkdir()
    spool.write_text((REPO / "scripts" / "slurm_train.sh").read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "srun.args"
    (bin_dir / "srun").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\n')
    (bin_dir / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(REPO),
           "SLURM_NNODES": "2", "GPUS_PER_NODE": "4", "MAIN_PROCESS_IP": "node017"}
    env.pop("XTASK_DRY_RUN", None)
    recipe = "recipes/llama-2-7b/lora-bf16/config.yaml"
    proc = subprocess.run(["bash", str(spool), recipe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    args = log.read_text().splitlines()
    assert args[args.index("bash") + 1] == str(REPO / "scripts" / "slurm_train.sh")
    assert args[args.index("bash") + 2:] == ["--node", recipe]
    assert str(spool) not in args


def test_paper_grid_covers_every_task_and_size(tmp_path):
    cmds = _dry_run("paper_grid.sh", ["recipes/llama-1-7b/paper/config.yaml", "--max_steps", "7"],
                    SIZES="10 100", MIXED_SIZES="2 20", DATA_DIR="data/p", OUT_ROOT=str(tmp_path))
    assert len(cmds) == 5 * 2 + 2
    seen = set()
    for cmd in cmds:
        margs, dargs, sft = parse_train_args(_training_args(cmd) + CPU_PARSE)
        assert margs.load_in_8bit and margs.lora_r == 8 and sft.max_steps == 7
        seen.add((dargs.train_file, sft.output_dir))
    assert ("data/p/train/single-translate-100.jsonl", str(tmp_path / "translate" / "n100")) in seen
    assert ("data/p/train/mixed-20.jsonl", str(tmp_path / "mixed" / "n20")) in seen
    assert len(seen) == 12


def test_processes_that_cannot_connect_are_refused(tiny_recipe, tmp_path, monkeypatch):
    """FSDP, or use_cpu: false, on a machine without GPUs: each launched process would train alone."""
    from xtask_safety.train.run import train

    args = parse_train_args(["--config", str(tiny_recipe), "--output_dir", str(tmp_path)])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="2 processes were launched but they are not connected"):
        train(*args, progress=False)
    assert not list(tmp_path.iterdir())  # refused before writing anything
