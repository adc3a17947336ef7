#!/usr/bin/env bash
# Tests/fuzz/run.sh - builds the fuzz target and runs it for a bounded time.
#
#   bash Tests/fuzz/run.sh                  # 60 s: the short run of the test suite
#   bash Tests/fuzz/run.sh --seconds 3600   # a long run (do one before a release)
#
# Checks: the build, a replay of the committed seed corpus (Tests/fuzz/corpus,
# valid states written by the library), and the bounded fuzzing run. New
# interesting inputs go to .build-fuzz/corpus (kept between runs, ignored by
# git); a crashing input is saved under .build-fuzz/artifacts/ and printed.
# Reproduce one with: .build-fuzz/bin/fuzz_state <file>. Known library bugs
# are stepped around and counted ("known-bug inputs: ..."); to stop at them:
#   FUZZ_CFLAGS=-DMLORC_FUZZ_STRICT bash Tests/fuzz/run.sh
# Prints executions and "N passed, M failed" last; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SECONDS_TO_RUN=60
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) SECONDS_TO_RUN=$2; shift 2 ;;
        *) echo "usage: $0 [--seconds N]" >&2; exit 2 ;;
    esac
done

FUZZ=.build-fuzz/bin/fuzz_state
WORK=.build-fuzz/corpus
ARTIFACTS=.build-fuzz/artifacts
LOG=.build-fuzz/fuzz.log
passed=0
failed=0
tally() { # name status
    if [[ $2 -eq 0 ]]; then echo "PASS $1"; passed=$((passed + 1)); else echo "FAIL $1"; failed=$((failed + 1)); fi
}

echo "== build (library with ASan + libFuzzer coverage, fuzz target)"
set +e
bash Tests/fuzz/build.sh
tally build $?
set -e
if [[ $failed -ne 0 ]]; then echo "$passed passed, $failed failed"; exit 1; fi
mkdir -p "$WORK" "$ARTIFACTS"

# Options shared by both runs: a hang is an input running over 10 s; ASan
# finds out-of-bounds reads; 4 KiB inputs cover states up to ~3.9 KiB; the
# dictionary holds the header's magic and the boundaries its checks draw.
OPTIONS=(-timeout=10 -rss_limit_mb=2048 -max_len=4096 -dict=Tests/fuzz/state.dict -artifact_prefix="$ARTIFACTS/" -print_final_stats=1)

echo "== replay of the seed corpus"
set +e
"$FUZZ" "${OPTIONS[@]}" -runs=0 Tests/fuzz/corpus >"$LOG" 2>&1
status=$?
set -e
grep -E 'INITED|known-bug' "$LOG" || true
[[ $status -eq 0 ]] || tail -40 "$LOG"
tally "seed corpus replay" $status

echo "== fuzzing for $SECONDS_TO_RUN s"
set +e
"$FUZZ" "${OPTIONS[@]}" -max_total_time="$SECONDS_TO_RUN" "$WORK" Tests/fuzz/corpus >"$LOG" 2>&1
status=$?
set -e
executions=$(awk '/stat::number_of_executed_units/ {print $2}' "$LOG" | tail -1)
grep -E '^#[0-9]+ +DONE|^Done|known-bug' "$LOG" || true
if [[ $status -ne 0 ]]; then
    tail -60 "$LOG"
    ls -t "$ARTIFACTS" | head -3
fi
echo "executions: ${executions:-unknown} in $SECONDS_TO_RUN s; corpus now $(ls "$WORK" | wc -l) inputs"
tally "fuzzing" $status

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
