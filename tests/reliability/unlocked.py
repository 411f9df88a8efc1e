#!/usr/bin/env python3
"""Unlocked-writer campaign: a volume whose files change under a job, because a second writer
ignores the lock. That is what two pods meet on a file system that does not pass flock()
between its clients (NFSv3 without a lock manager, some FUSE file systems): each one's lock
succeeds. It is made for real here: once the first process holds `.kmodkit/lock`, a fresh file
is renamed over that name, so the second process (started at a uniformly random moment of the
first one's run) locks another inode and both work on the volume at once. The second one's
first step removes what it takes for a killed run's leftovers (staging, build directories):
the first one's work in progress.

The lock taken, a writer removes everything in staging by renaming it aside first, and every
writer checks its staging directory (that it is still the one it made) when something fails: a
process whose work another one removed exits 75 (temporary: run again) saying so, not with
whatever the missing files caused. Each round checks that every process exits 0, or 75 with that
sentence; that the volume holds nothing
half-visible (the kill campaign's invariants: a published tree is whole, a record matches its
module, no operator file lost); and that a rerun with the fault gone (one writer) exits 0 and
leaves exactly what an uninterrupted run leaves.

  unlocked.py --build DIR --fixtures DIR [--rounds N] [--seed S] [--only NAME]...

Prints one line per job: rounds, the exit codes seen, rounds ok. Exit 1 when a round fails
(failing rounds are kept, and named).
"""
import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs as campaign  # noqa: E402

# What a writer whose staging another process removed says (core, StagingDir::explain).
REMOVED = "was removed while this run was writing it: another process changed the volume without holding its lock"


def break_lock(vol):
    """Renames a fresh file over .kmodkit/lock: whoever opens the lock from now on locks another
    inode than the holder's."""
    lock = vol / ".kmodkit/lock"
    fresh = vol / ".kmodkit/lock.unlocked-campaign"
    fresh.write_bytes(b"")
    os.rename(fresh, lock)


def message(line):
    """The sentence of a JSON log line, or the line."""
    if '"msg":"' in line:
        return line.split('"msg":"', 1)[1].rsplit('","time"', 1)[0]
    return line


def one_round(job, d, reference, rng, span, sentences):
    """Returns (codes, problems); adds the failures' sentences to `sentences` (code: sentence)."""
    job.prepare(d)
    before = job.state(d)
    vol = d / job.volume
    first = campaign.Run(job.argv(d), d / "first.log")
    # The moment the first one holds the lock (or ends without having taken it for long).
    while campaign.lock_is_free(vol / ".kmodkit/lock") and first.proc.poll() is None:
        time.sleep(0.002)
    second = None
    if first.proc.poll() is None:
        time.sleep(rng.uniform(0, span))
        if first.proc.poll() is None:
            break_lock(vol)
            second = campaign.Run(job.argv(d), d / "second.log")
    runs = [first] + ([second] if second else [])
    codes = [run.wait(1800) for run in runs]
    problems = []
    for which, run, code in zip(("the first", "the second"), runs, codes):
        line = run.last_line()
        if code != 0:
            sentences.setdefault((job.name, code), message(line))
        if code not in (0, 75):
            problems.append("%s exited %s: %s" % (which, code, line))
        elif code == 75 and REMOVED not in line:
            problems.append("%s exited 75 without saying its work was removed: %s" % (which, line))
        if run.leftovers(grace=10):
            problems.append("%s left processes running" % which)
    problems += job.check_interrupted(d, before, reference)
    # The fault gone: one writer, the lock whole.
    problems += job.rerun(d, reference, d / "rerun.log", timeout=1800)
    return codes, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--rounds", type=int, default=20, help="rounds per job (default 20)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: the time)")
    ap.add_argument("--only", action="append", default=[])
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="kmodkit-unlocked."))
    print("unlocked: %d rounds per job, seed %d, in %s" % (args.rounds, seed, work), flush=True)
    rows = []
    sentences = {}
    failed = 0
    try:
        for job in campaign.jobs(Path(args.build), Path(args.fixtures), work, args.only):
            job.setup()
            try:
                started = time.monotonic()
                reference = job.reference_state()
                # The second writer starts within the first one's run (as long as one run takes).
                span = time.monotonic() - started
                ok = 0
                seen = {}
                for r in range(args.rounds):
                    d = job.work / ("round%03d" % r)
                    d.mkdir()
                    codes, problems = one_round(job, d, reference, rng, span, sentences)
                    key = "/".join(str(c) for c in codes)
                    seen[key] = seen.get(key, 0) + 1
                    if problems:
                        print("unlocked: %s, round %d: %s (kept in %s)" % (job.name, r, "; ".join(problems), d), flush=True)
                    else:
                        ok += 1
                        shutil.rmtree(d)
                rows.append((job.name, args.rounds, ok, time.monotonic() - started, seen))
                failed += args.rounds - ok
            finally:
                job.teardown()
    finally:
        print()
        print("%-24s %7s %10s %9s  %s" % ("job", "rounds", "rounds ok", "time (s)", "exit codes (first/second: rounds)"))
        for name, rounds, ok, seconds, seen in rows:
            print("%-24s %7d %10d %9.1f  %s" % (name, rounds, ok, seconds,
                                                 ", ".join("%s: %d" % kv for kv in sorted(seen.items()))))
        print()
        for (name, code), sentence in sorted(sentences.items()):
            print("%s, exit %s: %s" % (name, code, sentence))
        if not failed:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
