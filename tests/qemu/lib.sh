# shellcheck shell=bash
# Shared by the tests that boot Debian's 6.1 kernel under qemu-system-x86_64 -accel tcg
# (tests/qemu/load-test.sh, tests/pod/pod-test.sh). Sourced; needs bash.

# qemu_kernel_deb FIXTURES_DIR CACHE_DIR: the path of the linux-image package of the fixture
# repository's kernel (its release and version are the headers'), downloaded into CACHE_DIR/debs
# once.
qemu_kernel_deb() {
  local fixtures=$1 cache=$2 kver version deb
  kver=$(cat "$fixtures/apt-repo/kernel-release")
  version=$(dpkg-deb -f "$(ls "$fixtures"/apt-repo/pool/main/linux-headers-"$kver"_*.deb)" Version)
  mkdir -p "$cache/debs"
  deb=$(ls "$cache"/debs/linux-image-"$kver"_"$version"_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    (cd "$cache/debs" && apt-get download -q "linux-image-$kver=$version" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
    deb=$(ls "$cache"/debs/linux-image-"$kver"_"$version"_*.deb)
  fi
  echo "$deb"
}

# boot_modules KERNEL_ROOT KVER DEST MODULE...: copies the modules and what they depend on (by the
# modules.dep of KERNEL_ROOT/usr/lib/modules/KVER, which depmod must have written) into DEST, and
# writes DEST/order: their file names, dependencies first, for insmod in that order.
boot_modules() {
  local kroot=$1 kver=$2 dest=$3 m line f
  shift 3
  local dep=$kroot/usr/lib/modules/$kver/modules.dep
  mkdir -p "$dest"
  : > "$dest/order"
  for m in "$@"; do
    line=$(grep -E "(^|/)$m\.ko:" "$dep") || { echo "boot_modules: no module $m in $dep" >&2; return 1; }
    # modules.dep lists a module's dependencies nearest first: insmod them from the far end.
    for f in $(echo "${line#*:}" | tr ' ' '\n' | tac) "${line%%:*}"; do
      [ -n "$f" ] || continue
      grep -qxF "$(basename "$f")" "$dest/order" && continue
      cp "$kroot/usr/lib/modules/$kver/$f" "$dest/"
      basename "$f" >> "$dest/order"
    done
  done
}

# ext4_disk IMAGE DIR LABEL: an ext4 file system image holding DIR's tree, a quarter larger than
# the tree (and at least 64 MiB), without a journal (the guest only reads it).
ext4_disk() {
  local image=$1 dir=$2 label=$3 mib
  mib=$(du -sm "$dir" | cut -f1)
  mib=$((mib + mib / 4 + 64))
  rm -f "$image"
  mkfs.ext4 -q -F -O ^has_journal -L "$label" -d "$dir" "$image" "${mib}M" >/dev/null
}

# clean_console RAW TEXT: the serial console's text without carriage returns and terminal
# escapes, each KMODKIT- marker on a line of its own (the firmware's last line has no newline).
clean_console() {
  tr -d '\r' < "$1" | sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' -e 's/\(.\)KMODKIT-/\1\nKMODKIT-/g' > "$2"
}
