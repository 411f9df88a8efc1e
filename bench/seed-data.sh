#!/usr/bin/env bash
# seed-data benchmarks, each against a baseline measured in the same script:
#   1. first seed of a tree of 10,000 files and 200 MB (9,900 files of 10 KB, 100 of 1 MB)
#      including the syncfs that makes it crash-safe, vs `cp -a` of the same tree (target <= 1.2)
#      and, for reference, vs `cp -a` + `sync -f` + sha256sum of every file: what crash safety
#      and seed.json's digests cost any tool on top of the copy
#   2. the same from a cold page cache (as root: the caches are dropped before each run), the
#      first start of a pod, whose image files are not cached yet
#   3. unchanged restart on that tree: wall time of the whole process (target <= 0.25 s)
#   4. a merge: a new image that changes all 9,900 configuration files (the blobs stay), onto a
#      volume seeded with the old one, vs `cp -a` of the new tree over a copy of the old one,
#      then `sync -f`. As root on a new ext4 with a journal on a loop device (a merge replaces
#      files, and this VM's root ext4, without a journal, slows the allocation of inodes for
#      minutes after others are freed; see bench/README.md), else in the work directory.
# Rounds run seed-data and cp -a, in alternating order; the medians are reported. Volumes are not
# deleted between rounds (on an ext4 without a journal, as this VM's root, inodes freed in the
# last minutes slow the creation of new ones; see bench/README.md).
#   bench/seed-data.sh [ROUNDS]      (default 3; needs a build: ci/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
preset=${KMODKIT_PRESET:-default}
bin=$PWD/build/$preset/seed-data/seed-data
[ -x "$bin" ] || { echo "bench: build first (ci/build.sh); no $bin" >&2; exit 1; }
work=$(mktemp -d /var/tmp/kmodkit-bench.XXXXXX)
merge_mount=
cleanup() {
  if [ -n "$merge_mount" ]; then umount "$merge_mount" 2>/dev/null; rmdir "$merge_mount"; fi
  rm -rf "$work"
}
trap cleanup EXIT
. bench/lib.sh

tree=$work/image/var/app
python3 - "$tree" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(9900):
    d = os.path.join(root, "conf%02d" % (i % 99))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.conf" % i), "wb") as f:
        f.write(os.urandom(10 * 1024))
os.makedirs(os.path.join(root, "blobs"), exist_ok=True)
for i in range(100):
    with open(os.path.join(root, "blobs", "b%03d.bin" % i), "wb") as f:
        f.write(os.urandom(1024 * 1024))
PY
sync
echo "bench: tree of $(find "$tree" -type f | wc -l) files, $(du -sm "$tree" | cut -f1) MB"

: > "$work/r"; : > "$work/t_cp"; : > "$work/t_seed"; : > "$work/r_full"; : > "$work/t_full"
# The tree's pages are read back in before each run (this VM drops page cache on its own
# now and then, which made warm runs half cold); cold runs drop the caches first.
cache() {
  if [ "$1" = cold ]; then echo 3 > /proc/sys/vm/drop_caches
  else find "$tree" -type f -print0 | xargs -0 cat > /dev/null; fi
}
run_cp() {
  mkdir -p "$work/cp$i/var" && sync && cache "${1:-warm}"
  t0=$(now); cp -a "$tree" "$work/cp$i/var/app"; t1=$(now); cp_s=$(echo "$t1 - $t0" | bc -l)
}
run_seed() {
  mkdir -p "$work/data$i" && sync && cache "${1:-warm}"
  t0=$(now); "$bin" --data "$work/data$i" --tree "$tree=var/app" --image-version 1 --log-format json >/dev/null 2>&1
  t1=$(now); seed_s=$(echo "$t1 - $t0" | bc -l)
  [ -f "$work/data$i/.kmodkit/seed.json" ] || { echo "bench: seed-data seeded nothing" >&2; exit 1; }
}
for i in $(seq "$rounds"); do
  # Which of the two goes first alternates: the one that follows the other's 200 MB of writeback
  # (the sync before it) starts on a disk that is still busy with it.
  if (( i % 2 )); then run_cp; run_seed; else run_seed; run_cp; fi
  mkdir -p "$work/full$i/var" && sync && cache warm
  t0=$(now); cp -a "$tree" "$work/full$i/var/app"; sync -f "$work/full$i"
  find "$work/full$i/var/app" -type f -print0 | xargs -0 -P"$(nproc)" -n 2000 sha256sum >/dev/null
  t1=$(now); full_s=$(echo "$t1 - $t0" | bc -l)
  echo "$cp_s" >> "$work/t_cp"; echo "$seed_s" >> "$work/t_seed"; echo "$seed_s / $cp_s" | bc -l >> "$work/r"
  echo "$full_s" >> "$work/t_full"; echo "$seed_s / $full_s" | bc -l >> "$work/r_full"
  printf 'round %d: cp -a %.2f s, seed-data (with syncfs and digests) %.2f s, cp -a + sync + sha256sum %.2f s\n' \
    "$i" "$cp_s" "$seed_s" "$full_s"
done
# Cold: the first start of a pod reads an image's files that are not in the page cache.
: > "$work/r_cold"; : > "$work/t_cp_cold"; : > "$work/t_seed_cold"
if [ -w /proc/sys/vm/drop_caches ]; then
  for i in $(seq "$rounds"); do
    i=cold$i
    if (( ${i#cold} % 2 )); then run_cp cold; run_seed cold; else run_seed cold; run_cp cold; fi
    echo "$cp_s" >> "$work/t_cp_cold"; echo "$seed_s" >> "$work/t_seed_cold"; echo "$seed_s / $cp_s" | bc -l >> "$work/r_cold"
    printf 'cold round %s: cp -a %.2f s, seed-data %.2f s\n' "${i#cold}" "$cp_s" "$seed_s"
  done
fi
: > "$work/t_warm"
for i in $(seq 10); do
  t0=$(now); "$bin" --data "$work/data1" --tree "$tree=var/app" --image-version 1 --log-format json >/dev/null 2>&1; t1=$(now)
  echo "$t1 - $t0" | bc -l >> "$work/t_warm"
done
# Merges: each round's volume and copy hold the old image (not timed), then the image changes.
merge_dir=$work/merge
if [ "$(id -u)" -eq 0 ] && command -v mkfs.ext4 >/dev/null; then
  truncate -s $((500 * rounds + 512))M "$work/merge.img"
  mkfs.ext4 -q -F -N $((50000 * rounds + 10000)) "$work/merge.img"
  merge_mount=$(mktemp -d /var/tmp/kmodkit-bench-merge.XXXXXX)
  mount -o loop "$work/merge.img" "$merge_mount"
  merge_dir=$merge_mount
fi
for i in $(seq "$rounds"); do
  mkdir -p "$merge_dir/data$i" "$merge_dir/cp$i/var"
  "$bin" --data "$merge_dir/data$i" --tree "$tree=var/app" --image-version 1 --log-format json >/dev/null 2>&1
  cp -a "$tree" "$merge_dir/cp$i/var/app"
done
python3 - "$tree" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(9900):
    with open(os.path.join(root, "conf%02d" % (i % 99), "f%05d.conf" % i), "wb") as f:
        f.write(os.urandom(10 * 1024))
PY
sync
: > "$work/r_merge"; : > "$work/t_merge"; : > "$work/t_cp_merge"
merge_cp() {
  sync && cache warm
  t0=$(now); cp -a "$tree/." "$merge_dir/cp$i/var/app/"; sync -f "$merge_dir/cp$i"; t1=$(now)
  cp_s=$(echo "$t1 - $t0" | bc -l)
}
merge_seed() {
  sync && cache warm
  t0=$(now); "$bin" --data "$merge_dir/data$i" --tree "$tree=var/app" --image-version 2 --log-format json \
    > "$work/merge.log" 2>&1; t1=$(now)
  seed_s=$(echo "$t1 - $t0" | bc -l)
  grep -q 'updated 9900,' "$work/merge.log" ||
    { echo "bench: the merge did not update 9,900 files: $(tail -1 "$work/merge.log")" >&2; exit 1; }
}
for i in $(seq "$rounds"); do
  if (( i % 2 )); then merge_cp; merge_seed; else merge_seed; merge_cp; fi
  echo "$cp_s" >> "$work/t_cp_merge"; echo "$seed_s" >> "$work/t_merge"; echo "$seed_s / $cp_s" | bc -l >> "$work/r_merge"
  printf 'merge round %d: cp -a over the old tree + sync %.2f s, seed-data merge %.2f s\n' "$i" "$cp_s" "$seed_s"
done

printf '\nresults (median of %d rounds, %s)\n' "$rounds" "$(df --output=fstype "$work" | tail -1)"
printf '  first seed, 10,000 files / 200 MB:  seed-data / cp -a = %.2f   (target <= 1.20; %.2f s vs %.2f s)\n' \
  "$(median < "$work/r")" "$(median < "$work/t_seed")" "$(median < "$work/t_cp")"
printf '  the same vs cp -a + sync + sha256sum: seed-data / that = %.2f   (%.2f s)\n' \
  "$(median < "$work/r_full")" "$(median < "$work/t_full")"
if [ -s "$work/r_cold" ]; then
  printf '  the same from a cold page cache:      seed-data / cp -a = %.2f   (%.2f s vs %.2f s)\n' \
    "$(median < "$work/r_cold")" "$(median < "$work/t_seed_cold")" "$(median < "$work/t_cp_cold")"
else
  echo "  the same from a cold page cache:      not measured (dropping the page cache needs root)"
fi
printf '  unchanged restart, whole process:   %.3f s (target <= 0.25 s)\n' "$(median < "$work/t_warm")"
printf '  merge, 9,900 of 10,000 files changed: seed-data / (cp -a + sync) = %.2f   (%.2f s vs %.2f s; %s)\n' \
  "$(median < "$work/r_merge")" "$(median < "$work/t_merge")" "$(median < "$work/t_cp_merge")" \
  "$([ -n "$merge_mount" ] && echo "a new ext4 with a journal (loop device)" || df --output=fstype "$merge_dir" | tail -1)"
