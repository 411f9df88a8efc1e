"""The three volume-writing jobs of kmodkit's reliability campaigns, each run for real on a private
volume: init-modules laying a kernel's headers from the apt fixture served over HTTP,
kmod-builder building, signing and installing the test module on the kernel volume fixture,
and seed-data seeding an image's default tree and merging a newer image's.

Each job knows how to make a fresh volume for one run (`prepare`), the command, the invariants
that must hold whatever moment the run was killed at (`check_interrupted`: nothing partial
visible to a reader, the recorded digests match the files, no operator file lost or changed,
the lock released), and the state an uninterrupted run leaves (`state`), which a rerun must
reach exactly. Used by kill9.py and races.py; nothing here kills anything it did not start.
"""
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUPPORT = HERE.parent / "support"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_state(root, skip=()):
    """{relative path: ("d",) | ("l", target) | ("f", sha256, mode)} of everything under root,
    not following links, leaving out the top-level names in `skip`."""
    out = {}
    root = Path(root)
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        for d in list(dirnames):
            p = Path(dirpath) / d
            rel = str(rel_dir / d)
            if p.is_symlink():
                out[rel] = ("l", os.readlink(p))
                dirnames.remove(d)
            else:
                out[rel] = ("d",)
        for f in filenames:
            p = Path(dirpath) / f
            rel = str(rel_dir / f)
            if p.is_symlink():
                out[rel] = ("l", os.readlink(p))
            else:
                out[rel] = ("f", sha256_file(p), os.stat(p).st_mode & 0o7777)
    return out


def lock_is_free(path):
    """Whether nobody holds a flock() on `path` (a missing file holds no lock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def session_pids(sid):
    """The processes of the session `sid` (a run's own session: it and everything it started)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            pids.append(int(entry))
    return pids


class Run:
    """One started job: its own session (so a kill takes its children, as a pod kill does)."""

    def __init__(self, argv, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env)

    def kill(self):
        """SIGKILL to the run's process group, by the PID this object started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout=None):
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
            code = "timeout"
        self.seconds = time.monotonic() - self.started
        self.log.close()
        return code

    def leftovers(self, grace=30):
        """The run's processes still alive `grace` seconds after it ended (a compiler finishing
        its file may take a moment), then ended by their PIDs."""
        deadline = time.monotonic() + grace
        while session_pids(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = session_pids(self.proc.pid)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left

    def output(self):
        return Path(self.log_path).read_text(errors="replace")

    def last_line(self):
        lines = [line for line in self.output().splitlines() if line.strip()]
        return lines[-1] if lines else ""


class HttpServer:
    """tests/support/http_server.py serving `root` on 127.0.0.1, stopped by its PID."""

    def __init__(self, root, work):
        port_file = Path(work) / "http-port"
        self.log = open(Path(work) / "http-server.log", "wb")
        self.proc = subprocess.Popen([sys.executable, str(SUPPORT / "http_server.py"), str(root), "--port-file",
                                      str(port_file)], stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            if self.proc.poll() is not None:
                raise RuntimeError("the HTTP server for the apt fixture exited")
            time.sleep(0.05)
        else:
            raise RuntimeError("the HTTP server for the apt fixture wrote no port")
        self.url = "http://127.0.0.1:" + port_file.read_text().strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


class Job:
    name = ""
    # The job's volume: the directory of d that prepare() makes and argv() names.
    volume = "vol"
    # The sentence of the last line of a run that did the work, and of one that found it done.
    did_work = ""
    found_done = ""

    def __init__(self, build, fixtures, work):
        self.build = Path(build)
        self.fixtures = Path(fixtures)
        self.work = Path(work)

    @property
    def kver(self):
        """The fixtures' kernel release."""
        return (self.fixtures / "apt-repo/kernel-release").read_text().strip()

    def setup(self):
        """What every run shares (a server, a key, image trees), made once."""

    def teardown(self):
        pass

    def prepare(self, d):
        """A fresh volume in the directory d for one run."""
        raise NotImplementedError

    def reference_state(self):
        """What one uninterrupted run on a fresh volume leaves (state()); raises when it fails."""
        ref = self.work / "reference"
        ref.mkdir()
        self.prepare(ref)
        run = Run(self.argv(ref), self.work / "reference.log")
        if run.wait(900) != 0:
            raise RuntimeError("%s: an uninterrupted run failed: %s" % (self.name, run.last_line()))
        state = self.state(ref)
        shutil.rmtree(ref)
        return state

    def argv(self, d):
        raise NotImplementedError

    def rerun(self, d, reference, log_path, timeout=900):
        """Runs the job again on d once a fault is gone: problems (sentences) unless it exits 0
        and leaves exactly `reference` with nothing behind."""
        run = Run(self.argv(d), log_path)
        code = run.wait(timeout)
        if code != 0:
            return ["the rerun exited %s: %s" % (code, run.last_line())]
        if self.state(d) != reference:
            return ["the rerun left another state than an uninterrupted run"]
        return self.check_done(d)

    def state(self, d):
        """What an uninterrupted run leaves, compared between runs (no times, no random names)."""
        raise NotImplementedError

    def check_interrupted(self, d, before, reference):
        """Invariant violations (sentences) of the volume in d after a killed run; `before` is
        state(d) as prepare() left it, `reference` what an uninterrupted run leaves."""
        raise NotImplementedError

    def check_done(self, d):
        """Violations of a volume a run completed on: nothing left behind."""
        return []

    def corrupt(self, d):
        """Makes the completed volume in d one that check_interrupted must refuse (that the
        checks can fail is checked before every campaign)."""
        raise NotImplementedError


class InitModules(Job):
    name = "init-modules"
    did_work = "ready in"
    found_done = "already on"

    def setup(self):
        self.server = HttpServer(self.fixtures / "apt-repo", self.work)

    def teardown(self):
        self.server.stop()

    def prepare(self, d):
        (d / "vol").mkdir(parents=True)

    def argv(self, d):
        return [str(self.build / "init/init-modules"), "--kernel-release", self.kver, "--volume", str(d / "vol"),
                "--host-root", str(d / "no-host"), "--sysfs", str(d / "no-sys"), "--sources", "volume,apt", "--repo",
                "deb [trusted=yes] " + self.server.url + " stable main", "--retry-delay", "0.05",
                "--log-format", "json"]

    def headers(self, d):
        return d / "vol/usr/src" / ("linux-headers-" + self.kver)

    def state(self, d):
        manifest = d / "vol/.kmodkit/kernels" / (self.kver + ".json")
        if not manifest.exists():
            return {"manifest": None}
        m = json.loads(manifest.read_text())
        return {"manifest": {k: m.get(k) for k in ("kernel_release", "headers", "modules", "files", "bytes", "source")},
                "packages": [(p["name"], p["sha256"]) for p in m.get("packages", [])],
                "headers": tree_state(self.headers(d))}

    def check_interrupted(self, d, before, reference):
        bad = []
        vol = d / "vol"
        if not lock_is_free(vol / ".kmodkit/lock"):
            bad.append("the volume's lock is still held")
        manifest = vol / ".kmodkit/kernels" / (self.kver + ".json")
        visible = os.path.lexists(self.headers(d))
        if not manifest.exists():
            if visible:
                bad.append("the headers are visible at " + str(self.headers(d)) + " without a manifest")
            return bad
        try:
            m = json.loads(manifest.read_text())
        except ValueError as e:
            return bad + ["the manifest is not JSON: %s" % e]
        headers = vol / m.get("headers", "")
        if not headers.is_dir():
            bad.append("the manifest names %s, which is not a directory" % m.get("headers"))
        elif self.state(d) != reference:
            bad.append("a published tree differs from what an uninterrupted run publishes")
        return bad

    def check_done(self, d):
        bad = []
        staging = d / "vol/.kmodkit/staging"
        if staging.exists() and any(staging.iterdir()):
            bad.append("staging is not empty after a completed run: " + ", ".join(p.name for p in staging.iterdir()))
        return bad

    def corrupt(self, d):
        # The headers published without their manifest.
        (d / "vol/.kmodkit/kernels" / (self.kver + ".json")).unlink()


class KmodBuilder(Job):
    name = "kmod-builder"
    did_work = ": 1 built, 0 from the cache"
    found_done = ": 0 built, 0 from the cache, 0 prebuilt, 1 up to date"

    def setup(self):
        keys = self.work / "keys"
        keys.mkdir()
        subprocess.run(["openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "2", "-batch", "-x509",
                        "-newkey", "rsa:2048", "-subj", "/CN=kmodkit reliability key", "-keyout", str(keys / "key.pem"),
                        "-out", str(keys / "cert.pem")], check=True, capture_output=True)
        self.key = keys / "key.pem"
        self.cert = keys / "cert.pem"
        self.hello = self.work / "kmod-hello"
        shutil.copytree(SUPPORT / "kmod-hello", self.hello)

    def prepare(self, d):
        # Hard links, as the tests copy the fixture: kmod-builder renames its outputs into place
        # and never writes through the fixture's inodes.
        subprocess.run(["cp", "-al", str(self.fixtures / "kernel-volume"), str(d / "vol")], check=True)
        # Not the lock and the use records: flock() locks an inode, so hard links to the
        # fixture's would make every copy's lock one lock (and a use record's time would be
        # written through to the fixture).
        state = d / "vol/.kmodkit"
        for p in [state / "lock"] + list((state / "used").glob("*")):
            p.unlink(missing_ok=True)
        (d / "work").mkdir()

    def argv(self, d):
        return [str(self.build / "kmod-builder/kmod-builder"), "--volume", str(d / "vol"), "--kernel-release",
                self.kver, "--work-dir", str(d / "work"), "--recipe", str(self.hello), "--signing-key", str(self.key),
                "--signing-cert", str(self.cert), "--jobs", "1", "--log-format", "json"]

    def record(self, d):
        return d / "vol/.kmodkit/modules" / self.kver / "kmodkit_hello.json"

    def module(self, d):
        return d / "vol/usr/lib/modules" / self.kver / "extra/kmodkit_hello/kmodkit_hello.ko"

    def state(self, d):
        rec = self.record(d)
        if not rec.exists():
            return {"record": None}
        r = json.loads(rec.read_text())
        return {"key": r.get("key"), "modules": sorted((m.get("file"), m.get("sha256")) for m in r.get("modules", [])),
                "installed": sha256_file(self.module(d)) if self.module(d).exists() else None}

    def check_interrupted(self, d, before, reference):
        bad = []
        vol = d / "vol"
        if not lock_is_free(vol / ".kmodkit/lock"):
            bad.append("the volume's lock is still held")
        rec, ko = self.record(d), self.module(d)
        if not rec.exists():
            return bad
        try:
            r = json.loads(rec.read_text())
        except ValueError as e:
            return bad + ["the module record is not JSON: %s" % e]
        for m in r.get("modules", []):
            path = ko.parent / m.get("file", "?")
            if not path.exists():
                bad.append("the record lists %s, which is not installed" % m.get("file"))
            elif sha256_file(path) != m.get("sha256"):
                bad.append("the installed %s does not have the SHA-256 its record lists" % m.get("file"))
        if not bad and self.state(d) != reference:
            bad.append("an installed module differs from what an uninterrupted run installs")
        return bad

    def check_done(self, d):
        bad = []
        staging = d / "vol/.kmodkit/staging"
        if staging.exists() and any(staging.iterdir()):
            bad.append("staging is not empty after a completed run")
        left = [p.name for p in (d / "work").iterdir() if p.name.startswith("kmod-builder.")]
        if left:
            bad.append("build directories left in the work directory: " + ", ".join(left))
        return bad

    def corrupt(self, d):
        # An installed module that is not the one its record lists (a torn write).
        ko = self.module(d)
        data = ko.read_bytes()
        ko.unlink()
        ko.write_bytes(data[: len(data) // 2])


class SeedData(Job):
    """A merge: the volume holds image 1's tree as seed-data left it, with the operator's edits
    (one file changed, one added, one removed); image 2 changes, adds and removes files. With
    first=True the volume is empty: a first seed of image 2."""
    did_work = '"msg":"seeded '
    found_done = "nothing to do"
    volume = "data"

    def __init__(self, build, fixtures, work, first=False):
        super().__init__(build, fixtures, work)
        self.first = first
        self.name = "seed-data (first seed)" if first else "seed-data (merge)"

    def make_image(self, root, version):
        for i in range(1500):
            p = root / ("etc/conf.d/part%02d/file%04d.conf" % (i % 30, i))
            p.parent.mkdir(parents=True, exist_ok=True)
            changed = version == 2 and i % 3 == 0
            p.write_text(("# file %d of image %d\n" % (i, version if changed else 1)) + "option = %d\n" % i * (1 + i % 40))
        for i in range(8):  # a few larger files, so a run takes long enough to be killed anywhere
            p = root / ("etc/data/blob%d.bin" % i)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(hashlib.sha256(b"%d-%d" % (i, version if i % 2 else 1)).digest() * (1 << 15))
        if version == 2:
            (root / "etc/conf.d/new.conf").write_text("added by image 2\n")
            (root / "etc/conf.d/part00/file0000.conf").unlink()
        os.symlink("conf.d/part01", root / "etc/current")

    def setup(self):
        self.image1 = self.work / "image1"
        self.image2 = self.work / "image2"
        self.make_image(self.image1, 1)
        self.make_image(self.image2, 2)
        # Image 1 seeded, then the operator's edits: this is what every merge starts from.
        self.seeded = self.work / "seeded"
        (self.seeded / "data").mkdir(parents=True)
        r = subprocess.run(self.argv_for(self.seeded / "data", self.image1, "1"), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("seed-data could not seed image 1: " + r.stderr[-2000:])
        data = self.seeded / "data"
        (data / "etc/conf.d/part03/file0003.conf").write_text("# edited by the operator\n")    # image 2 changes it
        (data / "etc/conf.d/part04/file0004.conf").write_text("# edited by the operator too\n")  # image 2 keeps it
        (data / "etc/operator.conf").write_text("# the operator's own file\n")
        (data / "etc/conf.d/part05/file0005.conf").unlink()
        self.operator = {"etc/conf.d/part03/file0003.conf": "# edited by the operator\n",
                         "etc/conf.d/part04/file0004.conf": "# edited by the operator too\n",
                         "etc/operator.conf": "# the operator's own file\n"}
        # Every file content either image may put at a path.
        self.allowed = {}
        for image in (self.image1, self.image2):
            for rel, entry in tree_state(image / "etc").items():
                self.allowed.setdefault("etc/" + rel, set()).add(entry)

    def argv_for(self, data, image, version):
        return [str(self.build / "seed-data/seed-data"), "--data", str(data), "--tree", str(image / "etc") + "=etc",
                "--image-version", version, "--log-format", "json"]

    def prepare(self, d):
        if self.first:
            (d / "data").mkdir(parents=True)
        else:
            subprocess.run(["cp", "-a", str(self.seeded / "data"), str(d / "data")], check=True)

    def argv(self, d):
        return self.argv_for(d / "data", self.image2, "2")

    def state(self, d):
        data = d / "data"
        seed = data / ".kmodkit/seed.json"
        files = {}
        if seed.exists():
            s = json.loads(seed.read_text())
            files = {k: v.get("sha256") for k, v in s.get("files", {}).items()}
        return {"tree": tree_state(data, skip=(".kmodkit",)), "seed.json": files}

    def check_interrupted(self, d, before, reference):
        bad = []
        data = d / "data"
        if not lock_is_free(data / ".kmodkit/lock"):
            bad.append("the volume's lock is still held")
        now = tree_state(data, skip=(".kmodkit",))
        for rel, want in ({} if self.first else self.operator).items():
            path = data / rel
            if not path.exists() or path.read_text() != want:
                bad.append("the operator's " + rel + " was changed or lost")
        for rel, entry in now.items():
            if entry[0] == "d" or (rel in self.operator and not self.first):
                continue
            # A conflict's new default beside the operator's file, or the operator's file kept
            # beside a replaced one: whole copies of what the image or the volume had there.
            base = rel
            for suffix in (".kmodkit-new", ".kmodkit-old"):
                if rel.endswith(suffix):
                    base = rel[:-len(suffix)]
            if entry not in self.allowed.get(base, set()) and before["tree"].get(base) != entry:
                bad.append(rel + " holds what neither image nor the volume before had (a partial file?)")
        if self.first and "etc" in now:
            # A first seed publishes the tree whole, or not at all.
            whole = tree_state(self.image2 / "etc")
            got = {rel[len("etc/"):]: e for rel, e in now.items() if rel.startswith("etc/")}
            if got != whole:
                bad.append("the first seed's tree is visible but not whole (%d of %d entries)" % (len(got), len(whole)))
        seed = data / ".kmodkit/seed.json"
        if seed.exists():
            try:
                json.loads(seed.read_text())
            except ValueError as e:
                bad.append("seed.json is not JSON: %s" % e)
        return bad

    def check_done(self, d):
        staging = d / "data/.kmodkit/staging"
        if staging.exists() and any(staging.iterdir()):
            return ["staging is not empty after a completed run"]
        return []

    def corrupt(self, d):
        # A file of the image half written, where a reader finds it.
        path = d / "data/etc/conf.d/part07/file0007.conf"
        path.write_bytes(path.read_bytes()[:10])


def jobs(build, fixtures, work, only=()):
    all_jobs = [InitModules(build, fixtures, work / "init-modules"), KmodBuilder(build, fixtures, work / "kmod-builder"),
                SeedData(build, fixtures, work / "seed-first", first=True), SeedData(build, fixtures, work / "seed-merge")]
    chosen = [j for j in all_jobs if not only or any(j.name.startswith(o) for o in only)]
    for j in chosen:
        j.work.mkdir(parents=True)
    return chosen
