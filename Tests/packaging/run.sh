#!/usr/bin/env bash
# Tests/packaging/run.sh - the C/C++ install: scripts/install.sh into a
# temporary prefix, then programs built against it as users build them:
#   - the layout: header, libmlorc.so.MAJOR with that SONAME, the libmlorc.so
#     link, pkg-config and CMake files carrying include/mlorc.h's version;
#   - the C example built with `pkg-config --cflags --libs mlorc`, run;
#   - a CMake project with find_package(mlorc 0.1 REQUIRED) and mlorc::mlorc
#     (the C example and the header's C++ test), run;
#   - find_package refuses versions the library does not satisfy;
#   - the CMake package still works after the prefix is moved.
# Each program must load libmlorc.so.MAJOR from the prefix (ldd).
# Prints "N passed, M failed" last; exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
version_part() { sed -n "s/^#define MLORC_VERSION_$1 \([0-9]*\)$/\1/p" include/mlorc.h; }
major=$(version_part MAJOR)
minor=$(version_part MINOR)
version=$major.$minor.$(version_part PATCH)

passed=0
failed=0
check() { # name command...
    local name=$1
    shift
    echo "== $name"
    if "$@"; then
        echo "PASS $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        failed=$((failed + 1))
    fi
}

# loads_from BINARY LIBDIR: the binary's libmlorc.so.MAJOR resolves into LIBDIR.
loads_from() {
    local resolved
    resolved=$(ldd "$1" | awk -v n="libmlorc.so.$major" '$1 == n {print $3}')
    echo "$1 loads libmlorc.so.$major from ${resolved:-nowhere}"
    [[ $resolved == "$2/libmlorc.so.$major" ]]
}

layout() {
    bash scripts/install.sh --prefix "$prefix" &&
        [[ -f $prefix/include/mlorc.h && -f $prefix/lib/libmlorc.so.$major && ! -L $prefix/lib/libmlorc.so.$major ]] &&
        [[ $(readlink "$prefix/lib/libmlorc.so") == "libmlorc.so.$major" ]] &&
        readelf -d "$prefix/lib/libmlorc.so.$major" | grep -q "Library soname: \[libmlorc.so.$major\]" &&
        cmp -s include/mlorc.h "$prefix/include/mlorc.h" &&
        [[ $(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --modversion mlorc) == "$version" ]] &&
        grep -q "set(PACKAGE_VERSION \"$version\")" "$prefix/lib/cmake/mlorc/mlorcConfigVersion.cmake"
}

pkg_config_program() {
    local flags libdir
    flags=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs mlorc) &&
        libdir=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --variable=libdir mlorc) &&
        echo "pkg-config --cflags --libs mlorc: $flags" &&
        # From another folder: nothing of the repository but the source file.
        (cd "$tmp" && "${CC:-cc}" -std=c99 -Wall -Wextra -Werror -pedantic -O2 \
            "$ROOT/examples/c/train_least_squares.c" -o pkg_config_example $flags "-Wl,-rpath,$libdir" -lm) &&
        loads_from "$tmp/pkg_config_example" "$prefix/lib" &&
        "$tmp/pkg_config_example" "$tmp/pkg_config.ckpt"
}

# cmake_build SOURCE BUILD PREFIX [cmake args...]: configures and builds.
cmake_build() {
    local source=$1 build=$2 at=$3
    shift 3
    cmake -S "$source" -B "$build" -DCMAKE_PREFIX_PATH="$at" -DCMAKE_BUILD_TYPE=Release "$@" >"$build.log" 2>&1 &&
        cmake --build "$build" >>"$build.log" 2>&1 || { cat "$build.log"; return 1; }
}

cmake_project() {
    cmake_build Tests/packaging/cmake "$tmp/cmake" "$prefix" &&
        grep -F -- "-- mlorc $version from $prefix/lib/cmake/mlorc" "$tmp/cmake.log" &&
        loads_from "$tmp/cmake/train_least_squares" "$prefix/lib" &&
        loads_from "$tmp/cmake/header_cxx_test" "$prefix/lib" &&
        "$tmp/cmake/train_least_squares" "$tmp/cmake.ckpt" &&
        "$tmp/cmake/header_cxx_test"
}

# find_package(mlorc VERSION REQUIRED) in a bare project must fail.
refuses_version() {
    mkdir -p "$tmp/wants-$1" &&
        printf 'cmake_minimum_required(VERSION 3.16)\nproject(wants NONE)\nfind_package(mlorc %s REQUIRED)\n' "$1" \
            >"$tmp/wants-$1/CMakeLists.txt" &&
        if cmake -S "$tmp/wants-$1" -B "$tmp/wants-$1/build" -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/wants-$1.log" 2>&1; then
            echo "find_package(mlorc $1) accepted libmlorc $version" >&2
            return 1
        fi &&
        grep -q "version: $version" "$tmp/wants-$1.log" && echo "find_package(mlorc $1) refused, as it must"
}

versions_refused() {
    refuses_version "$((major + 1)).0" && refuses_version "$major.$((minor + 1))"
}

cmake_after_move() {
    mv "$prefix" "$tmp/moved" &&
        cmake_build Tests/packaging/cmake "$tmp/cmake-moved" "$tmp/moved" &&
        loads_from "$tmp/cmake-moved/train_least_squares" "$tmp/moved/lib" &&
        "$tmp/cmake-moved/train_least_squares" "$tmp/moved.ckpt"
}

start=$SECONDS
check "install layout and versions" layout
check "C program built with pkg-config" pkg_config_program
check "CMake project with find_package(mlorc 0.1 REQUIRED)" cmake_project
check "find_package refuses a newer major or minor version" versions_refused
check "CMake package after moving the prefix" cmake_after_move
echo "packaging tests took $((SECONDS - start)) s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
