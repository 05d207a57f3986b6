"""Gradebook import files for Canvas and Moodle, from a roster match (roster.py) of reports.

Canvas, "Import" in the Gradebook (read against Canvas's importer, canvas-lms
app/models/gradebook_importer.rb): the header must start with ``Student`` and ``ID``; with
``SIS User ID`` and ``SIS Login ID`` next, the student columns end at ``Section``, and every
later column is an assignment, matched by ``Title (assignment id)`` or by its title (an unknown
title creates the assignment). A row whose first cell contains ``Points Possible`` gives the
assignments' points. A student row is matched by the Canvas user ID, else the SIS User ID, else
the SIS Login ID, else the name; an empty ID is allowed. Decimal commas are read as points, an
empty cell or ``-`` is no score.

Moodle, "Import" > "CSV file" in the gradebook (read against grade/import/csv/classes/
load_data.php and the "Grade import" documentation): a header row, then one row per student;
on the preview page the teacher maps one column to the user (``ID number`` to useridnumber, or
``Email address`` to useremail) and the grade column to a grade item (or a new one). A row whose
user Moodle cannot find aborts the whole import, so only students the roster matched are
written, and no extra rows (a ``Points Possible`` row would be read as a student). Grades are
plain decimals with a point.

Cells are text from the roster (names, ids): a cell that a spreadsheet would read as a formula
(``=``, ``+``, ``-``, ``@``, tab, carriage return) is prefixed with a quote (safe_text.csv_cell).
"""
from __future__ import annotations

import csv
import io

from .roster import RosterResult
from .safe_text import csv_cell

CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
MOODLE_COLUMNS = ("ID number", "Email address")


def canvas_csv(result: RosterResult, scores: dict[str, float], column: str, points: float) -> str:
    """`scores`: submission id -> total score; `column`: the Canvas assignment, e.g. its title
    or ``Title (12345)`` to name the assignment by its Canvas id."""
    rows = [[*CANVAS_COLUMNS, column], ["Points Possible", "", "", "", "", _score(points)]]
    for match in result.matched:
        s = match.student
        rows.append([s.name or s.student_id, s.canvas_user_id, s.student_id, s.sis_login_id, s.section,
                     _score(scores[match.submission_id])])
    return _csv(rows)


def moodle_csv(result: RosterResult, scores: dict[str, float], column: str) -> str:
    rows = [[*MOODLE_COLUMNS, column]]
    for match in result.matched:
        rows.append([match.student.student_id, match.student.email, _score(scores[match.submission_id])])
    return _csv(rows)


def _score(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _csv(rows: list[list[str]]) -> str:
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\r\n")
    for row in rows:
        writer.writerow([csv_cell(cell) for cell in row])
    return stream.getvalue()
