#!/usr/bin/env python3
"""Volume-fault campaign: each volume-writing job (init-modules, kmod-builder, seed-data's first
seed and its merge) runs on a volume that fails under it, for real: a tmpfs of the job's volume
that is read-only, or that fills up in the middle of the run. Each row checks the documented
exit code (73) and sentence, that the volume is exactly as it was before the run (nothing
half-visible, no operator file touched), and that a rerun once the fault is gone (remounted
writable, or larger) exits 0 and leaves what an uninterrupted run leaves.

  volume_faults.py --build DIR --fixtures DIR [--only NAME]...

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
SENTENCE = {"read-only": "Read-only file system", "full": "No space left on device"}


def private_mounts():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) (needs root)")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)


def used_bytes(path):
    return int(subprocess.run(["du", "-s", "-B1", str(path)], check=True, capture_output=True, text=True).stdout.split()[0])


def volume_name(job):
    return "data" if isinstance(job, campaign.SeedData) else "vol"


def row(job, fault, reference, base):
    """One job on one fault. Returns (exit code, sentence, problems)."""
    d = base / ("%s.%s" % (job.name.replace(" ", "_"), fault))
    prep = base / ("%s.%s.prep" % (job.name.replace(" ", "_"), fault))
    d.mkdir()
    prep.mkdir()
    job.prepare(prep)
    name = volume_name(job)
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
        if code != 73:
            problems.append("exit %s, not 73" % code)
        if SENTENCE[fault] not in sentence:
            problems.append("the last line does not say '%s'" % SENTENCE[fault])
        if job.state(d) != before:
            problems.append("the volume changed")
        problems += job.check_interrupted(d, before, reference)
        # The fault gone: writable, and room enough.
        subprocess.run(["mount", "-o", "remount,rw,size=2g", str(vol)], check=True)
        rerun = campaign.Run(job.argv(d), d.parent / (d.name + ".rerun.log"))
        rcode = rerun.wait(900)
        if rcode != 0:
            problems.append("the rerun exited %s: %s" % (rcode, rerun.last_line()))
        elif job.state(d) != reference:
            problems.append("the rerun left another state than an uninterrupted run")
        else:
            problems += job.check_done(d)
        return code, sentence, problems
    finally:
        subprocess.run(["umount", "-l", str(vol)], check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--only", action="append", default=[])
    args = ap.parse_args()
    private_mounts()
    work = Path(tempfile.mkdtemp(prefix="kmodkit-volume-faults."))
    rows = []
    failed = 0
    try:
        for job in campaign.jobs(Path(args.build), Path(args.fixtures), work, args.only):
            job.setup()
            try:
                reference = job.reference_state()
                for fault in ("read-only", "full"):
                    started = time.monotonic()
                    code, sentence, problems = row(job, fault, reference, job.work)
                    rows.append((job.name, fault, code, time.monotonic() - started, problems, sentence))
                    failed += 1 if problems else 0
            finally:
                job.teardown()
    finally:
        print("%-24s %-10s %5s %8s  %s" % ("job", "fault", "exit", "time (s)", "result"))
        for name, fault, code, seconds, problems, sentence in rows:
            print("%-24s %-10s %5s %8.1f  %s" % (name, fault, code, seconds, "ok" if not problems else "FAIL: " + "; ".join(problems)))
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
