#!/usr/bin/env bash
# Gantry vs Franka on an offline GPU host with the Isaac Lab wheels staged (parts as for scripts/device_bench.sh):
# closed-loop success of one planner on the same seeded heaps for both embodiments, and the Franka's grasp
# benchmark. Small results (JSON, tables, logs) go to $OUT (default out/device).
#   scripts/device_franka.sh STAGE_DIR STEPS [ENVS]     STEPS: comma-separated of eval, bench
set -uo pipefail
cd "$(dirname "$0")/.."
stage=$1; steps=$2; envs=${3:-1024}; out=${OUT:-out/device}
mkdir -p "$out"
SITE=${SITE:-$HOME/site} bash scripts/device_bench.sh --install-only "$stage"
export PYTHONPATH="${SITE:-$HOME/site}:$PWD" WARP_CACHE_PATH=${WARP_CACHE_PATH:-$HOME/warpcache}
quiet() { grep --line-buffered -v -i "warning\|took:\|replace_newton" | tr '\r' '\n' | grep --line-buffered -v "it/s\]$\|/s\]$"; }
for step in ${steps//,/ }; do
  case $step in
    eval)  # one batch of first attempts per embodiment: the heaps are identical (same seed)
      for embodiment in ${EMBODIMENTS:-franka gantry}; do
        timeout "${LIMIT:-280}" python3 -m dexrl eval-planner --device cuda:0 --embodiment "$embodiment" --planners fcgqcnn \
          --envs "$envs" --attempts "$envs" --objects seen --seed 7 --out "$out/eval_$embodiment" 2>&1 | quiet | tail -40 \
          | tee "$out/eval_$embodiment.log"
      done ;;
    bench)
      for embodiment in ${EMBODIMENTS:-franka}; do
        timeout "${LIMIT:-280}" python3 -m dexrl bench grasp --device cuda:0 --embodiment "$embodiment" --envs "$envs" \
          --batches 2 --json "$out/bench_grasp_$embodiment.json" 2>&1 | quiet | tail -30 | tee "$out/bench_grasp_$embodiment.log"
      done ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
exit 0
