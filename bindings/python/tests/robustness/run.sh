#!/usr/bin/env bash
# bindings/python/tests/robustness/run.sh - the robustness suite of the Python
# binding, in sequence (each runs even if an earlier one failed):
#   build  the extension compiled again with ASan and libFuzzer coverage
#          (.build-pyfuzz/ext, git-ignored), against .build/release/libmlorc.so
#   fuzz   atheris on the extension's argument handling (fuzz_extension.py)
#          for --seconds (45 by default), under ASan; new inputs are kept in
#          .build-pyfuzz/corpus, a crashing one in .build-pyfuzz/artifacts/
#          (reproduce: the same command as below with the file instead of the
#          corpus folder)
#   soak   10^4 steps through mlorc.torch (soak.py): RSS, threads, fds flat
#
#   bash bindings/python/tests/robustness/run.sh [--seconds N]
#
# Needs libmlorc.so built (scripts/build.sh), the binding installed in the
# Python of $PYTHON (default .venv/bin/python; bindings/python/install.sh) and
# atheris (requirements.txt). Prints "N passed, M failed" last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../../.."

SECONDS_TO_RUN=45
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) SECONDS_TO_RUN=$2; shift 2 ;;
        *) echo "usage: $0 [--seconds N]" >&2; exit 2 ;;
    esac
done

PY=${PYTHON:-.venv/bin/python}
HERE=bindings/python/tests/robustness
OUT=.build-pyfuzz
passed=0
failed=0
tally() { # name status
    if [[ $2 -eq 0 ]]; then echo "PASS $1"; passed=$((passed + 1)); else echo "FAIL $1"; failed=$((failed + 1)); fi
}

echo "== build (the extension with ASan + libFuzzer coverage)"
ext=""
if ! "$PY" -c "import mlorc, atheris" 2>/dev/null; then
    echo "needs mlorc and atheris in $PY: bindings/python/install.sh, pip install -r requirements.txt" >&2
    tally build 1
else
    mkdir -p "$OUT/ext" "$OUT/corpus" "$OUT/artifacts"
    include=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    ext="$OUT/ext/_mlorc$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")"
    clang -shared -fPIC -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,fuzzer-no-link \
        -I"$include" -Iinclude bindings/python/src/mlorc/_ext/*.c -L.build/release -lmlorc \
        -Wl,-rpath,"$PWD/.build/release" -o "$ext"
    status=$?
    tally build $status
    [[ $status -eq 0 ]] || ext=""
fi

echo "== fuzz (atheris, ${SECONDS_TO_RUN} s, ASan)"
if [[ -n $ext ]]; then
    asan_runtime="$("$PY" -c "import atheris; print(atheris.path())")/asan_with_fuzzer.so"
    # Python itself leaks at exit by design: leak checking off, every other check on.
    MLORC_FUZZ_EXTENSION="$ext" LD_PRELOAD="$asan_runtime" ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
        "$PY" "$HERE/fuzz_extension.py" -max_total_time="$SECONDS_TO_RUN" -timeout=10 -rss_limit_mb=4096 \
        -artifact_prefix="$OUT/artifacts/" -print_final_stats=1 "$OUT/corpus" > "$OUT/fuzz.log" 2>&1
    status=$?
    grep -E "^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)" "$OUT/fuzz.log"
    if [[ $status -ne 0 ]]; then
        tail -40 "$OUT/fuzz.log"
        ls "$OUT/artifacts/"
    fi
    tally fuzz $status
else
    tally fuzz 1
fi

echo "== soak (10^4 steps)"
"$PY" "$HERE/soak.py" --steps 10000 --warmup 1000 --rss-mb 1
tally soak $?

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
