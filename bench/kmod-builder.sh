#!/usr/bin/env bash
# kmod-builder benchmarks, each a ratio against a baseline measured in the same script:
#   1. cold build of igb_uio (Debian's dpdk-kmods-dkms) + the project's test module against
#      Debian's real 6.1 headers laid out by init-modules: kmod-builder (copy, probes, kbuild,
#      vermagic check, signing, cache, install, depmod) vs plain `make -C <headers> M=<dir>
#      modules` of the same sources with the same flags (target: <= 1.15)
#   2. warm run (everything installed from the same inputs): wall time of the whole process
#      (target: <= 100 ms and <= 1/20 of the cold build)
#   3. pod start on a volume with nothing installed, from a prebuilt entry (export --image-dir,
#      then --prebuilt) vs from the volume's own cache vs the cold build: what the prebuilt path
#      adds over the cache path (target: <= 100 ms; it needs no compiler)
#   4. signing: sign-detached of the two modules with the key in a PKCS#11 token (SoftHSM2)
#      vs the same key as a PEM file, per run and per module
# Rounds alternate between kmod-builder and the baseline; the medians are reported.
#   bench/kmod-builder.sh [ROUNDS]      (default 5; needs a build: ci/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
preset=${KMODKIT_PRESET:-default}
bin=$PWD/build/$preset/kmod-builder/kmod-builder
init_modules=$PWD/build/$preset/init/init-modules
[ -x "$bin" ] && [ -x "$init_modules" ] || { echo "bench: build first (ci/build.sh); no $bin" >&2; exit 1; }
igb_src=$(ls -d /usr/src/dpdk-kmods-* 2>/dev/null | tail -1)
[ -n "$igb_src" ] || { echo "bench: no /usr/src/dpdk-kmods-* (ci/install-deps.sh installs dpdk-kmods-dkms)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/kmodkit-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
jobs=$(nproc)

tests/support/make-apt-repo.sh "$work/repo" >/dev/null
tests/support/make-kernel-volume.sh "$init_modules" "$work/repo" "$work/vol" >/dev/null 2>&1
kver=$(cat "$work/repo/kernel-release")
headers=$work/vol/usr/lib/modules/$kver/build
(cd "$work" && openssl req -new -nodes -utf8 -sha256 -days 2 -batch -x509 -newkey rsa:2048 \
  -subj '/CN=kmodkit bench' -keyout key.pem -out cert.pem 2>/dev/null)
args=(--volume "$work/vol" --kernel-release "$kver" --work-dir "$work" --jobs "$jobs"
      --recipe "igb_uio,$PWD/tests/support/kmod-hello" --signing-key "$work/key.pem" --signing-cert "$work/cert.pem"
      --log-format json)

. bench/lib.sh

# The baseline: what a script would run, with the flags the recipes give.
plain_make() {
  local d=$work/plain$1
  mkdir -p "$d" && cp -r "$igb_src" "$d/igb" && cp -r tests/support/kmod-hello "$d/hello"
  make -s -C "$headers" M="$d/igb" -j"$jobs" MODULE_CFLAGS=-fno-PIE modules >/dev/null 2>&1
  make -s -C "$headers" M="$d/hello" -j"$jobs" "HELLO_CFLAGS=-DKMODKIT_HELLO_GREETING='\"hello\"' -DHAVE_ARG_TX_QUEUE -I$d/hello/include" modules >/dev/null 2>&1
}

: > "$work/r_cold"; : > "$work/t_cold"; : > "$work/t_make"
for i in $(seq "$rounds"); do
  sync; t0=$(now); plain_make "$i"; t1=$(now); make_s=$(echo "$t1 - $t0" | bc -l)
  rm -rf "$work/vol/.kmodkit/cache" "$work/vol/.kmodkit/modules" "$work/vol/usr/lib/modules/$kver/extra"
  sync; t0=$(now); "$bin" "${args[@]}" >/dev/null 2>&1; t1=$(now); cold=$(echo "$t1 - $t0" | bc -l)
  [ -f "$work/vol/usr/lib/modules/$kver/extra/igb_uio/igb_uio.ko" ] || { echo "bench: kmod-builder built nothing" >&2; exit 1; }
  echo "$make_s" >> "$work/t_make"; echo "$cold" >> "$work/t_cold"; echo "$cold / $make_s" | bc -l >> "$work/r_cold"
  printf 'round %d: plain make %.2f s, kmod-builder cold %.2f s\n' "$i" "$make_s" "$cold"
done

: > "$work/t_warm"
for i in $(seq 20); do
  t0=$(now); "$bin" "${args[@]}" >/dev/null 2>&1; t1=$(now)
  echo "($t1 - $t0) * 1000" | bc -l >> "$work/t_warm"
done
cold_ms=$(echo "$(median < "$work/t_cold") * 1000" | bc -l)
warm_ms=$(median < "$work/t_warm")

# 3. Nothing installed: from the cache, and from a prebuilt entry (the cache emptied too).
"$bin" export --volume "$work/vol" --image-dir "$work/prebuilt" --log-format json >/dev/null 2>&1
: > "$work/t_cache"; : > "$work/t_prebuilt"
for i in $(seq 10); do
  rm -rf "$work/vol/.kmodkit/modules" "$work/vol/usr/lib/modules/$kver/extra"
  t0=$(now); "$bin" "${args[@]}" >/dev/null 2>&1; t1=$(now)
  echo "($t1 - $t0) * 1000" | bc -l >> "$work/t_cache"
  rm -rf "$work/vol/.kmodkit/modules" "$work/vol/usr/lib/modules/$kver/extra" "$work/vol/.kmodkit/cache"
  t0=$(now); "$bin" "${args[@]}" --prebuilt "$work/prebuilt" > "$work/prebuilt.log" 2>&1; t1=$(now)
  grep -q '0 built, 0 from the cache, 2 prebuilt' "$work/prebuilt.log" ||
    { echo "bench: the prebuilt run did not install from prebuilt" >&2; cat "$work/prebuilt.log" >&2; exit 1; }
  echo "($t1 - $t0) * 1000" | bc -l >> "$work/t_prebuilt"
done
cache_ms=$(median < "$work/t_cache")
prebuilt_ms=$(median < "$work/t_prebuilt")

# 4. Signing the two modules: PEM key vs the same key in a SoftHSM2 token.
"$bin" --volume "$work/vol" --kernel-release "$kver" --work-dir "$work" --recipe "igb_uio,$PWD/tests/support/kmod-hello" \
  --no-sign --log-format json >/dev/null 2>&1
"$bin" export-unsigned --volume "$work/vol" --out "$work/unsigned" --log-format json >/dev/null 2>&1
export SOFTHSM2_CONF=$work/softhsm2.conf
mkdir -p "$work/tokens"; echo "directories.tokendir = $work/tokens" > "$SOFTHSM2_CONF"
softhsm2-util --init-token --free --label kmodkit-bench --so-pin 5678 --pin 1234 >/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$work/key.pem" -out "$work/key.p8"
softhsm2-util --import "$work/key.p8" --token kmodkit-bench --label modsign --id 01 --pin 1234 >/dev/null
echo 1234 > "$work/pin"
modules=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["modules"]))' "$work/unsigned/unsigned.json")
: > "$work/t_pem"; : > "$work/t_token"
for i in $(seq 10); do
  t0=$(now); "$bin" sign-detached --unsigned "$work/unsigned" --signing-key "$work/key.pem" --signing-cert "$work/cert.pem" \
    --out "$work/s-pem.json" --log-format json >/dev/null 2>&1; t1=$(now)
  echo "($t1 - $t0) * 1000" | bc -l >> "$work/t_pem"
  t0=$(now); "$bin" sign-detached --unsigned "$work/unsigned" --signing-key "pkcs11:token=kmodkit-bench;object=modsign;type=private" \
    --signing-cert "$work/cert.pem" --signing-pin-file "$work/pin" --out "$work/s-token.json" --log-format json >/dev/null 2>&1; t1=$(now)
  echo "($t1 - $t0) * 1000" | bc -l >> "$work/t_token"
done
cmp -s <(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["modules"])' "$work/s-pem.json") \
       <(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["modules"])' "$work/s-token.json") ||
  { echo "bench: the token's signatures differ from the PEM key's" >&2; exit 1; }
pem_ms=$(median < "$work/t_pem")
token_ms=$(median < "$work/t_token")

printf '\nresults (median of %d rounds, make -j%d)\n' "$rounds" "$jobs"
printf '  cold build, igb_uio + test module:  kmod-builder / plain make = %.2f   (target <= 1.15; %.2f s vs %.2f s)\n' \
  "$(median < "$work/r_cold")" "$(median < "$work/t_cold")" "$(median < "$work/t_make")"
printf '  warm run, whole process:            %.1f ms (target <= 100 ms), warm / cold = 1/%.0f (target <= 1/20)\n' \
  "$warm_ms" "$(echo "$cold_ms / $warm_ms" | bc -l)"
printf '  nothing installed, from prebuilt:   %.1f ms; from the cache %.1f ms: prebuilt adds %.1f ms (target <= 100 ms);\n' \
  "$prebuilt_ms" "$cache_ms" "$(echo "$prebuilt_ms - $cache_ms" | bc -l)"
printf '                                      prebuilt / cold build = 1/%.0f\n' "$(echo "$cold_ms / $prebuilt_ms" | bc -l)"
printf '  sign-detached, %d modules:           PEM key %.1f ms, PKCS#11 token (SoftHSM2) %.1f ms; per module %.1f vs %.1f ms\n' \
  "$modules" "$pem_ms" "$token_ms" "$(echo "$pem_ms / $modules" | bc -l)" "$(echo "$token_ms / $modules" | bc -l)"
