#!/usr/bin/env bash
# Fetches the dkms.conf files of real Debian *-dkms packages for the recipe tests and prints the
# directory holding them (one sub-directory per package, with the package's /usr/src tree):
#   fetch-dkms-packages.sh
# Each package is pinned by its pool path and SHA-256 (the non-free ones cannot come from
# apt-get download on a machine with only main configured); cached in $KMODKIT_TEST_CACHE.
set -euo pipefail
mirror=${KMODKIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${KMODKIT_TEST_CACHE:-/var/cache/kmodkit-tests}/dkms-packages
mkdir -p "$cache"
# package  pool path  sha256 — chosen for their BUILD_EXCLUSIVE lines:
#   r8168-dkms: BUILD_EXCLUSIVE_KERNEL="^3\.1[4-9].*|^[4-9].*" (and BUILD_EXCLUSIVE_CONFIG)
packages=(
  "r8168-dkms pool/non-free/r/r8168/r8168-dkms_8.051.02-2_all.deb 4290bb247416637ca4ccc868442f61b9eacc0387e7292d174ff9c8bf527d05d5"
)
for line in "${packages[@]}"; do
  read -r name path sha256 <<<"$line"
  deb="$cache/$(basename "$path")"
  if [ ! -f "$cache/$name/.complete" ]; then
    if [ ! -f "$deb" ] || ! echo "$sha256  $deb" | sha256sum -c --quiet >/dev/null 2>&1; then
      curl -fsSL --retry 3 -o "$deb.part" "$mirror/$path" >&2
      echo "$sha256  $deb.part" | sha256sum -c --quiet >&2 || { echo "fetch-dkms-packages: $mirror/$path does not match its pinned sha256" >&2; exit 1; }
      mv "$deb.part" "$deb"
    fi
    rm -rf "$cache/$name"
    mkdir -p "$cache/$name"
    dpkg-deb --fsys-tarfile "$deb" | tar -xf - -C "$cache/$name" --wildcards './usr/src/*'
    touch "$cache/$name/.complete"
  fi
done
echo "$cache"
