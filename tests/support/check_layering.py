#!/usr/bin/env python3
"""The layering rule in the sources (docs/ARCHITECTURE.md, "Layering of the code"): no file of core/ or of a
binary's directory includes a header that lives in another binary's src/.

An #include is resolved as the compiler finds it: a quoted one beside the including file first,
then in the file's own area (its src/, and core/include), and only then in another binary's src/;
what resolves outside the file's own area and core's headers is reported. Headers found nowhere
(the system's, third-party, generated) are not ours and pass.

Usage: check_layering.py SOURCE_DIR; prints each offending include, exits 1 when there is one.
"""
import re
import sys
from pathlib import Path

BINARIES = ["init", "kmod-builder", "seed-data", "firewall"]
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]')
SUFFIXES = {".cpp", ".hpp", ".h", ".in"}


def main() -> int:
    root = Path(sys.argv[1]).resolve()
    allowed_everywhere = root / "core" / "include"
    found = []
    for area in ["core"] + BINARIES:
        own = root / area
        for path in sorted(p for p in own.rglob("*") if p.suffix in SUFFIXES and p.is_file()):
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                header = m.group(2)
                candidates = [path.parent / header] if m.group(1) == '"' else []
                candidates += [own / "src" / header, allowed_everywhere / header]
                candidates += [root / other / "src" / header for other in BINARIES]
                resolved = next((c.resolve() for c in candidates if c.is_file()), None)
                if resolved is None or not resolved.is_relative_to(root):
                    continue
                if resolved.is_relative_to(own) or resolved.is_relative_to(allowed_everywhere):
                    continue
                found.append(f"{path.relative_to(root)}:{number}: includes {resolved.relative_to(root)}, another binary's header")
    for line in found:
        print(line)
    if found:
        print("a binary's sources include only core's headers and their own (docs/ARCHITECTURE.md, Layering): move what they share into core/")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
