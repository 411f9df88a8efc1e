#!/usr/bin/env python3
"""Race campaign: PROCS processes of each volume-writing job (init-modules, kmod-builder,
seed-data's first seed and its merge) started at once on one fresh volume, ROUNDS times. Every
round, all must exit 0, exactly one must do the work (the others find it done: their last line
says so), and the volume must hold exactly what one uninterrupted run leaves.

  races.py --build DIR --fixtures DIR [--procs 3,10] [--rounds N] [--only NAME]...

Prints one line per job and process count: rounds, rounds ok, and the ways a round failed.
Exit 0 when every round was ok, 1 otherwise (failing rounds are kept, and named).
"""
import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs as campaign  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--procs", default="3,10", help="process counts, comma-separated (default 3,10)")
    ap.add_argument("--rounds", type=int, default=50, help="rounds per job and count (default 50)")
    ap.add_argument("--only", action="append", default=[])
    args = ap.parse_args()
    counts = [int(c) for c in args.procs.split(",")]
    work = Path(tempfile.mkdtemp(prefix="kmodkit-races."))
    print("races: %s processes, %d rounds each, in %s" % ("/".join(map(str, counts)), args.rounds, work), flush=True)
    rows = []
    failed = 0
    try:
        for job in campaign.jobs(Path(args.build), Path(args.fixtures), work, args.only):
            job.setup()
            try:
                reference = job.reference_state()
                for n in counts:
                    ok = 0
                    reasons = {}
                    started = time.monotonic()
                    for r in range(args.rounds):
                        d = job.work / ("n%d.round%03d" % (n, r))
                        d.mkdir()
                        job.prepare(d)
                        runs = [campaign.Run(job.argv(d), d / ("p%02d.log" % i)) for i in range(n)]
                        codes = [run.wait(1800) for run in runs]
                        problems = []
                        if any(c != 0 for c in codes):
                            problems.append("exit codes %s" % codes)
                        workers = sum(1 for run in runs if job.did_work in run.last_line())
                        idle = sum(1 for run in runs if job.found_done in run.last_line())
                        if workers != 1 or idle != n - 1:
                            problems.append("%d did the work and %d found it done" % (workers, idle))
                        if job.state(d) != reference:
                            problems.append("the volume differs from an uninterrupted run's")
                        problems += job.check_done(d)
                        for run in runs:
                            if run.leftovers(grace=5):
                                problems.append("processes left running")
                        if problems:
                            for p in problems:
                                key = p.split(" [")[0] if p.startswith("exit codes") else p
                                reasons[key] = reasons.get(key, 0) + 1
                            print("races: %s, %d at once, round %d: %s (kept in %s)" % (job.name, n, r, "; ".join(problems), d),
                                  flush=True)
                        else:
                            ok += 1
                            shutil.rmtree(d)
                    rows.append((job.name, n, args.rounds, ok, time.monotonic() - started, reasons))
                    failed += args.rounds - ok
            finally:
                job.teardown()
    finally:
        print()
        print("%-24s %5s %7s %10s %9s  %s" % ("job", "procs", "rounds", "rounds ok", "time (s)", "failures"))
        for name, n, rounds, ok, seconds, reasons in rows:
            print("%-24s %5d %7d %10d %9.1f  %s" % (name, n, rounds, ok, seconds,
                                                     "; ".join("%s: %d" % kv for kv in reasons.items()) or "none"))
        if not failed:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
