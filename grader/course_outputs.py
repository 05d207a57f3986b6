"""The instructor's files beside a batch's gradebook, written by `grade batch` and `grade merge`:

- `class_report.html`: the class at a glance (class_summary.py, class_report.py);
- with `--roster`: `roster.json` (who matched which submission, and every submission or student
  left over), `canvas_grades.csv` and `moodle_grades.csv` (lms_exports.py);
- with `--feedback DIR` (batch only: it needs the submitted files): one page per submission.

All of it is rendered from the reports in the batch's order, so a merge of shards writes the
same files as one batch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .safe_text import one_line

CLASS_REPORT = "class_report.html"
ROSTER_FILE = "roster.json"
CANVAS_FILE = "canvas_grades.csv"
MOODLE_FILE = "moodle_grades.csv"


def add_options(parser: argparse.ArgumentParser, batch: bool) -> None:
    if batch:
        parser.add_argument("--shard-index", type=int, metavar="I", help="0-based shard index (Kubernetes, Slurm)")
        parser.add_argument("--shard-count", type=int, metavar="N", help="number of shards, with --shard-index "
                            "or --shard env")
        parser.add_argument("--feedback", type=Path, metavar="DIR",
                            help="write each student's notebook with their results as DIR/<id>.html")
    parser.add_argument("--roster", type=Path, metavar="ROSTER.csv",
                        help="match submissions to students; writes canvas_grades.csv and moodle_grades.csv")
    parser.add_argument("--roster-pattern", metavar="TEMPLATE",
                        help="where a submission names its student, e.g. 'submitted/{student_id}/*'")
    parser.add_argument("--lms-column", metavar="NAME",
                        help="the gradebook column to import into (default: the assignment's title; "
                             "Canvas also takes 'Title (assignment id)')")


def write(out: Path, reports: list[dict], ids: list[str], args, log, suffix: str = "") -> None:
    """The class report, and the roster's files when `args.roster` is set. `suffix` tells one
    assignment's files from another's in a batch that mixes them (class_report-<id>.html)."""
    from .class_report import render
    from .class_summary import summarize
    from .report import write_text_atomically

    roster = None
    if getattr(args, "roster", None):
        roster = _write_roster(out, reports, ids, args, log, suffix)
    write_text_atomically(render(summarize(reports, ids), roster), out / _named(CLASS_REPORT, suffix))


def _named(filename: str, suffix: str) -> str:
    stem, dot, extension = filename.rpartition(".")
    return f"{stem}{suffix}{dot}{extension}"


def _write_roster(out: Path, reports: list[dict], ids: list[str], args, log, suffix: str = "") -> dict:
    from .lms_exports import canvas_csv, moodle_csv
    from .report import write_json_atomically, write_text_atomically
    from .roster import load_roster, match_roster

    result = match_roster(load_roster(args.roster), reports, ids, args.roster_pattern)
    scores = {i: r["score"] for i, r in zip(ids, reports)}
    column = args.lms_column or (reports[0]["assignment"].get("title") or reports[0]["assignment"]["id"]
                                 if reports else "grade")
    points = reports[0]["max_score"] if reports else 0
    data = result.to_dict()
    roster, canvas, moodle = (out / _named(name, suffix) for name in (ROSTER_FILE, CANVAS_FILE, MOODLE_FILE))
    write_json_atomically(data, roster)
    write_text_atomically(canvas_csv(result, scores, column, points), canvas)
    write_text_atomically(moodle_csv(result, scores, column), moodle)
    print(f"roster: {len(result.matched)} students matched; {canvas} and {moodle}", file=log)
    for line in result.problems():
        print(one_line(f"roster: {line} (see {roster})"), file=log)   # names and ids are students' text
    return data


def write_feedback(folder: Path, out: Path, entries: list[tuple[str, Path]], regraded: set[str], log) -> int:
    """A page per (id, submission path) whose report is in `out`: rewritten for the ids graded
    in this run, written for the others only where the page is missing. Returns pages written."""
    from .feedback import write_feedback as write_page

    written = 0
    for identity, path in entries:
        target = folder / f"{identity}.html"
        if identity not in regraded and target.exists():
            continue
        try:
            report = json.loads((out / f"{identity}.json").read_text())
        except (OSError, ValueError):
            continue
        write_page(report, target, path)
        written += 1
    if written:
        print(f"feedback: {written} pages in {folder}", file=log)
    return written
