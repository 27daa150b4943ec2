#!/usr/bin/env bash
# The weights pipeline on an offline GPU host with the Isaac Lab wheels staged (parts as for
# scripts/device_bench.sh): synth -> train-gqcnn -> eval-planner, each stage time-boxed so that the results
# come back; writes stats, weights, metrics and logs to $OUT.
#   scripts/device_pipeline.sh STAGE_DIR [ENVS] [SYNTH_SECONDS] [TRAIN_SECONDS] [EVAL_SECONDS]
set -uo pipefail
cd "$(dirname "$0")/.."
stage=$1; envs=${2:-2048}; synth_s=${3:-240}; train_s=${4:-120}; eval_s=${5:-150}
out=${OUT:-out/device}; work=${WORK:-$HOME/pipeline}
mkdir -p "$out" "$work"
SITE=${SITE:-$HOME/site} bash scripts/device_bench.sh --install-only "$stage"
export PYTHONPATH="${SITE:-$HOME/site}:$PWD" WARP_CACHE_PATH=${WARP_CACHE_PATH:-$HOME/warpcache}
log() { grep --line-buffered -v -i "warning\|took:\|replace_newton" | tail -40; }
timeout "$synth_s" python3 -m dexrl synth --envs "$envs" --device cuda:0 --grasps 1000000 --shard-size $((2 * envs)) \
  --out "$work/data" 2>&1 | log | tee "$out/synth.log"
cp "$work/data/manifest.json" "$out/" 2>/dev/null
timeout "$train_s" python3 -m dexrl train-gqcnn "$work/data" --out "$work/train" --epochs 12 --batch-size 256 \
  --device cuda:0 2>&1 | log | tee "$out/train.log"
cp "$work/train/best.safetensors" "$work/train/best.json" "$work/train/history.json" "$out/" 2>/dev/null
timeout "$eval_s" python3 -m dexrl eval-planner --envs "$envs" --device cuda:0 --attempts "$envs" \
  --weights "$work/train/best.safetensors" --out "$out" 2>&1 | log | tee "$out/eval_seen.log"
