# Shared by the benchmark scripts: `. "$(dirname "$0")/lib.sh"`.

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc -l; }

# bench_timed NAME DIR COMMAND: runs COMMAND (an exported function and its first arguments; it
# gets the empty directory $dest/DIR as its last one) in bash under /usr/bin/time, after a sync;
# appends its seconds to $work/t_NAME and its peak RSS (KiB) to $work/rss_NAME. bench_last NAME:
# the seconds of NAME's last run.
bench_timed() {
  local t0 t1
  mkdir -p "$dest/$2"
  sync
  t0=$(now)
  /usr/bin/time -f %M -o "$work/rss.1" bash -c "$3"' "$0"' "$dest/$2"
  t1=$(now)
  elapsed "$t0" "$t1" >> "$work/t_$1"
  cat "$work/rss.1" >> "$work/rss_$1"
}
bench_last() { tail -1 "$work/t_$1"; }

# bench_setup REL_BINARY: sets `preset`, `bin` (the build's REL_BINARY, e.g. init/init-modules) and
# `work` (a scratch directory), and on exit ends the processes in `bench_pids` (by PID), removes
# the volumes (bench_volumes) and the scratch directory.
bench_pids=()
bench_setup() {
  preset=${KMODKIT_PRESET:-default}
  bin=$PWD/build/$preset/$1
  [ -x "$bin" ] || { echo "bench: build first (ci/build.sh); no $bin" >&2; exit 1; }
  work=$(mktemp -d /var/tmp/kmodkit-bench.XXXXXX)
  trap bench_cleanup EXIT
}
bench_cleanup() {
  local pid
  for pid in "${bench_pids[@]}"; do kill "$pid" 2>/dev/null; done
  bench_volumes_remove
  rm -rf "$work"
}
# bench_need TOOL: a baseline's tool, or a sentence saying how to get it.
bench_need() {
  command -v "$1" >/dev/null || { echo "bench: $1 is needed for the baseline (ci/install-deps.sh --bench)" >&2; exit 1; }
}
median() { sort -g | awk '{a[NR]=$1} END {printf "%.15g\n", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# bench_volumes WORK SIZE_MB INODES: sets `dest` to where the volumes go and `dest_mount` when it
# is a mount of this run. As root (default): a new ext4 file system with a journal, made for this
# run on a loop device, the shape of the persistent volume a pod gets. It also keeps the rounds
# apart from whatever else this machine did: an ext4 without a journal (this VM's root) skips
# inodes freed in the last minutes when it allocates new ones, one by one, so file creation
# slows down by seconds after any large delete, for whichever side lands there.
# KMODKIT_BENCH_DEST=DIR puts them in a directory there instead (/var/tmp when not root;
# /dev/shm leaves out the disk and measures the CPU side). bench_volumes_remove undoes it.
bench_volumes() {
  local work=$1 size_mb=$2 inodes=$3
  dest_mount=
  if [ -z "${KMODKIT_BENCH_DEST:-}" ] && [ "$(id -u)" -eq 0 ] && command -v mkfs.ext4 >/dev/null; then
    truncate -s "${size_mb}M" "$work/volume.img"
    mkfs.ext4 -q -F -N "$inodes" "$work/volume.img"
    dest_mount=$(mktemp -d /var/tmp/kmodkit-bench-vol.XXXXXX)
    mount -o loop "$work/volume.img" "$dest_mount"
    dest=$dest_mount
  else
    dest=$(mktemp -d "${KMODKIT_BENCH_DEST:-/var/tmp}/kmodkit-bench-vol.XXXXXX")
  fi
}
bench_volumes_remove() {
  if [ -n "${dest_mount:-}" ]; then
    umount "$dest_mount" 2>/dev/null
    rmdir "$dest_mount"
  elif [ -n "${dest:-}" ]; then
    rm -rf "$dest"
  fi
}

# bench_where: the file system of the volumes, in words.
bench_where() {
  if [ -n "${dest_mount:-}" ]; then echo "a new ext4 with a journal (loop device)"; else df --output=fstype "$dest" | tail -1; fi
}

# bench_http_server ROOT PORT_FILE: serves ROOT on 127.0.0.1 in the background; sets `server` to its
# PID (also added to bench_pids) once the port is in PORT_FILE.
bench_http_server() {
  python3 tests/support/http_server.py "$1" --port-file "$2" 2>/dev/null &
  server=$!
  bench_pids+=("$server")
  for _ in $(seq 200); do [ -s "$2" ] && return 0; sleep 0.05; done
  echo "bench: the HTTP server did not start" >&2
  return 1
}

# bench_hugepages PAGES FREE: reserves PAGES 2 MiB hugepages for the run (unless that many are
# already), checks that FREE of them are free, and sets huge_dir to a hugetlbfs mount (one made
# under $work when there is none). bench_hugepages_release, from the EXIT trap, gives them back.
bench_old_pages=
bench_huge_mount=
bench_hugepages() {
  bench_old_pages=$(cat /proc/sys/vm/nr_hugepages)
  [ "$bench_old_pages" -ge "$1" ] || echo "$1" > /proc/sys/vm/nr_hugepages
  local free
  free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
  [ "$free" -ge "$2" ] || { echo "bench: only $free free 2 MiB hugepages (need $2); memory too fragmented?" >&2; exit 1; }
  huge_dir=$(awk '$3 == "hugetlbfs" {print $2; exit}' /proc/mounts)
  if [ -z "$huge_dir" ]; then
    bench_huge_mount=$work/huge
    mkdir -p "$bench_huge_mount" && mount -t hugetlbfs nodev "$bench_huge_mount"
    huge_dir=$bench_huge_mount
  fi
}
bench_hugepages_release() {
  if [ -n "$bench_huge_mount" ]; then umount "$bench_huge_mount" 2>/dev/null || true; fi
  if [ -n "$bench_old_pages" ]; then echo "$bench_old_pages" > /proc/sys/vm/nr_hugepages 2>/dev/null || true; fi
}

# bench_build_l3fwd: DPDK's l3fwd built in $work from dpdk-doc's copy of its sources, with two
# adaptations to virtual devices, checked to have applied: no RX checksum offload (vdevs have
# none and l3fwd's port configuration would be refused), and a pool large enough for net_pcap's
# infinite_rx, which keeps one mbuf per packet of the capture (l3fwd sizes its pool for NIC rings
# only). Sets l3fwd to the binary.
bench_build_l3fwd() {
  local examples=/usr/share/dpdk/examples
  [ -f "$examples/l3fwd/l3fwd_acl.c" ] || { echo "bench: no l3fwd sources in $examples: run ci/install-deps.sh --bench" >&2; exit 1; }
  cp -r "$examples/l3fwd" "$examples/common" "$work/"
  sed -i 's/\.offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,/.offloads = 0,/; s/(unsigned)8192)/(unsigned)65536)/' "$work/l3fwd/main.c"
  if ! grep -q '\.offloads = 0,' "$work/l3fwd/main.c" || ! grep -q '(unsigned)65536)' "$work/l3fwd/main.c"; then
    echo "bench: l3fwd's main.c changed: the adaptations to virtual devices did not apply" >&2
    exit 1
  fi
  make -s -C "$work/l3fwd" -j"$(nproc)" > "$work/l3fwd-build.log" 2>&1 ||
    { echo "bench: l3fwd did not build: $(tail -3 "$work/l3fwd-build.log")" >&2; exit 1; }
  l3fwd=$work/l3fwd/build/l3fwd
}
