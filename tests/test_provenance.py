"""The grading fingerprint: it moves with the code that decides verdicts, not with the rest."""
import shutil

from conftest import ROOT
from grader import provenance


def fingerprint_of(tmp_path, edit=None):
    root = tmp_path / "copy"
    if not root.exists():
        shutil.copytree(ROOT / "grader", root / "grader", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "reference", root / "reference", ignore=shutil.ignore_patterns("__pycache__"))
    if edit:
        path = root / edit
        path.write_text(path.read_text() + "\n# an edit\n")
    original = provenance.PACKAGE
    provenance.PACKAGE = root / "grader"
    provenance.grading_fingerprint.cache_clear()
    try:
        return provenance.grading_fingerprint()
    finally:
        provenance.PACKAGE = original
        provenance.grading_fingerprint.cache_clear()


def test_grading_code_the_schema_and_the_reference_move_it_presentation_does_not(tmp_path):
    base = fingerprint_of(tmp_path)
    assert len(base) == 16 and base == fingerprint_of(tmp_path)
    for presentation in ("grader/render.py", "grader/class_report.py", "grader/batch.py", "grader/exports.py"):
        assert fingerprint_of(tmp_path, presentation) == base, presentation
    seen = {base}
    for grading in ("grader/score.py", "grader/compare.py", "grader/schema/report.schema.json",
                    "reference/__init__.py"):
        changed = fingerprint_of(tmp_path, grading)
        assert changed not in seen, grading
        seen.add(changed)


def test_every_listed_presentation_module_exists():
    # A stale name in the list would let a grading module of that name slip out unnoticed.
    assert {p.name for p in (ROOT / "grader").glob("*.py")} >= provenance.PRESENTATION
