#!/usr/bin/env bash
# Builds a real apt repository from Debian's own packages for the tests:
#   make-apt-repo.sh OUT_DIR
# Downloads (apt-get download, cached in $KMODKIT_TEST_CACHE) the headers of Debian's current
# 6.1 kernel and the packages they depend on, indexes them with dpkg-scanpackages and
# apt-ftparchive, and writes OUT_DIR/kernel-release. Idempotent.
set -euo pipefail
out=$(realpath -m "${1:?usage: make-apt-repo.sh OUT_DIR}")
cache=${KMODKIT_TEST_CACHE:-/var/cache/kmodkit-tests}
mkdir -p "$cache/debs" "$out"

if ! apt-cache show linux-headers-amd64 >/dev/null 2>&1; then
  apt-get update -qq
fi
# The ABI of Debian's current 6.1 kernel: linux-headers-amd64 depends on linux-headers-<abi>-amd64.
headers=$(apt-cache depends linux-headers-amd64 | awk '/Depends: linux-headers-[0-9]/ {print $2; exit}')
[ -n "$headers" ] || { echo "make-apt-repo: cannot find the current linux-headers package" >&2; exit 1; }
kver=${headers#linux-headers-}
abi=${kver%-amd64}
version=$(apt-cache show "$headers" | awk '/^Version:/ {print $2; exit}')
kbuild=$(apt-cache show "$headers" | sed -n 's/^Depends:.*\(linux-kbuild-[0-9.]*\).*/\1/p' | head -1)
pkgs=("$headers" "linux-headers-$abi-common" "$kbuild")

cd "$cache/debs"
for p in "${pkgs[@]}"; do
  if ! ls "${p}_${version}"_*.deb >/dev/null 2>&1; then
    apt-get download -q "$p=$version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
  fi
done

mkdir -p "$out/pool/main" "$out/dists/stable/main/binary-amd64"
for p in "${pkgs[@]}"; do cp -u "$cache/debs/${p}_${version}"_*.deb "$out/pool/main/"; done
(
  cd "$out"
  dpkg-scanpackages --arch amd64 pool/main /dev/null 2>/dev/null > dists/stable/main/binary-amd64/Packages
  xz -kf dists/stable/main/binary-amd64/Packages
  gzip -kf dists/stable/main/binary-amd64/Packages
  apt-ftparchive -o APT::FTPArchive::Release::Suite=stable -o APT::FTPArchive::Release::Codename=bookworm \
    release dists/stable > Release.tmp
  mv Release.tmp dists/stable/Release
)
echo "$kver" > "$out/kernel-release"
echo "make-apt-repo: $out holds ${pkgs[*]} ($version) for $kver"
