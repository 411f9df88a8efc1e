#!/usr/bin/env bash
# Builds the libFuzzer targets with clang 19 (the `fuzz` preset: ASan and UBSan, the libraries
# under test instrumented) and runs each one:
#   ci/fuzz.sh [SECONDS]          each target for SECONDS (default 30): what CI runs
#   ci/fuzz.sh --long [RUNS]      each target to RUNS executions (default 10,000,000)
#   ci/fuzz.sh -j N ...           N targets at once (default 1), each on one core
#   ci/fuzz.sh -w N ...           N processes per target on its one corpus (default 1); with
#                                 --long they share the RUNS, so a slow target's 10^7 takes 1/N the time
#   ci/fuzz.sh ... -- TARGET...   only these targets (packet rules apt rpm_repo oci volume_manifest seed recipe signatures)
# Each starts from its corpus in build/fuzz/corpus/<target> (kept between runs), the seeds in
# tests/fuzz/seeds/<target>, and real files made or found at run time (Debian's own apt lists
# and sources on this machine, the recipes, a signatures file signed with a fresh key), with the
# dictionary tests/fuzz/dict/<target>.dict where the format has keywords. Prints, per target:
# executions, executions per second, coverage (libFuzzer's cov and ft), corpus size, findings.
# A crash, a read out of bounds (ASan), undefined behaviour (UBSan), a leak or a timeout fails
# the run; the input is left in build/fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=seconds; amount=30; jobs=1; workers=1
number() {  # number FLAG VALUE WHAT: VALUE must be a positive integer
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: $1 wants $3, not '$2'" >&2; exit 64; }
}
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    -j) number -j "${2:-}" "a number of targets to run at once"; jobs=$2; shift 2 ;;
    -w) number -w "${2:-}" "a number of processes per target"; workers=$2; shift 2 ;;
    --long)
      mode=runs; amount=10000000; shift
      if [[ "${1:-}" =~ ^[0-9] ]]; then number --long "$1" "a number of executions"; amount=$1; shift; fi ;;
    --) shift; targets=("$@"); break ;;
    -*) echo "fuzz: unknown option $1 (ci/fuzz.sh [-j N] [-w N] [SECONDS | --long [RUNS]] [-- TARGET...])" >&2; exit 64 ;;
    *) [[ "$1" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: '$1' is neither a number of seconds nor an option; targets come after '--'" >&2; exit 64; }
       amount=$1; shift ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || targets=(packet rules apt rpm_repo oci volume_manifest seed recipe signatures)
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
out=build/fuzz
seeds=$out/seeds
rm -rf "$seeds"; mkdir -p "$seeds"

# Real files, made or found now (nothing third-party is committed).
for t in "${targets[@]}"; do
  mkdir -p "$seeds/$t" "$out/corpus/$t" "$out/artifacts/$t"
  [ ! -d "tests/fuzz/seeds/$t" ] || cp tests/fuzz/seeds/"$t"/* "$seeds/$t/" 2>/dev/null || true
done
if [ -d "$seeds/apt" ]; then
  # Debian's own: this machine's deb822 sources, its lists' InRelease files, and the head of a
  # Packages index (apt-helper reads the lists' compression).
  cp /etc/apt/sources.list.d/*.sources /etc/apt/sources.list "$seeds/apt/" 2>/dev/null || true
  n=0
  # Inputs are capped at 16 KiB (below), so are these.
  for f in /var/lib/apt/lists/*_InRelease; do [ -f "$f" ] && head -c 16384 "$f" > "$seeds/apt/InRelease.$((n += 1))"; done
  for f in /var/lib/apt/lists/*_Packages*; do
    [ -f "$f" ] || continue
    /usr/lib/apt/apt-helper cat-file "$f" 2>/dev/null | head -c 16384 > "$seeds/apt/Packages.$((n += 1))" || true
  done
fi
if [ -d "$seeds/recipe" ]; then
  cp kmod-builder/recipes/*.json tests/support/kmod-hello/kmodkit-recipe.json "$seeds/recipe/"
  for f in /usr/src/dpdk-kmods-*/dkms.conf; do [ -f "$f" ] && cp "$f" "$seeds/recipe/dkms.conf"; done
fi
if [ -d "$seeds/signatures" ]; then
  # A signatures file as sign-detached writes it: a fresh key's certificate and a CMS
  # signature made by openssl the way sign-file makes it (binary, detached, no attributes).
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  openssl req -new -nodes -batch -x509 -days 1 -newkey rsa:2048 -subj '/CN=kmodkit fuzz' \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
  head -c 4096 /dev/urandom > "$tmp/m.ko"
  openssl cms -sign -binary -noattr -nocerts -nosmimecap -md sha256 -in "$tmp/m.ko" -signer "$tmp/cert.pem" \
    -inkey "$tmp/key.pem" -outform DER -out "$tmp/sig.der"
  python3 - "$tmp" "$seeds/signatures/signatures.json" <<'PY'
import base64, hashlib, json, sys
d, out = sys.argv[1], sys.argv[2]
m = open(f"{d}/m.ko", "rb").read()
json.dump({"format": "kmodkit-signatures/1", "signer": "kmodkit fuzz", "sig_key": "01",
           "certificate": open(f"{d}/cert.pem").read(),
           "modules": [{"kernel_release": "6.1.0-57-amd64", "recipe": "igb_uio", "file": "igb_uio.ko",
                        "sha256": hashlib.sha256(m).hexdigest(), "key": "", "hash": "sha256",
                        "signature": base64.b64encode(open(f"{d}/sig.der", "rb").read()).decode()}]},
          open(out, "w"), indent=2)
PY
  cp "$tmp/cert.pem" "$seeds/signatures/cert.pem"
  cp "$tmp/sig.der" "$seeds/signatures/sig.der"
fi

row() { printf '%-14s %12s %10s %8s %8s %8s  %s\n' "$@"; }
# One target; its row goes to $out/fuzz_<target>.row, its libFuzzer log to $out/fuzz_<target>.log.
run_target() {
  local t=$1 bin=$out/tests/fuzz/fuzz_$1 rc=0 i
  local args=(-print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$out/artifacts/$t/")
  # With -w N, each process runs its share of the executions; they meet in the corpus directory
  # (libFuzzer reloads it, so what one finds the others build on).
  [ "$mode" = seconds ] && args+=(-max_total_time="$amount") || args+=(-runs=$(( (amount + workers - 1) / workers )))
  # Frames up to a jumbo-less MTU; texts up to 16 KiB (a recipe, a rules file, a Release head).
  [ "$t" = packet ] && args+=(-max_len=1600) || args+=(-max_len=16384)
  [ ! -f "tests/fuzz/dict/$t.dict" ] || args+=(-dict="tests/fuzz/dict/$t.dict")
  touch "$out/artifacts/$t/.start"  # findings are the artifacts of this run
  local logs=("$out/fuzz_$t.log") pids=()
  for ((i = 2; i <= workers; i++)); do logs+=("$out/fuzz_$t.$i.log"); done
  for log in "${logs[@]}"; do
    "$bin" "${args[@]}" "$out/corpus/$t" "$seeds/$t" > "$log" 2>&1 &
    pids+=($!)
  done
  # The first process to stop on a finding ends its siblings (its own children, by PID). Each
  # wait names only the processes still running (bash refuses a PID it has already reaped).
  local r ended live=("${pids[@]}")
  while [ "${#live[@]}" -gt 0 ]; do
    r=0; ended=
    wait -n -p ended "${live[@]}" || r=$?
    [ -n "$ended" ] || break  # nothing left to wait for
    local still=()
    for pid in "${live[@]}"; do [ "$pid" = "$ended" ] || still+=("$pid"); done
    live=("${still[@]}")
    if [ "$r" != 0 ] && [ "$rc" = 0 ]; then rc=$r; kill "${live[@]}" 2>/dev/null || true; fi
  done
  # Executions and speed add up over the processes; coverage is the best any of them reached.
  local execs=0 speed=0 cov=0 ft=0 last n corpus findings
  for log in "${logs[@]}"; do
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1); execs=$((execs + ${n:-0}))
    n=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1); speed=$((speed + ${n:-0}))
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    n=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last"); [ "${n:-0}" -le "$cov" ] || cov=$n
    n=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last"); [ "${n:-0}" -le "$ft" ] || ft=$n
  done
  corpus=$(find "$out/corpus/$t" -type f | wc -l)
  findings=$(find "$out/artifacts/$t" -type f -newer "$out/artifacts/$t/.start" | wc -l)
  local result
  if [ "$rc" = 0 ]; then
    result=$findings
  elif [ "$rc" = 72 ] && grep -q 'libFuzzer: run interrupted' "${logs[@]}"; then
    result="$findings (interrupted: a partial run)"  # libFuzzer's exit code for SIGINT
  else
    result="$findings: $(grep -h -m1 -E 'ERROR: (AddressSanitizer|libFuzzer)|runtime error' "${logs[@]}" | head -1 | grep . || echo "exit $rc")"
  fi
  row "$t" "$execs" "$speed" "$cov" "$ft" "$corpus" "$result" > "$out/fuzz_$t.row"
  return "$rc"
}

for t in "${targets[@]}"; do
  [ -x "$out/tests/fuzz/fuzz_$t" ] || { echo "fuzz: no target $t ($out/tests/fuzz/fuzz_$t)" >&2; exit 64; }
  rm -f "$out/fuzz_$t.row"
done
status=0
interrupted=0
running=0
reap() {
  local rc=0
  wait -n || rc=$?
  running=$((running - 1))
  case $rc in 0) ;; 72) interrupted=1 ;; *) status=1 ;; esac
}
for t in "${targets[@]}"; do
  [ "$running" -lt "$jobs" ] || reap
  run_target "$t" &
  running=$((running + 1))
done
while [ "$running" -gt 0 ]; do reap; done
row target executions exec/s cov ft corpus findings
for t in "${targets[@]}"; do cat "$out/fuzz_$t.row" 2>/dev/null || row "$t" ? ? ? ? ? "no result"; done
if [ "$status" = 0 ] && [ "$interrupted" = 1 ]; then
  echo "fuzz: a run was interrupted (SIGINT) before it was done; no finding" >&2
  exit 2
fi
if [ "$status" != 0 ]; then
  echo "fuzz: a target found a bug; its input is in $out/artifacts/<target>/ and its log in $out/fuzz_<target>[.N].log" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s), $([ "$mode" = seconds ] && echo "$amount s" || echo "$amount runs") each, no finding"
