#!/usr/bin/env bash
# Builds the mlorc CPython extension and pip-installs the package.
# Assumes libmlorc.so is built (`swift build -c release` at the repository
# root) or that MLORC_LIBRARY_DIR points to the folder holding it.
#   PYTHON=python3.11 bindings/python/install.sh [extra pip arguments]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

library_dir="${MLORC_LIBRARY_DIR:-$here/../../.build/release}"
if [ ! -f "$library_dir/libmlorc.so" ]; then
    echo "install.sh: libmlorc.so not found in $library_dir." >&2
    echo "Build it first (swift build -c release at the repository root) or set MLORC_LIBRARY_DIR." >&2
    exit 1
fi

# With setuptools already present, build without an isolated environment:
# then no network is needed at all.
isolation=()
if "$python" -c 'import setuptools' 2>/dev/null; then
    isolation=(--no-build-isolation)
fi
# A stale build/ tree could hold objects compiled against another header.
rm -rf "$here/build"
"$python" -m pip install --disable-pip-version-check "${isolation[@]}" "$@" "$here"
