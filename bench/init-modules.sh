#!/usr/bin/env bash
# init-modules benchmarks, each a ratio against a baseline measured in the same script:
#   1. extracting the three real Debian header packages onto an empty volume, vs dpkg-deb -x of
#      the same files run one after the other (target: <= 0.8)
#   2. the same over HTTP from a local apt repository (download, verify, extract), vs the same
#      dpkg-deb -x baseline
#   3. the warm path (tree already there): wall time of the whole process (target: <= 50 ms)
#   4. peak memory (max RSS) while extracting (target: <= 64 MiB)
# Rounds alternate between kmodkit and the baseline; the medians are reported.
#   bench/init-modules.sh [ROUNDS]      (default 5; needs a build: ci/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
. bench/lib.sh
bench_setup init/init-modules
# Each round writes three trees of about 17,000 files and 60 MB.
bench_volumes "$work" $((320 * rounds + 512)) $((60000 * rounds + 10000))

tests/support/make-apt-repo.sh "$work/repo" >/dev/null
kver=$(cat "$work/repo/kernel-release")
debs=("$work"/repo/pool/main/*.deb)
args=()
for d in "${debs[@]}"; do args+=(--archive "$d" --sha256 "$(sha256sum "$d" | cut -d' ' -f1)"); done

bench_http_server "$work/repo" "$work/port"
repo="deb [trusted=yes] http://127.0.0.1:$(cat "$work/port") stable main"

# Volumes are never deleted between rounds: on an ext4 without a journal, inodes freed in the
# last minutes slow the creation of new ones, which would land on whichever side ran next.
fresh() { mkdir -p "$dest/$1"; sync; }

: > "$work/r_archive"; : > "$work/r_apt"; : > "$work/t_dpkg"; : > "$work/t_archive"; : > "$work/t_apt"; : > "$work/rss"
for i in $(seq "$rounds"); do
  fresh "dpkg$i"; t0=$(now)
  for d in "${debs[@]}"; do dpkg-deb -x "$d" "$dest/dpkg$i"; done
  sync -f "$dest/dpkg$i"   # init-modules makes its tree durable before showing it; so does the baseline
  t1=$(now); dpkg=$(echo "$t1 - $t0" | bc -l)

  fresh "vol$i"; t0=$(now)
  /usr/bin/time -f %M -o "$work/rss.1" "$bin" --kernel-release "$kver" --volume "$dest/vol$i" --sources archive \
    "${args[@]}" --log-format json >/dev/null 2>&1
  t1=$(now); archive=$(echo "$t1 - $t0" | bc -l)
  cat "$work/rss.1" >> "$work/rss"

  fresh "apt$i"; t0=$(now)
  "$bin" --kernel-release "$kver" --volume "$dest/apt$i" --host-root "$work/none" --sources apt --repo "$repo" \
    --log-format json >/dev/null 2>&1
  t1=$(now); apt=$(echo "$t1 - $t0" | bc -l)

  echo "$dpkg" >> "$work/t_dpkg"; echo "$archive" >> "$work/t_archive"; echo "$apt" >> "$work/t_apt"
  echo "$archive / $dpkg" | bc -l >> "$work/r_archive"
  echo "$apt / $dpkg" | bc -l >> "$work/r_apt"
  printf 'round %d: dpkg-deb -x %.2f s, init-modules (archives) %.2f s, init-modules (apt over HTTP) %.2f s\n' "$i" "$dpkg" "$archive" "$apt"
done

: > "$work/t_warm"; : > "$work/t_true"
for i in $(seq 20); do
  t0=$(now); "$bin" --kernel-release "$kver" --volume "$dest/vol1" --log-format json >/dev/null 2>&1; t1=$(now)
  echo "($t1 - $t0) * 1000" | bc -l >> "$work/t_warm"
  t0=$(now); /bin/true; t1=$(now)
  echo "($t1 - $t0) * 1000" | bc -l >> "$work/t_true"
done

printf '\nresults (median of %d rounds, volumes on %s)\n' "$rounds" "$(bench_where)"
printf '  extraction, 3 Debian header packages: init-modules / dpkg-deb -x = %.2f   (target <= 0.80; %.2f s vs %.2f s)\n' \
  "$(median < "$work/r_archive")" "$(median < "$work/t_archive")" "$(median < "$work/t_dpkg")"
printf '  apt over local HTTP incl. indexes:     init-modules / dpkg-deb -x = %.2f   (%.2f s)\n' \
  "$(median < "$work/r_apt")" "$(median < "$work/t_apt")"
printf '  warm path, whole process:              %.1f ms (target <= 50 ms; /bin/true %.1f ms)\n' \
  "$(median < "$work/t_warm")" "$(median < "$work/t_true")"
printf '  peak memory while extracting:          %.1f MiB (target <= 64 MiB)\n' "$(echo "$(sort -g "$work/rss" | tail -1) / 1024" | bc -l)"
