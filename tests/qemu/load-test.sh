#!/usr/bin/env bash
# The load and bind steps on a real kernel: Debian's 6.1 kernel (linux-image-amd64's current
# ABI, the one the fixture repository has headers for) boots under qemu-system-x86_64 -accel tcg
# with an initramfs holding busybox, kmod-builder and a modules volume made by the real
# init-modules and kmod-builder; the guest runs the steps as a pod would and prints what it saw;
# this script asserts on that output.
#   load-test.sh KMOD_BUILDER INIT_MODULES FIXTURES_DIR
# Boot 1: load (igb_uio, the test module and rte_kni), bind an e1000 NIC to igb_uio, rerun
# (nothing changes), unload refused while bound, unbind (back on e1000), unload; the test module
# signed in a PKCS#11 token (SoftHSM2), signed detached (export-unsigned, sign-detached,
# build --signatures) and signed with an ECDSA key in the token each load; one whose signature
# was made for other bytes is refused before insertion (65). Boot 2 (module.sig_enforce=1): a
# module signed by the test key, the same signed in the token and detached, and an unsigned one
# are refused with exit 77, the hint naming the certificate's DER file on the volume; igb_uio
# refused after its dependency uio was loaded: uio is unloaded again, unless it was loaded
# before the run.
# rte_kni is built from the DPDK tree the fixture.dpdk_src fixture fetched ($FIXTURES_DIR/dpdk-src)
# or from KMODKIT_DPDK_SRC.
set -euo pipefail
kmod_builder=$(realpath "${1:?usage: load-test.sh KMOD_BUILDER INIT_MODULES FIXTURES_DIR}")
init_modules=$(realpath "${2:?}")
fixtures=$(realpath "${3:?}")
here=$(cd "$(dirname "$0")/../.." && pwd)
cache=${KMODKIT_TEST_CACHE:-/var/cache/kmodkit-tests}
for tool in qemu-system-x86_64 busybox cpio softhsm2-util; do
  command -v "$tool" >/dev/null || { echo "load-test: $tool is missing (ci/install-deps.sh installs it)"; exit 1; }
done
. "$here/tests/qemu/lib.sh"
kver=$(cat "$fixtures/apt-repo/kernel-release")
image_deb=$(qemu_kernel_deb "$fixtures" "$cache")
work=$(mktemp -d /var/tmp/kmodkit-qemu.XXXXXX)
trap 'rm -rf "$work"' EXIT
out=
fail() {
  if [ -n "$out" ] && [ -f "$out" ]; then echo "--- guest output ($out)"; cat "$out"; echo "---"; fi
  echo "load-test: FAILED: $*"
  exit 1
}

# The volume: headers and the kernel's modules tree (init-modules, archive source), then igb_uio
# and the test module built, signed with a test key and installed (kmod-builder).
args=()
for deb in "$fixtures"/apt-repo/pool/main/*.deb "$image_deb"; do
  args+=(--archive "$deb" --sha256 "$(sha256sum "$deb" | cut -d' ' -f1)")
done
mkdir -p "$work/vol"
KMODKIT_LOG_FORMAT=human "$init_modules" --kernel-release "$kver" --volume "$work/vol" --host-root "$work/none" \
  --sources archive "${args[@]}" >"$work/init.log" 2>&1 || { cat "$work/init.log"; fail "init-modules"; }
(cd "$work" && openssl req -new -nodes -utf8 -sha256 -days 2 -batch -x509 -newkey rsa:2048 \
  -subj '/CN=kmodkit qemu test key' -keyout key.pem -out cert.pem 2>/dev/null)
export KMODKIT_DPDK_SRC=${KMODKIT_DPDK_SRC:-$(cat "$fixtures/dpdk-src" 2>/dev/null || true)}
[ -d "$KMODKIT_DPDK_SRC/kernel/linux/kni" ] ||
  fail "no DPDK 22.11 tree for rte_kni: run the fixture.dpdk_src fixture (ctest -R fixture) or set KMODKIT_DPDK_SRC"
recipes="igb_uio,$here/tests/support/kmod-hello,rte_kni"
build() {  # build VOLUME RECIPES
  KMODKIT_LOG_FORMAT=human "$kmod_builder" --kernel-release "$kver" --volume "$1" --work-dir "$work" \
    --recipe "$2" --signing-key "$work/key.pem" --signing-cert "$work/cert.pem" \
    >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "kmod-builder build"; }
}
cp -al "$work/vol" "$work/vol-clean"  # headers only, for the other signing paths below
build "$work/vol" "$recipes"
# Another build of the test module (version 2.0), on a second volume, for --replace.
cp -al "$work/vol" "$work/vol2"
cp -r "$here/tests/support/kmod-hello" "$work/hello2"
sed -i 's/MODULE_VERSION("1.0")/MODULE_VERSION("2.0")/' "$work/hello2/kmodkit_hello.c"
build "$work/vol2" "$work/hello2"

# The test module signed three other ways, each on a volume of its own: by the same key in a
# SoftHSM2 token; detached (built unsigned, exported, signed elsewhere, the signatures given to
# the build); by an ECDSA P-256 key in the token.
export SOFTHSM2_CONF=$work/softhsm2.conf
mkdir -p "$work/tokens"
echo "directories.tokendir = $work/tokens" > "$SOFTHSM2_CONF"
echo "1234" > "$work/pin"
(cd "$work" && openssl req -new -nodes -utf8 -sha256 -days 2 -batch -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -subj '/CN=kmodkit qemu ecdsa key' -keyout ec-key.pem -out ec-cert.pem 2>/dev/null)
token() {  # token LABEL KEY: the key imported into a new token as "modsign"
  softhsm2-util --init-token --free --label "$1" --so-pin 5678 --pin 1234 >/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$2" -out "$work/$1.p8"
  softhsm2-util --import "$work/$1.p8" --token "$1" --label modsign --id 01 --pin 1234 >/dev/null
}
token kmodkit-rsa "$work/key.pem"
token kmodkit-ec "$work/ec-key.pem"
hello=$here/tests/support/kmod-hello
kb() { KMODKIT_LOG_FORMAT=human "$kmod_builder" "$@" >"$work/kb.log" 2>&1 || { cat "$work/kb.log"; fail "kmod-builder $1"; }; }
for v in token detached ecdsa; do cp -al "$work/vol-clean" "$work/vol-$v"; done
kb --kernel-release "$kver" --volume "$work/vol-token" --work-dir "$work" --recipe "$hello" \
  --signing-key "pkcs11:token=kmodkit-rsa;object=modsign;type=private" --signing-cert "$work/cert.pem" --signing-pin-file "$work/pin"
kb --kernel-release "$kver" --volume "$work/vol-detached" --work-dir "$work" --recipe "$hello" --no-sign
kb export-unsigned --volume "$work/vol-detached" --out "$work/unsigned"
kb sign-detached --unsigned "$work/unsigned" --signing-key "$work/key.pem" --signing-cert "$work/cert.pem" --out "$work/signatures.json"
kb --kernel-release "$kver" --volume "$work/vol-detached" --work-dir "$work" --recipe "$hello" --signatures "$work/signatures.json"
kb --kernel-release "$kver" --volume "$work/vol-ecdsa" --work-dir "$work" --recipe "$hello" \
  --signing-key "pkcs11:token=kmodkit-ec;object=modsign;type=private" --signing-cert "$work/ec-cert.pem" --signing-pin-file "$work/pin"
# Signed in the token and signed detached, the module is the PEM-signed one byte for byte: the
# same signer, key id and signature for modinfo, and for the kernel.
hello_ko=usr/lib/modules/$kver/extra/kmodkit_hello/kmodkit_hello.ko
for v in token detached; do
  cmp "$work/vol/$hello_ko" "$work/vol-$v/$hello_ko" || fail "the test module signed by way of $v differs from the PEM-signed one"
done
for f in signer sig_key signature; do
  [ "$(modinfo -F $f "$work/vol/$hello_ko")" = "$(modinfo -F $f "$work/vol-token/$hello_ko")" ] || fail "modinfo $f differs (token)"
done
[ "$(modinfo -F sig_hashalgo "$work/vol-ecdsa/$hello_ko")" = sha256 ] || fail "the ECDSA-signed module has no sha256 signature"
[ "$(modinfo -F signer "$work/vol-ecdsa/$hello_ko")" = "kmodkit qemu ecdsa key" ] || fail "the ECDSA-signed module names another signer"

# The initramfs: busybox, kmod-builder with its libraries, and the part of the volume the guest
# needs (the records, the built modules, uio and e1000, the modules.* indexes).
root=$work/root
mkdir -p "$root"/{bin,usr/bin,proc,sys,dev,tmp,run,vol}
cp "$(command -v busybox)" "$root/bin/busybox"
strip -o "$root/usr/bin/kmod-builder" "$kmod_builder"
for lib in $(ldd "$kmod_builder" | awk '/=>/ {print $3} /^\t\/lib/ {print $1}'); do
  mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
done
mods=usr/lib/modules/$kver
mkdir -p "$root/vol/$mods"
cp -a "$work/vol/$mods"/modules.* "$root/vol/$mods/"
(cd "$work/vol" && cp -a --parents "$mods/extra" "$mods/kernel/drivers/uio/uio.ko" \
  "$mods/kernel/drivers/net/ethernet/intel/e1000/e1000.ko" .kmodkit/modules .kmodkit/certs "$root/vol/")
ln -s usr/lib "$root/vol/lib"
mkdir -p "$root/vol2"
(cd "$work/vol2" && cp -a --parents "$mods/extra/kmodkit_hello" .kmodkit/modules/"$kver"/kmodkit_hello.json .kmodkit/certs "$root/vol2/")
cp -a "$work/vol/$mods"/modules.* "$root/vol2/$mods/"
ln -s usr/lib "$root/vol2/lib"
# A second volume whose test module is unsigned (its record says so), for the enforcing boot.
cp -a "$root/vol" "$root/vol-unsigned"
python3 - "$root/vol-unsigned" "$kver" <<'PY'
import hashlib, json, struct, sys
vol, kver = sys.argv[1], sys.argv[2]
rec_path = f"{vol}/.kmodkit/modules/{kver}/kmodkit_hello.json"
rec = json.load(open(rec_path))
magic = b"~Module signature appended~\n"
for m in rec["modules"]:
    p = f"{vol}/{m['path']}"
    data = open(p, "rb").read()
    assert data.endswith(magic)
    sig_len = struct.unpack(">I", data[-len(magic) - 4:-len(magic)])[0]
    data = data[: len(data) - len(magic) - 12 - sig_len]
    open(p, "wb").write(data)
    m["sha256"] = hashlib.sha256(data).hexdigest()
rec["signer"] = ""; rec["sig_key"] = ""
json.dump(rec, open(rec_path, "w"))
PY
# The token's, the detached and the ECDSA volume: the test module's record, files and certificate.
for v in token detached ecdsa; do
  mkdir -p "$root/vol-$v/$mods"
  (cd "$work/vol-$v" && cp -a --parents "$mods/extra/kmodkit_hello" .kmodkit/modules/"$kver"/kmodkit_hello.json .kmodkit/certs "$root/vol-$v/")
  cp -a "$work/vol-$v/$mods"/modules.* "$root/vol-$v/$mods/"
  ln -s usr/lib "$root/vol-$v/lib"
done
# A volume whose test module carries a signature made for other bytes (version 2.0's, by the
# same key), its record updated to match the file: only the signature check can refuse it.
cp -a "$root/vol" "$root/vol-forged"
python3 - "$root/vol-forged" "$kver" "$work/vol2/$hello_ko" <<'PY'
import hashlib, json, struct, sys
vol, kver, other = sys.argv[1], sys.argv[2], sys.argv[3]
magic = b"~Module signature appended~\n"
def split(data):
    sig_len = struct.unpack(">I", data[-len(magic) - 4:-len(magic)])[0]
    body = len(data) - len(magic) - 12 - sig_len
    return data[:body], data[body:]
rec_path = f"{vol}/.kmodkit/modules/{kver}/kmodkit_hello.json"
rec = json.load(open(rec_path))
for m in rec["modules"]:
    p = f"{vol}/{m['path']}"
    body, _ = split(open(p, "rb").read())
    _, trailer = split(open(other, "rb").read())
    data = body + trailer
    open(p, "wb").write(data)
    m["sha256"] = hashlib.sha256(data).hexdigest()
json.dump(rec, open(rec_path, "w"))
PY
cat > "$root/init" <<GUEST
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin KMODKIT_LOG_FORMAT=human
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t securityfs none /sys/kernel/security 2>/dev/null
K="kmod-builder"
R=$kver
step() { echo "KMODKIT-STEP \$1"; shift; "\$@" 2>&1; echo "KMODKIT-RC \$?"; }
if grep -q module.sig_enforce=1 /proc/cmdline; then
  step enforce-signed \$K load --volume /vol --kernel-release \$R --recipe kmodkit_hello
  step enforce-unsigned \$K load --volume /vol-unsigned --kernel-release \$R --recipe kmodkit_hello
  step enforce-token \$K load --volume /vol-token --kernel-release \$R --recipe kmodkit_hello
  step enforce-detached \$K load --volume /vol-detached --kernel-release \$R --recipe kmodkit_hello
  # igb_uio is refused after its dependency uio was loaded: the run unloads uio again...
  step enforce-dep \$K load --volume /vol --kernel-release \$R --recipe igb_uio
  echo "KMODKIT-SYS after-refusal uio=\$(test -d /sys/module/uio && echo present || echo gone)"
  # ...but leaves it loaded when it was loaded before the run.
  insmod /vol/usr/lib/modules/\$R/kernel/drivers/uio/uio.ko
  step enforce-dep-preloaded \$K load --volume /vol --kernel-release \$R --recipe igb_uio
  echo "KMODKIT-SYS after-refusal-preloaded uio=\$(test -d /sys/module/uio && echo present || echo gone)"
else
  insmod /vol/usr/lib/modules/\$R/kernel/drivers/net/ethernet/intel/e1000/e1000.ko
  NIC=\$(ls /sys/bus/pci/drivers/e1000 | grep '^0000:' | head -1)
  echo "KMODKIT-NIC \$NIC"
  step load \$K load --volume /vol --kernel-release \$R --param igb_uio.intr_mode=legacy
  echo "KMODKIT-SYS igb_uio \$(cat /sys/module/igb_uio/initstate) intr_mode=\$(cat /sys/module/igb_uio/parameters/intr_mode 2>/dev/null)"
  echo "KMODKIT-SYS uio \$(cat /sys/module/uio/initstate)"
  echo "KMODKIT-SYS kmodkit_hello \$(cat /sys/module/kmodkit_hello/initstate)"
  if [ -d /sys/module/rte_kni ]; then echo "KMODKIT-SYS rte_kni \$(cat /sys/module/rte_kni/initstate) carrier=\$(cat /sys/module/rte_kni/parameters/carrier 2>/dev/null)"; fi
  step bind \$K bind --volume /vol --device \$NIC --driver igb_uio
  echo "KMODKIT-SYS driver \$(basename \$(readlink /sys/bus/pci/devices/\$NIC/driver)) uio0=\$(test -c /dev/uio0 && echo yes || echo no)"
  step load-again \$K load --volume /vol --kernel-release \$R
  step bind-again \$K bind --volume /vol --device \$NIC --driver igb_uio
  step unload-bound \$K unload --volume /vol --kernel-release \$R --recipe igb_uio
  step unbind \$K unbind --volume /vol --device \$NIC
  echo "KMODKIT-SYS driver \$(basename \$(readlink /sys/bus/pci/devices/\$NIC/driver))"
  step unload \$K unload --volume /vol --kernel-release \$R
  echo "KMODKIT-SYS after-unload igb_uio=\$(test -d /sys/module/igb_uio && echo present || echo gone) rte_kni=\$(test -d /sys/module/rte_kni && echo present || echo gone)"
  step load-v1 \$K load --volume /vol --kernel-release \$R --recipe kmodkit_hello
  step load-v2 \$K load --volume /vol2 --kernel-release \$R --recipe kmodkit_hello
  step replace \$K load --volume /vol2 --kernel-release \$R --recipe kmodkit_hello --replace
  echo "KMODKIT-SYS kmodkit_hello version \$(cat /sys/module/kmodkit_hello/version)"
  \$K unload --volume /vol2 --kernel-release \$R --recipe kmodkit_hello >/dev/null 2>&1
  for v in token detached ecdsa; do
    step load-\$v \$K load --volume /vol-\$v --kernel-release \$R --recipe kmodkit_hello
    echo "KMODKIT-SYS \$v kmodkit_hello=\$(cat /sys/module/kmodkit_hello/initstate 2>/dev/null || echo gone)"
    \$K unload --volume /vol-\$v --kernel-release \$R --recipe kmodkit_hello >/dev/null 2>&1
  done
  step load-forged \$K load --volume /vol-forged --kernel-release \$R --recipe kmodkit_hello
  echo "KMODKIT-SYS forged kmodkit_hello=\$(test -d /sys/module/kmodkit_hello && echo present || echo gone)"
fi
echo KMODKIT-END
poweroff -f
GUEST
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$work/initrd.gz"
dpkg-deb --fsys-tarfile "$image_deb" | tar -xf - -C "$work" "./boot/vmlinuz-$kver"

boot() {  # boot EXTRA_CMDLINE OUTPUT
  timeout 150 qemu-system-x86_64 -accel tcg -m 512 -smp 1 -nographic -no-reboot \
    -kernel "$work/boot/vmlinuz-$kver" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3 $1" \
    -netdev user,id=n0 -device e1000,netdev=n0 </dev/null >"$2" 2>&1 || true
  clean_console "$2" "$2.txt"
  grep -q KMODKIT-END "$2.txt" || { cat "$2.txt"; fail "the guest did not finish (${1:-normal boot})"; }
}
# rc STEP: the exit code the guest printed after that step.
rc() { awk -v s="$1" '$1=="KMODKIT-STEP" {cur=$2} $1=="KMODKIT-RC" && cur==s {print $2; exit}' "$out"; }
# said STEP TEXT: the step's output contains TEXT.
said() { awk -v s="$1" '$1=="KMODKIT-STEP" {cur=$2; next} $1=="KMODKIT-RC" {cur=""} cur==s' "$out" | grep -qF -- "$2" ||
  { sed -n "/KMODKIT-STEP $1/,/KMODKIT-RC/p" "$out"; fail "step $1 did not say: $2"; }; }
expect() { [ "$(rc "$1")" = "$2" ] || { sed -n "/KMODKIT-STEP $1/,/KMODKIT-RC/p" "$out"; fail "step $1 exited $(rc "$1"), expected $2"; }; }
has() { grep -qF -- "$1" "$out" || fail "the guest did not print: $1"; }

t0=$(date +%s)
boot "" "$work/boot1"; out=$work/boot1.txt
nic=$(awk '$1=="KMODKIT-NIC" {print $2}' "$out")
[ -n "$nic" ] || fail "no e1000 NIC in the guest"
expect load 0;          said load "uio: loaded uio"; said load "igb_uio: loaded from"; said load "with intr_mode=legacy"
has "KMODKIT-SYS igb_uio live intr_mode=legacy"; has "KMODKIT-SYS uio live"; has "KMODKIT-SYS kmodkit_hello live"
expect bind 0;          said bind "$nic: bound to igb_uio (was e1000), /dev/uio0"
has "KMODKIT-SYS driver igb_uio uio0=yes"
has "KMODKIT-SYS rte_kni live carrier=on"; said load "rte_kni: loaded from"
expect load-again 0;    said load-again "already loaded from this build"; said load-again "0 module(s) loaded, 3 already loaded"
expect bind-again 0;    said bind-again "already bound to igb_uio"
expect unload-bound 75; said unload-bound "igb_uio still drives $nic"
expect unbind 0;        said unbind "$nic: back on e1000"
has "KMODKIT-SYS driver e1000"
expect unload 0;        has "KMODKIT-SYS after-unload igb_uio=gone rte_kni=gone"
expect load-v1 0
expect load-v2 78;      said load-v2 "kmodkit_hello is loaded from another build"; said load-v2 "--replace"
expect replace 0;       said replace "kmodkit_hello: unloaded"; said replace "kmodkit_hello: loaded from"
has "KMODKIT-SYS kmodkit_hello version 2.0"
for v in token detached ecdsa; do
  expect "load-$v" 0; said "load-$v" "kmodkit_hello: loaded from"; has "KMODKIT-SYS $v kmodkit_hello=live"
done
expect load-forged 65;  said load-forged "module signature does not match its content"; said load-forged "not loaded"
has "KMODKIT-SYS forged kmodkit_hello=gone"
echo "load-test: boot 1 (load, bind, rerun, unbind, unload, another build refused then --replace; signed in a token," \
  "detached and with ECDSA: loaded; a signature for other bytes refused before insertion) passed"

boot "module.sig_enforce=1" "$work/boot2"; out=$work/boot2.txt
expect enforce-signed 77;   said enforce-signed "module.sig_enforce=1"; said enforce-signed "does not trust its signer 'kmodkit qemu test key'"
# The hint names the certificate's DER file on the volume, and that file is the signing certificate.
cert_der=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["certificate"])' \
  "$work/vol/.kmodkit/modules/$kver/kmodkit_hello.json")
[ "$(openssl x509 -inform DER -in "$work/vol/$cert_der" -noout -fingerprint -sha256)" = \
  "$(openssl x509 -in "$work/cert.pem" -noout -fingerprint -sha256)" ] || fail "$cert_der is not the signing certificate in DER"
said enforce-signed "mokutil --import /vol/$cert_der"
expect enforce-unsigned 77; said enforce-unsigned "the module is not signed"
for v in token detached; do
  expect "enforce-$v" 77; said "enforce-$v" "does not trust its signer 'kmodkit qemu test key'"
done
expect enforce-dep 77;      said enforce-dep "uio: loaded uio"; said enforce-dep "refused igb_uio"; said enforce-dep "unloaded uio"
has "KMODKIT-SYS after-refusal uio=gone"
expect enforce-dep-preloaded 77; said enforce-dep-preloaded "refused igb_uio"
has "KMODKIT-SYS after-refusal-preloaded uio=present"
grep -F "error" "$out" | sed 's/^/load-test: guest said: /'
echo "load-test: boot 2 (module.sig_enforce=1: test-key (PEM, token, detached) and unsigned modules refused with 77, what the run loaded unloaded) passed"
echo "load-test: passed in $(( $(date +%s) - t0 )) s of QEMU"
