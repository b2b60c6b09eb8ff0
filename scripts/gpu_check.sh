#!/usr/bin/env bash
# The GPU paths of the training recipes, proven on whatever GPUs the machine has, with no model hub:
#   1. the GPU benchmark kit at tiny scale (builds the random 2-layer Llama the runs below train);
#   2. `xtask-safety train` on the demo's mixed defense set, 3 optimizer steps each, with the Llama-2-7B
#      recipes (LoRA bf16 and QLoRA 4-bit) under every launch config that fits the GPUs here:
#      single_gpu, DeepSpeed ZeRO-2 and ZeRO-3, FSDP, FSDP + QLoRA (one process per GPU);
#   3. the GPU benchmark kit at 7B scale (LoRA / QLoRA training tokens/s and memory, generation).
# Each run's exit status, wall time and final loss go to OUT/gpu_check.jsonl, the benchmark pages to OUT.
#
#   bash scripts/gpu_check.sh OUT_DIR [TOKENIZER]     # TOKENIZER: `embedded` (default) or a local directory
# Environment: PY (interpreter, default python), GPU_CHECK_BENCH=0 skips the 7B benchmark, GPU_CHECK_RUNS="a b"
# runs only the named training runs, GPU_CHECK_WORK puts the work folder elsewhere,
# GPU_CHECK_SKIP_VLLM=0 lets the benchmark run vLLM (needs `bash scripts/setup.sh --vllm`), GPU_CHECK_TRAIN_ARGS
# adds training flags (a CPU rehearsal of the script: NGPU=1 GPU_CHECK_BENCH=0 GPU_CHECK_TRAIN_ARGS="--bf16 false").
set -uo pipefail
OUT=${1:-runs/gpu-check}
TOKENIZER=${2:-embedded}
PY=${PY:-python}
NGPU=${NGPU:-$($PY -c "import torch; print(torch.cuda.device_count())")}
WORK=${GPU_CHECK_WORK:-$OUT/work}  # the 7B model (13 GB) is written here
mkdir -p "$OUT" "$WORK"
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
LOG=$OUT/gpu_check.jsonl
: >"$LOG"
SKIP_VLLM=$([ "${GPU_CHECK_SKIP_VLLM:-1}" = 1 ] && echo --skip_vllm)

record() {  # name, exit status, seconds, run folder
  $PY - "$@" >>"$LOG" <<'EOF'
import json, sys
from pathlib import Path
name, rc, secs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
row = {"run": name, "exit": rc, "seconds": secs}
summary = out / "xtask_training.json"
if summary.is_file():
    s = json.loads(summary.read_text())["summary"]
    row.update({k: s.get(k) for k in ("global_step", "train_loss", "world_size", "distributed_type", "quantization",
                                      "quantized_layers")})
row["adapter_saved"] = (out / "adapter_model.safetensors").is_file()
print(json.dumps(row))
EOF
  tail -n1 "$LOG"
}

nvidia-smi -L || true
$PY - <<'EOF' | tee "$OUT/versions.json"
import importlib.metadata as md, importlib.util, json, torch
names = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "bitsandbytes"]
info = {n: md.version(n) if importlib.util.find_spec(n) else None for n in names}
info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
print(json.dumps(info))
EOF

# 1. the benchmark kit at tiny scale (its random model is the one trained below)
t0=$SECONDS
$PY benchmarks/bench_gpu.py --scale tiny --skip_vllm --tokenizer "$TOKENIZER" --work_dir "$WORK/bench" \
  --output "$OUT/gpu-tiny.md" >"$OUT/bench-tiny.log" 2>&1
echo "{\"run\": \"bench_gpu tiny\", \"exit\": $?, \"seconds\": $((SECONDS - t0))}" | tee -a "$LOG"
MODEL=$WORK/bench/tiny/model

# 2. training: the 7B recipes on the tiny model, 3 steps under each launch config
$PY -m xtask_safety data build --config recipes/demo/data.yaml --output_dir "$WORK/data" --mixed_sizes 32 --overwrite true >/dev/null
train() {  # name, recipe, accelerate config
  case " ${GPU_CHECK_RUNS:-$1} " in *" $1 "*) ;; *) return 0 ;; esac
  local out=$WORK/train/$1 t0=$SECONDS
  timeout 300 $PY -m xtask_safety train --config "recipes/llama-2-7b/$2/config.yaml" --accelerate_config "$3" \
    --accelerate_args "--num_processes $NGPU" --model_name_or_path "$MODEL" --train_file "$WORK/data/train/mixed-32.jsonl" \
    --output_dir "$out" --max_steps 3 --per_device_train_batch_size 4 --global_batch_size $((4 * NGPU)) \
    --max_length 256 --warmup_steps 0 --logging_steps 1 --save_strategy no --report_to none ${GPU_CHECK_TRAIN_ARGS:-} \
    >"$OUT/train-$1.log" 2>&1
  local rc=$?
  record "$1" $rc $((SECONDS - t0)) "$out"
  [ $rc = 0 ] || grep -v "it/s]" "$OUT/train-$1.log" | tail -n 12
}
train lora-single_gpu lora-bf16 single_gpu
train qlora-single_gpu qlora single_gpu
train lora-zero2 lora-bf16 zero2
train lora-zero3 lora-bf16 zero3
train lora-fsdp lora-bf16 fsdp
train qlora-fsdp qlora fsdp_qlora

# 3. the benchmark kit at 7B scale
if [ "${GPU_CHECK_BENCH:-1}" = 1 ]; then
  t0=$SECONDS
  $PY benchmarks/bench_gpu.py --scale 7b $SKIP_VLLM --tokenizer "$TOKENIZER" --work_dir "$WORK/bench" \
    --output "$OUT/gpu.md" --json "$OUT/gpu.json" >"$OUT/bench-7b.log" 2>&1
  echo "{\"run\": \"bench_gpu 7b\", \"exit\": $?, \"seconds\": $((SECONDS - t0))}" | tee -a "$LOG"
fi
