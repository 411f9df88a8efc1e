#!/usr/bin/env bash
# Smoke-runs kmodkit's images (built by images/build.sh) with `buildah run`, each doing a real job:
#   smoke.sh TAG FIXTURES_DIR CASE
# CASE:
#   contents   every image: --help, OCI labels (source, revision, version), its user (seed-data
#              not root), no build toolchain or -dev packages (kmod-builder: gcc and make, for kbuild)
#   pipeline   init-modules lays the fixture apt repository's kernel headers (served over HTTP on
#              127.0.0.1) onto a volume; kmod-builder builds, signs and installs igb_uio against
#              them; kmod-builder status and load --dry-run read the result
#   seed-data  seed-data seeds a tree onto a data volume as its non-root user, then a restart
#              does nothing
#   firewall   the firewall forwards a capture of 1,000 flows between two net_pcap ports
#   prebuilt   images/kmod-builder-prebuilt.Containerfile: init-modules lays the fixture's header
#              packages (archives in the build context) in one stage, kmod-builder builds igb_uio
#              signed with a key given as a build secret and exports it; the modules image has no
#              compiler and no key, and on a fresh volume of that kernel installs igb_uio with
#              no key, no compiler and no build, signed by the key; a volume of no matching input
#              gets exit 66 naming why
#   pkcs11     the kmod-builder image's OpenSSL finds the pkcs11 engine and p11-kit: a token URI
#              that names no token fails on the key, not on the engine
#   portable   images/kmod-builder-driver-toolkit.Containerfile built on bases that are not
#              Debian 12, as OpenShift's driver toolkit (RHEL 9) is not: busybox-static alone on
#              scratch (no library at all), then Debian 11 with gcc 10 (an older glibc); the
#              kmod-builder bundle in each reads the volume the kmod-builder image built igb_uio
#              on (status, load --dry-run), and on Debian 11 runs that base's own gcc
# Images are localhost/kmodkit/<image>:TAG. Removes the containers and the images it made (the
# portable case's, but the Debian 11 toolchain, kept as the bases are); kills only the HTTP
# server it started. Exit 0 pass, 1 fail.
set -euo pipefail
tag=${1:?usage: smoke.sh TAG FIXTURES_DIR CASE}
fixtures=$(realpath "${2:?}")
case_=${3:?}
repo_root=$(cd "$(dirname "$0")/../.." && pwd)
images=(init-modules seed-data kmod-builder firewall)
work=$(mktemp -d /var/tmp/kmodkit-smoke.XXXXXX)
containers=()
made_images=()
server_pid=
cleanup() {
  for c in "${containers[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
  for i in "${made_images[@]}"; do buildah rmi "$i" >/dev/null 2>&1 || true; done
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }

# A working container of IMAGE (at TAG, default the one given), named in $c.
container() {
  c=$(buildah from --quiet "localhost/kmodkit/$1:${2:-$tag}") || fail "no image localhost/kmodkit/$1:${2:-$tag} (images/build.sh)"
  containers+=("$c")
}
# run [buildah run options] CONTAINER -- COMMAND...: as the image's user, on the host's network.
run() { buildah run --isolation chroot "$@"; }

case "$case_" in
contents)
  revision=$(git -C "$repo_root" rev-parse HEAD)
  version=$(sed -n 's/^project(kmodkit VERSION \([0-9.]*\).*/\1/p' "$repo_root/CMakeLists.txt")
  for i in "${images[@]}"; do
    container "$i"
    run "$c" -- "/usr/bin/$i" --help >"$work/help" || fail "$i --help exits $?"
    grep -q '^Usage: ' "$work/help" || fail "$i --help prints no usage"
    buildah inspect --type image "localhost/kmodkit/$i:$tag" > "$work/inspect.json"
    python3 - "$i" "$work/inspect.json" "$revision" "$version" <<'PY' || exit 1
import json, sys
image, revision, version = sys.argv[1], sys.argv[3], sys.argv[4]
labels = json.load(open(sys.argv[2]))["OCIv1"]["config"].get("Labels") or {}
want = {"org.opencontainers.image.revision": revision, "org.opencontainers.image.version": version}
for k, v in want.items():
    got = labels.get(k, "")
    # A build from a tree with uncommitted changes says so: <revision>-dirty.
    if got not in (v, v + "-dirty"):
        sys.exit(f"smoke: FAIL: {image}: label {k} is {got!r}, expected {v!r}")
if not labels.get("org.opencontainers.image.source"):
    sys.exit(f"smoke: FAIL: {image}: no org.opencontainers.image.source label")
PY
    uid=$(run "$c" -- id -u)
    case "$i" in
      seed-data) [ "$uid" != 0 ] || fail "$i runs as root" ;;
      *)         [ "$uid" = 0 ] || fail "$i runs as $uid: it needs root (its Containerfile says why)" ;;
    esac
    tools=$(run "$c" -- sh -c 'for t in gcc cc g++ c++ make cmake ninja ld; do command -v $t >/dev/null && echo $t; done; true' | tr '\n' ' ')
    case "$i" in
      kmod-builder) [ "$tools" = "gcc cc make ld " ] || fail "$i has build tools '$tools', expected gcc, cc, make and ld (kbuild's) only" ;;
      *)            [ -z "$tools" ] || fail "$i has build tools: $tools" ;;
    esac
    # gcc's own support library (crtbegin.o, libgcc.a) is a -dev package kbuild needs.
    dev=$(run "$c" -- dpkg-query -W -f '${Package}\n' | grep -- '-dev$' |
          { if [ "$i" = kmod-builder ]; then grep -v '^libgcc-[0-9]*-dev$'; else cat; fi; } | tr '\n' ' ' || true)
    [ -z "$dev" ] || fail "$i has development packages: $dev"
    run "$c" -- test ! -e /src || fail "$i carries the source tree /src"
    echo "smoke: $i: --help, labels, user $uid, runtime contents ok ($(buildah images --format '{{.Size}}' "localhost/kmodkit/$i:$tag" | head -1))"
  done
  ;;
pipeline)
  repo=$fixtures/apt-repo
  kver=$(cat "$repo/kernel-release")
  python3 "$repo_root/tests/support/http_server.py" "$repo" --port-file "$work/port" 2>"$work/http.log" &
  server_pid=$!
  for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
  [ -s "$work/port" ] || fail "the HTTP server did not start: $(cat "$work/http.log")"
  port=$(cat "$work/port")
  mkdir "$work/vol"
  container init-modules
  run -v "$work/vol:/modules" "$c" -- init-modules --kernel-release "$kver" --host-root /nonexistent \
    --sources volume,apt --repo "deb [trusted=yes] http://127.0.0.1:$port stable main" --log-format human \
    2>&1 | tee "$work/init.log" | tail -3
  [ "${PIPESTATUS[0]}" = 0 ] || fail "init-modules in its image failed: $(tail -1 "$work/init.log")"
  # The volume's paths are the host's (docs/ARCHITECTURE.md, "The modules volume").
  [ -f "$work/vol/usr/lib/modules/$kver/build/Makefile" ] || fail "init-modules left no kernel build tree for $kver on the volume"
  container kmod-builder
  run -v "$work/vol:/modules" "$c" -- kmod-builder --kernel-release "$kver" --recipe igb_uio --work-dir /tmp \
    --log-format human 2>&1 | tee "$work/build.log" | tail -3
  [ "${PIPESTATUS[0]}" = 0 ] || fail "kmod-builder in its image failed: $(tail -1 "$work/build.log")"
  ko=$(find "$work/vol" -name igb_uio.ko -path "*/$kver/*" -print -quit)
  [ -n "$ko" ] || fail "no igb_uio.ko for $kver on the volume"
  tail -c 28 "$ko" | grep -q '~Module signature appended~' || fail "$ko is not signed"
  run -v "$work/vol:/modules" "$c" -- kmod-builder status --kernel-release "$kver" > "$work/status"
  grep -q igb_uio "$work/status" || fail "kmod-builder status does not list igb_uio: $(cat "$work/status")"
  run -v "$work/vol:/modules:ro" "$c" -- kmod-builder load --kernel-release "$kver" --dry-run \
    --log-format human > "$work/load" 2>&1 || fail "kmod-builder load --dry-run failed: $(tail -1 "$work/load")"
  grep -q igb_uio "$work/load" || fail "load --dry-run does not name igb_uio: $(cat "$work/load")"
  echo "smoke: init-modules laid $kver from the local repository; kmod-builder built, signed and installed igb_uio"
  ;;
seed-data)
  mkdir -p "$work/defaults/conf.d" "$work/data"
  printf 'policy deny\n' > "$work/defaults/firewall.rules"
  printf 'a = 1\n' > "$work/defaults/conf.d/a.conf"
  # The volume as the pod's fsGroup leaves it: writable by the image's (non-root) user's group.
  user=$(buildah inspect --type image "localhost/kmodkit/seed-data:$tag" |
         python3 -c 'import json, sys; print(json.load(sys.stdin)["OCIv1"]["config"]["User"])')
  chown "$user" "$work/data"
  container seed-data
  for round in first restart; do
    run -v "$work/defaults:/defaults:ro" -v "$work/data:/data" "$c" -- \
      seed-data --tree /defaults=etc/kmodkit --data /data --image-version smoke --log-format human \
      > "$work/seed-$round.log" 2>&1 || fail "seed-data ($round start) in its image failed: $(tail -1 "$work/seed-$round.log")"
  done
  cmp "$work/defaults/conf.d/a.conf" "$work/data/etc/kmodkit/conf.d/a.conf" || fail "the seeded file differs"
  [ "$(stat -c %u:%g "$work/data/etc/kmodkit/firewall.rules")" = "$user" ] || fail "the seeded file is not owned by $user"
  [ -f "$work/data/.kmodkit/seed.json" ] || fail "no seed.json"
  grep -qi 'nothing to do\|unchanged' "$work/seed-restart.log" || fail "the restart did work: $(cat "$work/seed-restart.log")"
  echo "smoke: seed-data seeded as $user, and the restart did nothing"
  ;;
firewall)
  mkdir -p "$work/io"
  python3 "$repo_root/bench/firewall-inputs.py" "$work/io" 1000 >/dev/null
  cp "$repo_root/firewall/examples/demo.rules" "$work/io/"
  container firewall
  # While it forwards, the image's dpdk-telemetry.py asks it for its flows (from the same
  # container: the telemetry socket is in its /var/run/dpdk).
  run -v "$work/io:/io" "$c" -- sh -c 'firewall --rules /io/demo.rules \
    --vdev "net_pcap0,rx_pcap=/io/flows.pcap,tx_pcap=/io/out-a.pcap" --vdev "net_pcap1,tx_pcap=/io/out-b.pcap" \
    --no-huge-mb 512 --lcores 0 --duration 4 --file-prefix smoke --log-format human & fw=$!
    n=0; until [ $n -ge 30 ]; do
      echo /kmodkit/flows | dpdk-telemetry.py -f smoke > /io/telemetry.json 2>&1
      grep -q "\"entries\": [1-9]" /io/telemetry.json && break
      sleep 0.1; n=$((n + 1)); done
    wait $fw' > "$work/fw.log" 2>&1 ||
    fail "the firewall in its image failed: $(tail -3 "$work/fw.log")"
  grep -q '"/kmodkit/flows": {"tcp": {"entries": [1-9]' "$work/io/telemetry.json" ||
    fail "dpdk-telemetry.py in the image got no flows from the firewall: $(cat "$work/io/telemetry.json")"
  # The demo's rules let the flows' TCP port 443 and UDP port 53 traffic through from A to B.
  packets=$(python3 - "$work/io/out-b.pcap" <<'PY'
import struct, sys
data, n, at = open(sys.argv[1], "rb").read(), 0, 24
while at + 16 <= len(data):
    at += 16 + struct.unpack_from("<I", data, at + 8)[0]
    n += 1
print(n)
PY
)
  [ "$packets" -gt 0 ] || fail "nothing came out of port B: $(tail -5 "$work/fw.log")"
  echo "smoke: the firewall forwarded $packets packets from port A to port B"
  ;;
prebuilt)
  repo=$fixtures/apt-repo
  kver=$(cat "$repo/kernel-release")
  mkdir -p "$work/context"
  cp "$repo"/pool/main/*.deb "$work/context/"
  (cd "$work" && openssl req -new -nodes -utf8 -sha256 -days 2 -batch -x509 -newkey rsa:2048 \
    -subj '/CN=kmodkit prebuilt test key' -keyout key.pem -out context/cert.pem 2>/dev/null)
  init_args="--sources archive"
  for deb in "$work"/context/*.deb; do
    init_args="$init_args --archive /context/$(basename "$deb") --sha256 $(sha256sum "$deb" | cut -d' ' -f1)"
  done
  img=localhost/kmodkit/kmod-builder-prebuilt:$tag
  buildah bud --isolation chroot --layers --force-rm --quiet --secret "id=signing_key,src=$work/key.pem" \
    --build-arg "INIT_MODULES=localhost/kmodkit/init-modules:$tag" --build-arg "KMOD_BUILDER=localhost/kmodkit/kmod-builder:$tag" \
    --build-arg "KERNEL_RELEASE=$kver" --build-arg SIGNING_CERT=cert.pem --build-arg "INIT_ARGS=$init_args" \
    -f "$repo_root/images/kmod-builder-prebuilt.Containerfile" -t "$img" "$work/context" > "$work/bud.log" 2>&1 ||
    fail "images/kmod-builder-prebuilt.Containerfile does not build: $(tail -5 "$work/bud.log")"
  made_images+=("$img")
  container kmod-builder-prebuilt
  tools=$(run "$c" -- sh -c 'for t in gcc cc make ld; do command -v $t >/dev/null && echo $t; done; true' | tr '\n' ' ')
  [ -z "$tools" ] || fail "the modules image has build tools: $tools"
  # The key was a build secret: no file of the image holds it.
  needle=$(sed -n 2p "$work/key.pem")
  run "$c" -- sh -c "grep -rlF '$needle' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null; true" > "$work/leak"
  [ ! -s "$work/leak" ] || fail "the signing key is in the modules image: $(cat "$work/leak")"
  cp -a "$fixtures/kernel-volume" "$work/vol"
  run -v "$work/vol:/modules" "$c" -- kmod-builder --kernel-release "$kver" --recipe igb_uio --log-format human \
    > "$work/start.log" 2>&1 || fail "the modules image did not install igb_uio: $(tail -3 "$work/start.log")"
  grep -q '0 built, 0 from the cache, 1 prebuilt' "$work/start.log" || fail "igb_uio was not installed from the prebuilt entry: $(cat "$work/start.log")"
  ko=$work/vol/usr/lib/modules/$kver/extra/igb_uio/igb_uio.ko
  [ "$(modinfo -F signer "$ko")" = "kmodkit prebuilt test key" ] || fail "$ko is not signed by the build's key"
  run -v "$work/vol:/modules" "$c" -- kmod-builder --kernel-release "$kver" --recipe igb_uio --log-format human > "$work/warm.log" 2>&1 ||
    fail "the second start failed: $(tail -1 "$work/warm.log")"
  grep -q 'up to date' "$work/warm.log" || fail "the second start was not up to date: $(cat "$work/warm.log")"
  # Other headers (.config changed): nothing fits, and there is no compiler to build with.
  cp -a "$fixtures/kernel-volume" "$work/vol-other"
  config=$(readlink -f "$work/vol-other/usr/lib/modules/$kver/build")/.config
  rm -f "$config" && cp "$(readlink -f "$work/vol/usr/lib/modules/$kver/build")/.config" "$config" && echo "# changed" >> "$config"
  rc=0
  run -v "$work/vol-other:/modules" "$c" -- kmod-builder --kernel-release "$kver" --recipe igb_uio --log-format human \
    > "$work/other.log" 2>&1 || rc=$?
  [ "$rc" = 66 ] || fail "a kernel no entry fits exits $rc, expected 66: $(tail -1 "$work/other.log")"
  grep -q 'differs in config' "$work/other.log" || fail "the refusal does not say the config differs: $(tail -1 "$work/other.log")"
  echo "smoke: the modules image installed igb_uio prebuilt and signed, with no compiler and no key in it; other headers get 66"
  ;;
pkcs11)
  mkdir -p "$work/keys"
  (cd "$work/keys" && openssl req -new -nodes -batch -x509 -newkey rsa:2048 -subj '/CN=t' -keyout key.pem -out cert.pem 2>/dev/null)
  echo '{"format": "kmodkit-unsigned/1", "modules": []}' > "$work/keys/unsigned.json"
  container kmod-builder
  rc=0
  run -v "$work/keys:/keys:ro" "$c" -- kmod-builder sign-detached --unsigned /keys --signing-key 'pkcs11:token=none;object=none' \
    --signing-cert /keys/cert.pem --out /tmp/s.json --log-format human > "$work/p11.log" 2>&1 || rc=$?
  [ "$rc" = 78 ] || fail "a token key that does not exist exits $rc, expected 78: $(tail -1 "$work/p11.log")"
  grep -q 'no such private key in a token' "$work/p11.log" ||
    fail "the image's OpenSSL did not get as far as the token: $(tail -1 "$work/p11.log")"
  echo "smoke: the kmod-builder image's OpenSSL loads the pkcs11 engine and p11-kit"
  ;;
portable)
  vol=$fixtures/kernel-volume
  kver=$(cat "$fixtures/apt-repo/kernel-release")
  cp -a "$vol" "$work/vol"
  container kmod-builder
  run -v "$work/vol:/modules" "$c" -- kmod-builder --kernel-release "$kver" --recipe igb_uio --work-dir /tmp \
    --log-format human > "$work/build.log" 2>&1 || fail "kmod-builder in its image failed: $(tail -1 "$work/build.log")"
  mkdir "$work/context"
  # dtk_image NAME BASE: the driver-toolkit image built on BASE (as the BuildConfig builds it on
  # the driver toolkit), in $dtk; fails unless the bundle runs there.
  dtk_image() {
    dtk=localhost/kmodkit/kmod-builder-driver-toolkit:$tag-$1
    # --layers --force-rm: without them buildah 1.28 keeps the kmod-builder stage's container.
    buildah bud --isolation chroot --layers --force-rm --quiet --build-arg "DTK=$2" --build-arg "KMOD_BUILDER=localhost/kmodkit/kmod-builder:$tag" \
      -f "$repo_root/images/kmod-builder-driver-toolkit.Containerfile" -t "$dtk" "$work/context" > "$work/dtk.log" 2>&1 ||
      fail "images/kmod-builder-driver-toolkit.Containerfile does not build on $2: $(tail -3 "$work/dtk.log")"
    made_images+=("$dtk")
    buildah inspect --type image "$dtk" > "$work/inspect.json"
    python3 - "$work/inspect.json" <<'PY' || exit 1
import json, sys
config = json.load(open(sys.argv[1]))["OCIv1"]["config"]
if config.get("Entrypoint") != ["/opt/kmodkit/bin/kmod-builder"]:
    sys.exit(f"smoke: FAIL: the entrypoint is {config.get('Entrypoint')}, not the bundle's kmod-builder")
# The bundle finds its libraries by its own RPATH: the environment the children inherit stays clean.
if any(e.startswith("LD_") for e in config.get("Env") or []):
    sys.exit(f"smoke: FAIL: the image sets {[e for e in config['Env'] if e.startswith('LD_')]}")
PY
    container "kmod-builder-driver-toolkit" "$tag-$1"
    run "$c" -- /opt/kmodkit/bin/kmod-builder --help > "$work/help" 2>&1 || fail "kmod-builder --help on $1 exits $?: $(tail -1 "$work/help")"
    grep -q '^Usage: ' "$work/help" || fail "kmod-builder --help on $1 prints no usage"
    run -v "$work/vol:/modules" "$c" -- /opt/kmodkit/bin/kmod-builder status --kernel-release "$kver" > "$work/status" 2>&1 ||
      fail "kmod-builder status on $1 failed: $(tail -1 "$work/status")"
    grep -q igb_uio "$work/status" || fail "kmod-builder status on $1 does not list igb_uio: $(cat "$work/status")"
    run -v "$work/vol:/modules:ro" "$c" -- /opt/kmodkit/bin/kmod-builder load --kernel-release "$kver" --dry-run \
      --log-format human > "$work/load" 2>&1 || fail "kmod-builder load --dry-run on $1 failed: $(tail -1 "$work/load")"
    grep -q igb_uio "$work/load" || fail "load --dry-run on $1 does not name igb_uio: $(cat "$work/load")"
  }

  # 1. No library at all: a static busybox on scratch.
  readelf -l /bin/busybox | grep -q 'Requesting program interpreter' && fail "/bin/busybox is not static (busybox-static)"
  b=$(buildah from scratch); containers+=("$b")
  buildah copy "$b" /bin/busybox /bin/busybox >/dev/null
  busybox=localhost/kmodkit/busybox-scratch:$tag
  buildah commit --quiet "$b" "$busybox" >/dev/null; made_images+=("$busybox")
  dtk_image busybox "$busybox"
  run "$c" -- /bin/busybox sh -c 'for f in /lib64 /lib /usr/lib /usr/lib64; do [ ! -e $f ] || echo $f; done' > "$work/libs"
  [ ! -s "$work/libs" ] || fail "the busybox base has library folders: $(cat "$work/libs")"
  echo "smoke: the bundle ran --help, status and load --dry-run on busybox-static alone"

  # 2. An older glibc (Debian 11: 2.31; RHEL 9 has 2.34, the bundle's is 2.36), with that
  # release's gcc 10, make and kmod, as the driver toolkit brings its own. The base is built
  # once and kept, as the Debian 12 one is; the toolchain layer is cached.
  KMODKIT_BASE_SUITE=bullseye "$repo_root/images/build-base.sh" >/dev/null
  printf '%s\n' 'FROM localhost/kmodkit-base:bullseye' \
    'RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc make libelf1 kmod' \
    > "$work/context/toolchain.Containerfile"
  toolchain=localhost/kmodkit/bullseye-toolchain:$tag
  buildah bud --isolation chroot --layers --force-rm --quiet -f "$work/context/toolchain.Containerfile" -t "$toolchain" "$work/context" \
    > "$work/toolchain.log" 2>&1 || fail "no Debian 11 toolchain image: $(tail -3 "$work/toolchain.log")"
  dtk_image bullseye "$toolchain"
  # kmod-builder runs the base's gcc (gcc 10 with glibc 2.31, not the bundle's libraries) and
  # refuses it: the fixture kernel was built with gcc 12. Past that check, the 6.1 headers could
  # not be used there anyway: kbuild's fixdep and modpost are Debian 12 programs (glibc 2.34+),
  # and the kernel's flags (-mharden-sls, -ftrivial-auto-var-init) are gcc 12's.
  rc=0
  run -v "$work/vol:/modules" "$c" -- /opt/kmodkit/bin/kmod-builder --kernel-release "$kver" --recipe igb_uio \
    --work-dir /tmp --log-format human > "$work/build10.log" 2>&1 || rc=$?
  [ "$rc" = 78 ] || fail "kmod-builder build with gcc 10 exits $rc, expected 78 (compiler mismatch): $(tail -1 "$work/build10.log")"
  grep -q 'gcc 10, not gcc 12' "$work/build10.log" || fail "the refusal does not name gcc 10: $(tail -1 "$work/build10.log")"
  run "$c" -- ldd --version > "$work/glibc"
  echo "smoke: the bundle ran on Debian 11 (glibc $(awk 'NR == 1 {print $NF}' "$work/glibc")) and ran its gcc 10"
  ;;
*) echo "smoke: unknown case '$case_' (contents, pipeline, seed-data, firewall, prebuilt, pkcs11, portable)" >&2; exit 64 ;;
esac
