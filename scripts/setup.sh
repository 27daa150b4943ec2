#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with Python 3.12.
#
#   scripts/setup.sh [EXTRAS]      e.g. scripts/setup.sh test
#
# Python 3.12 is required by Isaac Lab 3.0. It is looked up, in order, as $DEXRL_PYTHON, `python3.12`
# on PATH, `python3` on PATH when it is 3.12, any 3.12 that pyenv knows, and `uv python find 3.12`.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
venv=${DEXRL_VENV:-.venv}

is_py312() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; }

find_python312() {
  local candidate
  for candidate in "${DEXRL_PYTHON:-}" python3.12 python3; do
    [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && is_py312 "$candidate" && { command -v "$candidate"; return; }
  done
  if command -v pyenv >/dev/null 2>&1; then
    # The pyenv shim for python3.12 fails unless 3.12 is the selected version: ask pyenv directly.
    local version
    for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -rV); do
      candidate="$(pyenv root)/versions/$version/bin/python3.12"
      is_py312 "$candidate" && { echo "$candidate"; return; }
    done
  fi
  if command -v uv >/dev/null 2>&1; then
    candidate=$(uv python find 3.12 2>/dev/null || true)
    [ -n "$candidate" ] && is_py312 "$candidate" && { echo "$candidate"; return; }
  fi
  return 1
}

if [ ! -x "$venv/bin/python" ] || ! is_py312 "$venv/bin/python"; then
  if ! python=$(find_python312); then
    cat >&2 <<'MSG'
error: DexRL needs Python 3.12 (Isaac Lab 3.0 supports no other version) and none was found.
Install one of:
  - pyenv:  pyenv install 3.12     (no need to make it the global version)
  - uv:     uv python install 3.12
  - Debian/Ubuntu: apt install python3.12 python3.12-venv
or point DEXRL_PYTHON at a Python 3.12 interpreter, then run this again.
MSG
    exit 1
  fi
  echo "[setup] creating $venv with $python"
  "$python" -m venv "$venv"
fi

stamp="$venv/.dexrl-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing DexRL${extras:+ [$extras]} into $venv (first time: several minutes, about 8 GB)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e ".${extras:+[$extras]}"
  touch "$stamp"
fi

# The panel's browser test drives the system's Chromium through Playwright (Playwright's own browser
# download is never used): install Debian's chromium when the test extra is asked for and it is missing.
if [[ ",$extras," == *",test,"* ]] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -q && apt-get install -y chromium chromium-driver
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -q && sudo apt-get install -y chromium chromium-driver
  else
    echo "[setup] chromium is missing and this user cannot install packages: run" \
      "'sudo apt-get install -y chromium chromium-driver' for the panel's browser test (it skips without it)" >&2
  fi
fi
