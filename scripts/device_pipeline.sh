#!/usr/bin/env bash
# `dexrl pipeline` on an offline GPU host with the Isaac Lab wheels staged (parts as for scripts/device_bench.sh).
# The run folder stays on the host ($WORK, default $HOME/pipeline), so stages can run in separate calls; the
# small results (stats, weights, metrics, tables, logs) are copied to $OUT after every call. $LIMIT (default
# 570 s) stops the pipeline before the host's per-call limit, so that the copies still happen.
#   scripts/device_pipeline.sh STAGE_DIR STAGES [dexrl pipeline options...]
#   e.g. scripts/device_pipeline.sh $HOME/stage synth --envs 4096 --synth-seconds 420
# The staged wheels and the run folder live only as long as the host, which goes back soon after a call
# ends: send the staging calls and every stage's call back to back, without pauses between them.
set -uo pipefail
cd "$(dirname "$0")/.."
stage=$1; stages=$2; shift 2
out=${OUT:-out/device}; work=${WORK:-$HOME/pipeline}
mkdir -p "$out" "$work"
SITE=${SITE:-$HOME/site} bash scripts/device_bench.sh --install-only "$stage"
export PYTHONPATH="${SITE:-$HOME/site}:$PWD" WARP_CACHE_PATH=${WARP_CACHE_PATH:-$HOME/warpcache}
timeout "${LIMIT:-570}" python3 -m dexrl pipeline --device cuda:0 --out "$work" --stages "$stages" "$@" 2>&1 \
  | grep --line-buffered -v -i "warning\|took:\|replace_newton" | tr '\r' '\n' | grep --line-buffered -v "it/s\]$\|grasp/s\]$\|batch/s\]$" \
  | tail -200 | tee "$out/pipeline_${stages//,/_}.log"
cp "$work/pipeline.json" "$out/" 2>/dev/null
cp "$work/data/manifest.json" "$work/data/synth_stats.json" "$out/" 2>/dev/null
cp "$work/train/best.safetensors" "$work/train/best.json" "$work/train/history.json" "$out/" 2>/dev/null
cp -r "$work/eval" "$out/" 2>/dev/null
exit 0
