#!/usr/bin/env bash
# Fetches a DPDK 22.11 source tree for the rte_kni tests and prints its path, or writes it to
# PATH_FILE (the ctest fixture fixture.dpdk_src does, for the rte_kni and QEMU tests):
#   fetch-dpdk-src.sh [PATH_FILE]
# Debian does not package rte_kni's source, but its dpdk source package's orig tarball is the
# upstream release, kernel/linux/kni included. Pinned by SHA-256; cached in $KMODKIT_TEST_CACHE.
set -euo pipefail
version=22.11.11
sha256=27a3bb1f57e02eb68c7c0a6f8bbf9fb74ec198c5aab74ed602da5b71c492a476
url=${KMODKIT_DPDK_URL:-http://deb.debian.org/debian/pool/main/d/dpdk/dpdk_${version}.orig.tar.xz}
cache=${KMODKIT_TEST_CACHE:-/var/cache/kmodkit-tests}/dpdk
tree="$cache/dpdk-stable-$version"
mkdir -p "$cache"
# One fetch at a time per cache (suites of two checkouts may run at once).
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$tree/.complete" ]; then
  tarball="$cache/dpdk_${version}.orig.tar.xz"
  if [ ! -f "$tarball" ] || ! echo "$sha256  $tarball" | sha256sum -c --quiet >/dev/null 2>&1; then
    curl -fsSL --retry 3 -o "$tarball.part" "$url" >&2
    echo "$sha256  $tarball.part" | sha256sum -c --quiet >&2 || { echo "fetch-dpdk-src: $url does not match its pinned sha256" >&2; exit 1; }
    mv "$tarball.part" "$tarball"
  fi
  rm -rf "$tree"
  tar -C "$cache" -xJf "$tarball" "dpdk-stable-$version/kernel" "dpdk-stable-$version/lib" "dpdk-stable-$version/config"
  touch "$tree/.complete"
fi
if [ -n "${1:-}" ]; then
  mkdir -p "$(dirname "$1")"  # the first fixture to run makes the fixtures directory
  echo "$tree" > "$1.part" && mv "$1.part" "$1"
else
  echo "$tree"
fi
