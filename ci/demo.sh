#!/usr/bin/env bash
# Installs what kmodkit needs, builds it, and runs the init chain on a built-in default: the
# headers of Debian's current 6.1 kernel, fetched from the Debian repositories this machine's
# apt is configured with, laid onto the local demo volume ./demo-volume (init-modules), then
# igb_uio built, signed with an ephemeral key and installed there (kmod-builder). Ends with a
# summary and what kmod-builder status says.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh
ci/build.sh >/dev/null
preset=${KMODKIT_PRESET:-$([ "${CI:-}" = "true" ] && echo ci || echo default)}
if ! apt-cache show linux-headers-amd64 >/dev/null 2>&1; then apt-get update -qq; fi
headers=$(apt-cache depends linux-headers-amd64 | awk '/Depends: linux-headers-[0-9]/ {print $2; exit}')
kver=${KMODKIT_KERNEL_RELEASE:-${headers#linux-headers-}}
volume=${KMODKIT_VOLUME:-$PWD/demo-volume}
mkdir -p "$volume"
echo "demo: laying out the headers of $kver into $volume"
"build/$preset/init/init-modules" --kernel-release "$kver" --volume "$volume" \
  --host-root "$volume.no-host" --sources volume,apt --log-format human
echo "demo: building igb_uio (Debian's dpdk-kmods-dkms) for $kver on $volume"
"build/$preset/kmod-builder/kmod-builder" --kernel-release "$kver" --volume "$volume" --recipe igb_uio \
  --log-format human
"build/$preset/kmod-builder/kmod-builder" status --volume "$volume" --kernel-release "$kver"
