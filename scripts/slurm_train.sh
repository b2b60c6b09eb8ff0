#!/usr/bin/env bash
# Multi-node training under SLURM: one `accelerate launch` per node, each starting one process per GPU.
#
#   sbatch --nodes 2 --gres gpu:8 scripts/slurm_train.sh recipes/llama-2-7b/lora-bf16/config.yaml \
#       --train_file runs/data/paper/train/mixed-100.jsonl --output_dir runs/llama-2-7b/mixed-100
#
# Environment (all optional):
#   ACCELERATE_CONFIG  accelerate config (default accelerate_configs/multi_node.yaml; zero2/zero3/fsdp work too)
#   GPUS_PER_NODE      processes per node (default: $SLURM_GPUS_ON_NODE, else the GPUs nvidia-smi lists)
#   MAIN_PROCESS_IP    rendezvous host (default: the first node of the allocation)
#   MAIN_PROCESS_PORT  rendezvous port (default 29500)
#   PYTHON             interpreter of the environment with xtask-safety (default: python)
#   XTASK_DRY_RUN=1    print each node's command (one line per node) instead of running anything
# Keep `global_batch_size` in the recipe: gradient accumulation adapts to the number of GPUs.
# A job that is requeued or resubmitted continues from the last complete checkpoint (the recipes set resume: true).
#SBATCH --job-name=xtask-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=32
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
# Under sbatch, "$0" is a spooled copy of this script that exists on the first node only: the per-node
# step runs the checkout's own copy, found from the submit directory (submit from the repository root).
SELF=$PWD/scripts/slurm_train.sh

PYTHON=${PYTHON:-python}
CONFIG=${ACCELERATE_CONFIG:-accelerate_configs/multi_node.yaml}
PORT=${MAIN_PROCESS_PORT:-29500}

if [ "${1:-}" = "--node" ]; then
  # one node: started by srun below, SLURM_PROCID is this node's rank
  shift
  RECIPE=$1; shift
  exec $PYTHON -m accelerate.commands.launch --config_file "$CONFIG" \
    --num_machines "$NNODES" --num_processes "$((NNODES * GPUS))" --machine_rank "${SLURM_PROCID:?}" \
    --main_process_ip "$MAIN_IP" --main_process_port "$PORT" \
    -m xtask_safety.train --config "$RECIPE" "$@"
fi

RECIPE=${1:?usage: slurm_train.sh RECIPE.yaml [training flags ...]}
shift
[ -f "$RECIPE" ] || { echo "slurm_train.sh: recipe $RECIPE not found" >&2; exit 2; }
[ -f "$CONFIG" ] || { echo "slurm_train.sh: accelerate config $CONFIG not found" >&2; exit 2; }
export NNODES=${SLURM_NNODES:-1}
if [ -n "${GPUS_PER_NODE:-}" ]; then GPUS=$GPUS_PER_NODE
elif [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then GPUS=$SLURM_GPUS_ON_NODE
else GPUS=$(nvidia-smi -L 2>/dev/null | wc -l); fi
[ "$GPUS" -ge 1 ] 2>/dev/null || { echo "slurm_train.sh: no GPUs found; set GPUS_PER_NODE" >&2; exit 2; }
export GPUS
if [ -n "${MAIN_PROCESS_IP:-}" ]; then MAIN_IP=$MAIN_PROCESS_IP
else MAIN_IP=$(scontrol show hostnames "${SLURM_JOB_NODELIST:?not inside a SLURM allocation; set MAIN_PROCESS_IP}" | head -n1); fi
export MAIN_IP CONFIG PORT PYTHON
export WANDB_MODE=${WANDB_MODE:-offline}  # compute nodes often have no network: sync later with `wandb sync`

if [ "${XTASK_DRY_RUN:-0}" = "1" ]; then
  for rank in $(seq 0 $((NNODES - 1))); do
    printf '%q ' $PYTHON -m accelerate.commands.launch --config_file "$CONFIG" \
      --num_machines "$NNODES" --num_processes "$((NNODES * GPUS))" --machine_rank "$rank" \
      --main_process_ip "$MAIN_IP" --main_process_port "$PORT" \
      -m xtask_safety.train --config "$RECIPE" "$@"
    echo
  done
  exit 0
fi
[ -f "$SELF" ] || { echo "slurm_train.sh: $SELF not found; submit from the repository root" >&2; exit 2; }
exec srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash "$SELF" --node "$RECIPE" "$@"
