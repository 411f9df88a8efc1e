#!/usr/bin/env python3
"""A dnf repository with a large primary.xml for the rpm source's memory benchmark.

  make-big-rpm-repo.py SOURCE_REPO OUT_DIR SIZE_MB GNUPG_HOME

SOURCE_REPO is a createrepo_c repository (tests/support/make-rpm-repo.sh's signed/). OUT_DIR gets
its packages (hard links) and a primary.xml.gz of SIZE_MB uncompressed: filler packages shaped like
RHEL's (provides, requires, a file list), then SOURCE_REPO's own packages, so a reader must stream
through everything before it meets the kernel's. repomd.xml lists that primary with its checksums
and is signed (repomd.xml.asc) with the key in GNUPG_HOME, as the source repository is.
"""
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time


def filler(i: int) -> str:
    name = f"filler-{i:06d}"
    provides = "".join(
        f'      <rpm:entry name="lib{name}-{k}.so.{k}()(64bit)"/>\n' for k in range(6))
    requires = "".join(
        f'      <rpm:entry name="libc.so.6(GLIBC_2.{k})(64bit)"/>\n' for k in range(2, 14))
    files = "".join(f"    <file>/usr/lib64/{name}/lib{name}-{k}.so.{k}</file>\n" for k in range(6))
    digest = hashlib.sha256(name.encode()).hexdigest()
    return (f'<package type="rpm">\n  <name>{name}</name>\n  <arch>x86_64</arch>\n'
            f'  <version epoch="0" ver="1.{i % 97}.{i % 13}" rel="{i % 7 + 1}.el9"/>\n'
            f'  <checksum type="sha256" pkgid="YES">{digest}</checksum>\n'
            f'  <summary>Filler package {i} of the benchmark repository</summary>\n'
            f'  <description>A package that is not a kernel: its metadata only makes primary.xml as '
            f'large as a distribution\'s. Entry {i}.</description>\n'
            f'  <packager>bench</packager>\n  <url>https://example.org/{name}</url>\n'
            f'  <time file="1700000000" build="1700000000"/>\n'
            f'  <size package="{10000 + i}" installed="{40000 + i}" archive="{41000 + i}"/>\n'
            f'  <location href="Packages/f/{name}-1.0-1.el9.x86_64.rpm"/>\n  <format>\n'
            f'    <rpm:license>MIT</rpm:license>\n    <rpm:vendor>bench</rpm:vendor>\n'
            f'    <rpm:group>Unspecified</rpm:group>\n    <rpm:buildhost>bench</rpm:buildhost>\n'
            f'    <rpm:sourcerpm>{name}-1.0-1.el9.src.rpm</rpm:sourcerpm>\n'
            f'    <rpm:header-range start="4504" end="{9000 + i % 1000}"/>\n'
            f'    <rpm:provides>\n      <rpm:entry name="{name}" flags="EQ" epoch="0" ver="1.0" rel="1.el9"/>\n'
            f'{provides}    </rpm:provides>\n    <rpm:requires>\n{requires}    </rpm:requires>\n'
            f'{files}  </format>\n</package>\n')


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    source, out, size_mb, gnupg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    target = size_mb * 1000 * 1000
    with open(os.path.join(source, "repodata", "repomd.xml"), encoding="utf-8") as f:
        repomd = f.read()
    href = re.search(r'<data type="primary">.*?<location href="([^"]+)"', repomd, re.S).group(1)
    with gzip.open(os.path.join(source, href), "rt", encoding="utf-8") as f:
        real = f.read()
    real_packages = re.findall(r"<package .*?</package>\n", real, re.S)

    partial = out + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(os.path.join(partial, "repodata"))
    for name in os.listdir(source):
        if name.endswith(".rpm"):
            os.link(os.path.join(source, name), os.path.join(partial, name))

    started = time.monotonic()
    plain = hashlib.sha256()
    stored = hashlib.sha256()
    plain_size = 0
    tmp = os.path.join(partial, "repodata", "primary.xml.gz")

    class Hashing:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            stored.update(b)
            return self.f.write(b)

        def flush(self):
            self.f.flush()

    count = 0
    chunks = []
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=Hashing(raw), mode="wb", compresslevel=1, mtime=0) as gz:
            def put(text: str) -> None:
                nonlocal plain_size
                b = text.encode()
                plain.update(b)
                plain_size += len(b)
                gz.write(b)

            # The packages= count comes first in the file; fillers are counted up front.
            body_target = target - 400
            per = len(filler(0).encode())
            fillers = max(0, (body_target - sum(len(p.encode()) for p in real_packages)) // per)
            count = fillers + len(real_packages)
            put('<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/metadata/common" '
                f'xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="{count}">\n')
            for i in range(fillers):
                chunks.append(filler(i))
                if len(chunks) == 1000:
                    put("".join(chunks))
                    chunks = []
            put("".join(chunks))
            for p in real_packages:
                put(p)
            put("</metadata>\n")
    stored_hex = stored.hexdigest()
    final = f"repodata/{stored_hex}-primary.xml.gz"
    os.rename(tmp, os.path.join(partial, final))
    stored_size = os.path.getsize(os.path.join(partial, final))
    with open(os.path.join(partial, "repodata", "repomd.xml"), "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">\n'
                '  <revision>1700000000</revision>\n  <data type="primary">\n'
                f'    <checksum type="sha256">{stored_hex}</checksum>\n'
                f'    <open-checksum type="sha256">{plain.hexdigest()}</open-checksum>\n'
                f'    <location href="{final}"/>\n    <timestamp>1700000000</timestamp>\n'
                f'    <size>{stored_size}</size>\n    <open-size>{plain_size}</open-size>\n  </data>\n</repomd>\n')
    subprocess.run(["gpg", "--homedir", gnupg, "--batch", "--yes", "--quiet", "--armor", "--detach-sign",
                    "--output", os.path.join(partial, "repodata", "repomd.xml.asc"),
                    os.path.join(partial, "repodata", "repomd.xml")], check=True)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(partial, out)
    print(f"make-big-rpm-repo: {out}: {count} packages, primary {plain_size / 1e6:.0f} MB "
          f"({stored_size / 1e6:.0f} MB gzip) in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
