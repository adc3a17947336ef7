#!/usr/bin/env bash
# Builds libmlorc.so (release) into .build/release/, with the libmlorc.so.MAJOR
# link programs linked against it load it by.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product mlorc
test -f .build/release/libmlorc.so || { echo "build failed: .build/release/libmlorc.so missing" >&2; exit 1; }
scripts/soname-link.sh .build/release
