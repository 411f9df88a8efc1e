#!/usr/bin/env python3
"""Volume-fault campaign: each volume-writing job (init-modules, kmod-builder, seed-data's first
seed and its merge) runs on a volume that fails under it, for real: a tmpfs of the job's volume
that is read-only, or that fills up in the middle of the run; and, with --eio-fs, a FUSE
passthrough of the volume whose file reads fail with EIO (tests/support/eio_fs.cpp: a disk whose
medium went bad). Each row checks the documented exit code (73; 74 for EIO, never "missing") and
sentence, that nothing is half-visible (read-only and full: the volume exactly as it was; EIO:
the kill campaign's invariants, no operator file touched), and that a rerun once the fault is
gone (remounted writable, or larger, or unmounted) exits 0 and leaves what an uninterrupted run
leaves. A job that reads nothing from its volume (a first seed) meets no EIO: it must exit 0
with exactly its work done.

  volume_faults.py --build DIR --fixtures DIR [--eio-fs PATH] [--only NAME]...

The campaign runs in a mount namespace of its own (unshare(CLONE_NEWNS), mounts private): its
tmpfs mounts are seen by nothing else and go away with it. Needs root. Prints a table; exit 1
when a row fails.
"""
import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs as campaign  # noqa: E402

CLONE_NEWNS = 0x00020000

# How much room each job's volume is given beyond what it holds before the run, for the "full"
# fault: less than the run writes, so the volume fills up in the middle of it.
ROOM = {"init-modules": 8 << 20, "kmod-builder": 32 << 10, "seed-data (first seed)": 2 << 20,
        "seed-data (merge)": 256 << 10}
SENTENCE = {"read-only": "Read-only file system", "full": "No space left on device", "eio": "Input/output error"}
# The code each fault's run exits with: the volume cannot be written (73); a read that failed is
# the input missing (66) where the job reads what it needs from the volume.
CODE = {"read-only": {73}, "full": {73}, "eio": {74}}


def private_mounts():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) (needs root)")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)


def used_bytes(path):
    return int(subprocess.run(["du", "-s", "-B1", str(path)], check=True, capture_output=True, text=True).stdout.split()[0])


def row(job, fault, reference, base):
    """One job on one fault. Returns (exit code, sentence, problems)."""
    d = base / ("%s.%s" % (job.name.replace(" ", "_"), fault))
    prep = base / ("%s.%s.prep" % (job.name.replace(" ", "_"), fault))
    d.mkdir()
    prep.mkdir()
    job.prepare(prep)
    name = job.volume
    vol = d / name
    vol.mkdir()
    # Room for the copy first; then, for "full", shrunk to what the copy takes plus ROOM.
    size = 2 * used_bytes(prep / name) + (64 << 20)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,nr_inodes=400k" % size, "kmodkit-fault", str(vol)], check=True)
    problems = []
    try:
        subprocess.run(["cp", "-a", str(prep) + "/.", str(d)], check=True)
        shutil.rmtree(prep)
        if fault == "full":
            st = os.statvfs(vol)
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            subprocess.run(["mount", "-o", "remount,size=%d" % (used + ROOM[job.name] + 4096), str(vol)], check=True)
        if fault == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(vol)], check=True)
        before = job.state(d)
        run = campaign.Run(job.argv(d), d.parent / (d.name + ".log"))
        code = run.wait(600)
        sentence = run.last_line()
        if code not in CODE[fault]:
            problems.append("exit %s, not %s" % (code, " or ".join(map(str, sorted(CODE[fault])))))
        if SENTENCE[fault] not in sentence:
            problems.append("the last line does not say '%s'" % SENTENCE[fault])
        if job.state(d) != before:
            problems.append("the volume changed")
        problems += job.check_interrupted(d, before, reference)
        # The fault gone: writable, and room enough.
        subprocess.run(["mount", "-o", "remount,rw,size=2g", str(vol)], check=True)
        problems += job.rerun(d, reference, d.parent / (d.name + ".rerun.log"))
        return code, sentence, problems
    finally:
        subprocess.run(["umount", "-l", str(vol)], check=False)


# Which reads fail, by fault: every file's; for kmod-builder also only the headers' (.h), so that
# the failure comes from the compiler reading them rather than from the first file it reads.
EIO = {"eio": ".", "eio (.h)": r"\.h$"}


def eio_faults(job):
    return ["eio"] + (["eio (.h)"] if isinstance(job, campaign.KmodBuilder) else [])


def row_eio(job, fault, reference, base, eio_fs):
    """One job on a volume whose file reads (those EIO[fault] matches) fail with EIO (a FUSE
    passthrough of it, eio_fs). Returns (exit code, sentence, problems)."""
    d = base / ("%s.%s" % (job.name.replace(" ", "_"), fault.replace(" ", "_").replace("(", "").replace(")", "")))
    d.mkdir()
    job.prepare(d)
    before = job.state(d)
    name = job.volume
    vol, real = d / name, d / (name + ".real")
    os.rename(vol, real)
    vol.mkdir()
    fs = subprocess.Popen([eio_fs, str(real), str(vol), "--eio-read", EIO[fault]], stdout=subprocess.DEVNULL,
                          stderr=open(d / "eio_fs.log", "wb"))
    problems = []
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(vol):
            if fs.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("eio_fs did not mount %s (see %s)" % (vol, d / "eio_fs.log"))
            time.sleep(0.02)
        run = campaign.Run(job.argv(d), d.parent / (d.name + ".log"))
        code = run.wait(600)
        sentence = run.last_line()
    finally:
        fs.terminate()
        try:
            fs.wait(10)
        except subprocess.TimeoutExpired:
            fs.kill()
            fs.wait()
        subprocess.run(["umount", "-l", str(vol)], check=False, stderr=subprocess.DEVNULL)
    vol.rmdir()
    os.rename(real, vol)
    if code == 0:
        # A job that reads nothing from the volume (a first seed) meets no fault: then it must
        # have done exactly its work.
        if job.state(d) != reference:
            problems.append("exit 0, and the volume is not what an uninterrupted run leaves")
    else:
        if code not in CODE["eio"]:
            problems.append("exit %s, not %s" % (code, " or ".join(map(str, sorted(CODE["eio"])))))
        if SENTENCE["eio"] not in sentence:
            problems.append("the last line does not say '%s'" % SENTENCE["eio"])
    problems += job.check_interrupted(d, before, reference)
    problems += job.rerun(d, reference, d.parent / (d.name + ".rerun.log"))
    return code, sentence, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--eio-fs", help="tests/support/eio_fs (built with libfuse3): adds the EIO fault")
    args = ap.parse_args()
    if args.eio_fs and not os.path.exists("/dev/fuse"):
        print("volume_faults: this machine has no /dev/fuse: the EIO rows are left out", flush=True)
        args.eio_fs = None
    private_mounts()
    work = Path(tempfile.mkdtemp(prefix="kmodkit-volume-faults."))
    rows = []
    failed = 0
    try:
        for job in campaign.jobs(Path(args.build), Path(args.fixtures), work, args.only):
            job.setup()
            try:
                reference = job.reference_state()
                for fault in ["read-only", "full"] + (eio_faults(job) if args.eio_fs else []):
                    started = time.monotonic()
                    if fault.startswith("eio"):
                        code, sentence, problems = row_eio(job, fault, reference, job.work, args.eio_fs)
                    else:
                        code, sentence, problems = row(job, fault, reference, job.work)
                    rows.append((job.name, fault, code, time.monotonic() - started, problems, sentence))
                    failed += 1 if problems else 0
            finally:
                job.teardown()
    finally:
        print("%-24s %-9s %5s %8s  %s" % ("job", "fault", "exit", "time (s)", "result"))
        for name, fault, code, seconds, problems, sentence in rows:
            print("%-24s %-9s %5s %8.1f  %s" % (name, fault, code, seconds, "ok" if not problems else "FAIL: " + "; ".join(problems)))
        print()
        for name, fault, code, seconds, problems, sentence in rows:
            msg = sentence
            if '"msg":"' in msg:
                msg = msg.split('"msg":"', 1)[1].rsplit('","time"', 1)[0]
            print("%s, %s: %s" % (name, fault, msg))
        if not failed:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("volume_faults: failing rows kept in %s" % work)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
