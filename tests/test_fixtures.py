"""Real student submissions, graded through the CLI, against the verdicts in manifest.yaml."""
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest
import yaml

from conftest import ROOT, SUBMISSIONS

MANIFEST = yaml.safe_load((SUBMISSIONS / "manifest.yaml").read_text())
SCHEMA = json.loads((ROOT / "grader" / "schema" / "report.schema.json").read_text())
FIXTURES = sorted(MANIFEST["fixtures"])


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")

    def grade(name):
        out = folder / f"{name}.json"
        result = subprocess.run([sys.executable, "-m", "grader", str(SUBMISSIONS / name), "--device", "cpu",
                                 "-o", str(out), "--quiet"], capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        return name, json.loads(out.read_text())

    with ThreadPoolExecutor(max_workers=2) as pool:  # one grader per core
        return dict(pool.map(grade, FIXTURES))


@pytest.mark.slow
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_verdicts_per_class_and_group(reports, name):
    report = reports[name]
    jsonschema.validate(report, SCHEMA)
    for class_name, expected in MANIFEST["fixtures"][name]["classes"].items():
        got = report["items"][class_name]
        assert got["status"] == expected["status"], (class_name, got.get("message"))
        if expected["status"] != "graded":
            assert got["score"] == 0 and got["cases"] == []
            continue
        must_fail = set(expected.get("fail_groups", []))
        may_fail = set(expected.get("maybe_fail_groups", []))
        unsupported = set(expected.get("unsupported_groups", []))
        for group in got["groups"]:
            counted = sum(group[s] for s in ("passed", "failed", "error", "timeout", "unsupported"))
            where = f"{name} {class_name} {group['name']}"
            if group["name"] in unsupported:
                assert group["unsupported"] == counted > 0, where
            elif group["name"] in must_fail:
                assert group["failed"] + group["error"] > 0, where
            elif group["name"] not in may_fail:
                assert group["passed"] == counted > 0, where
        perfect = not (must_fail or unsupported or may_fail)
        assert (got["score"] == got["max_score"]) == perfect or may_fail, class_name


@pytest.mark.slow
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_load_notes(reports, name):
    expected = MANIFEST["fixtures"][name]
    load = reports[name]["load"]
    # The manifest counts cells from 0; reports count them from 1, as Jupyter's cell list reads.
    for error in expected.get("load_errors", []):
        assert any(e["cell"] == error["cell"] + 1 and e["line"] == error["line"] for e in load["errors"]), error
    for cell in expected.get("unparsable_cells", []):
        assert any(s["kind"] == "syntax_error" and s["cell"] == cell + 1 for s in load["skipped"]), cell


@pytest.mark.slow
def test_first_failure_messages_say_what_is_wrong(reports):
    def first_failure(name, class_name):
        cases = reports[name]["items"][class_name]["cases"]
        return next(c for c in cases if c["status"] not in ("passed", "skipped"))

    assert "returned numpy.ndarray" in first_failure("returns_numpy.ipynb", "Conv2dLoop")["message"]
    assert "constructor does not accept padding=" in first_failure("no_padding_kwargs.ipynb", "Conv2dLoop")["message"]
    padded = first_failure("padding_twice.ipynb", "Conv2dLoop")
    expected, actual = padded["expected_shape"], padded["actual_shape"]
    pad = padded["params"]["padding"]
    assert actual[2] - expected[2] == 2 * pad and actual[3] - expected[3] == 2 * pad
    assert "cell" in first_failure("height_width_swapped.ipynb", "Conv2dMatrix")["message"]


EXPECTED_CAUSES = {
    ("template_bug.ipynb", "Conv2dMatrixV2"): "output_larger_than_1x1",
    ("height_width_swapped.ipynb", "Conv2dLoop"): "height_width_swapped",
    ("height_width_swapped.ipynb", "Conv2dMatrix"): "height_width_swapped",
    ("height_width_swapped.ipynb", "Conv2dMatrixV2"): "height_width_swapped",
    ("single_out_channel.ipynb", "Conv2dLoop"): "single_output_channel",
    ("single_out_channel.ipynb", "Conv2dMatrix"): "single_output_channel",
    ("single_out_channel.ipynb", "Conv2dMatrixV2"): "single_output_channel",
    ("padding_twice.ipynb", "Conv2dLoop"): "padding_applied_twice",
    ("dilation_ignored.ipynb", "Conv2dLoop"): "dilation_ignored",
    ("dilation_ignored.ipynb", "Conv2dMatrixV2"): "dilation_ignored",
    ("returns_numpy.ipynb", "Conv2dLoop"): "not_a_tensor",
}
# Several independent bugs: every one named, the costliest first (issue 10).
EXPECTED_SEVERAL = {
    ("multi_bug_dtype_swap.py", "Conv2dLoop"): ["height_width_swapped", "wrong_dtype"],
    ("multi_bug_dtype_filters.py", "Conv2dMatrixV2"): ["single_output_channel", "wrong_dtype"],
    ("matrix_narrow_cases.py", "Conv2dMatrix"): ["output_larger_than_1x1"],
    ("matrix_narrow_cases.py", "Conv2dMatrixV2"): ["stride_wrong"],
}


@pytest.mark.slow
def test_likely_causes_name_the_bug_and_nothing_for_correct_code(reports):
    for (name, class_name), cause in EXPECTED_CAUSES.items():
        causes = [c["cause"] for c in reports[name]["items"][class_name]["likely_causes"]]
        assert causes == [cause], (name, class_name, causes)
    for name in ("correct.ipynb", "correct_module.py", "no_padding_kwargs.ipynb"):
        for class_name, cls in reports[name]["items"].items():
            assert cls["likely_causes"] == [], (name, class_name)


@pytest.mark.slow
def test_every_independent_bug_is_named_with_its_own_smallest_case(reports):
    for (name, class_name), expected in EXPECTED_SEVERAL.items():
        causes = reports[name]["items"][class_name]["likely_causes"]
        assert [c["cause"] for c in causes] == expected, (name, class_name, causes)
        points = [c["points"] for c in causes]
        assert points == sorted(points, reverse=True) and all(p > 0 for p in points)
        for cause in causes:
            smallest = cause["smallest_failing_case"]
            assert smallest and smallest["replay"].startswith("grade "), (name, cause)
            p = smallest["params"]
            if cause["cause"] == "wrong_dtype":
                assert p["dtype"] == "float64" and "returned float32" in smallest["message"]
            if cause["cause"] == "height_width_swapped":
                assert p["height"] != p["width"] and p["dtype"] == "float32"
            if cause["cause"] == "single_output_channel":
                assert p["out_channels"] >= 2 and p["dtype"] == "float32"
            if cause["cause"] == "stride_wrong":
                assert p["stride"] >= 2
    narrow = reports["matrix_narrow_cases.py"]["items"]["Conv2dMatrix"]["likely_causes"][0]["evidence"]
    assert narrow.startswith("passes only when out_channels == 1 and the output is 1x1")


@pytest.mark.slow
def test_smallest_failing_case_is_small_and_keeps_the_bug(reports):
    def smallest(name, class_name):
        return reports[name]["items"][class_name]["smallest_failing_case"]

    for class_name in ("Conv2dLoop", "Conv2dMatrix", "Conv2dMatrixV2"):
        swapped = smallest("height_width_swapped.ipynb", class_name)
        p = swapped["params"]
        reach = p["dilation"] * (p["kernel_size"] - 1) + 1
        assert p["height"] != p["width"] and max(p["height"], p["width"]) <= reach + 3, swapped
        assert swapped["replay"].startswith("grade ") and "--params" in swapped["replay"]
        channel = smallest("single_out_channel.ipynb", class_name)["params"]
        assert channel["out_channels"] >= 2 and channel["batch"] == 1 and channel["in_channels"] == 1
        assert smallest("correct.ipynb", class_name) is None
    template = smallest("template_bug.ipynb", "Conv2dMatrixV2")
    assert template["expected_shape"][2] * template["expected_shape"][3] > 1
    assert sorted(template["actual_shape"]) == sorted(template["expected_shape"])
    padded = smallest("padding_twice.ipynb", "Conv2dLoop")["params"]
    assert padded["padding"] >= 1


@pytest.mark.slow
def test_names_only_mentioned_are_notes_never_violations(reports):
    """Issue 10: an import line that binds threading, a student's own conv2d method and im2col
    function, and a never-called debugging helper cost nothing and never look like a violation
    (not in the report's violations, not in the gradebook's status)."""
    from grader.exports import gradebook_rows

    report = reports["odd_imports.ipynb"]
    assert report["score"] == report["max_score"] == 100
    for class_name, cls in report["items"].items():
        assert cls["violations"] == [], (class_name, cls["violations"])
    notes = report["items"]["Conv2dMatrix"]["static_notes"]
    assert [n["name"] for n in notes] == ["torch.nn.functional.conv2d"]
    assert "not penalized" in notes[0]["message"]
    assert report["items"]["Conv2dLoop"]["static_notes"] == report["items"]["Conv2dMatrixV2"]["static_notes"] == []
    [row] = gradebook_rows([report])
    assert row["status"] == "ok"


@pytest.mark.slow
def test_a_writefile_module_is_graded_with_its_cells_numbers(reports):
    report = reports["writefile_module.ipynb"]
    assert report["score"] == report["max_score"] == 100
    assert any("conv_impl.py (the %%writefile of cell 3)" in n["message"] for n in report["load"]["skipped"])
