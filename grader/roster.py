"""Who handed in what: a course roster matched to a batch's reports.

`roster.csv` has a header row and one row per student. Columns (case and spaces ignored):
`student_id` (required: the institution's id, Canvas's "SIS User ID", Moodle's "ID number"),
and optionally `name`, `email`, `section`, `sis_login_id`, `canvas_user_id` and `submission`
(the file name, its stem, or a glob pattern such as ``*/jdoe/*.ipynb`` that picks this
student's submission). A gradebook exported from Canvas or Moodle serves as a roster too: their
column names (Student, ID, SIS User ID, SIS Login ID, Section; ID number, Email address) are
read as these.

Each submission is matched by the first of these that finds exactly one student:

1. `submission`: the roster row's own file name, stem or pattern;
2. `--roster-pattern`: a path template naming roster columns, e.g. ``submitted/{student_id}/*``
   (nbgrader's layout) or ``{sis_login_id}_*.ipynb``; ``*`` stays within a folder, ``**`` does not;
3. the notebook's metadata: a top-level metadata value equal to the student's id, login or
   email, or an author's name (nbformat's `metadata.authors`) equal to the student's name (the
   report's `submission.metadata`);
4. the file's path: the student's id, login, Canvas user id or email appears in it as a whole
   word, as in the names Canvas and Moodle give bulk downloads.

Nothing is dropped silently: submissions no student matches, submissions several students
match, students with no submission and students with several are all listed in the result
(and by `grade batch` in `roster.json` and on the terminal). A student with several
submissions gets no LMS grade until the roster's `submission` column says which one counts.

Everything is read from report dicts, so a merge matches exactly as one batch does.
"""
from __future__ import annotations

import csv
import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import UsageError

COLUMNS = ("student_id", "name", "email", "section", "sis_login_id", "canvas_user_id", "submission")
LEVELS = ("submission", "pattern", "metadata", "path")
METADATA_KEYS = 16
METADATA_CHARS = 200


@dataclass(frozen=True)
class Student:
    student_id: str
    name: str = ""
    email: str = ""
    section: str = ""
    sis_login_id: str = ""
    canvas_user_id: str = ""
    submission: str = ""

    def identifiers(self) -> tuple[str, ...]:
        """The values a notebook's metadata or a file's path may carry for this student."""
        return tuple(v for v in (self.student_id, self.sis_login_id, self.canvas_user_id, self.email) if v)


@dataclass(frozen=True)
class Match:
    student: Student
    submission_id: str
    path: str
    by: str                  # one of LEVELS


@dataclass(frozen=True)
class RosterResult:
    matched: tuple[Match, ...]                           # one per student with exactly one submission
    unmatched: tuple[tuple[str, str], ...]               # (submission id, path) no student matched
    ambiguous: tuple[tuple[str, str, tuple[str, ...]], ...]   # (id, path, student ids) several matched
    several: tuple[tuple[Student, tuple[str, ...]], ...]      # a student and their submission ids
    without_submission: tuple[Student, ...]

    def to_dict(self) -> dict:
        def student(s: Student) -> dict:
            return {"student_id": s.student_id, "name": s.name, "email": s.email}
        return {
            "matched": [{**student(m.student), "submission_id": m.submission_id, "path": m.path, "by": m.by}
                        for m in self.matched],
            "unmatched_submissions": [{"submission_id": i, "path": p} for i, p in self.unmatched],
            "ambiguous_submissions": [{"submission_id": i, "path": p, "students": list(s)}
                                      for i, p, s in self.ambiguous],
            "students_with_several_submissions": [{**student(s), "submission_ids": list(ids)}
                                                  for s, ids in self.several],
            "students_without_submission": [student(s) for s in self.without_submission],
        }

    def problems(self) -> list[str]:
        """One line per kind of problem, for the terminal."""
        lines = []
        if self.unmatched:
            lines.append(f"{len(self.unmatched)} submissions match no student: "
                         + _some(i for i, _ in self.unmatched))
        if self.ambiguous:
            lines.append(f"{len(self.ambiguous)} submissions match several students: "
                         + _some(f"{i} ({', '.join(s)})" for i, _, s in self.ambiguous))
        if self.several:
            lines.append(f"{len(self.several)} students have several submissions (not exported; name the one "
                         "that counts in the roster's submission column): "
                         + _some(f"{s.student_id} ({', '.join(ids)})" for s, ids in self.several))
        if self.without_submission:
            lines.append(f"{len(self.without_submission)} students have no submission: "
                         + _some(s.student_id for s in self.without_submission))
        return lines


def _some(values, limit: int = 8) -> str:
    values = list(values)
    return ", ".join(values[:limit]) + (f" and {len(values) - limit} more" if len(values) > limit else "")


def load_roster(path: Path) -> tuple[Student, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"--roster {str(path)!r}: {exc.strerror or exc}") from None
    reader = csv.DictReader(text.splitlines())
    header = {_column(h): h for h in reader.fieldnames or [] if h is not None}
    if "student_id" not in header:
        raise UsageError(f"--roster {str(path)!r}: no student_id column (columns: {', '.join(COLUMNS)})")
    students, seen = [], set()
    for number, row in enumerate(reader, start=2):
        values = {key: (row.get(original) or "").strip() for key, original in header.items() if key in COLUMNS}
        if not values.get("student_id"):
            if any(values.values()):
                raise UsageError(f"--roster {str(path)!r}, line {number}: empty student_id")
            continue
        if values["student_id"] in seen:
            raise UsageError(f"--roster {str(path)!r}, line {number}: student_id {values['student_id']!r} "
                             "appears twice")
        seen.add(values["student_id"])
        students.append(Student(**values))
    return tuple(students)


# The column names of the LMSs' own gradebook exports, so an export can serve as the roster:
# Canvas (Student, ID, SIS User ID, SIS Login ID, Section) and Moodle (ID number, Email address).
ALIASES = {"e_mail": "email", "email_address": "email", "student": "name", "id": "canvas_user_id",
           "sis_user_id": "student_id", "id_number": "student_id"}


def _column(name: str) -> str:
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    return ALIASES.get(key, key)


def match_roster(students: tuple[Student, ...], reports: list[dict], ids: list[str],
                 pattern: str | None = None) -> RosterResult:
    template = _template(pattern) if pattern else None
    hits: dict[str, list[str]] = {}
    by: dict[str, str] = {}
    unmatched, ambiguous = [], []
    paths = {}
    for identity, report in zip(ids, reports):
        path = report["submission"]["path"]
        paths[identity] = path
        metadata = report["submission"].get("metadata") or {}
        for level in LEVELS:
            found = [s for s in students if _matches(level, s, path, metadata, template)]
            if len(found) == 1:
                hits.setdefault(found[0].student_id, []).append(identity)
                by[identity] = level
                break
            if len(found) > 1:
                ambiguous.append((identity, path, tuple(s.student_id for s in found)))
                break
        else:
            unmatched.append((identity, path))
    matched, several, without = [], [], []
    contested = {student_id for _, _, ids in ambiguous for student_id in ids}
    for student in students:
        owned = hits.get(student.student_id, [])
        if len(owned) == 1:
            matched.append(Match(student, owned[0], paths[owned[0]], by[owned[0]]))
        elif owned:
            several.append((student, tuple(owned)))
        elif student.student_id not in contested:   # listed with the submission they share
            without.append(student)
    return RosterResult(tuple(matched), tuple(unmatched), tuple(ambiguous), tuple(several), tuple(without))


def _matches(level: str, student: Student, path: str, metadata: dict, template) -> bool:
    posix = PurePosixPath(path.replace("\\", "/"))
    if level == "submission":
        wanted = student.submission
        return bool(wanted) and (wanted in (posix.name, posix.stem) or fnmatch.fnmatchcase(posix.as_posix(), wanted)
                                 or fnmatch.fnmatchcase(posix.name, wanted))
    if level == "pattern":
        if template is None:
            return False
        found = template.search(posix.as_posix())
        return bool(found) and all(getattr(student, key) == value for key, value in found.groupdict().items())
    identifiers = [i.lower() for i in student.identifiers()]
    if level == "metadata":
        values = {str(v).strip().lower() for key, v in metadata.items() if key != "authors"}
        authors = {a.strip().lower() for a in str(metadata.get("authors", "")).split(",") if a.strip()}
        return any(i in values for i in identifiers) or (bool(student.name) and student.name.lower() in authors)
    text = posix.as_posix().lower()
    return any(re.search(rf"(?<![a-z0-9]){re.escape(i)}(?![a-z0-9])", text) for i in identifiers)


def _template(pattern: str):
    """``submitted/{student_id}/*.ipynb`` -> a regex matching at a folder boundary of the path."""
    parts, position = [], 0
    for found in re.finditer(r"\{(\w+)\}|\*\*|\*|\?", pattern):
        parts.append(re.escape(pattern[position:found.start()]))
        token = found.group(0)
        if found.group(1):
            if found.group(1) not in COLUMNS or found.group(1) == "submission":
                raise UsageError(f"--roster-pattern {pattern!r}: {{{found.group(1)}}} is not a roster column "
                                 f"({', '.join(c for c in COLUMNS if c != 'submission')})")
            if f"(?P<{found.group(1)}>" in "".join(parts):
                raise UsageError(f"--roster-pattern {pattern!r}: {{{found.group(1)}}} appears twice")
            parts.append(f"(?P<{found.group(1)}>[^/]+?)")
        else:
            parts.append({"**": ".*", "*": "[^/]*", "?": "[^/]"}[token])
        position = found.end()
    parts.append(re.escape(pattern[position:]))
    if "(?P<" not in "".join(parts):
        raise UsageError(f"--roster-pattern {pattern!r}: name a roster column, e.g. {{student_id}}")
    return re.compile("(?:^|/)" + "".join(parts) + "$")


# ---------------------------------------------------------------------------------------------
# What a report carries for matching
# ---------------------------------------------------------------------------------------------


def notebook_metadata(path: Path, sha256: str) -> dict[str, str]:
    """The notebook's top-level metadata values that are plain text or numbers, and its authors'
    names (nbformat's `metadata.authors`), bounded, for matching a roster by notebook metadata.
    Empty for a module, an unreadable file, or a file that changed since it was graded."""
    import hashlib

    try:
        data = Path(path).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256 or Path(path).suffix.lower() != ".ipynb":
            return {}
        metadata = json.loads(data.decode("utf-8-sig", errors="replace")).get("metadata")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(metadata, dict):
        return {}
    found: dict[str, str] = {}
    for key, value in metadata.items():
        if len(found) >= METADATA_KEYS:
            break
        if isinstance(key, str) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            found[key[:64]] = str(value)[:METADATA_CHARS]
    authors = metadata.get("authors")
    if isinstance(authors, list) and len(found) < METADATA_KEYS:
        names = [a["name"] for a in authors if isinstance(a, dict) and isinstance(a.get("name"), str)]
        if names:
            found["authors"] = ", ".join(names)[:METADATA_CHARS]
    return found
