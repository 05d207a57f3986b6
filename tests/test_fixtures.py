"""The fixture kit: every assignment's fixture submissions, graded through the CLI, against the
verdicts in its `fixtures/manifest.yaml`. An assignment brings fixtures and a manifest, not test
code; the manifest's format (per fixture, per item):

    status:             graded | missing | load_error | wrong_form
    all_pass:           every case passes (forbidden operators may still cost the points)
    fail_groups:        groups in which at least one case must fail
    maybe_fail_groups:  groups that may fail, depending on what they draw
    unsupported_groups: groups whose cases must all be unsupported
    cause / causes:     the costliest likely cause / exactly these, costliest first
    violations:         forbidden operators the item's cases must be caught running
    mutates_input:      some case writes into its input
plus, per fixture, `load_errors` and `unparsable_cells` (cells counted from 0). Every group not
named must pass; an item that fails nothing must have no likely cause.
"""
import json

import jsonschema
import pytest

from conftest import ASSIGNMENTS, ROOT, fixture_manifests

SCHEMA = json.loads((ROOT / "grader" / "schema" / "report.schema.json").read_text())
MANIFESTS = fixture_manifests()
ENTRIES = [(assignment_id, name) for assignment_id, (_, manifest) in MANIFESTS.items()
           for name in sorted(manifest["fixtures"])]
COUNTED = ("passed", "failed", "error", "timeout", "unsupported")


def test_every_assignment_brings_fixtures_and_each_file_is_in_its_manifest():
    assert {"conv2d", "normalization"} <= set(MANIFESTS)
    for assignment_id, (folder, manifest) in MANIFESTS.items():
        files = {p.name for p in folder.iterdir() if p.suffix in (".py", ".ipynb")}
        assert files == set(manifest["fixtures"]), assignment_id


@pytest.mark.slow
@pytest.mark.parametrize("assignment_id,name", ENTRIES)
def test_fixture_grades_as_its_manifest_says(fixture_reports, assignment_id, name):
    report = fixture_reports(assignment_id)[name]
    jsonschema.validate(report, SCHEMA)
    assert report["assignment"]["id"] == assignment_id
    entry = MANIFESTS[assignment_id][1]["fixtures"][name]
    assert set(entry["items"]) == set(report["items"]), "the manifest lists every item"
    for item_name, expected in entry["items"].items():
        _check_item(f"{assignment_id}/{name} {item_name}", report["items"][item_name], expected)
    # The manifest counts cells from 0; reports count them from 1, as Jupyter's cell list reads.
    load = report["load"]
    for error in entry.get("load_errors", []):
        assert any(e["cell"] == error["cell"] + 1 and e["line"] == error["line"] for e in load["errors"]), error
    for cell in entry.get("unparsable_cells", []):
        assert any(s["kind"] == "syntax_error" and s["cell"] == cell + 1 for s in load["skipped"]), cell


def _check_item(where: str, got: dict, expected: dict) -> None:
    assert got["status"] == expected["status"], (where, got.get("message"))
    if expected["status"] != "graded":
        assert got["score"] == 0 and got["cases"] == [] and got["message"], where
        return
    must_fail = set(expected.get("fail_groups", []))
    may_fail = set(expected.get("maybe_fail_groups", []))
    unsupported = set(expected.get("unsupported_groups", []))
    names = {g["name"] for g in got["groups"]}
    assert must_fail | may_fail | unsupported <= names, (where, sorted((must_fail | may_fail | unsupported) - names))
    for group in got["groups"]:
        counted = sum(group[s] for s in COUNTED)
        here = f"{where} {group['name']}"
        if group["name"] in unsupported:
            assert group["unsupported"] == counted > 0, here
        elif group["name"] in must_fail:
            assert group["failed"] + group["error"] + group["timeout"] > 0, here
        elif group["name"] not in may_fail:
            assert group["passed"] == counted > 0, (here, [c["message"] for c in got["cases"]
                                                           if c["group"] == group["name"] and c["status"] != "passed"][:2])
    causes = [c["cause"] for c in got["likely_causes"]]
    if "causes" in expected:
        assert causes == expected["causes"], (where, causes)
    if "cause" in expected:
        assert causes and causes[0] == expected["cause"], (where, causes)
    failing = [c for c in got["cases"] if c["status"] in ("failed", "error", "timeout")]
    if not failing:
        assert causes == [], (where, causes)
    else:
        assert got["smallest_failing_case"] is not None and got["smallest_failing_case"]["replay"].startswith("grade ")
    points = [c["points"] for c in got["likely_causes"]]
    assert points == sorted(points, reverse=True), where
    caught = {v["operator"] for v in got["violations"] if v["source"] == "dispatch"}
    if expected.get("violations"):
        assert set(expected["violations"]) <= caught, (where, sorted(caught))
        assert got["score"] == 0, where
    else:
        assert not [v for v in got["violations"] if v["penalized"]], (where, got["violations"])
        clean = not (must_fail or may_fail or unsupported)
        if clean:
            assert got["score"] == got["max_score"], (where, got["score"])
    if expected.get("mutates_input"):
        assert "input_mutated" in causes, where


@pytest.mark.slow
@pytest.mark.parametrize("assignment_id", sorted(MANIFESTS))
def test_example_gets_full_marks_and_the_handout_is_found_but_scores_nothing(tmp_path, assignment_id):
    """The worked example is a correct solution of every item; the handout's stubs are found
    under the right names and earn nothing."""
    import subprocess
    import sys

    folder = ASSIGNMENTS / assignment_id
    examples = sorted((folder / "example").glob("submission.*"))
    assert examples, assignment_id
    for path, full in [(examples[0], True), (folder / "handout.ipynb", False)]:
        out = tmp_path / f"{path.stem}.json"
        result = subprocess.run([sys.executable, "-m", "grader", str(path), "--assignment", str(folder / "assignment.yaml"),
                                 "--device", "cpu", "-o", str(out), "--quiet"],
                                capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        report = json.loads(out.read_text())
        if full:
            assert report["score"] == report["max_score"] == 100, path
        else:
            assert all(item["status"] == "graded" for item in report["items"].values()), path
            assert report["score"] == 0, path
