#!/usr/bin/env bash
# Installs what kmodkit needs, builds it, and runs the init chain on a built-in default: the
# headers of Debian's current 6.1 kernel, fetched from the Debian repositories this machine's
# apt is configured with, laid onto the local demo volume ./demo-volume (init-modules), then
# igb_uio built, signed with an ephemeral key and installed there (kmod-builder); then the
# firewall's default rules seeded into ./demo-data (seed-data) and the firewall run on them for
# two seconds over virtual devices: a capture of 1,000 flows in on port A, out to a pcap on
# port B (hugepage-less). Ends with each step's summary, kmod-builder status and the counters.
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

data=${KMODKIT_DATA:-$PWD/demo-data}
mkdir -p "$data"
echo "demo: seeding the firewall's default rules (firewall/examples) into $data"
"build/$preset/seed-data/seed-data" --tree "$PWD/firewall/examples=etc/kmodkit" --data "$data" \
  --image-version demo --log-format human
if [ -x "build/$preset/firewall/firewall" ]; then
  out=$PWD/demo-firewall
  mkdir -p "$out"
  python3 bench/firewall-inputs.py "$out" 1000 >/dev/null
  echo "demo: the firewall on $data/etc/kmodkit/demo.rules: $out/flows.pcap in on port A, out to $out/out-b.pcap"
  "build/$preset/firewall/firewall" --rules "$data/etc/kmodkit/demo.rules" \
    --vdev "net_pcap0,rx_pcap=$out/flows.pcap,tx_pcap=$out/out-a.pcap" --vdev "net_pcap1,tx_pcap=$out/out-b.pcap" \
    --no-huge-mb 512 --lcores 0 --duration 2 --log-format human | grep -v ': 0$'
fi
