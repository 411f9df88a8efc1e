#!/usr/bin/env bash
# The pod's start on a real kernel: tests/pod/pod-test.sh (the StatefulSet deploy/ renders, each
# container from its image, in a QEMU guest under TCG; boots cold, warm, upgrade, vfio, numa) run ROUNDS
# times; the medians of each boot's figures, on the guest's clock. Goal: a cold pod start (headers
# from a local repository, build, sign, load, bind, forward) <= 20 s excluding the kernel's boot.
# What dominates is measured beside it: the phases of the cold boot's init containers, from the
# times of their log lines (bench/pod-phases.py), and the same two steps on this host in the same
# round, the same binaries on the same inputs: init-modules laying the node's modules tree and the
# headers from the same repository over local HTTP, kmod-builder building igb_uio with the same
# -j2. Their ratios to the guest's are what TCG costs each step, and what real hardware gives back.
#   bench/pod-start.sh [ROUNDS]     (default 3; as root, after ci/build.sh; builds the images
#                                    with images/build.sh, tag bench, and the test fixtures)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
. bench/lib.sh
bench_setup kmod-builder/kmod-builder
init_modules=$PWD/build/$preset/init/init-modules
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (buildah, QEMU's TAP devices, loop mounts)" >&2; exit 1; }
fixtures=$PWD/build/$preset/test-fixtures
tag=bench
echo "bench: the test fixtures (apt repository, DPDK tree, kernel volume) and the images (tag $tag)"
ctest --test-dir "build/$preset" -R '^fixture\.(apt_repo|dpdk_src|kernel_volume)$' > "$work/fixtures.log" 2>&1 ||
  { tail -20 "$work/fixtures.log"; echo "bench: the fixtures failed" >&2; exit 1; }
KMODKIT_IMAGE_TAG=$tag images/build.sh > "$work/images.log" 2>&1 ||
  { tail -20 "$work/images.log"; echo "bench: images/build.sh failed" >&2; exit 1; }
kver=$(cat "$fixtures/apt-repo/kernel-release")
. tests/qemu/lib.sh

# The host's node: the kernel package's modules tree, as the guest's node has it.
mkdir -p "$work/node/usr/lib"
dpkg-deb -x "$(qemu_kernel_deb "$fixtures" "${KMODKIT_TEST_CACHE:-/var/cache/kmodkit-tests}")" "$work/kernel"
mv "$work/kernel/lib/modules" "$work/node/usr/lib/modules"
rm -rf "$work/kernel"
mkdir -p "$work/node/etc"; cp /etc/os-release "$work/node/etc/"
bench_http_server "$fixtures/apt-repo" "$work/port"
repo="deb [trusted=yes] http://127.0.0.1:$(cat "$work/port") stable main"

# The host's init-modules: the node's modules tree and the headers from the repository, onto an
# empty volume (the guest's pod: its modules PVC); seconds on stdout.
host_init_modules() {
  rm -rf "$work/hvol"; mkdir -p "$work/hvol"; sync
  local t0 t1
  t0=$(now)
  "$init_modules" --kernel-release "$kver" --volume "$work/hvol" --host-root "$work/node" --sources host,apt \
    --repo "$repo" --log-format json > "$work/host-init.log" 2>&1 ||
    { cat "$work/host-init.log"; echo "bench: init-modules failed on the host" >&2; exit 1; }
  t1=$(now)
  elapsed "$t0" "$t1"
}

# The host's build of igb_uio: the build's kmod-builder, a copy of the fixture's kernel volume.
host_build() {
  rm -rf "$work/vol" "$work/build"
  cp -a "$fixtures/kernel-volume" "$work/vol"
  mkdir -p "$work/build"
  "$bin" --volume "$work/vol" --kernel-release "$kver" --work-dir "$work/build" --jobs 2 --recipe igb_uio \
    --log-format json > "$work/host.log" 2>&1 || { cat "$work/host.log"; echo "bench: kmod-builder failed on the host" >&2; exit 1; }
  built_in < "$work/host.log"
}
# built_in: the seconds of kmod-builder's "igb_uio: built in X s" in the log on stdin.
built_in() { grep -o 'igb_uio: built in [0-9.]* s' | head -1 | awk '{print $4}'; }

for i in $(seq "$rounds"); do
  echo "bench: round $i of $rounds"
  host_build >> "$work/t_host_igb_uio"
  host_init_modules >> "$work/t_host_init_modules"
  KMODKIT_POD_CONSOLES=$work/consoles$i KMODKIT_IMAGE_TAG=$tag tests/pod/pod-test.sh "$fixtures" > "$work/run$i.log" 2>&1 ||
    { tail -40 "$work/run$i.log"; echo "bench: the pod test failed (round $i)" >&2; exit 1; }
  # "pod-test: BOOT: figures: NAME V s, NAME V s, ..." and "pod-test: BOOT: CONTAINER V s (exit 0)"
  awk -v w="$work" '
    $1 == "pod-test:" && $3 == "figures:" {
      boot = $2; sub(/:$/, "", boot); line = $0; sub(/.*figures: /, "", line)
      n = split(line, items, ", ")
      for (j = 1; j <= n; j++) { m = split(items[j], f, " "); name = f[1]; for (k = 2; k < m - 1; k++) name = name "_" f[k]
                                 print f[m - 1] >> (w "/f_" boot "_" name) }
    }
    $1 == "pod-test:" && $NF == "0)" && $(NF-1) == "(exit" {
      boot = $2; sub(/:$/, "", boot); print $4 >> (w "/c_" boot "_" $3)
    }' "$work/run$i.log"
  grep -a '^pod-test: cold: guest: .*igb_uio: built in' "$work/run$i.log" | built_in >> "$work/t_guest_igb_uio" || true
  bench/pod-phases.py "$work/consoles$i/cold.txt" | while read -r phase secs; do echo "$secs" >> "$work/p_$phase"; done
done

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
printf '\nresults: median of %d rounds (guest: QEMU TCG, 2 vCPUs, 3 GiB; host CPU: %s)\n' "$rounds" "$cpu"
printf '%-8s %12s %11s %16s %15s %18s %14s\n' boot "kernel boot" "node ready" "init containers" "firewall start" "first web request" "pod start*"
for boot in cold warm upgrade vfio numa; do
  row=()
  for m in kernel_boot node_ready init_containers firewall_start first_web_request pod_start_to_first_web_request; do
    if [ -s "$work/f_${boot}_$m" ]; then row+=("$(median < "$work/f_${boot}_$m")"); else row+=(-); fi
  done
  printf '%-8s %10s s %9s s %14s s %13s s %16s s %12s s\n' "$boot" "${row[@]}"
done
echo "* node ready to the firewall forwarding, plus the first web request through it (the kernel's boot excluded)"
printf '\ninit containers, median seconds\n%-8s' boot
containers=(init-modules seed-data kmod-builder kmod-builder-load kmod-builder-bind preflight)
for c in "${containers[@]}"; do printf ' %17s' "$c"; done; echo
for boot in cold warm upgrade vfio numa; do
  printf '%-8s' "$boot"
  for c in "${containers[@]}"; do
    if [ -s "$work/c_${boot}_$c" ]; then printf ' %17s' "$(median < "$work/c_${boot}_$c")"; else printf ' %17s' -; fi
  done; echo
done
guest=$(median < "$work/t_guest_igb_uio"); host=$(median < "$work/t_host_igb_uio")
guest_init=$(median < "$work/c_cold_init-modules"); host_init=$(median < "$work/t_host_init_modules")
printf '\nwhat the cold boot spends its init containers on (median seconds, from their log lines)\n'
for phase in $(bench/pod-phases.py --names); do
  if [ -s "$work/p_$phase" ]; then printf '  %-40s %6.1f\n' "$phase" "$(median < "$work/p_$phase")"; fi
done
printf '\nthe same steps on this host (same binaries, same inputs, same -j2)\n'
printf '  init-modules, the node modules tree and the headers from the repository: guest %s s, host %.2f s: %.1fx\n' \
  "$guest_init" "$host_init" "$(echo "$guest_init / $host_init" | bc -l)"
printf '  igb_uio compiled by kmod-builder:                                        guest %s s, host %.2f s: %.1fx\n' \
  "$guest" "$host" "$(echo "$guest / $host" | bc -l)"
cold=$(median < "$work/f_cold_pod_start_to_first_web_request")
printf '\ncold pod start %s s against the goal of 20 s (%.1fx); warm %s s\n' "$cold" "$(echo "$cold / 20" | bc -l)" \
  "$(median < "$work/f_warm_pod_start_to_first_web_request")"
