#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (the `fuzz` preset) and runs each for a while:
#   ci/fuzz.sh [SECONDS]     (default 30 per target)
# A crash, a read out of bounds (ASan) or undefined behaviour (UBSan) fails the run; the input
# that caused it is left in build/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
mkdir -p build/fuzz/corpus/packet build/fuzz/artifacts
build/fuzz/tests/fuzz/fuzz_packet -max_total_time="$seconds" -max_len=1600 -print_final_stats=1 \
  -artifact_prefix=build/fuzz/artifacts/ build/fuzz/corpus/packet 2>&1 | tail -12
echo "fuzz: fuzz_packet ran ${seconds} s without a finding"
