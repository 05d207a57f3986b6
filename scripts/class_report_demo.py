"""The instructor's view on a class of fixture copies: not a test, a demonstration to look at.

    python scripts/class_report_demo.py [--count 240] [--jobs 2] [--work DIR] [--screenshot PNG]

Makes `count` submissions from the fixtures (correct, partly wrong, failing, copied, renamed,
a forbidden shortcut, a hang), a roster that misses a few of them and names two students with
no submission, grades them as four shards, merges the four (the class report, the LMS files),
merges three of them (to show what a lost shard costs), and screenshots the class report in
headless Chromium.
"""
from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
RARE = {"loop_in_call.py": 2, "shortcuts.py": 3, "load_error.py": 3}   # copies of the slow or odd ones


def sources() -> list[Path]:
    conv = ROOT / "assignments" / "conv2d" / "fixtures"
    found = sorted(conv.glob("*.ipynb")) + sorted(conv.glob("*.py"))
    found += sorted((FIXTURES / "similarity").glob("*.py")) + [FIXTURES / "class_report" / "markup_in_comments.py"]
    return found


def grade(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=ROOT, capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=240)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--screenshot", type=Path, default=ROOT / "artifacts" / "class_report.png")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="class-demo-"))
    submissions = work / "submissions"
    submissions.mkdir(parents=True, exist_ok=True)
    common = args.count - sum(RARE.values())
    made = [(f"s{n:04d}_{source.name}", source) for n, source in zip(range(common), itertools.cycle(sources()))]
    rare_sources = {"loop_in_call.py": FIXTURES / "hostile" / "loop_in_call.py",
                    "shortcuts.py": FIXTURES / "hostile" / "shortcuts.py",
                    "load_error.py": FIXTURES / "class_report" / "load_error.py"}
    for name, copies in RARE.items():
        for _ in range(copies):
            made.append((f"s{len(made):04d}_{name}", rare_sources[name]))
    for name, source in made:
        shutil.copy(source, submissions / name)
    roster = work / "roster.csv"
    students = [(f"u{n:04d}", Path(name).stem) for n, (name, _) in enumerate(made) if n % 25 != 7]
    roster.write_text("student_id,name,email,submission\n" + "".join(
        f"{sid},Student {sid[1:]},{sid}@example.edu,{stem}\n" for sid, stem in students)
        + "u9998,Nobody Handedin,u9998@example.edu,\nu9999,Also Missing,u9999@example.edu,\n")
    started = time.monotonic()
    shards = [work / f"shard{k}" for k in range(1, 5)]
    for k, out in enumerate(shards, start=1):
        result = grade("batch", str(submissions), "-o", str(out), "--shard", f"{k}/4", "--jobs", str(args.jobs),
                       "--device", "cpu", "--quiet")
        if result.returncode != 0:
            sys.exit(f"shard {k}/4 failed: {result.stderr}")
        print(f"shard {k}/4 graded ({time.monotonic() - started:.0f} s so far)", flush=True)
    merged = grade("merge", *map(str, shards), "-o", str(work / "merged"), "--roster", str(roster))
    print(f"$ grade merge shard1 shard2 shard3 shard4 -o merged --roster roster.csv   (exit {merged.returncode})")
    print(merged.stderr)
    partial = grade("merge", str(shards[0]), str(shards[1]), str(shards[3]), "-o", str(work / "partial"))
    print(f"$ grade merge shard1 shard2 shard4 -o partial   (exit {partial.returncode})")
    print("\n".join(partial.stderr.splitlines()[:12]) + "\n  ...")
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import open_page

    page = open_page(work / "merged" / "class_report.html", {"height": "document.documentElement.scrollHeight"},
                     window=(1400, 900), screenshot=True)
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    args.screenshot.write_bytes(page.screenshot)
    print(f"class report: {work / 'merged' / 'class_report.html'} ({page.values['height']} px tall); "
          f"browser errors {page.errors}, requests {page.requests}; screenshot {args.screenshot}")
    print(f"{len(made)} submissions graded in {time.monotonic() - started:.0f} s; work folder {work}")


if __name__ == "__main__":
    main()
