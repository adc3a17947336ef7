#!/usr/bin/env bash
# scripts/install.sh --prefix DIR - installs libmlorc for C and C++ programs:
#   DIR/include/mlorc.h
#   DIR/lib/libmlorc.so.MAJOR                 the library, SONAME libmlorc.so.MAJOR
#   DIR/lib/libmlorc.so -> libmlorc.so.MAJOR  for -lmlorc
#   DIR/lib/pkgconfig/mlorc.pc                pkg-config --cflags --libs mlorc
#   DIR/lib/cmake/mlorc/mlorcConfig.cmake     find_package(mlorc 0.1 REQUIRED),
#   DIR/lib/cmake/mlorc/mlorcConfigVersion.cmake  target mlorc::mlorc
# Builds the library first (scripts/build.sh, incremental). The version in
# every file is include/mlorc.h's. DIR defaults to /usr/local.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
while [[ $# -gt 0 ]]; do
    case $1 in
        --prefix) prefix=${2:?--prefix needs a folder}; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument '$1' (usage: scripts/install.sh --prefix DIR)" >&2; exit 2 ;;
    esac
done
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)

version_part() { sed -n "s/^#define MLORC_VERSION_$1 \([0-9]*\)$/\1/p" include/mlorc.h; }
major=$(version_part MAJOR)
version=$major.$(version_part MINOR).$(version_part PATCH)
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "install.sh: no version macros in include/mlorc.h" >&2; exit 1; }

scripts/build.sh
soname=$(readelf -d .build/release/libmlorc.so | sed -n 's/.*Library soname: \[\(.*\)\]$/\1/p')
if [[ $soname != "libmlorc.so.$major" ]]; then
    echo "install.sh: the built library's SONAME is '$soname', not libmlorc.so.$major (stale build?)" >&2
    exit 1
fi

# fill TEMPLATE DEST: the template with its @PREFIX@, @VERSION@, @MAJOR@ filled in.
fill() {
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" "$1" >"$2"
    chmod 644 "$2"
}

install -d "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/mlorc"
install -m 644 include/mlorc.h "$prefix/include/mlorc.h"
install -m 755 .build/release/libmlorc.so "$prefix/lib/$soname"
ln -sfn "$soname" "$prefix/lib/libmlorc.so"
fill packaging/mlorc.pc.in "$prefix/lib/pkgconfig/mlorc.pc"
fill packaging/mlorcConfig.cmake.in "$prefix/lib/cmake/mlorc/mlorcConfig.cmake"
fill packaging/mlorcConfigVersion.cmake.in "$prefix/lib/cmake/mlorc/mlorcConfigVersion.cmake"
echo "installed libmlorc $version into $prefix"
