#!/usr/bin/env bash
# The SAC study on an offline GPU host with the Isaac Lab wheels staged (parts as for scripts/device_bench.sh),
# one phase per call so that each fits the host's per-call limit; runs live in $WORK (kept while the host is
# up), results go to $OUT.
#   scripts/device_sac.sh STAGE_DIR train|finetune|eval [ENVS] [SECONDS]
#     train:    SAC on the seen set for SECONDS of training          -> $WORK/seen
#     finetune: the seen agent fine-tuned on the novel set           -> $WORK/novel
#     eval:     planner vs planner + SAC (+ fine-tuned on novel), seen and novel, >= 2000 attempts per arm
set -uo pipefail
cd "$(dirname "$0")/.."
stage=$1; phase=$2; envs=${3:-1024}; seconds=${4:-360}
out=${OUT:-out/device}; work=${WORK:-$HOME/sac}
mkdir -p "$out" "$work"
SITE=${SITE:-$HOME/site} bash scripts/device_bench.sh --install-only "$stage"
export PYTHONPATH="${SITE:-$HOME/site}:$PWD" WARP_CACHE_PATH=${WARP_CACHE_PATH:-$HOME/warpcache}
log() { grep --line-buffered -v -i "warning\|took:\|replace_newton\|^\[INFO\]\|^	" | tail -60; }
run_train() {  # NAME OBJECTS [extra args]
  local name=$1 objects=$2; shift 2
  python3 -m dexrl train --envs "$envs" --device cuda:0 --objects "$objects" --time-budget "$seconds" \
    --checkpoint-every 100000 --out "$work/$name" "$@" 2>&1 | log | tee "$out/train_$name.log"
  mkdir -p "$out/$name" && cp "$work/$name"/{model.zip,train.json,agent.yaml} "$out/$name/" 2>/dev/null
}
case $phase in
  train) run_train seen seen ;;
  finetune) run_train novel novel --init "$work/seen/model.zip" ;;
  eval)
    finetuned=(); [ -f "$work/novel/model.zip" ] && finetuned=(--finetuned "$work/novel/model.zip")
    python3 -m dexrl eval --envs "$envs" --device cuda:0 --sets seen,novel --attempts "${ATTEMPTS:-2000}" \
      --checkpoint "$work/seen/model.zip" "${finetuned[@]}" --out "$out/eval" 2>&1 | log | tee "$out/eval.log" ;;
  *) echo "unknown phase $phase (train, finetune, eval)" >&2; exit 2 ;;
esac
