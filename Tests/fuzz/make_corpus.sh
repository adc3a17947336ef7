#!/usr/bin/env bash
# Tests/fuzz/make_corpus.sh - regenerates the seed corpus in Tests/fuzz/corpus/
# from the current library (run after a change of the state layout).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash Tests/fuzz/build.sh
rm -f Tests/fuzz/corpus/*.bin
mkdir -p Tests/fuzz/corpus
.build-fuzz/bin/make_corpus Tests/fuzz/corpus
ls -l Tests/fuzz/corpus
