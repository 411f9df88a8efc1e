#!/usr/bin/env python3
"""The phases of the init containers of one boot of the pod test, from its console (a file that
tests/pod/pod-test.sh keeps with KMODKIT_POD_CONSOLES): each binary's JSON log lines carry their
time, so the seconds between the lines that start and end a phase are that phase's.
    bench/pod-phases.py CONSOLE.txt      prints "PHASE SECONDS" lines; a phase whose lines are
                                         missing is left out
    bench/pod-phases.py --names          the phases' names, in order"""
import datetime
import json
import sys

# (phase, the loggers of its container (a name, or a prefix ending in "."), the line that starts it
# or "" for the container's first line, the line that ends it)
INIT = ("init-modules", "init.", "progress")
PHASES = [
    # volume, host and kheaders asked in turn (each says it has no tree)
    ("init-modules:other-sources", INIT, "", "source kheaders:"),
    # the apt source: indexes, the three header packages downloaded and extracted as they
    # arrive, the node's modules tree copied from the host mount beside them
    ("init-modules:apt-headers-and-modules-tree", INIT, "source kheaders:", "source apt: complete tree"),
    # the tree's fixups, manifest, fsync and the rename that publishes it
    ("init-modules:publish", INIT, "source apt: complete tree", " ready in "),
    ("kmod-builder:prepare", ("kmod-builder",), "", ": building against "),
    ("kmod-builder:compile", ("kmod-builder",), ": building against ", ": built in "),
    ("kmod-builder:sign-and-cache", ("kmod-builder",), ": built in ", ": signed with "),
    ("kmod-builder:install-and-depmod", ("kmod-builder",), ": signed with ", " built, "),
]


def lines(path):
    out = []
    with open(path, errors="replace") as f:
        for text in f:
            start = text.find('{"level"')
            if start < 0:
                continue
            try:
                rec = json.loads(text[start:])
                when = datetime.datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).timestamp()
            except (ValueError, KeyError):
                continue
            out.append((rec.get("logger", ""), rec.get("msg", ""), when))
    return out


def main():
    if sys.argv[1] == "--names":
        print("\n".join(p[0] for p in PHASES))
        return
    recs = lines(sys.argv[1])
    for phase, loggers, begin, end in PHASES:
        # The first line that starts the phase, then the first that ends it after it (the load
        # and bind steps, which log as kmod-builder too, come after the build's last line).
        mine = [r for r in recs if any(r[0] == n or (n.endswith(".") and r[0].startswith(n)) for n in loggers)]
        t0 = t1 = None
        for _, msg, when in mine:
            if t0 is None and (begin == "" or begin in msg):
                t0 = when
            elif t0 is not None and end in msg:
                t1 = when
                break
        if t0 is not None and t1 is not None:
            print(f"{phase} {t1 - t0:.2f}")


if __name__ == "__main__":
    main()
