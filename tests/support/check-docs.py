#!/usr/bin/env python3
"""Checks that the project's documents stay true to the project.

  check-docs.py links REPO
      Every relative link in every Markdown file of the repository leads to a file or directory
      inside it (and to a heading of it, when it names one), and no document names ../shared,
      a place outside the repository.
  check-docs.py options README BINARY [SUBCOMMAND ...]
      The README's option tables (rows starting with "| `--") list exactly the options that
      `BINARY --help` (and `BINARY SUBCOMMAND --help` for each subcommand given) prints, less the
      ones every binary has (--help, --version, --log-format, --log-level).

Prints each discrepancy on a line of its own and exits 1 when there is any.
"""
import os
import re
import subprocess
import sys

COMMON = {"--help", "--version", "--log-format", "--log-level"}
SKIP_DIRS = {".git", "build", "node_modules"}


def markdown_files(repo):
    for root, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith("demo-")]
        for f in files:
            if f.endswith(".md"):
                yield os.path.join(root, f)


def anchors(path):
    """The anchors GitHub makes for a Markdown file's headings."""
    found = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^#+\s+(.*?)\s*$", line)
            if m:
                slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
                found.add(slug)
    return found


def check_links(repo):
    repo = os.path.realpath(repo)
    problems = []
    link = re.compile(r"\]\(([^)\s]+)\)")
    outside = re.compile(r"\.\./shared\b")
    for path in markdown_files(repo):
        rel = os.path.relpath(path, repo)
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if outside.search(line):
                    problems.append(f"{rel}:{n}: names ../shared, which is outside the repository")
                for target in link.findall(line):
                    if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                        continue
                    file_part = target.split("#", 1)[0]
                    resolved = os.path.realpath(os.path.join(os.path.dirname(path), file_part))
                    if not (resolved == repo or resolved.startswith(repo + os.sep)):
                        problems.append(f"{rel}:{n}: link {target} leads outside the repository")
                    elif not os.path.exists(resolved):
                        problems.append(f"{rel}:{n}: link {target} leads nowhere")
                    elif "#" in target and resolved.endswith(".md") and target.split("#", 1)[1] not in anchors(resolved):
                        problems.append(f"{rel}:{n}: link {target}: no such heading")
    return problems


def help_options(binary, subcommands):
    found = set()
    for args in [[]] + [[s] for s in subcommands]:
        out = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{binary} {' '.join(args)} --help exited {out.returncode}")
        found |= set(re.findall(r"^\s+(?:-\w,)?(--[a-z0-9-]+)", out.stdout, re.M))
    return found - COMMON


def readme_options(readme):
    with open(readme, encoding="utf-8") as f:
        return set(re.findall(r"^\| `(--[a-z0-9-]+)", f.read(), re.M))


def check_options(readme, binary, subcommands):
    in_help = help_options(binary, subcommands)
    in_readme = readme_options(readme)
    problems = [f"{readme}: option {o} of {os.path.basename(binary)} --help is not in its option tables"
                for o in sorted(in_help - in_readme)]
    problems += [f"{readme}: option {o} is in its option tables but not in {os.path.basename(binary)} --help"
                 for o in sorted(in_readme - in_help)]
    return problems


def main(argv):
    if len(argv) >= 3 and argv[1] == "links":
        problems = check_links(argv[2])
    elif len(argv) >= 4 and argv[1] == "options":
        problems = check_options(argv[2], argv[3], argv[4:])
    else:
        print(__doc__, file=sys.stderr)
        return 64
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
