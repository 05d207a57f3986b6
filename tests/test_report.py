"""The report's instructor fields: where items are defined, their fingerprints, the notebook's
identity metadata and the grading fingerprint (what the class report, feedback and rosters read)."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, SUBMISSIONS
from grader.provenance import grading_fingerprint
from grader.roster import notebook_metadata

SMALL = ROOT / "tests" / "fixtures" / "hostile" / "assignment.yaml"


def grade(path, out):
    subprocess.run([sys.executable, "-m", "grader", str(path), "--assignment", str(SMALL), "-o", str(out),
                    "--quiet"], cwd=ROOT, check=True, timeout=300)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    notebook = json.loads((SUBMISSIONS / "template_bug.ipynb").read_text())
    notebook["metadata"].update(student_id="s-042", authors=[{"name": "Ada Lovelace"}], nested={"no": 1})
    tagged = folder / "tagged.ipynb"
    tagged.write_text(json.dumps(notebook))
    return {"notebook": grade(tagged, folder / "nb.json"),
            "module": grade(SUBMISSIONS / "missing_class.py", folder / "module.json"), "tagged": tagged}


def test_items_say_where_they_are_defined(reports):
    notebook, module = reports["notebook"]["items"], reports["module"]["items"]
    assert [notebook[n]["definition"] for n in ("Conv2dLoop", "Conv2dMatrix", "Conv2dMatrixV2")] == \
        [{"cell": 3, "line": 1}, {"cell": 5, "line": 1}, {"cell": 7, "line": 1}]
    source = (SUBMISSIONS / "missing_class.py").read_text().splitlines()
    line = module["Conv2dLoop"]["definition"]["line"]
    assert module["Conv2dLoop"]["definition"]["cell"] is None and source[line - 1].startswith("class Conv2dLoop")
    assert module["Conv2dMatrixV2"]["definition"] is None and module["Conv2dMatrixV2"]["similarity"] is None


def test_items_carry_their_fingerprint_and_source(reports):
    similarity = reports["notebook"]["items"]["Conv2dMatrixV2"]["similarity"]
    assert len(similarity["exact"]) == 64 and similarity["signature"] == sorted(similarity["signature"])
    assert similarity["source"].startswith("# cell 7, line 1\nclass Conv2dMatrixV2")


def test_the_notebook_metadata_and_the_grading_fingerprint(reports):
    assert reports["notebook"]["submission"]["metadata"] == {"accelerator": "GPU", "student_id": "s-042",
                                                             "authors": "Ada Lovelace"}
    assert reports["module"]["submission"]["metadata"] == {}
    assert reports["notebook"]["environment"]["grader_fingerprint"] == grading_fingerprint()


def test_metadata_of_a_file_that_changed_since_it_was_graded_is_not_trusted(reports):
    assert notebook_metadata(reports["tagged"], "0" * 64) == {}
