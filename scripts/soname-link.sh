#!/usr/bin/env bash
# scripts/soname-link.sh DIR - links DIR/libmlorc.so.MAJOR to DIR/libmlorc.so.
# swift build writes the library as libmlorc.so, but its SONAME is
# libmlorc.so.MAJOR, the name every program linked with -lmlorc asks the
# loader for: the build folders need that name too.
set -euo pipefail
dir=${1:?usage: scripts/soname-link.sh DIR (the folder holding libmlorc.so)}
soname=$(readelf -d "$dir/libmlorc.so" | sed -n 's/.*Library soname: \[\(.*\)\]$/\1/p')
if [[ $soname != libmlorc.so.* ]]; then
    echo "soname-link.sh: $dir/libmlorc.so has SONAME '$soname', expected libmlorc.so.MAJOR" >&2
    exit 1
fi
ln -sfn libmlorc.so "$dir/$soname"
