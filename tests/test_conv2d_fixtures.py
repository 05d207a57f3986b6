"""Conv2d's fixtures, beyond what their manifest says (tests/test_fixtures.py checks that): what
the messages, the per-cause smallest failing cases and the notes of particular fixtures say."""
import pytest


@pytest.fixture(scope="module")
def reports(fixture_reports):
    return fixture_reports("conv2d")


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


# Several independent bugs: every one named, the costliest first (issue 10).
EXPECTED_SEVERAL = {
    ("multi_bug_dtype_swap.py", "Conv2dLoop"): ["height_width_swapped", "wrong_dtype"],
    ("multi_bug_dtype_filters.py", "Conv2dMatrixV2"): ["single_output_channel", "wrong_dtype"],
    ("matrix_narrow_cases.py", "Conv2dMatrix"): ["output_larger_than_1x1"],
    ("matrix_narrow_cases.py", "Conv2dMatrixV2"): ["stride_wrong"],
}


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
