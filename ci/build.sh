#!/usr/bin/env bash
# Configures and builds kmodkit with CMake presets: "ci" (warnings are errors) under CI,
# "default" otherwise. Prints the build directory's binaries at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${KMODKIT_PRESET:-$([ "${CI:-}" = "true" ] && echo ci || echo default)}
cmake --preset "$preset" -DBUILD_TESTING=ON
cmake --build --preset "$preset" -j "$(nproc)"
echo "build: binaries in build/$preset (init-modules: build/$preset/init/init-modules)"
