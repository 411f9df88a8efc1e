#!/usr/bin/env bash
# Builds the Debian 12 base image the Containerfiles start from, with debootstrap (base images
# are not pulled: the build needs only Debian's package repositories).
#   images/build-base.sh [MIRROR]     -> image localhost/kmodkit-base:bookworm
# KMODKIT_BASE_SUITE picks another release (tests/images/smoke.sh's portable case runs
# kmod-builder's bundle on Debian 11, an older glibc): image localhost/kmodkit-base:<suite>.
set -euo pipefail
mirror=${1:-http://deb.debian.org/debian}
suite=${KMODKIT_BASE_SUITE:-bookworm}
image=${KMODKIT_BASE_IMAGE:-localhost/kmodkit-base:$suite}
if buildah inspect --type image "$image" >/dev/null 2>&1; then
  echo "build-base: $image exists"
  exit 0
fi
root=$(mktemp -d /var/tmp/kmodkit-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase "$suite" "$root" "$mirror"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
# The repositories of a stock Debian image (debian:bookworm): main, updates and security,
# signed by Debian's archive keys. init-modules reads these by default.
rm -f "$root/etc/apt/sources.list"
cat > "$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: ${mirror}
Suites: ${suite} ${suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: ${suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
ctr=$(buildah from scratch)
buildah copy "$ctr" "$root" / >/dev/null
buildah config --env LANG=C.UTF-8 "$ctr"
buildah commit --rm "$ctr" "$image"
echo "build-base: $image"
