#!/usr/bin/env bash
# The planner's speed and agreement on heaps rendered by the scene module (issue: planner throughput), on an
# offline GPU host with the Isaac Lab wheels staged as for scripts/device_bench.sh: render COUNT seeded heaps of
# the seen set once, then time the fast path (rescoring 4 and 16 pairs per image) against the float32
# reference with the shipped weights. JSON and logs go to $OUT (default out/device).
#   scripts/device_planner_heaps.sh STAGE_DIR [COUNT] [DEVICE]      (defaults: 1024 heaps, cuda:0)
# $MODES (default "fast-compiled"; see `dexrl bench planner --modes`), $RESCORE (default "4 16"), $FC3 (fc3 forms,
# default "rows"; see `--fc3`), $STREAM_CONVS (the 5x5 convolutions, default "torch"; see `--stream-convs`),
# $GROUP_IMAGES
# (images per network pass, default 16) and $BATCHES (default "64 1024") choose the runs; logs are written as
# they come.
# Rehearse on a CPU at toy size: SKIP_INSTALL=1 scripts/device_planner_heaps.sh - 2 cpu
set -uo pipefail
cd "$(dirname "$0")/.."
stage=$1; count=${2:-1024}; device=${3:-cuda:0}; out=${OUT:-out/device}
mkdir -p "$out"
if [ -z "${SKIP_INSTALL:-}" ]; then
  SITE=${SITE:-$HOME/site} bash scripts/device_bench.sh --install-only "$stage" || exit 1
  export PYTHONPATH="${SITE:-$HOME/site}:$PWD" WARP_CACHE_PATH=${WARP_CACHE_PATH:-$HOME/warpcache}
fi
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1  # logs reach $OUT as they come, also from a run cut short
heaps=${HEAPS_DIR:-$HOME/heaps}
quiet() {  # drops warnings, timers and max-autotune's per-kernel benchmark lines
  grep --line-buffered -v -i "warn\|took:\|replace_newton\|autotune\|triton_\|bias_addmm\|strides:\|dtypes:\|num_choices" \
    | grep --line-buffered -v -E "^ +[a-z_0-9]+ [0-9.]+ ms [0-9.]+%"
}
if [ ! -f "$heaps/heaps.npz" ]; then
  "$python" -m dexrl scene --envs "$count" --seed 11 --objects seen --device "$device" --out "$heaps" --npz 2>&1 \
    | quiet | tee "$out/heaps.log"
fi
batches=${BATCHES:-64 1024}; [ "$device" = cpu ] && batches=${BATCHES:-1}
for mode in ${MODES:-fast-compiled}; do
  for convs in ${STREAM_CONVS:-torch}; do
    for fc3 in ${FC3:-rows}; do
      for group in ${GROUP_IMAGES:-16}; do
        for rescore in ${RESCORE:-4 16}; do
          name=planner_heaps_${mode}_${convs}_${fc3}_group${group}_rescore$rescore
          "$python" -m dexrl bench planner --device "$device" --depth-npz "$heaps/heaps.npz" \
            --weights assets/weights/fcgqcnn_dexrl.safetensors --modes "$mode" --rescore-top "$rescore" \
            --stream-convs "$convs" --fc3 "$fc3" --group-images "$group" --batch $batches --iters 3 \
            --json "$out/$name.json" 2>&1 | quiet | tee "$out/$name.log"
        done
      done
    done
  done
done
exit 0
