#!/usr/bin/env python3
"""kill -9 campaign: each volume-writing job (init-modules laying headers from a local apt
repository, kmod-builder building and installing a module, seed-data's first seed and its merge)
is started RUNS times on a fresh volume and killed with SIGKILL, with its children, at a moment
drawn uniformly from the length of an uninterrupted run. After each kill the invariants are
checked (nothing partial visible to a reader, recorded digests match the files, no operator file
lost or changed, the lock released); then the job is rerun to completion and must exit 0 and
leave exactly what an uninterrupted run leaves.

  kill9.py --build DIR --fixtures DIR [--runs N] [--seed S] [--only NAME]... [--keep DIR]

Prints one line per job: kills, invariant violations, reruns ok, and where in the run the
kills fell. Exit 0 when there was no violation and every rerun was ok, 1 otherwise (the
failing runs' volumes and logs are kept under --keep, default a temporary directory it names).
"""
import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs as campaign  # noqa: E402


def run_to_end(job, d, log, timeout=900):
    run = campaign.Run(job.argv(d), log)
    code = run.wait(timeout)
    return run, code


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="the build directory (its init/, kmod-builder/, seed-data/)")
    ap.add_argument("--fixtures", required=True, help="the test fixtures (apt-repo, kernel-volume)")
    ap.add_argument("--runs", type=int, default=20, help="kills per job (default 20)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock, printed)")
    ap.add_argument("--only", action="append", default=[], help="only the jobs whose name starts with this")
    ap.add_argument("--keep", default=None, help="where to keep failing runs (default: a temporary directory)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="kmodkit-kill9."))
    keep = Path(args.keep) if args.keep else work / "failed"
    print("kill9: seed %d, %d kills per job, in %s" % (seed, args.runs, work), flush=True)
    failures = 0
    rows = []
    try:
        for job in campaign.jobs(Path(args.build), Path(args.fixtures), work, args.only):
            job.setup()
            try:
                # The reference: three uninterrupted runs (the first warms the caches), which must
                # leave the same state; the run's length is the shortest, so every kill lands
                # inside a run.
                reference, lengths = None, []
                for r in range(3):
                    ref_dir = job.work / ("reference%d" % r)
                    ref_dir.mkdir()
                    job.prepare(ref_dir)
                    before = job.state(ref_dir)
                    run, code = run_to_end(job, ref_dir, job.work / ("reference%d.log" % r))
                    if code != 0:
                        raise RuntimeError("%s: an uninterrupted run failed (%s): %s" % (job.name, code, run.last_line()))
                    state = job.state(ref_dir)
                    if reference is not None and state != reference:
                        raise RuntimeError("%s: two uninterrupted runs left different states" % job.name)
                    reference = state
                    lengths.append(run.seconds)
                    broken = job.check_interrupted(ref_dir, before, reference)
                    if broken:
                        raise RuntimeError("%s: a completed run breaks the invariants: %s" % (job.name, broken))
                    if r == 0:
                        job.corrupt(ref_dir)
                        if not job.check_interrupted(ref_dir, before, reference):
                            raise RuntimeError("%s: the invariants do not catch a corrupted volume" % job.name)
                    shutil.rmtree(ref_dir)
                length = min(lengths)
                kills = violations = reruns_ok = 0
                moments = []
                for i in range(args.runs):
                    d = job.work / ("run%03d" % i)
                    d.mkdir()
                    job.prepare(d)
                    before = job.state(d)
                    at = rng.uniform(0, length)
                    run = campaign.Run(job.argv(d), d / "killed.log")
                    time.sleep(max(0.0, at - (time.monotonic() - run.started)))
                    run.kill()
                    code = run.wait(60)
                    if code == 0:
                        moments.append(1.0)  # it finished before the kill landed: still checked
                    else:
                        kills += 1
                        moments.append(at / length)
                    # The run's processes die with it, but not in the same instant: a child forked
                    # and not yet exec'd holds a copy of the lock's descriptor until the kernel
                    # delivers its death signal. The volume is judged once they are all gone, as
                    # the next pod would find it.
                    left = run.leftovers()
                    problems = job.check_interrupted(d, before, reference)
                    if left:
                        problems.append("processes of the killed run still ran 30 s later: %s" % left)
                    rerun, rcode = run_to_end(job, d, d / "rerun.log")
                    if rcode != 0:
                        problems.append("the rerun exited %s: %s" % (rcode, rerun.last_line()))
                    else:
                        state = job.state(d)
                        if state != reference:
                            problems.append("the rerun left another state than an uninterrupted run")
                        problems += job.check_done(d)
                        if not problems:
                            reruns_ok += 1
                    if problems:
                        violations += 1
                        print("kill9: %s run %d (killed at %.3f s of %.3f s): %s" % (job.name, i, at, length,
                                                                                   "; ".join(problems)), flush=True)
                        keep.mkdir(parents=True, exist_ok=True)
                        shutil.move(str(d), str(keep / ("%s.run%03d" % (job.name.replace(" ", "_"), i))))
                    else:
                        shutil.rmtree(d)
                early = sum(1 for m in moments if m < 1 / 3)
                late = sum(1 for m in moments if m >= 2 / 3)
                rows.append((job.name, length, kills, args.runs - kills, violations, reruns_ok, early, late))
                failures += violations + (args.runs - reruns_ok - violations)
            finally:
                job.teardown()
    finally:
        print()
        print("%-24s %9s %6s %9s %11s %9s  %s" % ("job", "run (s)", "kills", "finished", "violations", "reruns ok",
                                                  "kill moments: first/middle/last third"))
        for name, length, kills, finished, violations, ok, early, late in rows:
            middle = kills + finished - early - late
            print("%-24s %9.2f %6d %9d %11d %9s  %d/%d/%d" % (name, length, kills, finished, violations,
                                                               "%d/%d" % (ok, kills + finished), early, middle, late))
        if failures:
            print("kill9: failing runs kept in %s" % keep)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
