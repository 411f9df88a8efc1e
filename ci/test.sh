#!/usr/bin/env bash
# Installs what kmodkit needs, builds it, and runs the whole test suite:
#   ci/test.sh              everything (unit, integration, end-to-end)
#   ci/test.sh -L unit      only the fast tests (any ctest arguments work; no fuzzing then)
# Integration tests use a real apt repository of Debian's current kernel headers (downloaded
# once with apt-get into /var/cache/kmodkit-tests) served by a real HTTP server on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh
ci/build.sh
preset=${KMODKIT_PRESET:-$([ "${CI:-}" = "true" ] && echo ci || echo default)}
cd "build/$preset"
ctest --output-on-failure -j "$(nproc)" --timeout 900 "$@"
# The whole suite also runs every fuzz target for a while (libFuzzer, clang 19; ci/fuzz.sh).
if [ "$#" -eq 0 ]; then
  cd - >/dev/null
  ci/fuzz.sh "${KMODKIT_FUZZ_SECONDS:-20}"
fi
