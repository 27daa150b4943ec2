#!/usr/bin/env bash
# Set up the environment (first run: several minutes) and run the test suite on the CPU.
#   scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-}"
exec .venv/bin/python -m pytest "$@"
