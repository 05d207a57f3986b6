"""Batch throughput benchmark (issue 4): not a test, a measurement to quote.

    python scripts/bench_batch.py [--count 200] [--jobs 2] [--device cpu] [--fixtures DIR]

Grades `count` submissions (copies of the Conv2d fixtures, or of DIR's: correct, partly wrong and
failing, notebooks and modules) with `grade batch`, then times `jupyter nbconvert --execute` of the
example notebook in the same run, then the per-submission overhead with submissions whose
classes return at once.
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


def timed(command: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, **kwargs)
    except FileNotFoundError as error:  # no jupyter on a bare GPU image
        result = subprocess.CompletedProcess(command, 127, "", str(error))
    return time.monotonic() - started, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fixtures", type=Path, default=ROOT / "assignments" / "conv2d" / "fixtures",
                        help="the submissions to copy (the same folder makes two versions comparable)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    sources = sorted(args.fixtures.glob("*.ipynb")) + sorted(args.fixtures.glob("*.py"))
    submissions = work / "submissions"
    submissions.mkdir()
    for number, source in zip(range(args.count), itertools.cycle(sources)):
        shutil.copy(source, submissions / f"s{number:04d}_{source.name}")
    grade = [sys.executable, "-m", "grader", "batch"]
    seconds, result = timed([*grade, str(submissions), "-o", str(work / "reports"), "--jobs", str(args.jobs),
                             "--device", args.device, "--quiet"])
    if result.returncode != 0:
        sys.exit(f"batch failed: {result.stderr}")
    reports = len([p for p in (work / "reports").glob("s*.json") if p.name != "summary.json"])
    notebook = work / "example.ipynb"
    shutil.copy(ROOT / "assignments" / "conv2d" / "example" / "submission.ipynb", notebook)
    nb_seconds, nb = timed(["jupyter", "nbconvert", "--to", "notebook", "--execute", str(notebook),
                            "--output", str(work / "executed.ipynb")])
    instant = work / "instant"
    instant.mkdir()
    for number in range(20):
        shutil.copy(FIXTURES / "batch" / "instant.py", instant / f"i{number:02d}.py")
    one_seconds, _ = timed([*grade, str(instant / "i00.py"), "-o", str(work / "one"), "--jobs", "1",
                            "--device", args.device, "--quiet"])
    twenty_seconds, _ = timed([*grade, str(instant), "-o", str(work / "twenty"), "--jobs", "1",
                               "--device", args.device, "--quiet"])
    per_submission = (twenty_seconds - one_seconds) / 19
    print(f"submissions graded:          {reports} of {args.count} ({len(sources)} distinct fixtures), "
          f"--jobs {args.jobs}, --device {args.device}")
    print(f"batch wall time:             {seconds:.1f} s")
    print(f"throughput:                  {60 * reports / seconds:.1f} submissions/minute")
    if nb.returncode == 0:
        print(f"nbconvert --execute (1 nb):  {nb_seconds:.2f} s; batch time per submission "
              f"{seconds / reports:.2f} s; ratio {nb_seconds / (seconds / reports):.1f}x")
    else:
        print(f"nbconvert --execute failed: {nb.stderr.strip().splitlines()[-1:]}")
    print(f"overhead per submission:     {per_submission:.3f} s (instant classes, --jobs 1: "
          f"1 submission {one_seconds:.2f} s, 20 submissions {twenty_seconds:.2f} s)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
