#!/usr/bin/env bash
# The planner benchmark on a GPU host that has torch but not the simulator stack (dexrl.gqcnn is pure PyTorch):
# the fast path with fc3 through FFTs and as a direct convolution, then the compiled FFT path; JSON to $OUT.
#   scripts/device_planner_bench.sh [extra dexrl bench planner options, e.g. --depth-npz heaps.npz]
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
out=${OUT:-out/device}; mkdir -p "$out"
bench() { python3 -c "import argparse, sys; from dexrl.gqcnn import bench; p = argparse.ArgumentParser(); bench.configure(p); bench.run(p.parse_args(sys.argv[1:]))" "$@" 2>&1 | grep -v -i warn | tail -9; }
nvidia-smi -L
bench --device cuda:0 --modes fast --fc3 fft --batch 1 64 1024 --json "$out/planner_fast_fft.json" "$@"
bench --device cuda:0 --modes fast --fc3 conv --batch 64 1024 --json "$out/planner_fast_conv.json" "$@"
bench --device cuda:0 --modes fast-compiled --fc3 fft --batch 64 1024 --json "$out/planner_fast_fft_compiled.json" "$@"
