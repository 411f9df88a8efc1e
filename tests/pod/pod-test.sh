#!/usr/bin/env bash
# The whole pod on a real kernel: the StatefulSet that `kubectl kustomize tests/pod/overlay`
# renders (deploy/overlays/kubernetes with the test site's values) runs in a QEMU guest (TCG)
# booted from Debian's 6.1 kernel, each container from its image's root file system, built in
# the same run (images/build.sh, tag KMODKIT_IMAGE_TAG, default ctest).
#   pod-test.sh FIXTURES_DIR
# (KMODKIT_POD_CONSOLES=DIR keeps each boot's console there, as NAME.txt.)
# The guest:
#   - the node: a busybox initramfs (the boot modules and /etc/os-release of Debian 12), and the
#     node's full modules tree on a disk of its own, mounted at /usr/lib/modules
#   - each image's root file system an ext4 disk mounted read-only at /images/<name>; the renderer
#     (tests/pod/render-pod.py) makes each container's root an overlay of it
#   - the modules PVC and the data PVC each an ext4 disk that survives the boots
#   - a management NIC on QEMU's user network, where 10.0.2.100:80 is the test's apt repository
#     (the fixture's, served on 127.0.0.1), and two virtio-net NICs at 0000:00:04.0 and
#     0000:00:05.0 that the device plugin's variables hand to the pod, as an SR-IOV resource's VFs
#   - 2 MiB hugepages reserved on the kernel command line
#   - a DPDK 22.11 source tree (the fixture.dpdk_src fixture's, or KMODKIT_DPDK_SRC) at
#     /var/lib/kmodkit/dpdk-22.11, for the fourth boot's rte_kni
#   - QEMU's `max` CPU model: Debian's DPDK is built for -march=corei7 (SSE4.2), which the default
#     qemu64 model lacks (the firewall would die of SIGILL)
# Boot 1 is a cold start (headers from the repository, igb_uio built, signed, loaded, the NICs
# bound); boot 2 with the same disks is warm (every step finds its work done). Between boots 2 and
# 3 the operator edits the rules on the data disk, and boot 3 runs the pod of an upgrade whose
# default rules changed (tests/pod/overlay-upgrade): the edit stays in force, the new default is
# written beside it. Boot 4 is the same node on a q35 machine with an emulated Intel IOMMU
# (intel-iommu with interrupt remapping; Debian's kernel has no vfio no-IOMMU mode), running the
# pod as deploy/overlays/kubernetes declares it (tests/pod/overlay-vfio): the VFs on vfio-pci, the
# firewall unprivileged, and rte_kni built, signed and loaded beside igb_uio. Each boot prints the
# guest's times: kernel boot, each init container, total.
set -euo pipefail
fixtures=$(realpath "${1:?usage: pod-test.sh FIXTURES_DIR}")
here=$(cd "$(dirname "$0")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
tag=${KMODKIT_IMAGE_TAG:-ctest}
cache=${KMODKIT_TEST_CACHE:-/var/cache/kmodkit-tests}
. "$repo_root/tests/qemu/lib.sh"
for tool in qemu-system-x86_64 busybox cpio buildah kubectl mkfs.ext4 depmod python3; do
  command -v "$tool" >/dev/null || { echo "pod-test: $tool is missing (ci/install-deps.sh installs it)"; exit 1; }
done
kver=$(cat "$fixtures/apt-repo/kernel-release")
dpdk_src=${KMODKIT_DPDK_SRC:-$(cat "$fixtures/dpdk-src" 2>/dev/null || true)}
[ -d "$dpdk_src/kernel/linux/kni" ] ||
  { echo "pod-test: no DPDK 22.11 tree for rte_kni: run the fixture.dpdk_src fixture (ctest -R fixture) or set KMODKIT_DPDK_SRC"; exit 1; }
work=$(mktemp -d /var/tmp/kmodkit-pod.XXXXXX)
server_pid=
containers=()
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  ! mountpoint -q "$work/mnt" 2>/dev/null || umount "$work/mnt"
  for c in "${containers[@]}"; do buildah umount "$c" >/dev/null 2>&1 || true; buildah rm "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
out=
fail() {
  if [ -n "$out" ] && [ -f "$out" ]; then echo "--- guest output ($out)"; cat "$out"; echo "---"; fi
  echo "pod-test: FAILED: $*"
  exit 1
}

# --- The pod, rendered ------------------------------------------------------------------------
kubectl kustomize "$here/overlay" > "$work/rendered.yaml" || fail "kubectl kustomize $here/overlay"

# --- The node ---------------------------------------------------------------------------------
image_deb=$(qemu_kernel_deb "$fixtures" "$cache") || fail "no linux-image package for $kver"
dpkg-deb -x "$image_deb" "$work/kernel"
# The package holds /lib/modules; the node's tree is /usr/lib/modules (merged /usr), and depmod
# looks under BASE/lib/modules.
if [ -d "$work/kernel/lib/modules" ] && [ ! -L "$work/kernel/lib" ]; then
  mkdir -p "$work/kernel/usr/lib"
  mv "$work/kernel/lib/modules" "$work/kernel/usr/lib/modules"
  rm -rf "$work/kernel/lib"
fi
ln -sfn usr/lib "$work/kernel/lib"
depmod -b "$work/kernel" "$kver"
vmlinuz=$work/kernel/boot/vmlinuz-$kver
# The node's modules tree, whole, as a node has it.
ext4_disk "$work/disk-node.ext4" "$work/kernel/usr/lib/modules" node-modules
# The DPDK tree the fourth boot's site builds rte_kni from, kept on the node.
ext4_disk "$work/disk-dpdk-src.ext4" "$dpdk_src" dpdk-src

# --- The images -------------------------------------------------------------------------------
# Each image the pod names, as the kubelet would pull it: here the one this run built, its root
# file system on a disk, its entrypoint, user and environment for the renderer.
images=$(python3 - "$work/rendered.yaml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "StatefulSet":
        spec = doc["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            print(c["image"])
PY
)
images=$(echo "$images" | sort -u)
disks=()
echo '{}' > "$work/images.json"
for ref in $images; do
  name=${ref%%:*}; name=${name##*/}
  local_ref=localhost/${ref%%:*}:$tag
  c=$(buildah from --quiet --pull=never "$local_ref") || fail "no image $local_ref (images/build.sh with KMODKIT_IMAGE_TAG=$tag)"
  containers+=("$c")
  mnt=$(buildah mount "$c")
  ext4_disk "$work/disk-$name.ext4" "$mnt" "$name"
  buildah inspect --type image "$local_ref" |
    python3 -c 'import json, sys
ref, name, path = sys.argv[1:4]
config = json.load(sys.stdin)["OCIv1"]["config"]
images = json.load(open(path))
images[ref] = {"root": "/images/" + name, "entrypoint": config.get("Entrypoint") or [], "cmd": config.get("Cmd") or [],
               "user": config.get("User") or "0", "workdir": config.get("WorkingDir") or "/", "env": config.get("Env") or []}
json.dump(images, open(path, "w"), indent=1)' "$ref" "$name" "$work/images.json"
  disks+=("$name")
done

# --- The volumes: empty ext4 disks the boots share ----------------------------------------------
truncate -s 3G "$work/pv-modules.ext4"; mkfs.ext4 -q -F -L pv-modules "$work/pv-modules.ext4"
truncate -s 256M "$work/pv-data.ext4"; mkfs.ext4 -q -F -L pv-data "$work/pv-data.ext4"

# --- What the cluster supplies at run time --------------------------------------------------------
# The device plugin hands the pod the two virtio-net NICs as the resource's devices; Multus writes
# the network-status annotation naming them for the networks the pod asked for. On the q35 machine
# (vfio) the plugin's device specs add the NICs' VFIO group nodes and the container, /dev/vfio/vfio,
# as it does for a resource of VFs on vfio-pci; the groups are those the guest's IOMMU gives the
# NICs at 00:04.0 and 00:05.0 (the guest checks them).
config() {
python3 - "$work/rendered.yaml" "$work/images.json" "$1" <<'PY'
import json, sys, yaml
rendered, images, variant = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
claims = {}
for doc in yaml.safe_load_all(open(rendered)):
    if doc and doc.get("kind") == "StatefulSet":
        spec = doc["spec"]
        for v in spec["template"]["spec"]["volumes"]:
            if "persistentVolumeClaim" in v:
                claims[v["persistentVolumeClaim"]["claimName"]] = "/pv/modules"
        for t in spec.get("volumeClaimTemplates", []):
            claims[t["metadata"]["name"]] = "/pv/data"
if variant == "vfio":
    # Modern virtio-net (disable-legacy=on): device 1041.
    vfs = [{"address": "0000:00:04.0", "info": {"generic": {"deviceID": "1041"}, "vfio": {"dev-mount": "/dev/vfio/3", "mount": "/dev/vfio/vfio"}}},
           {"address": "0000:00:05.0", "info": {"generic": {"deviceID": "1041"}, "vfio": {"dev-mount": "/dev/vfio/4", "mount": "/dev/vfio/vfio"}}}]
else:
    # Transitional virtio-net: device 1000. On the NUMA guest the inside NIC is behind a PCI
    # expander bridge on node 1 (its bridge at 0000:20:00.0).
    inside = "0000:21:00.0" if variant == "numa" else "0000:00:05.0"
    vfs = [{"address": "0000:00:04.0", "info": {"generic": {"deviceID": "1000"}}},
           {"address": inside, "info": {"generic": {"deviceID": "1000"}}}]
status = [{"name": "cni-default", "interface": "eth0", "ips": ["10.0.2.15"], "default": True},
          {"name": "kmodkit/kmodkit-outside", "interface": "net1", "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": vfs[0]["address"]}}},
          {"name": "kmodkit/kmodkit-inside", "interface": "net2", "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": vfs[1]["address"]}}}]
json.dump({"statefulset": "kmodkit-firewall", "node_name": "node-0", "pod_ip": "10.0.2.15", "images": images,
           "claims": claims, "devices": {"intel.com/intel_sriov_dpdk": vfs},
           "annotations": {"k8s.v1.cni.cncf.io/network-status": json.dumps(status, indent=1)},
           "hugepages": {"HugePages-2Mi": "2M", "HugePages": "2M"}, "run_dir": "/run/pod"}, sys.stdout, indent=1)
PY
}
config uio > "$work/config.json"
config vfio > "$work/config-vfio.json"
config numa > "$work/config-numa.json"
python3 "$here/render-pod.py" --manifests "$work/rendered.yaml" --config "$work/config.json" --out "$work/pod.sh" ||
  fail "render-pod.py"
# The same pod after an upgrade of its default rules.
kubectl kustomize "$here/overlay-upgrade" > "$work/rendered-upgrade.yaml" || fail "kubectl kustomize $here/overlay-upgrade"
python3 "$here/render-pod.py" --manifests "$work/rendered-upgrade.yaml" --config "$work/config.json" \
  --out "$work/pod-upgrade.sh" || fail "render-pod.py (upgrade)"
# The pod as deploy/ declares it, on a node with an IOMMU, with rte_kni.
kubectl kustomize "$here/overlay-vfio" > "$work/rendered-vfio.yaml" || fail "kubectl kustomize $here/overlay-vfio"
python3 "$here/render-pod.py" --manifests "$work/rendered-vfio.yaml" --config "$work/config-vfio.json" \
  --out "$work/pod-vfio.sh" || fail "render-pod.py (vfio)"
# The upgraded pod again (its rules as on the data volume by then), on a node with two NUMA nodes
# and the inside NIC on the second.
python3 "$here/render-pod.py" --manifests "$work/rendered-upgrade.yaml" --config "$work/config-numa.json" \
  --out "$work/pod-numa.sh" || fail "render-pod.py (numa)"

# --- The initramfs ------------------------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,proc,sys,dev,tmp,run,images,pv/modules,pv/data,etc,usr/lib/modules,var/lib/kmodkit/dpdk-22.11}
cp "$(command -v busybox)" "$root/bin/busybox"
boot_modules "$work/kernel" "$kver" "$root/boot-modules" virtio_pci virtio_blk virtio_net crc32c_generic ext4 overlay
cp /etc/os-release "$root/etc/os-release"
echo node-0 > "$root/etc/hostname"
{
  # vda: the node's modules; vdb, vdc: the volumes; vdd: the DPDK tree; then the images, in this
  # order (the disks' PCI addresses follow it).
  echo "vda /usr/lib/modules ro"
  echo "vdb /pv/modules rw"
  echo "vdc /pv/data rw"
  echo "vdd /var/lib/kmodkit/dpdk-22.11 ro"
  letters=(e f g h i j k)
  for i in "${!disks[@]}"; do echo "vd${letters[$i]} /images/${disks[$i]} ro"; done
} > "$root/disks"
cat > "$root/init" <<'GUEST'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
up() { cut -d' ' -f1 /proc/uptime; }
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm; mount -t tmpfs run /run
echo "KMODKIT-POD kernel-booted $(up)"
for m in $(cat /boot-modules/order); do insmod "/boot-modules/$m" || echo "KMODKIT-POD insmod-failed $m"; done
while read -r dev dir mode; do
  mkdir -p "$dir"
  mount -t ext4 -o "$mode" "/dev/$dev" "$dir" || echo "KMODKIT-POD mount-failed $dev $dir"
done < /disks
hostname "$(cat /etc/hostname)"
ip link set lo up
# (a virtio NIC: its interface is under the virtio device)
mgmt=$(ls /sys/bus/pci/devices/0000:00:03.0/virtio*/net/)
ip addr add 10.0.2.15/24 dev "$mgmt"; ip link set "$mgmt" up; ip route add default via 10.0.2.2
echo "KMODKIT-POD node-ready $(up)"
# The pod's CPUs, where the node has more than the pod gets (the kubelet's cpuset): a mask.
[ -s /pod-cpus ] && taskset -p "$(cat /pod-cpus)" $$ > /dev/null
. /pod.sh
pod_prepare
pod_init; rc=$?
echo "KMODKIT-POD init-done $rc $(up)"
for a in $(cat /ports); do
  echo "KMODKIT-POD driver $a $(basename "$(readlink /sys/bus/pci/devices/$a/driver)")"
  echo "KMODKIT-POD iommu-group $a $(basename "$(readlink /sys/bus/pci/devices/$a/iommu_group 2>/dev/null)")"
done
for m in uio igb_uio rte_kni vfio vfio_pci vfio_iommu_type1; do
  echo "KMODKIT-POD module $m $(cat /sys/module/$m/initstate 2>/dev/null || echo absent)"
done
if [ "$rc" = 0 ]; then
  pod_main_start
  # When the firewall says it forwards (its log, as the kubelet keeps it), on the guest's clock.
  until grep -q '"forwarding: ' "$POD_RUN/containers/firewall/log" 2>/dev/null || ! pod_alive "$POD_MAIN_PID"; do sleep 0.1; done
  echo "KMODKIT-POD forwarding $(up)"
  # What the main container's process may do, now that setpriv has become the firewall.
  echo "KMODKIT-POD firewall-caps $(awk '$1 == "CapEff:" { print $2 }' "/proc/$POD_MAIN_PID/status" 2>/dev/null)"
  # The kubelet's probes as the pod declares them (render-pod.py's pod_main_probe_*).
  for p in startup readiness liveness; do pod_main_probe_$p; echo "KMODKIT-POD probe $p $?"; done
  # The host sends its traffic through, then says so by serving /stop; the pod then stops as the
  # kubelet stops it (SIGTERM to the main container).
  n=0
  until wget -q -O /dev/null http://10.0.2.100/stop 2>/dev/null || ! pod_alive "$POD_MAIN_PID" || [ $n -ge 900 ]; do
    sleep 1; n=$((n + 1))
  done
  echo "KMODKIT-POD stopping $(up)"
  pod_main_stop
  echo "KMODKIT-POD dpdk-run-left $(ls -A "$POD_RUN/volumes/run" | wc -l)"
fi
sync
umount /pv/modules /pv/data 2>/dev/null
echo KMODKIT-END
poweroff -f
GUEST
chmod +x "$root/init"
# One initramfs per rendering of the pod.
for v in pod pod-upgrade pod-vfio pod-numa; do
  cp "$work/$v.sh" "$root/pod.sh"
  if [ "$v" = pod-numa ]; then echo "0000:00:04.0 0000:21:00.0"; else echo "0000:00:04.0 0000:00:05.0"; fi > "$root/ports"
  if [ "$v" = pod-numa ]; then echo 3; else echo -n; fi > "$root/pod-cpus"
  (cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$work/initrd-$v.gz"
done

# --- The boots ----------------------------------------------------------------------------------
# What the guest reaches at 10.0.2.100: the repository, and /stop once the host's traffic is done.
mkdir -p "$work/www"
ln -s "$fixtures/apt-repo/dists" "$fixtures/apt-repo/pool" "$work/www/"
python3 "$repo_root/tests/support/http_server.py" "$work/www" --port-file "$work/port" 2>"$work/http.log" &
server_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
[ -s "$work/port" ] || fail "the HTTP server did not start: $(cat "$work/http.log")"
port=$(cat "$work/port")

# The pod's two networks: a network namespace each, with a TAP device that is the other end of one
# of the guest's virtio NICs (the firewall's ports: outside is port A, inside port B). The TAP
# devices are made here, opened by QEMU, then moved into their namespaces.
ns_out=kmodkit-pod-out-$$ ns_in=kmodkit-pod-in-$$
tap_out=kkpo$$ tap_in=kkpi$$
netns_made=
netns_cleanup() {
  [ -z "$netns_made" ] || { ip netns del "$ns_out" 2>/dev/null || true; ip netns del "$ns_in" 2>/dev/null || true; }
  ip link del "$tap_out" 2>/dev/null || true; ip link del "$tap_in" 2>/dev/null || true
}
ns_pids=()
qemu_pid=
cleanup_all() {
  for p in "${ns_pids[@]}" $qemu_pid; do kill "$p" 2>/dev/null || true; done
  netns_cleanup
  cleanup
}
trap cleanup_all EXIT
ip netns add "$ns_out"; ip netns add "$ns_in"; netns_made=1

# boot NAME [POD]: boots the guest with the disks and POD's initramfs (pod or pod-upgrade), the
# pod runs; when the firewall forwards, traffic()
# runs on the host; then the guest is told to stop the pod.
boot() {
  local initrd=$work/initrd-${2:-pod}.gz
  # The disks at fixed PCI addresses from 00:10.0 on, in the order of the guest's /disks.
  local drives=() n=0 f
  for f in disk-node:ro pv-modules:rw pv-data:rw disk-dpdk-src:ro "${disks[@]/#/disk-}"; do
    [[ $f == *:* ]] || f=$f:ro
    drives+=(-drive "file=$work/${f%:*}.ext4,if=none,id=d$n,format=raw$([ "${f##*:}" = ro ] && echo ,readonly=on)"
             -device "virtio-blk-pci,drive=d$n,addr=0x$(printf %x $((16 + n)))")
    n=$((n + 1))
  done
  # The machine: an i440FX PC, or for vfio-pci a q35 with an emulated Intel IOMMU (interrupt
  # remapping on, which vfio needs; 48-bit addresses, so DPDK can use virtual addresses as IOVAs)
  # and modern virtio NICs whose DMA goes through it (iommu_platform).
  local machine=() nic=virtio-net-pci append="" memory=3072 inside=(addr=0x5) expander=()
  if [ "${2:-pod}" = pod-vfio ]; then
    machine=(-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,aw-bits=48)
    nic=virtio-net-pci,disable-legacy=on,iommu_platform=on
    # no_timer_check: the kernel's early check that the timer interrupt arrives through the
    # remapped IO-APIC times out when TCG runs slowly (a busy host) and panics the boot ("timer
    # doesn't work through Interrupt-remapped IO-APIC"); the emulated timer works.
    append=" intel_iommu=on no_timer_check"
  fi
  # Two NUMA nodes: CPUs 0-1, the pod's (the guest pins the pod to them, as a cpuset would), on
  # node 0, CPU 2 on node 1; the inside NIC behind a PCI expander bridge of node 1 (pxb: its _PXM
  # gives the NIC numa_node 1, at 0000:21:00.0 behind the bridge's own 0000:20:00.0). Node 1 has
  # a CPU of its own: EAL gives memory only on sockets it finds CPUs of, and the NIC's queues
  # are allocated on its node. Last on the command line: a device without bus= after the bridge
  # would go behind it.
  local cpus=2
  if [ "${2:-pod}" = pod-numa ]; then
    memory=3584 cpus=3
    machine=(-object memory-backend-ram,id=m0,size=2048M -numa node,nodeid=0,cpus=0-1,memdev=m0
             -object memory-backend-ram,id=m1,size=1536M -numa node,nodeid=1,cpus=2,memdev=m1)
    expander=(-device pxb,id=pxb1,bus_nr=32,numa_node=1,bus=pci.0,addr=0x9)
    inside=(bus=pxb1,addr=0x0)
  fi
  rm -f "$work/www/stop"
  # The TAP devices of a previous boot are in the namespaces still.
  ip -n "$ns_out" link del "$tap_out" 2>/dev/null || true; ip -n "$ns_in" link del "$tap_in" 2>/dev/null || true
  ip tuntap add dev "$tap_out" mode tap; ip tuntap add dev "$tap_in" mode tap
  timeout 1500 qemu-system-x86_64 -accel tcg -cpu max -m "$memory" -smp "$cpus" -nographic -no-reboot "${machine[@]}" \
    -kernel "$vmlinuz" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3 hugepages=1100$append" \
    -netdev "user,id=mgmt,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:busybox nc 127.0.0.1 $port" -device virtio-net-pci,netdev=mgmt,addr=0x3 \
    -netdev "tap,id=vf0,ifname=$tap_out,script=no,downscript=no" -device "$nic,netdev=vf0,addr=0x4" \
    -netdev "tap,id=vf1,ifname=$tap_in,script=no,downscript=no" \
    "${drives[@]}" "${expander[@]}" -device "$nic,netdev=vf1,${inside[*]}" </dev/null >"$work/$1.raw" 2>&1 &
  qemu_pid=$!
  out=$work/$1.txt
  local i
  for i in $(seq 100); do grep -qa KMODKIT-POD "$work/$1.raw" && break; sleep 0.5; done
  ip link set "$tap_out" netns "$ns_out"; ip link set "$tap_in" netns "$ns_in"
  # No IPv6: its router and neighbour solicitations would come at any time, and the frames each side
  # sends are counted against the firewall's counters.
  ip netns exec "$ns_out" sysctl -q -w "net.ipv6.conf.$tap_out.disable_ipv6=1"
  ip netns exec "$ns_in" sysctl -q -w "net.ipv6.conf.$tap_in.disable_ipv6=1"
  ip -n "$ns_out" addr add 192.168.77.1/24 dev "$tap_out"; ip -n "$ns_out" link set "$tap_out" up
  ip -n "$ns_in" addr add 192.168.77.2/24 dev "$tap_in"; ip -n "$ns_in" link set "$tap_in" up
  # Until the firewall forwards, the pod fails, the firewall ends, or the guest does (at most 15
  # minutes: a cold start under TCG on a loaded machine takes a few).
  local deadline=$((SECONDS + 900))
  while kill -0 "$qemu_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ] && ! grep -qa "forwarding: " "$work/$1.raw" &&
        ! grep -qaE "KMODKIT-POD (init-done [1-9]|exit firewall)" "$work/$1.raw"; do sleep 1; done
  if grep -qa "forwarding: " "$work/$1.raw"; then traffic "$1"; fi
  touch "$work/www/stop"
  wait "$qemu_pid" || true
  qemu_pid=
  clean_console "$work/$1.raw" "$out"
  [ -z "${KMODKIT_POD_CONSOLES:-}" ] || { mkdir -p "$KMODKIT_POD_CONSOLES"; cp "$out" "$KMODKIT_POD_CONSOLES/$1.txt"; }
  grep -q KMODKIT-END "$out" || fail "the guest did not finish ($1)"
}

# traffic NAME: through the firewall, as the site's rules say: web from the outside in passes, another
# port does not, the inside's ping to the outside is answered (replies pass by state), the
# outside's ping in is not. Results in $work/NAME.traffic, one "what result" per line.
# frames NS DEV: "TX RX" packets of the TAP device (what the host sent into the guest's port, and
# what the port sent out).
frames() {
  ip netns exec "$1" cat "/sys/class/net/$2/statistics/tx_packets" "/sys/class/net/$2/statistics/rx_packets" | paste -sd' '
}
traffic() {
  local t=$work/$1.traffic t0 t1
  : > "$t"
  echo "frames-before out $(frames "$ns_out" "$tap_out") in $(frames "$ns_in" "$tap_in")" >> "$t"
  mkdir -p "$work/served"; echo "through the firewall" > "$work/served/index.html"
  ip netns exec "$ns_in" python3 -m http.server 8080 --bind 192.168.77.2 --directory "$work/served" >/dev/null 2>&1 &
  ns_pids+=($!)
  ip netns exec "$ns_in" python3 -m http.server 9090 --bind 192.168.77.2 --directory "$work/served" >/dev/null 2>&1 &
  ns_pids+=($!)
  sleep 1
  t0=$(date +%s.%N)
  # The first packets under TCG take a while: ARP, then the SYN through a polling guest.
  if ip netns exec "$ns_out" curl -s --max-time 60 --retry 3 --retry-connrefused http://192.168.77.2:8080/ | grep -q "through the firewall"; then
    t1=$(date +%s.%N); echo "web-in pass $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')" >> "$t"
  else echo "web-in blocked" >> "$t"; fi
  if ip netns exec "$ns_out" curl -s --max-time 8 http://192.168.77.2:9090/ >/dev/null; then echo "other-port pass" >> "$t"
  else echo "other-port blocked" >> "$t"; fi
  if ip netns exec "$ns_in" ping -c 3 -W 5 192.168.77.1 >/dev/null; then echo "ping-out pass" >> "$t"; else echo "ping-out blocked" >> "$t"; fi
  if ip netns exec "$ns_out" ping -c 2 -W 3 192.168.77.2 >/dev/null; then echo "ping-in pass" >> "$t"; else echo "ping-in blocked" >> "$t"; fi
  for p in "${ns_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ns_pids=()
  # What is still in flight lands, then nothing more is sent until the firewall has stopped.
  sleep 2
  echo "frames-after out $(frames "$ns_out" "$tap_out") in $(frames "$ns_in" "$tap_in")" >> "$t"
  sed "s/^/pod-test: $1: traffic: /" "$t"
}
marker() { awk -v k="$1" -v a="${2:-}" '$1=="KMODKIT-POD" && $2==k && (a=="" || $3==a)' "$out"; }
# times NAME: the boot's figures. From the guest's markers (its clock): kernel boot, node ready,
# each container, all init containers, firewall start (its start to its "forwarding" line); from
# the host: the first web request through the firewall (curl's time, host clock, sent once the
# console shows "forwarding"); and the pod's start to that request's answer (node ready to
# forwarding, plus the request: the host's own set-up between them left out).
times() {
  local web
  web=$(awk '$1 == "web-in" && $2 == "pass" { print $3 }' "$work/$1.traffic" 2>/dev/null || true)
  awk -v boot="$1" -v web="${web:-}" '$1=="KMODKIT-POD" {
      if ($2=="kernel-booted") k=$3; else if ($2=="node-ready") n=$3; else if ($2=="forwarding") f=$3;
      else if ($2=="start") s[$3]=$4; else if ($2=="exit") { printf "pod-test: %s: %-18s %6.1f s (exit %s)\n", boot, $3, $5-s[$3], $4 }
      else if ($2=="init-done") i=$4 }
    END {
      printf "pod-test: %s: figures: kernel boot %.1f s, node ready %.1f s, init containers %.1f s", boot, k, n-k, i-n
      if (f != "" && s["firewall"] != "") printf ", firewall start %.1f s", f-s["firewall"]
      if (f != "" && web != "") printf ", first web request %.1f s, pod start to first web request %.1f s", web, f-n+web
      printf "\n" }' "$out"
}

# summary NAME: what each step said it did (the one-line summaries of the binaries' logs).
summary() {
  grep -aE "ready in|already on|source [a-z]+: complete|: built|up to date|loaded from|already loaded|bound to|already bound|seeded|merged|nothing to do" "$out" |
    sed "s/^/pod-test: $1: guest: /" || true
}

# check_traffic NAME [9090]: the verdicts the rules call for (port 9090 from the outside: blocked,
# or pass once the operator allowed it), and the pod's orderly stop.
check_traffic() {
  local t=$work/$1.traffic
  [ -f "$t" ] || fail "the firewall never forwarded ($1)"
  grep -q "^web-in pass" "$t" || fail "$1: web from the outside in did not pass"
  grep -qx "other-port ${2:-blocked}" "$t" || fail "$1: port 9090 from the outside in was not ${2:-blocked}"
  grep -qx "ping-out pass" "$t" || fail "$1: the inside's ping out was not answered"
  grep -qx "ping-in blocked" "$t" || fail "$1: the outside's ping in passed"
  [ "$(marker exit firewall | awk '{print $4}')" = 0 ] || fail "$1: the firewall did not exit 0 on SIGTERM"
  # The counters it printed when it stopped agree with the frames each side sent and received:
  # port 0 is the outside's TAP device, port 1 the inside's.
  local b a counted
  b=$(grep '^frames-before' "$t"); a=$(grep '^frames-after' "$t")
  counted=$(awk -v b="$b" -v a="$a" 'BEGIN { split(b, x, " "); split(a, y, " ");
      printf "port 0 rx %d tx %d, port 1 rx %d tx %d", y[3]-x[3], y[4]-x[4], y[6]-x[6], y[7]-x[7] }')
  local p0 p1
  p0=$(grep -a "^port 0 " "$out" | tail -1); p1=$(grep -a "^port 1 " "$out" | tail -1)
  [ -n "$p0" ] && [ -n "$p1" ] || fail "$1: the firewall printed no counters when it stopped"
  local fw
  fw=$(awk -v p0="$p0" -v p1="$p1" 'BEGIN { split(p0, x, " "); split(p1, y, " ");
      printf "port 0 rx %d tx %d, port 1 rx %d tx %d", x[5]+x[9], x[7], y[5]+y[9], y[7] }')
  echo "pod-test: $1: frames the host sent and received: $counted; the firewall's counters (rx with missed): $fw"
  [ "$counted" = "$fw" ] || fail "$1: the firewall's counters ($fw) disagree with the frames on the TAP devices ($counted)"
  grep -aqE "^rule line 3: [1-9]" "$out" || fail "$1: the rule that allows web in counted no flow"
  grep -aqE "^drop policy: [1-9]" "$out" || fail "$1: the policy dropped nothing (port 9090 and the ping in)"
  [ "$(marker dpdk-run-left | awk '{print $3}')" = 0 ] || fail "$1: the firewall left files in /var/run/dpdk"
  local p
  for p in startup readiness liveness; do
    [ "$(marker probe $p | awk '{print $4}')" = 0 ] || fail "$1: the firewall's $p probe failed"
  done
}

boot cold
times cold
summary cold
[ "$(marker init-done | awk '{print $3}')" = 0 ] || fail "an init container failed on the cold boot: $(marker exit | awk '$4!=0')"
marker driver 0000:00:04.0 | grep -q ' igb_uio$' || fail "0000:00:04.0 is not bound to igb_uio"
marker driver 0000:00:05.0 | grep -q ' igb_uio$' || fail "0000:00:05.0 is not bound to igb_uio"
marker module igb_uio | grep -q ' live$' || fail "igb_uio is not loaded"
check_traffic cold
echo "pod-test: cold boot passed"

boot warm
times warm
summary warm
[ "$(marker init-done | awk '{print $3}')" = 0 ] || fail "an init container failed on the warm boot"
grep -q "already on" "$out" || fail "init-modules did not reuse the tree on the warm boot"
grep -q "seeded /data: added 0, updated 0" "$out" || fail "seed-data changed the data volume on the warm boot"
grep -q "igb_uio: up to date for $kver" "$out" || fail "kmod-builder did not find igb_uio up to date on the warm boot"
marker driver 0000:00:04.0 | grep -q ' igb_uio$' || fail "0000:00:04.0 is not bound to igb_uio on the warm boot"
check_traffic warm
echo "pod-test: warm boot passed"

# The operator's edit, on the data disk between two starts of the pod: port 9090 from the outside
# in is allowed too.
mkdir "$work/mnt"
mount -o loop "$work/pv-data.ext4" "$work/mnt"
rules=$work/mnt/etc/kmodkit/firewall.rules
# (The ConfigMap's text has no final newline: an editor would add one before the new line.)
[ -z "$(tail -c 1 "$rules")" ] || echo >> "$rules"
echo "allow tcp from any to any port 9090 dir a-to-b   # the operator's" >> "$rules"
umount "$work/mnt"

boot upgrade pod-upgrade
times upgrade
summary upgrade
[ "$(marker init-done | awk '{print $3}')" = 0 ] || fail "an init container failed on the upgrade boot"
grep -q "conflicts 1" "$out" || fail "seed-data did not report the edited rules as a conflict"
# The operator's rules stay in force (9090 passes, the new default's ping in does not).
check_traffic upgrade pass
mount -o loop,ro "$work/pv-data.ext4" "$work/mnt"
rules_kept=$(grep -c "the operator's" "$work/mnt/etc/kmodkit/firewall.rules" || true)
new_default=$(grep -c "allow icmp type 8" "$work/mnt/etc/kmodkit/firewall.rules.kmodkit-new" 2>/dev/null || true)
umount "$work/mnt"
[ "$rules_kept" = 1 ] || fail "the operator's edit of the rules was not kept"
[ "$new_default" = 1 ] || fail "the new default rules were not written beside the edited ones (firewall.rules.kmodkit-new)"
echo "pod-test: upgrade boot passed"

# The same node with an IOMMU, the pod as deploy/ declares it: vfio-pci, an unprivileged firewall,
# and rte_kni built from the node's DPDK tree beside igb_uio (cached from the boots before).
boot vfio pod-vfio
times vfio
summary vfio
[ "$(marker init-done | awk '{print $3}')" = 0 ] || fail "an init container failed on the vfio boot: $(marker exit | awk '$4!=0')"
for a in 0000:00:04.0:3 0000:00:05.0:4; do
  group=$(marker iommu-group "${a%:*}" | awk '{print $4}')
  [ "$group" = "${a##*:}" ] ||
    fail "the guest's IOMMU put ${a%:*} in group ${group:-none}, not ${a##*:} as the simulated device plugin hands the pod"
  marker driver "${a%:*}" | grep -q ' vfio-pci$' || fail "${a%:*} is not bound to vfio-pci"
done
for m in igb_uio rte_kni vfio_pci vfio_iommu_type1; do
  marker module "$m" | grep -q ' live$' || fail "$m is not loaded on the vfio boot"
done
grep -q "rte_kni: built" "$out" || fail "kmod-builder did not build rte_kni"
grep -q "igb_uio: up to date for $kver" "$out" || fail "kmod-builder did not find igb_uio up to date on the vfio boot"
grep -q "vfio-pci: loaded (in-tree)" "$out" || fail "kmod-builder bind did not load vfio-pci"
# The firewall holds IPC_LOCK (bit 14) and nothing else.
caps=$(marker firewall-caps | awk '{print $3}')
[ "$caps" = 0000000000004000 ] || fail "the firewall's effective capabilities are ${caps:-unknown}, not IPC_LOCK alone"
check_traffic vfio pass
echo "pod-test: vfio boot passed"

# The upgraded pod on a node whose inside NIC is on another NUMA node than the pod's CPUs:
# preflight warns, naming both nodes, and the pod starts (a warning does not stop it).
boot numa pod-numa
times numa
summary numa
[ "$(marker init-done | awk '{print $3}')" = 0 ] || fail "an init container failed on the NUMA boot: $(marker exit | awk '$4!=0')"
marker driver 0000:21:00.0 | grep -q ' igb_uio$' || fail "0000:21:00.0 (node 1) is not bound to igb_uio"
grep -aq '"check":"numa","verdict":"warn","evidence":"VF 0000:21:00.0 is on NUMA node 1, the CPUs 0-1 on node 0"' "$out" ||
  fail "preflight did not warn that the inside NIC is on NUMA node 1 and the CPUs on node 0: $(grep -a '"checks"' "$out" | head -1)"
check_traffic numa pass
echo "pod-test: NUMA boot passed"
