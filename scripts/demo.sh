#!/usr/bin/env bash
# Set up the environment (first run: several minutes) and run the demo on the embedded default
# (Isaac Lab kit-less, Newton physics; the GPU when there is one, else the CPU).
#   scripts/demo.sh [dexrl demo options]      e.g. scripts/demo.sh --envs 8 --device cuda:0
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/dexrl demo "$@"
