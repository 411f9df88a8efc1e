#!/usr/bin/env bash
# init-modules' oci source, as a ratio against the same pull done with the standard tools in this
# script: a driver-toolkit-like image of Debian's 6.1 headers (tests/support/make-oci-registry.py:
# three tar+gzip layers with whiteouts, about 12 MB compressed, 17,000 files) from Debian's
# docker-registry on 127.0.0.1 over plain HTTP, onto an empty volume made durable.
#   init-modules --sources oci (manifest, config, layers by digest, whiteouts, only the kernel's
#   paths, blob cache on the volume)
#   vs `skopeo copy docker://… oci:DIR` + `umoci unpack` (which applies the whiteouts) + `sync -f`
#   (target: <= 0.8); and vs `skopeo copy` + `tar -x` of each layer in order (no whiteouts: the
#   least a pull can do); peak memory (max RSS) of each.
# Rounds alternate between kmodkit and the baseline; the medians are reported.
#   bench/init-oci.sh [ROUNDS]   (default 5; needs a build: ci/build.sh, and ci/install-deps.sh
#                                --bench for umoci)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
. bench/lib.sh
bench_setup init/init-modules
bench_need umoci
fixtures=${KMODKIT_BENCH_FIXTURES:-$PWD/build/$preset/test-fixtures}
# Each round writes three trees of about 17,000 files and 70 MB (umoci adds its mtree manifest).
bench_volumes "$work" $((400 * rounds + 512)) $((70000 * rounds + 10000))

tests/support/make-apt-repo.sh "$fixtures/apt-repo" >/dev/null
tests/support/make-oci-registry.py "$fixtures/oci-registry" "$fixtures/apt-repo" >/dev/null
kver=$(cat "$fixtures/oci-registry/kernel-release")
cp -al "$fixtures/oci-registry/storage" "$work/storage"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$port
  secret: kmodkit-bench
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
bench_pids+=("$!")
for _ in $(seq 200); do
  curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break
  sleep 0.05
done
image=127.0.0.1:$port/kmodkit/dtk:gzip

baseline() {  # OUT
  rm -rf "$work/layout"
  skopeo copy -q --src-tls-verify=false "docker://$image" "oci:$work/layout:bench" >/dev/null
  umoci unpack --image "$work/layout:bench" "$1/bundle" >/dev/null
  sync -f "$1"
}
layers_of() {  # LAYOUT: the layer blobs of its only image, lowest first
  python3 -c '
import json, sys
d = sys.argv[1]
index = json.load(open(d + "/index.json"))
manifest = json.load(open(d + "/blobs/sha256/" + index["manifests"][0]["digest"][7:]))
for layer in manifest["layers"]:
    print(d + "/blobs/sha256/" + layer["digest"][7:])' "$1"
}
tar_baseline() {  # OUT
  rm -rf "$work/layout"
  skopeo copy -q --src-tls-verify=false "docker://$image" "oci:$work/layout:bench" >/dev/null
  local layer
  for layer in $(layers_of "$work/layout"); do tar -xzf "$layer" -C "$1"; done
  sync -f "$1"
}
kmodkit() {  # OUT
  "$bin" --kernel-release "$kver" --volume "$1" --host-root "$work/none" --sources oci --image "$image" \
    --insecure-registry "127.0.0.1:$port" --log-format json >/dev/null 2>"$work/kmodkit.err" ||
    { cat "$work/kmodkit.err" >&2; return 1; }
}
export -f baseline tar_baseline layers_of kmodkit
export work image kver bin port
: > "$work/r"; : > "$work/r_tar"
for i in $(seq "$rounds"); do
  bench_timed base "base$i" baseline
  bench_timed tar "tar$i" tar_baseline
  bench_timed kk "kk$i" kmodkit
  t_base=$(bench_last base); t_tar=$(bench_last tar); t_kk=$(bench_last kk)
  echo "$t_kk / $t_base" | bc -l >> "$work/r"; echo "$t_kk / $t_tar" | bc -l >> "$work/r_tar"
  printf 'round %d: skopeo copy + umoci unpack %.2f s, skopeo copy + tar -x %.2f s, init-modules (oci source) %.2f s\n' \
    "$i" "$t_base" "$t_tar" "$t_kk"
done

mib() { echo "$1 / 1024" | bc -l; }
printf '\nresults (median of %d rounds, volumes on %s; %s)\n' "$rounds" "$(bench_where)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs"
printf '  oci source, cold, over local HTTP: init-modules / skopeo+umoci = %.2f   (target <= 0.80; %.2f s vs %.2f s)\n' \
  "$(median < "$work/r")" "$(median < "$work/t_kk")" "$(median < "$work/t_base")"
printf '                                   init-modules / skopeo+tar   = %.2f   (%.2f s)\n' \
  "$(median < "$work/r_tar")" "$(median < "$work/t_tar")"
printf '  peak memory:                       init-modules %.1f MiB, skopeo+umoci %.1f MiB, skopeo+tar %.1f MiB (largest of its processes)\n' \
  "$(mib "$(sort -g "$work/rss_kk" | tail -1)")" "$(mib "$(sort -g "$work/rss_base" | tail -1)")" \
  "$(mib "$(sort -g "$work/rss_tar" | tail -1)")"
