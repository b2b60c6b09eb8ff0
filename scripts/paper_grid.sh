#!/usr/bin/env bash
# The paper's grid for one recipe: every single task at every defense size, and the mixed setting at
# every mixed size, one training run each (sequentially; finished runs are skipped, killed runs resume).
#
#   scripts/paper_grid.sh recipes/llama-2-7b/paper/config.yaml [extra training flags ...]
#
# Environment (all optional):
#   DATA_DIR           output of `xtask-safety data build` (default runs/data/paper): sets are read from
#                      $DATA_DIR/train/single-<task>-<size>.jsonl and $DATA_DIR/train/mixed-<size>.jsonl
#   TASKS              default "summarize translate sentiment cloze case"
#   SIZES              single-task defense sizes, default "10 50 100 200 500 1000 2000"
#   MIXED_SIZES        mixed defense sizes per task, default "2 10 20 40 100 200 400"
#   OUT_ROOT           default runs/<model>/<variant> (taken from the recipe path)
#   ACCELERATE_CONFIG  name or path of an accelerate config (default multi_gpu); "none" runs one process
#   PYTHON             default python
#   XTASK_DRY_RUN=1    print the commands (one per line) instead of running them
# The paper's released sets span 10…2000 defense examples (single task) and 2…400 per task (mixed);
# set SIZES/MIXED_SIZES to the sizes your data build produced.
set -euo pipefail
cd "$(dirname "$0")/.."

RECIPE=${1:?usage: paper_grid.sh RECIPE.yaml [training flags ...]}
shift
[ -f "$RECIPE" ] || { echo "paper_grid.sh: recipe $RECIPE not found" >&2; exit 2; }
PYTHON=${PYTHON:-python}
DATA_DIR=${DATA_DIR:-runs/data/paper}
TASKS=${TASKS:-summarize translate sentiment cloze case}
SIZES=${SIZES:-10 50 100 200 500 1000 2000}
MIXED_SIZES=${MIXED_SIZES:-2 10 20 40 100 200 400}
VARIANT=$(basename "$(dirname "$RECIPE")")
MODEL=$(basename "$(dirname "$(dirname "$RECIPE")")")
OUT_ROOT=${OUT_ROOT:-runs/$MODEL/$VARIANT}
CONFIG=${ACCELERATE_CONFIG:-multi_gpu}
case "$CONFIG" in
  none) LAUNCH=("$PYTHON" -m xtask_safety.train) ;;
  */*|*.yaml) LAUNCH=("$PYTHON" -m accelerate.commands.launch --config_file "$CONFIG" -m xtask_safety.train) ;;
  *) LAUNCH=("$PYTHON" -m accelerate.commands.launch --config_file "accelerate_configs/$CONFIG.yaml" -m xtask_safety.train) ;;
esac

run() {  # run SETTING SIZE TRAIN_FILE
  local out="$OUT_ROOT/$1/n$2"
  local cmd=("${LAUNCH[@]}" --config "$RECIPE" --train_file "$3" --output_dir "$out"
             --run_group "$MODEL-$VARIANT-$1" --run_tags "recipe:$VARIANT" "${EXTRA[@]}")
  if [ "${XTASK_DRY_RUN:-0}" = "1" ]; then printf '%q ' "${cmd[@]}"; echo; return; fi
  if [ -f "$out/xtask_training.json" ] && [ "${FORCE:-0}" != "1" ]; then echo "done: $out"; return; fi
  [ -f "$3" ] || { echo "paper_grid.sh: $3 not found (build the sets first, or set DATA_DIR)" >&2; exit 2; }
  echo "== $out"
  "${cmd[@]}"
}

EXTRA=("$@")
for task in $TASKS; do
  for n in $SIZES; do run "$task" "$n" "$DATA_DIR/train/single-$task-$n.jsonl"; done
done
for n in $MIXED_SIZES; do run mixed "$n" "$DATA_DIR/train/mixed-$n.jsonl"; done
