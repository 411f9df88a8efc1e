#!/usr/bin/env bash
# Installs the Debian packages kmodkit needs to build, test and run its demo.
# Idempotent: packages already present are not fetched again. Needs root (or sudo).
#   ci/install-deps.sh            what the build, the tests and the demo need
#   ci/install-deps.sh --bench    that, and the baselines of the benchmarks (bench/firewall.sh:
#                                 dpdk-testpmd from dpdk-dev, l3fwd's sources from dpdk-doc;
#                                 bench/init-rpm.sh: dnf with its download plugin;
#                                 bench/init-oci.sh: umoci; bench/firewall-peers.sh: Open
#                                 vSwitch built with DPDK, run privately, never as a service)
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates
  # libraries the core and the binaries wrap
  libkmod-dev libarchive-dev libcurl4-openssl-dev libssl-dev libspdlog-dev libfmt-dev
  libcli11-dev nlohmann-json3-dev catch2 libexpat1-dev libcpp-httplib-dev
  # tools the tests drive for real: apt repositories, archives, an HTTP server, kernel builds
  dpkg-dev apt-utils xz-utils zstd rpm cpio python3 kmod bc flex bison libelf-dev
  gnupg gpgv time openssl curl strace
  # the dnf repositories of the rpm source's tests (tests/support/make-rpm-repo.sh): rpmbuild and
  # rpmsign come with rpm, repodata from createrepo_c
  createrepo-c
  # the registry of the oci source's tests (tests/support/make-oci-registry.py): a real registry,
  # skopeo to push, and the token server's JWTs (tests/support/token_server.py)
  docker-registry skopeo python3-jwt python3-cryptography
  # module sources kmod-builder's built-in recipes and tests build: igb_uio (dpdk-kmods, under
  # /usr/src) and rte_build_config.h for rte_kni (libdpdk-dev)
  dpdk-kmods-dkms libdpdk-dev
  # the load test boots Debian's kernel with an initramfs of busybox and kmodkit's binaries; the
  # pod test also makes ext4 disks (e2fsprogs) and sends ping and curl through the guest
  qemu-system-x86 busybox-static e2fsprogs iputils-ping
  # the firewall's veth test: namespaces, veth pairs, TX checksum offload off
  iproute2 ethtool
  # the deploy validation (tests/deploy/validate.py): YAML and JSON Schema; it renders with
  # kubectl kustomize, which Debian does not package (the tests skip without kubectl)
  python3-yaml python3-jsonschema
  # the images (images/build.sh, tests/images/smoke.sh): buildah with chroot isolation, and a
  # Debian base made with debootstrap (base images are not pulled)
  buildah debootstrap
  # libFuzzer for the parsers' fuzz targets (ci/fuzz.sh): clang 19, whose C++23 compiles
  # libstdc++ 12's std::expected (clang 14's does not), and its runtime (libFuzzer, ASan, UBSan)
  clang-19 libclang-rt-19-dev
  # signing with a key in a PKCS#11 token: OpenSSL's pkcs11 engine, and SoftHSM2 as the token in
  # the tests
  libengine-pkcs11-openssl softhsm2
  # a volume whose reads fail with EIO (tests/support/eio_fs.cpp, a FUSE passthrough) in the
  # volume-fault campaign
  libfuse3-dev fuse3
  # promtool (from Debian's prometheus) lints the firewall's metrics in the tests;
  # dpdk-telemetry.py (dpdk-dev) queries its telemetry commands
  prometheus dpdk-dev
)
if [ "${1:-}" = "--bench" ]; then
  packages+=(dpdk-doc dnf dnf-plugins-core umoci openvswitch-switch-dpdk)
elif [ -n "${1:-}" ]; then
  echo "install-deps: unknown option '$1' (only --bench)" >&2
  exit 64
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
