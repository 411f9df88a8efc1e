#!/usr/bin/env bash
# Every reliability figure of kmodkit in one run, printed together (the README's reliability
# table comes from here):
#   kill -9      tests/reliability/kill9.py --runs 200: each volume-writing binary killed at
#                random moments, invariants checked after each kill, then rerun
#   races        tests/reliability/races.py --rounds 50: 3 and 10 processes at once on one volume
#   volume       tests/reliability/volume_faults.py: read-only, full and (with FUSE) EIO volumes for each binary
#   unlocked     tests/reliability/unlocked.py --rounds 20: a second writer that ignores the lock
#   network      tests/reliability/network_faults.py: every download path against every fault
#   firewall     tests/reliability/firewall_soak.py --seconds 300: full table, reloads every
#                second, SIGUSR1 storms; memory, buffers and counters at start and end
#   fuzzing      ci/fuzz.sh --long: every fuzz target to 10,000,000 executions
#
#   tests/reliability/summary.sh [--quick] [--no-fuzz]
#     --quick     CI's sizes (20 kills, 3 rounds, a 30 s soak, 20 s per fuzz target)
#     --no-fuzz   leave the fuzz targets out (--long takes hours on 2 cores)
# Needs root, a build (ci/build.sh) and the test fixtures
# (ctest -R 'fixture.(apt_repo|rpm_repo|oci_registry|kernel_volume)').
set -euo pipefail
cd "$(dirname "$0")/../.."
kills=200 rounds=50 unlocked=20 soak=300 fuzz=(-j "$(nproc)" --long)
run_fuzz=1
for arg in "$@"; do
  case $arg in
    --quick) kills=20 rounds=3 unlocked=3 soak=30 fuzz=(20) ;;
    --no-fuzz) run_fuzz=0 ;;
    *) echo "summary: unknown argument $arg" >&2; exit 64 ;;
  esac
done
preset=${KMODKIT_PRESET:-default}
build=$PWD/build/$preset
fixtures=$build/test-fixtures
[ -x "$build/init/init-modules" ] || { echo "summary: build first (ci/build.sh)" >&2; exit 66; }
[ -d "$fixtures/kernel-volume" ] || { echo "summary: make the fixtures first (cd $build && ctest -R 'fixture.(apt_repo|rpm_repo|oci_registry|kernel_volume)')" >&2; exit 66; }

out=$(mktemp -d /var/tmp/kmodkit-reliability.XXXXXX)
status=0
section() { printf '\n== %s\n' "$1"; }
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "kmodkit reliability figures, $(date -u +%Y-%m-%d), $cpu, $(nproc) CPUs"

section "kill -9 ($kills per job)"
python3 tests/reliability/kill9.py --build "$build" --fixtures "$fixtures" --runs "$kills" > "$out/kill9.txt" 2>&1 || status=1
sed -n '/^job /,$p' "$out/kill9.txt"

section "races ($rounds rounds of 3 and of 10 processes)"
python3 tests/reliability/races.py --build "$build" --fixtures "$fixtures" --rounds "$rounds" > "$out/races.txt" 2>&1 || status=1
sed -n '/^job /,$p' "$out/races.txt"

section "volume faults"
# EIO comes from a FUSE file system (tests/support/eio_fs, built where libfuse3 is); without
# it the campaign leaves those rows out and says so.
eio=()
[ ! -x "$build/tests/eio_fs" ] || eio=(--eio-fs "$build/tests/eio_fs")
python3 tests/reliability/volume_faults.py --build "$build" --fixtures "$fixtures" "${eio[@]}" > "$out/volume.txt" 2>&1 || status=1
sed -n '/^job /,/^$/p' "$out/volume.txt"

section "a second writer that ignores the lock ($unlocked rounds per job)"
python3 tests/reliability/unlocked.py --build "$build" --fixtures "$fixtures" --rounds "$unlocked" > "$out/unlocked.txt" 2>&1 || status=1
sed -n '/^job /,$p' "$out/unlocked.txt"

section "network faults"
python3 tests/reliability/network_faults.py --build "$build" --fixtures "$fixtures" > "$out/network.txt" 2>&1 || status=1
tail -n 1 "$out/network.txt"
# The rows that failed, under their header, when there are any.
failed=$(sed -n '/^path /,$p' "$out/network.txt" | grep -v -e ' ok$' -e '^network_faults:' || true)
[ "$(wc -l <<< "$failed")" -le 1 ] || head -n 21 <<< "$failed"

if [ -x "$build/firewall/firewall" ]; then
  section "firewall soak ($soak s)"
  python3 tests/reliability/firewall_soak.py --firewall "$build/firewall/firewall" --seconds "$soak" > "$out/soak.txt" 2>&1 || status=1
  sed -n '/^firewall soak/,$p' "$out/soak.txt"
fi

if [ "$run_fuzz" = 1 ]; then
  section "fuzzing (ci/fuzz.sh ${fuzz[*]})"
  ci/fuzz.sh "${fuzz[@]}" > "$out/fuzz.txt" 2>&1 || status=1
  sed -n '/^target /,$p' "$out/fuzz.txt"
fi

echo
echo "summary: $([ "$status" = 0 ] && echo "all campaigns passed" || echo "a campaign FAILED"); logs in $out"
exit "$status"
