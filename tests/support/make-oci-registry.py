#!/usr/bin/env python3
"""Builds the container images of init-modules' oci source tests and pushes them into the storage
of a real registry (Debian's docker-registry), with skopeo:

  make-oci-registry.py OUT_DIR [APT_REPO_DIR [RPM_REPO_DIR]]

APT_REPO_DIR (default: OUT_DIR's sibling apt-repo) is make-apt-repo.sh's output: its kernel-release
R and the Debian packages of R's headers. RPM_REPO_DIR (default: OUT_DIR's sibling rpm-repo) is
make-rpm-repo.sh's output: its signed/ repository goes into the extensions image. Writes:
  tls/         a test CA (ca.pem), the server certificate for 127.0.0.1 signed by it (server.pem,
               server.key), and the token issuer's self-signed certificate and key (token.pem,
               token.key) that the registry trusts (auth.token.rootcertbundle)
  layouts/     the OCI image layouts the images are pushed from
  storage/     the registry's filesystem storage, holding every image below
  digests      "NAME MANIFEST-DIGEST" per image, for by-digest references
  kernel-release  R
  format       the version of this layout (a fixture of an older one is built again)
  rpm-repomd   the SHA-256 of the rpm repository's signed/repodata/repomd.xml that the extensions
               image carries (a rebuilt rpm repository makes this fixture be built again)
Images (repository:tag), each a driver-toolkit-like image unless said otherwise:
  kmodkit/dtk:gzip     OCI manifest, three tar+gzip layers: a lower layer with files the upper
                       ones remove (.wh.name and an opaque .wh..wh..opq directory) and files outside
                       the kernel's trees; the kernel layer (usr/src/kernels/R as one self-contained
                       tree, as make-rpm-repo.sh lays it, and usr/lib/modules/R with modules.* and a
                       build link); the upper layer with /etc/driver-toolkit-release.json and the
                       whiteouts. Label kernel-version=R.
  kmodkit/dtk:zstd     the same layers as tar+zstd
  kmodkit/dtk:nolabel  gzip layers, no label: the release comes from driver-toolkit-release.json
  kmodkit/dtk:docker   dtk:gzip as Docker schema 2 (skopeo --format v2s2)
  kmodkit/dtk:multi    an OCI index: linux/amd64 is dtk:gzip, linux/arm64 another image
  kmodkit/dtk:stale    label kernel-version=6.1.0-1-amd64 and that kernel's tree only
  kmodkit/dtk:stale-nolabel  the same without the label
  kmodkit/private:latest, kmodkit/refused:latest   dtk:gzip again, for the token server's rules
  kmodkit/evil:dotdot  a layer with an entry '../escape'
  kmodkit/evil:symlink a layer with a symlink to /etc, the next one with a file through it
  kmodkit/extensions:latest  no kernel tree, but an RPM repository under
                       usr/share/rpm-ostree/extensions, as RHCOS's rhel-coreos-extensions image holds
                       one: make-rpm-repo.sh's signed/ (R's kernel-devel, kernel-core and kernel-modules-core, an older
                       kernel-devel, signed by RPM-GPG-KEY-kmodkit-test; createrepo_c's repodata)
Idempotent: a complete OUT_DIR is left as it is; it is built in OUT_DIR.partial and renamed when
complete. The registry started for the push listens on 127.0.0.1 and is stopped by its PID.
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time

OLD_KVER = "6.1.0-1-amd64"
# Raised when the images change, so that an existing fixture is built again.
FORMAT = "2"
MTIME = 1700000000


def run(*argv, **kw):
    subprocess.run(argv, check=True, **kw)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout (image-spec's image-layout.md) written by hand: blobs by digest,
    oci-layout, index.json naming each image by org.opencontainers.image.ref.name."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs/sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.refs = []

    def blob(self, data, media_type):
        digest = sha256(data)
        with open(os.path.join(self.path, "blobs/sha256", digest[7:]), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def ref(self, name, descriptor):
        d = dict(descriptor)
        d["annotations"] = {"org.opencontainers.image.ref.name": name}
        self.refs.append(d)

    def close(self):
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": self.refs}, f)


def tar_bytes(add):
    """A tar made by add(tar) with fixed owners and times, so the blobs are reproducible."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar)
    return buf.getvalue()


def add_file(tar, name, data=b"", mode=0o644):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = MTIME
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = MTIME
    tar.addfile(info)


def add_symlink(tar, name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mtime = MTIME
    tar.addfile(info)


def add_tree(tar, source, arcname):
    def reset(info):
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    tar.add(source, arcname=arcname, filter=reset)


def compress(data, how):
    if how == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
    out = subprocess.run(["zstd", "-q", "-3", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout
    return out, "application/vnd.oci.image.layer.v1.tar+zstd"


def image(layout, name, tars, how, labels, arch="amd64"):
    """Writes one image (layers compressed with `how`) and returns its manifest descriptor."""
    layers = []
    diff_ids = []
    for t in tars:
        data, media_type = compress(t, how)
        layers.append(layout.blob(data, media_type))
        diff_ids.append(sha256(t))
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Labels": labels} if labels else {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_desc = layout.blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layers,
    }
    desc = layout.blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    if name:
        layout.ref(name, desc)
    return desc


def stage_headers(apt_repo, kver, work):
    """Debian's three headers packages rearranged into one self-contained tree, as
    make-rpm-repo.sh does (see there why each step)."""
    debs = os.path.join(work, "debs")
    os.makedirs(debs)
    pool = os.path.join(apt_repo, "pool/main")
    for deb in sorted(os.listdir(pool)):
        run("dpkg-deb", "-x", os.path.join(pool, deb), debs)
    abi = kver.rsplit("-", 1)[0]
    common = os.path.join(debs, "usr/src/linux-headers-%s-common" % abi)
    archtree = os.path.join(debs, "usr/src/linux-headers-" + kver)
    kbuild_rel = os.path.normpath(os.path.join(common, os.readlink(os.path.join(common, "scripts")), ".."))
    tree = os.path.join(work, "tree")
    shutil.copytree(common, tree, symlinks=True)
    for d in ("scripts", "tools"):
        os.unlink(os.path.join(tree, d))
    for root, dirs, files in os.walk(archtree):
        rel = os.path.relpath(root, archtree)
        for name in dirs + files:
            src = os.path.join(root, name)
            if rel == "." and name in ("Makefile", "scripts", "tools"):
                continue
            if os.path.isdir(src) and not os.path.islink(src):
                continue
            dst = os.path.join(tree, rel, name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.lexists(dst):
                os.unlink(dst)
            shutil.copy2(src, dst, follow_symlinks=False)
    for d in ("scripts", "tools", "certs"):
        shutil.copytree(os.path.join(kbuild_rel, d), os.path.join(tree, d), symlinks=True)
    with open(os.path.join(tree, "include/config/kernel.release"), "w") as f:
        f.write(kver + "\n")
    return tree


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tls(d):
    os.makedirs(d)
    q = {"cwd": d, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=kmodkit test CA",
        "-keyout", "ca.key", "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", **q)
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
        "-out", "server.csr", **q)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "3650", "-extfile", "server.ext", "-out", "server.pem", **q)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
        "/CN=kmodkit test token issuer", "-keyout", "token.key", "-out", "token.pem", **q)


def push_all(work, pushes):
    """Starts a registry without authentication on the storage, pushes, stops it by its PID."""
    port = free_port()
    config = os.path.join(work, "push-registry.yml")
    with open(config, "w") as f:
        f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n"
                "http:\n  addr: 127.0.0.1:%d\n  tls:\n    certificate: %s\n    key: %s\n"
                % (os.path.join(work, "storage"), port, os.path.join(work, "tls/server.pem"),
                   os.path.join(work, "tls/server.key")))
    log = open(os.path.join(work, "push-registry.log"), "w")
    registry = subprocess.Popen(["docker-registry", "serve", config], stdout=log, stderr=log)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        certs = os.path.join(work, "certs.d")
        os.makedirs(certs, exist_ok=True)
        shutil.copy(os.path.join(work, "tls/ca.pem"), os.path.join(certs, "ca.crt"))
        for source, dest, extra in pushes:
            # --preserve-digests: the registry holds the layouts' very bytes, unless converted.
            keep = [] if "--format" in extra else ["--preserve-digests"]
            run("skopeo", "copy", "--quiet", "--all", *keep, *extra, "--dest-cert-dir", certs,
                "oci:" + source, "docker://127.0.0.1:%d/%s" % (port, dest))
    finally:
        registry.terminate()
        registry.wait()
        log.close()


def main():
    out = os.path.realpath(sys.argv[1])
    apt_repo = os.path.realpath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(out), "apt-repo"))
    rpm_repo = os.path.realpath(sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(out), "rpm-repo"))
    with open(os.path.join(apt_repo, "kernel-release")) as f:
        kver = f.read().strip()

    def summary():
        print("make-oci-registry: %s holds driver-toolkit-like images of %s (gzip, zstd, Docker schema 2, an index,"
              " whiteouts), a stale one, malicious ones and an extensions image" % (out, kver))

    with open(os.path.join(rpm_repo, "signed", "repodata", "repomd.xml"), "rb") as f:
        rpm_repomd = hashlib.sha256(f.read()).hexdigest()

    def recorded(name):
        with open(os.path.join(out, name)) as f:
            return f.read().strip()

    try:
        if recorded("kernel-release") == kver and recorded("format") == FORMAT and recorded("rpm-repomd") == rpm_repomd:
            summary()
            return
    except OSError:
        pass

    work = out + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    start = time.time()
    make_tls(os.path.join(work, "tls"))
    tree = stage_headers(apt_repo, kver, os.path.join(work, "stage"))

    def lower(tar):
        add_file(tar, "usr/bin/toolkit-tool", b"#!/bin/sh\n", 0o755)
        add_file(tar, "usr/share/doc/toolkit/README", b"documentation\n")
        add_file(tar, "usr/src/kernels/%s/stale-file.txt" % kver, b"removed by a whiteout\n")
        add_file(tar, "usr/lib/modules/%s/extra/old.ko" % kver, b"removed by an opaque directory\n")

    def kernel(tar):
        add_tree(tar, tree, "usr/src/kernels/" + kver)
        add_dir(tar, "usr/lib/modules/" + kver)
        for name in ("modules.dep", "modules.order", "modules.builtin", "modules.alias"):
            add_file(tar, "usr/lib/modules/%s/%s" % (kver, name))
        add_symlink(tar, "usr/lib/modules/%s/build" % kver, "/usr/src/kernels/" + kver)

    def upper(tar):
        release = {"KERNEL_VERSION": kver, "RHEL_VERSION": "9.4", "OCP_VERSION": "4.16"}
        add_file(tar, "etc/driver-toolkit-release.json", json.dumps(release).encode())
        add_file(tar, "usr/src/kernels/%s/.wh.stale-file.txt" % kver)
        add_file(tar, "usr/lib/modules/%s/extra/.wh..wh..opq" % kver)
        add_file(tar, "usr/lib/modules/%s/extra/new.ko" % kver, b"above the opaque directory\n")

    dtk_tars = [tar_bytes(lower), tar_bytes(kernel), tar_bytes(upper)]
    labels = {"kernel-version": kver, "name": "kmodkit test driver toolkit"}
    main_layout = Layout(os.path.join(work, "layouts/main"))
    gz = image(main_layout, "dtk-gzip", dtk_tars, "gzip", labels)
    image(main_layout, "dtk-zstd", dtk_tars, "zstd", labels)
    image(main_layout, "dtk-nolabel", dtk_tars, "gzip", None)

    def arm(tar):
        add_file(tar, "usr/src/kernels/6.1.0-57-arm64/Makefile", b"# arm64\n")

    arm_desc = image(main_layout, None, [tar_bytes(arm)], "gzip", {"kernel-version": "6.1.0-57-arm64"}, arch="arm64")
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [dict(gz, platform={"architecture": "amd64", "os": "linux"}),
                      dict(arm_desc, platform={"architecture": "arm64", "os": "linux", "variant": "v8"})],
    }
    main_layout.ref("dtk-multi", main_layout.blob(json.dumps(index).encode(), index["mediaType"]))

    def stale(tar):
        add_file(tar, "usr/src/kernels/%s/Makefile" % OLD_KVER, b"# an older kernel\n")
        add_file(tar, "etc/driver-toolkit-release.json", json.dumps({"KERNEL_VERSION": OLD_KVER}).encode())

    image(main_layout, "dtk-stale", [tar_bytes(lower), tar_bytes(stale)], "gzip", {"kernel-version": OLD_KVER})
    image(main_layout, "dtk-stale-nolabel", [tar_bytes(lower), tar_bytes(stale)], "gzip", None)

    def dotdot(tar):
        add_file(tar, "usr/src/kernels/%s/Makefile" % kver, b"# fine\n")
        add_file(tar, "../escape.txt", b"outside the root\n")

    def link_to_etc(tar):
        add_symlink(tar, "usr/src/kernels/%s/evil" % kver, "/etc")

    def through_link(tar):
        add_file(tar, "usr/src/kernels/%s/evil/cron.d/job" % kver, b"* * * * * root sh\n")

    image(main_layout, "evil-dotdot", [tar_bytes(dotdot)], "gzip", {"kernel-version": kver})
    image(main_layout, "evil-symlink", [tar_bytes(link_to_etc), tar_bytes(through_link)], "gzip",
          {"kernel-version": kver})

    def extensions(tar):
        add_file(tar, "usr/bin/rpm-ostree-extensions-tool", b"#!/bin/sh\n", 0o755)
        add_tree(tar, os.path.join(rpm_repo, "signed"), "usr/share/rpm-ostree/extensions")

    image(main_layout, "extensions", [tar_bytes(extensions)], "gzip", None)
    main_layout.close()

    layout = os.path.join(work, "layouts/main")
    pushes = [(layout + ":dtk-gzip", "kmodkit/dtk:gzip", []),
              (layout + ":dtk-zstd", "kmodkit/dtk:zstd", []),
              (layout + ":dtk-nolabel", "kmodkit/dtk:nolabel", []),
              (layout + ":dtk-gzip", "kmodkit/dtk:docker", ["--format", "v2s2"]),
              (layout + ":dtk-multi", "kmodkit/dtk:multi", []),
              (layout + ":dtk-stale", "kmodkit/dtk:stale", []),
              (layout + ":dtk-stale-nolabel", "kmodkit/dtk:stale-nolabel", []),
              (layout + ":dtk-gzip", "kmodkit/private:latest", []),
              (layout + ":dtk-gzip", "kmodkit/refused:latest", []),
              (layout + ":evil-dotdot", "kmodkit/evil:dotdot", []),
              (layout + ":evil-symlink", "kmodkit/evil:symlink", []),
              (layout + ":extensions", "kmodkit/extensions:latest", [])]
    push_all(work, pushes)

    # The digests as the registry holds them (the Docker one was converted on the way).
    lines = []
    storage = os.path.join(work, "storage/docker/registry/v2/repositories")
    for _, dest, _ in pushes:
        repo, tag = dest.split(":")
        link = os.path.join(storage, repo, "_manifests/tags", tag, "current/link")
        with open(link) as f:
            lines.append("%s %s\n" % (dest, f.read().strip()))
    with open(os.path.join(work, "digests"), "w") as f:
        f.writelines(lines)
    shutil.rmtree(os.path.join(work, "stage"))
    with open(os.path.join(work, "kernel-release"), "w") as f:
        f.write(kver + "\n")
    with open(os.path.join(work, "format"), "w") as f:
        f.write(FORMAT + "\n")
    with open(os.path.join(work, "rpm-repomd"), "w") as f:
        f.write(rpm_repomd + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(work, out)
    print("make-oci-registry: built in %.0f s" % (time.time() - start))
    summary()


if __name__ == "__main__":
    main()
