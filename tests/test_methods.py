"""Per-method checks (_unsqueeze_kernel, _convert_kernel, _convert_input) and the speed check,
graded in this process through pipeline.grade on real submissions."""
import json
import sys
from dataclasses import replace

import jsonschema

from conftest import ROOT, SUBMISSIONS
from grader.config import load_assignment
from grader.pipeline import grade
from grader.public import only_items
from grader.render import render_text
from grader.report import report_to_dict
from grader.score import _points

SCHEMA = json.loads((ROOT / "grader" / "schema" / "report.schema.json").read_text())
ASSIGNMENT = load_assignment("conv2d")
V2 = "Conv2dMatrixV2"


def graded(submission, classes=(V2,)):
    """The report dict of `submission` for `classes`, on CPU, checked against the schema."""
    report = grade(SUBMISSIONS / submission, only_items(ASSIGNMENT, classes), device="cpu", shrink=False)
    data = report_to_dict(report)
    jsonschema.validate(data, SCHEMA)
    return report, data


def methods(data, class_name=V2):
    return {m["name"]: m for m in data["items"][class_name]["checks"] if m["kind"] == "method"}


def speed_of(data, class_name=V2):
    check = next(c for c in data["items"][class_name]["checks"] if c["kind"] == "speed")
    return dict(check["speed"], status=check["status"], message=check["message"])


def test_template_conversions_earn_their_points_though_call_is_wrong():
    report, data = graded("template_bug.ipynb", ("Conv2dMatrix", V2))
    v2 = data["items"][V2]
    found = methods(data)
    assert found["_convert_kernel"]["status"] == found["_convert_input"]["status"] == "passed"
    assert (found["_convert_kernel"]["score"], found["_convert_input"]["score"]) == (3, 5)
    assert found["_convert_input"]["passed"] == found["_convert_input"]["total"] == 6
    assert found["_convert_input"]["layout"] == "rows (c, ky, kx), columns (b, i, j)"
    # The groups share the other 27 points; the course-only template passes few of them.
    [cls] = [c for c in report.items if c.name == V2]
    assert v2["score"] == round(_points(27, cls.groups) + 8, 4)
    assert 8 < v2["score"] < 12
    assert methods(data, "Conv2dMatrix")["_unsqueeze_kernel"]["status"] == "passed"
    assert methods(data, "Conv2dMatrix")["_unsqueeze_kernel"]["layout"] == "rows (o, i, j), columns (c, y, x)"
    text = render_text(data)
    assert "methods: _convert_kernel ok, _convert_input ok" in text
    assert "methods: _unsqueeze_kernel ok" in text


def test_an_input_layout_that_disagrees_with_the_kernel_fails_that_method():
    _, data = graded("methods_wrong_layout.py")
    found = methods(data)
    assert found["_convert_kernel"]["status"] == "passed" and found["_convert_kernel"]["score"] == 3
    wrong = found["_convert_input"]
    assert wrong["status"] == "failed" and wrong["score"] < 5
    assert "rows are ordered (ky, kx, c)" in wrong["message"] and "must agree" in wrong["message"]
    # With one input channel (c, ky, kx) and (ky, kx, c) are the same order: those cases pass.
    assert 0 <= wrong["passed"] < wrong["total"] == 6
    assert f"_convert_input {wrong['passed']}/6" in render_text(data)


def test_another_consistent_layout_passes_and_a_loop_over_positions_is_not_vectorized():
    _, data = graded("methods_loop_other_layout.py")
    v2 = data["items"][V2]
    # Course signature only: every case passes but padding and dilation (unsupported). Speed
    # earns no points unless the config gives it some.
    assert {c["status"] for c in v2["cases"] if c["group"] not in ("padding", "dilation")} == {"passed"}
    found = methods(data)
    assert found["_convert_kernel"]["layout"] == "columns (ky, kx, c)"
    assert found["_convert_input"]["layout"] == "rows (ky, kx, c), columns (i, j, b)"
    speed = speed_of(data)
    assert speed["status"] == "measured" and speed["vectorized"] is False
    small, large = (o["count"] for o in speed["operators"])
    assert large > 2 * small
    assert "not vectorized" in render_text(data)


def test_a_correct_vectorized_class_is_timed_against_torch():
    _, data = graded("correct.ipynb")
    speed = speed_of(data)
    assert speed["status"] == "measured" and speed["vectorized"] is True and speed["device"] == "cpu"
    assert speed["repeats"] == 7 and speed["ratio"] > 0 and speed["median_s"] > 0
    assert speed["operators"][0]["count"] == speed["operators"][1]["count"]
    assert speed["params"] == {"batch": 2, "in_channels": 8, "out_channels": 16, "height": 32, "width": 32,
                               "kernel_size": 3, "stride": 1}
    assert "torch.nn.functional.conv2d's time on cpu, vectorized" in render_text(data)
    assert all(m["status"] == "passed" for m in methods(data).values())


def test_a_helper_that_reaches_a_forbidden_operator_is_a_violation():
    _, data = graded("methods_unfold_helper.py")
    v2 = data["items"][V2]
    assert v2["score"] == 0
    assert any(v["operator"] == "im2col" and v["source"] == "dispatch" for v in v2["violations"])
    # __call__ itself is clean: only padding and dilation (not accepted) do not pass.
    assert {c["status"] for c in v2["cases"] if c["group"] not in ("padding", "dilation")} == {"passed"}
    assert methods(data)["_convert_input"]["status"] == "failed"
    assert "aten.im2col" in methods(data)["_convert_input"]["message"]


def test_without_the_reference_methods_are_not_run_and_their_points_go_to_the_cases(monkeypatch):
    monkeypatch.setitem(sys.modules, "reference", None)     # a student's copy: no reference package
    report, data = graded("template_bug.ipynb")
    found = methods(data)
    assert {m["status"] for m in found.values()} == {"not_run"}
    assert all("reference" in m["message"] and m["score"] == 0 for m in found.values())
    [cls] = [c for c in report.items if c.name == V2]
    assert data["items"][V2]["score"] == _points(35, cls.groups)
    assert "methods: not checked: the reference solution is not installed" in render_text(data)


def test_replaying_one_case_checks_methods_on_it_and_does_not_time():
    report = grade(SUBMISSIONS / "template_bug.ipynb", only_items(ASSIGNMENT, (V2,)), device="cpu",
                   only_case="channels-002", shrink=False)
    data = report_to_dict(report)
    jsonschema.validate(data, SCHEMA)
    found = methods(data)
    assert found["_convert_input"]["cases"] == ["channels-002"] and found["_convert_input"]["status"] == "passed"
    assert speed_of(data)["status"] == "not_run"


def test_a_class_without_check_config_reports_no_checks():
    assignment = only_items(ASSIGNMENT, (V2,))
    bare = replace(assignment, items=tuple(replace(spec, checks=()) for spec in assignment.items))
    data = report_to_dict(grade(SUBMISSIONS / "methods_wrong_layout.py", bare, device="cpu", shrink=False))
    jsonschema.validate(data, SCHEMA)
    assert data["items"][V2]["checks"] == []
    assert "methods:" not in render_text(data) and "speed:" not in render_text(data)


def test_a_batched_convert_input_that_the_call_broadcasts_over_is_right():
    """(batch, in*k*k, OH*OW) with the kernel matrix broadcast over the batch: a common, correct
    way to write the course's V2. It loses no method points."""
    _, data = graded("methods_batched_layout.py")
    v2 = data["items"][V2]
    assert v2["score"] == v2["max_score"] == 35
    found = methods(data)
    assert found["_convert_input"]["status"] == "passed" and found["_convert_input"]["passed"] == 6
    assert found["_convert_input"]["layout"].startswith("reduction (c, ky, kx), positions (b, i, j)")
    assert "dims: positions, reduction, positions" in found["_convert_input"]["layout"]
    assert found["_convert_kernel"]["status"] == "passed"


def test_a_class_that_passes_every_case_never_loses_method_points():
    _, data = graded("methods_own_convention.py")
    v2 = data["items"][V2]
    counted = [c for c in v2["cases"] if c["status"] not in ("skipped", "unsupported")]
    assert counted and all(c["status"] == "passed" for c in counted)
    found = methods(data)
    # No accepted layout matches the doubled columns alone ...
    assert "values match no accepted layout" in found["_convert_input"]["message"]
    # ... yet the class's own __call__ consumes them right on every case: full method points.
    assert found["_convert_input"]["status"] == "passed" and found["_convert_input"]["score"] == 5
    assert found["_convert_input"]["message"].startswith("credited: the item passes every case")
