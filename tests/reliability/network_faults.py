#!/usr/bin/env python3
"""Network-fault campaign: every download path of init-modules meets every fault a network or a
server makes, for real. The paths: apt (the Release file, the Packages index, a .deb), rpm
(repomd.xml, primary.xml.gz, an .rpm), an --archive URL, and oci (the token service, the
manifest, a layer blob). The faults, from tests/support/fault_server.py on 127.0.0.1: a TCP reset
mid-body, a stall mid-body, a Content-Length longer than the body (short), a body longer than its
Content-Length (long: only where a checksum, digest or signature can tell), a 200 text/html error
page instead of the answer, a redirect loop to itself and one through two URLs (pingpong), a
reset or a stall of the first answer only (the retry must resume and lay the tree); and per
host: nothing listening (refused) and a certificate for another name (tls-name: signed by a CA
init-modules is given with --ca-file, so only the name is wrong).

  network_faults.py --build DIR --fixtures DIR [--retries N] [--jobs N] [--only TEXT]...
                    [--sentences] [--keep DIR]

Each row runs the real init-modules (DIR/init/init-modules) on a fresh volume and checks:
  - the exit code init/README.md documents: 69 for a network or server failure, 65 for bad data
    (a body that fails its checksum, digest or signature, or is not the document asked for);
  - the attempts, as core/include/kmodkit/http.hpp documents them: --retries N after the first
    for a refused connection, a reset, a stall and an answer cut short by a server that ignores
    Range; one for what asking again cannot mend (a redirect loop, a certificate for another name,
    bad data), and two for an answer cut short by a server that honours Range (the request for
    the rest is answered 416: it has nothing more). Counted by the server (its requests for the
    path; its connections for a TLS handshake), or from init-modules' retry lines when nothing
    listens;
  - the last log line is the error, one sentence, the same as the termination log, naming the
    host (127.0.0.1:port), the file, and what went wrong;
  - nothing is laid: no .kmodkit/kernels/R.json, no headers tree under usr/src, no modules tree,
    .kmodkit/staging empty, no partial blob;
  - (oci) no token in the log.
Baseline rows (no fault; and an archive over TLS with the right name) and the -once rows must
lay the tree.

The stall rows wait for libcurl's low-speed limit (less than 1 KiB/s for 30 s; no option sets it)
on each attempt, so they run with --retries 1 and all at once; the other rows run --jobs at a
time. Volumes are made on /dev/shm when it has room (every run calls syncfs, slow on a busy
disk). Prints a table (path, fault, exit code, attempts, seconds, ok/FAIL; got/wanted where they
differ); exits 1 when a row fails, keeping the failing rows' logs under --keep (default: a
temporary directory it names). Every process it starts (servers, init-modules) is ended by its
PID; the fixtures are only read.
"""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs as campaign  # noqa: E402

SUPPORT = campaign.SUPPORT
OCI_IMAGE = "kmodkit/dtk:gzip"

BODY_FAULTS = ["reset", "stall", "short", "long", "html", "loop", "pingpong", "reset-once", "stall-once"]
# Faults of the first answer only: the retry must resume and lay a whole tree.
ONCE = {"reset-once": "reset", "stall-once": "stall"}
# Servers that ignore Range: token_server.py, and docker-registry for manifests.
IGNORE_RANGE = {("oci", "token"), ("oci", "manifest")}


def closed_port():
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_file(path, proc, what, tries=600):
    for _ in range(tries):
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise RuntimeError(what + " exited before it listened")
        time.sleep(0.05)
    raise RuntimeError(what + " wrote no port")


class Process:
    """A server this campaign started; stopped by its PID."""

    def __init__(self, argv, log):
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class FaultServer(Process):
    """tests/support/fault_server.py on 127.0.0.1 with its request log."""

    def __init__(self, d, root, faults=(), tls=None, upstreams=(), rewrites=()):
        port_file = d / "server-port"
        self.events_path = d / "server-events.jsonl"
        argv = [sys.executable, str(SUPPORT / "fault_server.py"), str(root), "--port-file", str(port_file),
                "--log", str(self.events_path)]
        for pattern, kind in faults:
            argv += ["--fault", pattern + "=" + kind]
        if tls:
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        for u in upstreams:
            argv += ["--upstream", u]
        for r in rewrites:
            argv += ["--rewrite", r]
        super().__init__(argv, d / "server.log")
        try:
            self.port = int(wait_for_file(port_file, self.proc, "fault_server.py"))
        except BaseException:
            self.stop()
            raise
        self.url = ("https" if tls else "http") + "://127.0.0.1:%d" % self.port

    def events(self):
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines() if line.strip()]


class Pki:
    """A throwaway CA and two server certificates it signed: one for 127.0.0.1, one for another
    name only (kmodkit-wrong-name.invalid)."""

    def __init__(self, d):
        d.mkdir()
        self.ca = d / "ca.pem"
        self.right = (d / "right.pem", d / "right.key")
        self.wrong = (d / "wrong.pem", d / "wrong.key")

        def openssl(*args):
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=kmodkit netfaults CA",
                "-keyout", "ca.key", "-out", "ca.pem")
        for name, san in (("right", "IP:127.0.0.1"), ("wrong", "DNS:kmodkit-wrong-name.invalid")):
            (d / (name + ".ext")).write_text("subjectAltName=" + san + "\n")
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + san.split(":", 1)[1], "-keyout",
                    name + ".key", "-out", name + ".csr")
            openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                    "-days", "2", "-extfile", name + ".ext", "-out", name + ".pem")


class Registry:
    """Debian's docker-registry (plain HTTP) serving the oci_registry fixture's storage read-only
    (its maintenance mode: no upload purging, no writes), with tests/support/token_server.py
    (HTTPS) issuing its pull tokens; fault servers are put in front of both."""

    def __init__(self, fixtures, d):
        fixture = fixtures / "oci-registry"
        tls = fixture / "tls"
        d.mkdir()
        storage = fixture / "storage"
        self.token = Process(["/usr/bin/python3", str(SUPPORT / "token_server.py"), "--tls-cert", str(tls / "server.pem"),
                              "--tls-key", str(tls / "server.key"), "--signing-cert", str(tls / "token.pem"),
                              "--signing-key", str(tls / "token.key"), "--service", "kmodkit-test-registry", "--issuer",
                              "kmodkit-test-issuer", "--port-file", str(d / "token-port")], d / "token.log")
        self.registry = None
        try:
            self.token_origin = "https://127.0.0.1:" + wait_for_file(d / "token-port", self.token.proc, "token_server.py")
            port = closed_port()
            (d / "registry.yml").write_text(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n"
                "  maintenance:\n    uploadpurging:\n      enabled: false\n    readonly:\n      enabled: true\n"
                "http:\n  addr: 127.0.0.1:%d\n  secret: kmodkit-netfaults\nauth:\n  token:\n    realm: %s/token\n"
                "    service: kmodkit-test-registry\n    issuer: kmodkit-test-issuer\n    rootcertbundle: %s\n"
                % (storage, port, self.token_origin, tls / "token.pem"))
            self.registry = Process(["/usr/bin/docker-registry", "serve", str(d / "registry.yml")], d / "registry.log")
            for _ in range(600):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if self.registry.proc.poll() is not None:
                        raise RuntimeError("docker-registry exited: " + (d / "registry.log").read_text()[-2000:])
                    time.sleep(0.05)
            else:
                raise RuntimeError("docker-registry did not listen")
            self.origin = "http://127.0.0.1:%d" % port
        except BaseException:
            self.stop()
            raise
        storage = storage / "docker/registry/v2"
        repo, tag = OCI_IMAGE.split(":")
        digest = (storage / "repositories" / repo / "_manifests/tags" / tag / "current/link").read_text().strip()
        self.manifest_size = self.blob(storage, digest).stat().st_size
        manifest = json.loads(self.blob(storage, digest).read_text())
        layer = max(manifest["layers"], key=lambda l: l["size"])
        self.layer, self.layer_size = layer["digest"], layer["size"]

    @staticmethod
    def blob(storage, digest):
        hexd = digest.split(":", 1)[1]
        return storage / "blobs/sha256" / hexd[:2] / hexd / "data"

    def stop(self):
        for p in (self.registry, self.token):
            if p is not None:
                p.stop()


class Row:
    """One download path of one source meeting one fault (or none: a baseline)."""

    def __init__(self, source, path, fault, pattern=None, names=(), data_error=None, tls="none"):
        self.source, self.path, self.fault = source, path, fault
        self.pattern = pattern      # the fault server's regular expression for the path
        self.names = names          # what the sentence must name besides the host
        self.data_error = data_error  # what it says of a body that is not the document
        self.tls = tls              # none, right, wrong
        self.size = 0               # bytes of the faulted answer
        self.id = re.sub(r"[^A-Za-z0-9]+", "-", "%s-%s-%s-%s" % (source, path, fault or "none", tls))

    def label(self):
        return "%s %s" % (self.source, self.path)


class Campaign:
    def __init__(self, args, work):
        self.build = Path(args.build).resolve()
        self.fixtures = Path(args.fixtures).resolve()
        self.binary = self.build / "init/init-modules"
        self.retries = args.retries
        self.work = work
        self.apt = self.fixtures / "apt-repo"
        self.rpm = self.fixtures / "rpm-repo"
        self.kver = (self.apt / "kernel-release").read_text().strip()
        rpm_kver = (self.rpm / "kernel-release").read_text().strip()
        if rpm_kver != self.kver:
            raise RuntimeError("the apt and rpm fixtures hold different kernels (%s, %s)" % (self.kver, rpm_kver))
        self.pki = Pki(work / "pki")
        self.devel = next(p for p in sorted((self.rpm / "signed").iterdir())
                          if p.name.startswith("kernel-devel-" + self.kver.split("-")[0] + "-" + self.kver.split("-")[1]))
        self.primary = next(p for p in (self.rpm / "signed/repodata").iterdir() if p.name.endswith("-primary.xml.gz"))
        self.kbuild = next(p for p in (self.apt / "pool/main").iterdir() if p.name.startswith("linux-kbuild-"))
        self.registry = None
        self.oci_note = ""   # why the oci rows are skipped
        self.oci_error = ""  # why they fail without running

    # ---- the rows ----

    def rows(self):
        out = []
        esc = re.escape
        reg = self.registry
        # (path, pattern, names in the sentence, what bad data is called, whether a cut body can
        # be told from a shorter file (long), the answer's size)
        paths = {
            "apt": [("Release", r"/dists/stable/Release$", ["dists/stable/Release"], r"Release file has no SHA256 list",
                     False, self.apt / "dists/stable/Release"),
                    ("Packages.xz", r"/binary-amd64/Packages\.xz$", ["Packages.xz"],
                     r"SHA256 mismatch: the Release file says", True,
                     self.apt / "dists/stable/main/binary-amd64/Packages.xz"),
                    (".deb", esc(self.kbuild.name) + "$", [self.kbuild.name], r"SHA256 mismatch: expected", True,
                     self.kbuild)],
            "rpm": [("repomd.xml", r"/signed/repodata/repomd\.xml$", ["repomd.xml"],
                     r"the signature does not verify", True, self.rpm / "signed/repodata/repomd.xml"),
                    ("primary.xml.gz", esc(self.primary.name) + "$", [self.primary.name],
                     r"SHA256 mismatch: repomd.xml says", True, self.primary),
                    (".rpm", esc(self.devel.name) + "$", [self.devel.name], r"SHA256 mismatch: primary.xml says", True,
                     self.devel)],
            "archive": [("URL", esc(self.devel.name) + "$", [self.devel.name], r"SHA256 mismatch: expected", True,
                         self.devel)],
            "oci": [("token", r"^/token$", ["/token"], r"the token service \S+ answered no token", False, 1000),
                    ("manifest", r"/manifests/", ["manifest"],
                     r"the manifest sha256:\w+ (the registry sent has the digest|is not a JSON object)", True,
                     reg.manifest_size if reg else 0),
                    ("blob", r"/blobs/" + esc(reg.layer) + "$" if reg else "/blobs/", [reg.layer if reg else "blob"],
                     r"the blob sha256:\w+ the registry sent has the digest", True, reg.layer_size if reg else 0)],
        }
        for source, items in paths.items():
            out.append(Row(source, "all", None))
            if source == "archive":
                out.append(Row(source, "all", None, tls="right"))
            out.append(Row(source, "host", "refused"))
            out.append(Row(source, "host", "tls-name", tls="wrong"))
            if source == "oci":
                out.append(Row(source, "token host", "refused", names=["/token"]))
            for path, pattern, names, data_error, verified, size in items:
                for fault in BODY_FAULTS:
                    if fault == "long" and not verified:
                        continue  # nothing can tell a body cut at its Content-Length from a shorter file
                    row = Row(source, path, fault, pattern, names, data_error)
                    row.size = size if isinstance(size, int) else size.stat().st_size
                    out.append(row)
        # A captive portal answers 200 with its page for the InRelease the repository lacks.
        out.append(Row("apt", "InRelease", "html", r"/dists/stable/InRelease$", ["InRelease"],
                       r"not a clear-signed file"))
        return out

    def fault_size(self, row):
        """N for reset and stall (bytes of body before the fault): every attempt gets further,
        and never to the end; for short and long, how far Content-Length is off."""
        if row.fault in ("short", "long"):
            return 100
        return max(1, row.size // (4 * (self.retries + 1)))

    # ---- one row ----

    def argv(self, row, d, url):
        vol = d / "vol"
        common = [str(self.binary), "--kernel-release", self.kver, "--volume", str(vol), "--host-root",
                  str(d / "no-host"), "--sysfs", str(d / "no-sys"), "--retries",
                  str(1 if row.fault in ("stall", "stall-once") else self.retries), "--retry-delay", "0.05",
                  "--log-format", "json"]
        if row.tls != "none":
            common += ["--ca-file", str(self.pki.ca)]
        if row.source == "apt":
            return common + ["--sources", "apt", "--repo", "deb [trusted=yes] %s stable main" % url]
        if row.source == "rpm":
            repo = d / "test.repo"
            repo.write_text("[kmodkit-netfaults]\nname=kmodkit network faults\nbaseurl=%s/signed\nenabled=1\n"
                            "gpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file://%s\n" % (url, self.rpm / "RPM-GPG-KEY-kmodkit-test"))
            return common + ["--sources", "rpm", "--rpm-repo", str(repo), "--basearch", "x86_64", "--releasever", "9"]
        if row.source == "archive":
            return common + ["--sources", "archive", "--archive", url + "/signed/" + self.devel.name, "--sha256",
                             campaign.sha256_file(self.devel)]
        host = url.split("://", 1)[1]
        extra = [] if url.startswith("https") else ["--insecure-registry", host]
        return common + ["--sources", "oci", "--image", host + "/" + OCI_IMAGE] + extra

    def server_for(self, row, d):
        faults = []
        if row.pattern:
            kind = ONCE.get(row.fault, row.fault)
            spec = kind + (":%d" % self.fault_size(row) if kind in ("reset", "stall", "short", "long") else "")
            faults.append((row.pattern, spec + ("*1" if row.fault in ONCE else "")))
        tls = {"none": None, "right": self.pki.right, "wrong": self.pki.wrong}[row.tls]
        root = {"apt": self.apt, "rpm": self.rpm, "archive": self.rpm, "oci": d}[row.source]
        upstreams, rewrites = (), ()
        if row.source == "oci":
            upstreams = ["/v2/=" + self.registry.origin, "/token=" + self.registry.token_origin]
            to = "http://127.0.0.1:%d" % closed_port() if row.path == "token host" else "self"
            rewrites = [self.registry.token_origin + "=" + to]
        return FaultServer(d, root, faults, tls, upstreams, rewrites)

    def expected(self, row):
        """(exit code, attempts, what the sentence says) a row must end in."""
        if row.fault is None:
            return 0, None, None
        if row.fault in ONCE:
            return 0, 2, None
        retried = 1 + (1 if row.fault == "stall" else self.retries)
        gave_up = r" \(gave up after %d attempts\)$" % retried
        if row.fault == "refused":
            return 69, retried, r"Failed to connect to 127\.0\.0\.1 port \d+ .*Couldn't connect to server" + gave_up
        if row.fault == "tls-name":
            return 69, 1, r"SSL: no alternative certificate subject name matches target host name '127\.0\.0\.1'$"
        if row.fault == "reset":
            return 69, retried, r"Recv failure: Connection reset by peer" + gave_up
        if row.fault == "stall":
            return 69, retried, r"Operation too slow\. Less than 1024 bytes/sec transferred the last 30 seconds" + gave_up
        if row.fault == "short":
            if (row.source, row.path) in IGNORE_RANGE:  # each retry gets the whole answer, cut again
                return 69, retried, r"transfer closed with 100 bytes remaining to read" + gave_up
            # The request for the rest is answered 416: the server has nothing more.
            return 69, 2, (r"transfer closed with 100 bytes remaining to read; asked for the rest, the server has "
                           r"nothing after the first %d bytes \(HTTP 416\)$" % row.size)
        if row.fault in ("loop", "pingpong"):
            return 69, 1, r"Maximum \(10\) redirects followed$"
        # long, html: bad data, never retried. A token service's page is no token: unavailable.
        return (69 if row.path == "token" else 65), 1, row.data_error

    def attempts(self, row, server, output):
        """How many attempts init-modules made at the faulted path."""
        if row.fault == "refused" and row.path == "host":
            # Nothing listens to count them: init-modules' "retry k of N" lines, plus the first.
            return 1 + len(re.findall(r"; retry \d+ of \d+ in", output))
        events = server.events()
        if row.fault == "tls-name":
            return sum(1 for e in events if e["event"] == "connect")
        if row.fault == "refused":  # the token host: its requests never reach the fault server
            return 1 + len(re.findall(r"token[^\n]*; retry \d+ of \d+ in", output))
        # The requests init-modules made for the path (not those a redirect of the server's led to,
        # nor a registry's 401 before the token: the download is asked again with it).
        return sum(1 for e in events if e["event"] == "request" and e["hop"] == 0 and e["status"] != 401
                   and re.search(row.pattern, e["path"]))

    def laid(self, vol):
        """What a failed run left visible: a list of sentences (empty: nothing)."""
        bad = []
        if os.path.lexists(vol / ".kmodkit/kernels" / (self.kver + ".json")):
            bad.append("the manifest .kmodkit/kernels/%s.json exists" % self.kver)
        src = vol / "usr/src"
        if src.exists() and any(src.iterdir()):
            bad.append("usr/src holds " + ", ".join(p.name for p in src.iterdir()))
        if os.path.lexists(vol / "usr/lib/modules" / self.kver):
            bad.append("usr/lib/modules/%s exists" % self.kver)
        staging = vol / ".kmodkit/staging"
        if staging.exists() and any(staging.iterdir()):
            bad.append(".kmodkit/staging holds " + ", ".join(p.name for p in staging.iterdir()))
        blobs = vol / ".kmodkit/blobs/sha256"
        if blobs.exists():
            partial = [p.name for p in blobs.iterdir() if p.name.endswith(".partial")]
            if partial:
                bad.append("partial blobs left: " + ", ".join(partial))
        return bad

    def run(self, row):
        try:
            return self.run_row(row)
        except Exception as e:  # a server that did not start: the row fails, the others go on
            return {"row": row, "code": None, "attempts": None, "seconds": 0.0, "dir": self.work / row.id,
                    "problems": ["the row could not run: %s: %s" % (type(e).__name__, e)]}

    def run_row(self, row):
        d = self.work / row.id
        d.mkdir()
        (d / "vol").mkdir()
        result = {"row": row, "code": None, "attempts": None, "seconds": 0.0, "problems": [], "dir": d}
        if row.source == "oci" and self.registry is None:
            if self.oci_error:
                result["problems"].append(self.oci_error)
            else:
                result["skipped"] = self.oci_note
            return result
        server = None
        try:
            if row.fault == "refused" and row.path == "host":
                url = "http://127.0.0.1:%d" % closed_port()
            else:
                server = self.server_for(row, d)
                url = server.url
            term = d / "termination-log"
            term.write_text("")
            env = dict(os.environ, KMODKIT_TERMINATION_LOG=str(term))
            run = campaign.Run(self.argv(row, d, url), d / "init-modules.log", env=env)
            code = run.wait(300)
            left = run.leftovers(grace=10)
            result["seconds"] = run.seconds
        finally:
            if server is not None:
                server.stop()
        output = run.output()
        result["code"] = code
        problems = result["problems"]
        if left:
            problems.append("processes of the run were still alive: %s" % left)
        want_code, want_attempts, phrase = self.expected(row)
        if code != want_code:
            problems.append("exit %s, not %s" % (code, want_code))
        if row.fault is None or row.fault in ONCE:
            if not (d / "vol/.kmodkit/kernels" / (self.kver + ".json")).exists():
                problems.append("no tree was laid")
        if row.fault is not None:
            got_attempts = self.attempts(row, server, output) if (server or row.fault == "refused") else None
            result["attempts"] = got_attempts
            result["want_attempts"] = want_attempts
            if got_attempts != want_attempts:
                problems.append("%s attempts, not %s" % (got_attempts, want_attempts))
            if row.fault not in ONCE:
                problems += self.check_sentence(row, run, term, url, phrase)
                problems += self.laid(d / "vol")
        if row.source == "oci" and re.search(r"eyJ[A-Za-z0-9_-]{10,}\.", output):
            problems.append("a token appears in the log")
        if not problems:
            result["sentence"] = sentence_of(result)
            shutil.rmtree(d, ignore_errors=True)
        return result

    def check_sentence(self, row, run, term, url, phrase):
        problems = []
        last = run.last_line()
        try:
            entry = json.loads(last)
        except ValueError:
            return ["the last line is not a JSON log entry: " + last[:200]]
        sentence = entry.get("msg", "")
        if entry.get("level") != "error":
            problems.append("the last line is not the error (level %s)" % entry.get("level"))
        written = term.read_text()
        if written != "init-modules: " + sentence + "\n":
            problems.append("the termination log says something else: " + written[:200])
        if "\n" in sentence or not sentence:
            problems.append("the sentence is empty or spans lines")
        host = url.split("://", 1)[1]
        if row.path == "token host":
            host = "/token"
        if host not in sentence:
            problems.append("the sentence does not name " + host)
        for name in row.names:
            if name not in sentence:
                problems.append("the sentence does not name " + name)
        if phrase and not re.search(phrase, sentence):
            problems.append("the sentence does not say /%s/" % phrase)
        return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="the build directory (its init/init-modules)")
    ap.add_argument("--fixtures", required=True, help="the test fixtures (apt-repo, rpm-repo, oci-registry)")
    ap.add_argument("--retries", type=int, default=2, help="--retries of each run (default 2; the stall rows: 1)")
    ap.add_argument("--jobs", type=int, default=2, help="rows run at once, besides the stall rows (default 2)")
    ap.add_argument("--only", action="append", default=[], help="only the rows whose 'source path fault' holds this")
    ap.add_argument("--sentences", action="store_true", help="print each row's final sentence")
    ap.add_argument("--keep", default=None, help="where to keep failing rows (default: a temporary directory)")
    args = ap.parse_args()
    started = time.monotonic()
    # Volumes on tmpfs when there is one: the rows' many small files then cost no disk syncs
    # (every run calls syncfs), which on a busy disk would take most of the campaign's time.
    shm = Path("/dev/shm")
    on_tmpfs = shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > (2 << 30)
    work = Path(tempfile.mkdtemp(prefix="kmodkit-netfaults.", dir=str(shm) if on_tmpfs else None))
    keep = Path(args.keep) if args.keep else work / "failed"
    c = None
    results = []
    try:
        c = Campaign(args, work)
        fixture = c.fixtures / "oci-registry"
        if not (fixture / "digests").exists():
            c.oci_note = "no oci_registry fixture in " + str(c.fixtures)
        elif not Path("/usr/bin/docker-registry").exists():
            c.oci_note = "no /usr/bin/docker-registry"
        else:
            try:
                c.registry = Registry(c.fixtures, work / "registry")
            except (RuntimeError, OSError) as e:  # the fixture is there: its rows fail, saying why
                c.oci_error = "the registry fixture could not be served: %s" % e
        rows = [r for r in c.rows()
                if not args.only or any(o in "%s %s %s" % (r.source, r.path, r.fault or "none") for o in args.only)]
        print("network_faults: %d rows, --retries %d (stall rows: 1), kernel %s, in %s"
              % (len(rows), args.retries, c.kver, work), flush=True)
        stalls = [r for r in rows if r.fault in ("stall", "stall-once")]
        # The longest first (whole trees laid or extracted before a failure), so the pool ends together.
        others = sorted((r for r in rows if r not in stalls), key=lambda r: -weight(r))
        with concurrent.futures.ThreadPoolExecutor(max(1, len(stalls))) as slow, \
                concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as fast:
            futures = [slow.submit(c.run, r) for r in stalls] + [fast.submit(c.run, r) for r in others]
            order = {id(r): i for i, r in enumerate(rows)}
            for f in futures:
                results.append(f.result())
        results.sort(key=lambda res: order[id(res["row"])])
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if c is not None and c.registry is not None:
            c.registry.stop()

    failed = [r for r in results if r["problems"]]
    print()
    print("%-22s %-10s %-9s %-9s %8s  %s" % ("path", "fault", "exit", "attempts", "seconds", "result"))
    for res in results:
        row = res["row"]
        if "skipped" in res:
            print("%-22s %-10s %-9s %-9s %8s  skip (%s)" % (row.label(), row.fault or "none", "-", "-", "-", res["skipped"]))
            continue
        want_code, want_attempts, _ = c.expected(row)
        exit_text = "%s" % res["code"] if res["code"] == want_code else "%s/%s" % (res["code"], want_code)
        att = "-" if res["attempts"] is None else (
            "%s" % res["attempts"] if res["attempts"] == want_attempts else "%s/%s" % (res["attempts"], want_attempts))
        fault = row.fault or "none"
        if row.tls == "right":
            fault = "none/tls"
        print("%-22s %-10s %-9s %-9s %8.1f  %s" % (row.label(), fault, exit_text, att, res["seconds"],
                                                "FAIL" if res["problems"] else "ok"))
    if args.sentences:
        print()
        for res in results:
            if "skipped" not in res:
                print("%s %s: %s" % (res["row"].label(), res["row"].fault or "none", sentence_of(res)))
    for res in failed:
        print("FAIL %s %s: %s\n     sentence: %s" % (res["row"].label(), res["row"].fault or "none",
                                                    "; ".join(res["problems"]), sentence_of(res)))
    print("network_faults: %d rows, %d failed, %d skipped, %.0f s" % (
        len(results), len(failed), sum(1 for r in results if "skipped" in r), time.monotonic() - started))
    if failed:
        keep.mkdir(parents=True, exist_ok=True)
        for res in failed:
            if res["dir"].exists():
                shutil.move(str(res["dir"]), str(keep / res["dir"].name))
        print("network_faults: failing rows' logs kept in %s" % keep)
    for p in work.iterdir():
        if p != keep:
            shutil.rmtree(p, ignore_errors=True)
    if keep.parent != work or not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def weight(row):
    """A guess at how long a row runs: whole packages extracted weigh most."""
    if row.fault is None or row.fault in ONCE:
        return 3
    if row.path in (".deb", "URL") and row.fault not in ("loop", "pingpong", "html"):
        return 2
    return 1 if row.path in (".deb", "URL", ".rpm", "blob") else 0


def sentence_of(res):
    """The row's final sentence: the termination log, else the last log line."""
    if "sentence" in res:
        return res["sentence"]
    term = res["dir"] / "termination-log"
    if term.exists() and term.read_text().strip():
        return term.read_text().strip()
    log = res["dir"] / "init-modules.log"
    if log.exists():
        lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
        return lines[-1][:300] if lines else ""
    return ""


if __name__ == "__main__":
    sys.exit(main())
