#!/usr/bin/env bash
# On an offline GPU host with the Isaac Lab wheels staged: install them, then run the benchmarks (scene; grasp
# attempts in lock-step and streamed) and write their JSON figures and logs to $OUT (default ./out/device).
#   scripts/device_bench.sh [--install-only] STAGE_DIR [ENVS]
# STAGE_DIR holds folders p1, p2, ... of wheels (a wheel too large for one copy cut into NAME.whl.partNNN
# pieces): the Isaac Lab 3.0 kit-less stack with its pure-Python dependencies (isaaclab, warp-lang, newton,
# newton-usd-schemas, mujoco, mujoco-warp, usd-exchange, gymnasium, hydra-core, omegaconf, trimesh, ...),
# plus manifold3d (the scene module's mesh unions) and, for the bridge, websockets; torch comes with the host.
set -uo pipefail
cd "$(dirname "$0")/.."
install_only=false
if [ "${1:-}" = --install-only ]; then install_only=true; shift; fi
stage=$1; envs=${2:-1024}; out=${OUT:-out/device}
mkdir -p "$out"
site=${SITE:-$HOME/site}
if [ ! -d "$site/isaaclab" ]; then  # join the size-capped parts (big wheels were cut in pieces) and install
  wheels=$(mktemp -d)
  for piece in "$stage"/p*/*; do
    name=$(basename "$piece")
    case $name in *.whl.part*) cat "$piece" >> "$wheels/${name%.part*}" ;; *) cp "$piece" "$wheels/" ;; esac
  done
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
fi
$install_only && exit 0
export PYTHONPATH="$site:$PWD" WARP_CACHE_PATH=${WARP_CACHE_PATH:-$HOME/warpcache}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -m dexrl bench scene --envs "$envs" --count 10 --device cuda:0 --json "$out/bench_scene.json" 2>&1 | grep -v Warning | tail -20 | tee "$out/bench_scene.log"
python3 -m dexrl bench grasp --envs "$envs" --batches 2 --device cuda:0 --json "$out/bench_grasp.json" 2>&1 | grep -v Warning | tail -20 | tee "$out/bench_grasp.log"
# the same attempts streamed (an env starts its next attempt once its last is judged; docs/executor_speed.md)
python3 -m dexrl bench grasp --envs "$envs" --batches 2 --stream --device cuda:0 --json "$out/bench_grasp_stream.json" 2>&1 | grep -v Warning | tail -20 | tee "$out/bench_grasp_stream.log"
