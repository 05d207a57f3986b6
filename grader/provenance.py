"""Which grader graded a report: a fingerprint of the code that decides verdicts and scores.

The version number changes only at releases; a batch rerun after a grader change must regrade
what the new code could grade differently, so a resumed batch compares this fingerprint, not
the version. It hashes the grader's modules and the reference package, leaving out the modules
that only present results (rendering, exports, the batch and merge plumbing, the class report):
changing those cannot change a verdict, and regrading a course for a new chart would be waste.
A module added later counts until it is listed here: a needless regrade is cheaper than a
stale report.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
PRESENTATION = frozenset({
    "__main__.py", "batch.py", "bundle.py", "class_report.py", "class_summary.py", "cli.py", "course_outputs.py",
    "exports.py",
    "feedback.py", "lms_exports.py", "outputs.py", "progress.py", "provenance.py", "render.py", "render_html.py",
    "roster.py", "safe_text.py", "schema_check.py", "selfcheck.py", "shards.py", "svg.py",
})


@functools.lru_cache(maxsize=1)
def grading_fingerprint() -> str:
    """sha256 over the grading modules, the report schema and the reference package (16 hex)."""
    digest = hashlib.sha256()
    reference = PACKAGE.parent / "reference"
    files = [p for p in sorted(PACKAGE.glob("*.py")) if p.name not in PRESENTATION]
    files += sorted((PACKAGE / "schema").glob("*.json"))
    files += sorted(reference.rglob("*.py")) if reference.is_dir() else []
    for path in files:
        digest.update(path.relative_to(PACKAGE.parent).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
