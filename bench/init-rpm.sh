#!/usr/bin/env bash
# init-modules' rpm source, as ratios against the same work done with dnf and rpm's own tools in
# this script:
#   1. cold: kernel-devel and kernel-core for R from a signed local dnf repository over HTTP
#      (repomd.xml and its signature, primary, the packages, their signatures and digests,
#      extraction onto an empty volume made durable), vs `dnf download` of the same packages
#      with a fresh cache, `rpmkeys --checksig` of them, `rpm2cpio | cpio -idm` each, `sync -f`
#      (target: <= 0.8)
#   2. peak memory (max RSS) of both
#   3. a repository whose primary.xml is SIZE_MB (default 200) uncompressed, with the kernel's
#      packages last: init-modules' time and peak memory (target: <= 64 MiB), and dnf's for scale
# Rounds alternate between kmodkit and the baseline; the medians are reported.
#   bench/init-rpm.sh [ROUNDS [SIZE_MB]]   (default 5 and 200; needs a build: ci/build.sh, and
#                                          ci/install-deps.sh --bench for dnf)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
size_mb=${2:-200}
. bench/lib.sh
bench_setup init/init-modules
bench_need dnf
fixtures=${KMODKIT_BENCH_FIXTURES:-$PWD/build/$preset/test-fixtures}
# Each round writes two trees of about 17,000 files and 70 MB, and the large-primary run one more.
bench_volumes "$work" $((200 * rounds + 512)) $((40000 * rounds + 30000))

tests/support/make-apt-repo.sh "$fixtures/apt-repo" >/dev/null
tests/support/make-rpm-repo.sh "$fixtures/rpm-repo" "$fixtures/apt-repo" >/dev/null
rpm_repo=$fixtures/rpm-repo
kver=$(cat "$rpm_repo/kernel-release")
key=$rpm_repo/RPM-GPG-KEY-kmodkit-test
cp -a "$rpm_repo/gnupg" "$work/gnupg"   # gpg writes into its home; the fixture stays as it is
python3 bench/make-big-rpm-repo.py "$rpm_repo/signed" "$work/big" "$size_mb" "$work/gnupg"
mkdir "$work/www"
ln -s "$rpm_repo/signed" "$work/www/signed"
ln -s "$work/big" "$work/www/big"
bench_http_server "$work/www" "$work/port"
base=http://127.0.0.1:$(cat "$work/port")

repo_file() {  # NAME DIR
  cat > "$work/$1.repo" <<EOF
[$1]
name=benchmark repository $1
baseurl=$base/$2
enabled=1
gpgcheck=1
repo_gpgcheck=1
gpgkey=file://$key
EOF
}
repo_file small signed
repo_file big big

# rpm's keyring for the baseline's signature check, made once outside the timings.
mkdir -p "$work/rpmdb"
rpmkeys --root "$work/rpmdb" --import "$key"

# The baseline: dnf resolves the same provides and downloads with a fresh cache (it checks
# repomd.xml's signature: repo_gpgcheck), rpmkeys checks each package's signature and digests,
# rpm2cpio and cpio extract them, sync makes the tree durable as init-modules does.
baseline() {  # REPO OUT
  local repo=$1 out=$2 rpm
  rm -rf "$work/dnf"
  dnf -q -y --setopt=reposdir="$work/none" --setopt=cachedir="$work/dnf/cache" --installroot="$work/dnf/root" \
    --releasever=9 --repofrompath="$repo,$base/$([ "$repo" = big ] && echo big || echo signed)" --repo="$repo" \
    --setopt="$repo.gpgcheck=1" --setopt="$repo.repo_gpgcheck=1" --setopt="$repo.gpgkey=file://$key" \
    download --destdir "$work/dnf/dl" "kernel-devel-uname-r = $kver" "kernel-core-uname-r = $kver" \
    >/dev/null 2>"$work/dnf.err" || { cat "$work/dnf.err" >&2; return 1; }
  rpmkeys --root "$work/rpmdb" --checksig --define '_pkgverify_level all' "$work"/dnf/dl/*.rpm >/dev/null
  mkdir -p "$out"
  for rpm in "$work"/dnf/dl/*.rpm; do rpm2cpio "$rpm" | (cd "$out" && cpio -idm --quiet); done
  sync -f "$out"
}
kmodkit() {  # REPO OUT
  "$bin" --kernel-release "$kver" --volume "$2" --host-root "$work/none" --sources rpm --rpm-repo "$work/$1.repo" \
    --log-format json >/dev/null 2>"$work/kmodkit.err" || { cat "$work/kmodkit.err" >&2; return 1; }
}
export -f baseline kmodkit
export work base key kver bin
: > "$work/r"
for i in $(seq "$rounds"); do
  bench_timed dnf "dnf$i" 'baseline small'
  bench_timed kk "kk$i" 'kmodkit small'
  t_dnf=$(bench_last dnf); t_kk=$(bench_last kk)
  echo "$t_kk / $t_dnf" | bc -l >> "$work/r"
  printf 'round %d: dnf download + rpmkeys + rpm2cpio|cpio %.2f s, init-modules (rpm source) %.2f s\n' "$i" "$t_dnf" "$t_kk"
done

bench_timed big_kk big_kk 'kmodkit big'; t_big_kk=$(bench_last big_kk)
bench_timed big_dnf big_dnf 'baseline big'; t_big_dnf=$(bench_last big_dnf)

mib() { echo "$1 / 1024" | bc -l; }
printf '\nresults (median of %d rounds, volumes on %s; %s)\n' "$rounds" "$(bench_where)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs"
printf '  rpm source, cold, 2 packages over local HTTP: init-modules / dnf+rpm = %.2f   (target <= 0.80; %.2f s vs %.2f s)\n' \
  "$(median < "$work/r")" "$(median < "$work/t_kk")" "$(median < "$work/t_dnf")"
printf '  peak memory:                                  init-modules %.1f MiB, dnf+rpm %.1f MiB (largest of its processes)\n' \
  "$(mib "$(sort -g "$work/rss_kk" | tail -1)")" "$(mib "$(sort -g "$work/rss_dnf" | tail -1)")"
printf '  primary.xml of %d MB, kernel last:            init-modules %.2f s, %.1f MiB (target <= 64 MiB); dnf+rpm %.2f s, %.1f MiB\n' \
  "$size_mb" "$t_big_kk" "$(mib "$(cat "$work/rss_big_kk")")" "$t_big_dnf" "$(mib "$(cat "$work/rss_big_dnf")")"
