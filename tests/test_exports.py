"""Exports of real reports: Gradescope results.json, JUnit XML and the gradebook CSV."""
import copy
import csv
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest

from conftest import ROOT, SUBMISSIONS
from grader.exports import (describe_case, gradebook_rows, gradescope_results, junit_xml, submission_id,
                            write_gradebook_csv)

pytestmark = pytest.mark.slow

# What the submissions are graded with: a full run where hidden groups have failures and errors,
# a full run of a correct module, and one hidden case of a submission missing a class (so most
# groups run nothing).
RUNS = {
    "template_bug": ("template_bug.ipynb",),
    "correct_module": ("correct_module.py",),
    "missing_class": ("missing_class.py", "--case", "random-001"),
}

# Gradescope's results.json, from https://gradescope-autograders.readthedocs.io/en/latest/specs/
# ("Output format", "Controlling Test Case Visibility", "Test case status", "Output String
# Formatting"). Every key the spec lists is allowed and nothing else; the keys these exports
# always write are required.
VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
FORMAT = {"enum": ["text", "simple_format", "html", "md", "ansi"]}
GRADESCOPE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["score", "execution_time", "output", "visibility", "stdout_visibility", "tests"],
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "integer", "minimum": 0},
        "output": {"type": "string"},
        "output_format": FORMAT,
        "test_output_format": FORMAT,
        "test_name_format": FORMAT,
        "visibility": VISIBILITY,
        "stdout_visibility": VISIBILITY,
        "extra_data": {"type": "object"},
        "tests": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "number", "score", "max_score", "status", "output", "visibility"],
                "properties": {
                    "score": {"type": "number", "minimum": 0},
                    "max_score": {"type": "number", "minimum": 0},
                    "status": {"enum": ["passed", "failed"]},
                    "name": {"type": "string"},
                    "name_format": FORMAT,
                    "number": {"type": "string"},
                    "output": {"type": "string"},
                    "output_format": FORMAT,
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "visibility": VISIBILITY,
                    "extra_data": {"type": "object"},
                },
            },
        },
        "leaderboard": {
            "type": "array",
            "items": {"type": "object", "required": ["name", "value"],
                      "properties": {"name": {"type": "string"}, "order": {"enum": ["asc", "desc"]}}},
        },
    },
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export_reports")

    def grade(item):
        name, (submission, *extra) = item
        out = folder / f"{name}.json"
        result = subprocess.run([sys.executable, "-m", "grader", str(SUBMISSIONS / submission), "--device", "cpu",
                                 "-o", str(out), "--quiet", *extra], capture_output=True, text=True,
                                timeout=300, cwd=ROOT)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        return name, json.loads(out.read_text())

    with ThreadPoolExecutor(max_workers=len(RUNS)) as pool:
        return dict(pool.map(grade, RUNS.items()))


def group_of(report, test):
    """The (class, group) dicts a Gradescope test stands for; group is None for a class-level test."""
    class_name, _, group_name = test["name"].partition(" · ")
    cls = report["items"][class_name]
    return cls, next((g for g in cls.get("groups", []) if g["name"] == group_name), None)


def counted(group):
    return sum(group[s] for s in ("passed", "failed", "error", "timeout", "unsupported"))


# --- Gradescope -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RUNS))
def test_gradescope_results_follow_the_published_format(reports, name):
    results = gradescope_results(reports[name])
    jsonschema.validate(results, GRADESCOPE_SCHEMA)
    assert json.loads(json.dumps(results, allow_nan=False)) == results
    numbers = [t["number"] for t in results["tests"]]
    assert len(set(numbers)) == len(numbers)


@pytest.mark.parametrize("name", list(RUNS))
def test_gradescope_scores_add_up_to_the_report(reports, name):
    report = reports[name]
    results = gradescope_results(report)
    tests = results["tests"]
    assert math.isclose(sum(t["score"] for t in tests), report["score"], abs_tol=0.01)
    assert math.isclose(sum(t["score"] for t in tests), results["score"], abs_tol=1e-9)
    assert math.isclose(sum(t["max_score"] for t in tests), report["max_score"], abs_tol=1e-9)
    for class_name, cls in report["items"].items():
        mine = [t for t in tests if t["name"].partition(" · ")[0] == class_name]
        assert math.isclose(sum(t["score"] for t in mine), cls["score"], abs_tol=0.01), class_name
        assert math.isclose(sum(t["max_score"] for t in mine), cls["max_score"], abs_tol=0.01), class_name
    for test in tests:
        assert 0 <= test["score"] <= test["max_score"], test
        assert (test["status"] == "passed") == (test["score"] == test["max_score"]), test


def test_each_group_earns_its_weighted_share_of_the_class(reports):
    report = reports["template_bug"]
    tests = gradescope_results(report)["tests"]
    methods = {(c, m["name"]): m for c, cls in report["items"].items() for m in cls["checks"] if m["points"]}
    for test in tests:
        key = tuple(test["name"].split(" · "))
        if key in methods:   # a checked method is a test worth its points
            method = methods[key]
            assert math.isclose(test["max_score"], method["points"], abs_tol=0.01), test["name"]
            assert math.isclose(test["score"], method["score"], abs_tol=0.01), test["name"]
            continue
        cls, group = group_of(report, test)
        weights = sum(g["weight"] for g in cls["groups"] if counted(g))
        carved = sum(m["points"] for m in cls["checks"] if m["status"] != "not_run")
        share = (cls["max_score"] - carved) * group["weight"] / weights
        assert math.isclose(test["max_score"], share, abs_tol=0.01), test["name"]
        assert math.isclose(test["score"], share * group["passed"] / counted(group), abs_tol=0.01), test["name"]
        assert test["status"] == ("passed" if group["passed"] == counted(group) else "failed"), test["name"]
    # Groups that ran nothing are not tests; every group that ran something is exactly one.
    expected = {(c, g["name"]) for c, cls in report["items"].items() for g in cls["groups"] if counted(g)}
    assert {tuple(t["name"].split(" · ")) for t in tests} == expected | set(methods)


def test_public_groups_show_their_first_failure(reports):
    report = reports["template_bug"]
    tests = {t["name"]: t for t in gradescope_results(report)["tests"]}
    basic = tests["Conv2dMatrixV2 · basic"]
    [first] = [c for c in report["items"]["Conv2dMatrixV2"]["cases"] if c["id"] == "basic-001"]
    assert first["status"] == "failed" and basic["visibility"] == "visible"
    assert first["id"] in basic["output"] and first["message"] in basic["output"]
    assert describe_case(first) in basic["output"]
    assert tests["Conv2dLoop · basic"]["output"].endswith("3 of 3 cases passed")


@pytest.mark.parametrize("name", list(RUNS))
def test_hidden_groups_wait_for_publication_and_show_counts_only(reports, name):
    report = reports[name]
    results = gradescope_results(report)
    hidden_tests = 0
    for test in results["tests"]:
        cls, group = group_of(report, test)
        if group is None or not group["hidden"]:
            assert test["visibility"] == "visible"
            continue
        hidden_tests += 1
        assert test["visibility"] == "after_published"
        hidden_cases = [c for c in cls["cases"] if c["group"] == group["name"]]
        assert hidden_cases and all(c["hidden"] for c in hidden_cases)
        assert f"{group['passed']} of {counted(group)} case" in test["output"]
        for case in hidden_cases:
            assert case["id"] not in test["output"]
            assert describe_case(case) not in test["output"]
            assert not case["message"] or case["message"] not in test["output"]
        for word in ("input", "kernel", "stride", "shape", "expected", "raised"):
            assert word not in test["output"]
    # No hidden case's parameters appear anywhere, unless a public case has the very same ones.
    public = {describe_case(c) for cls in report["items"].values() for c in cls["cases"]
              if not c["hidden"]}
    text = json.dumps(results, ensure_ascii=False)
    for cls in report["items"].values():
        for case in cls["cases"]:
            if case["hidden"] and describe_case(case) not in public:
                assert describe_case(case) not in text
    assert hidden_tests > 0   # every run here graded some hidden case


def test_a_missing_class_is_one_failed_test_with_its_message(reports):
    report = reports["missing_class"]
    tests = gradescope_results(report)["tests"]
    cls = report["items"]["Conv2dMatrixV2"]
    [test] = [t for t in tests if t["name"].startswith("Conv2dMatrixV2")]
    assert cls["status"] == "missing"
    assert test == {"name": "Conv2dMatrixV2", "number": "3", "score": 0.0, "max_score": cls["max_score"],
                    "status": "failed", "output": cls["message"], "visibility": "visible"}
    # --case narrowed the run to one hidden case: its group carries the class's whole points.
    [loop] = [t for t in tests if t["name"].startswith("Conv2dLoop")]
    assert loop["name"] == "Conv2dLoop · random" and loop["score"] == loop["max_score"] == 30
    assert loop["visibility"] == "after_published"


def test_a_violation_zeroes_every_group_of_its_class_and_is_named_in_each(reports):
    report = copy.deepcopy(reports["correct_module"])
    cls = report["items"]["Conv2dMatrix"]
    violation = "uses aten.convolution at cell 3, line 4: return F.conv2d(x, w) (case basic-001)"
    cls["violations"] = [{"operator": "convolution", "source": "dispatch", "kind": "shortcut",
                          "location": "cell 3, line 4: return F.conv2d(x, w)", "case": "basic-001",
                          "message": violation}]
    report["score"] = round(report["score"] - cls["score"], 4)
    cls["score"] = 0.0
    results = gradescope_results(report)
    mine = [t for t in results["tests"] if t["name"].startswith("Conv2dMatrix ·")]
    assert mine and all(t["score"] == 0 and t["status"] == "failed" and violation in t["output"] for t in mine)
    assert math.isclose(sum(t["max_score"] for t in mine), cls["max_score"], abs_tol=1e-9)
    assert math.isclose(sum(t["score"] for t in results["tests"]), report["score"], abs_tol=0.01)
    others = [t for t in results["tests"] if not t["name"].startswith("Conv2dMatrix ·")]
    assert all(violation not in t["output"] and t["status"] == "passed" for t in others)
    assert gradebook_rows([report])[0]["status"] == "violation:Conv2dMatrix"


# --- JUnit XML ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RUNS))
def test_junit_counts_match_the_report(reports, name):
    report = reports[name]
    root = ET.fromstring(junit_xml(report).encode())
    assignment = report["assignment"]["id"]
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == [f"{assignment}.{c}" for c in report["items"]]
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for class_name, cls in report["items"].items():
        suite = suites[f"{assignment}.{class_name}"]
        statuses = [c["status"] for c in cls["cases"]]
        expected = {"tests": len(statuses), "failures": statuses.count("failed"),
                    "errors": statuses.count("error") + statuses.count("timeout"),
                    "skipped": statuses.count("skipped") + statuses.count("unsupported")}
        assert {k: int(suite.get(k)) for k in expected} == expected, class_name
        cases = suite.findall("testcase")
        assert [c.get("name") for c in cases] == [f"{c['id']}[{c['device']}]" for c in cls["cases"]]
        assert {c.get("classname") for c in cases} <= {f"{assignment}.{class_name}"}
        assert len(suite.findall("testcase/failure")) == expected["failures"]
        assert len(suite.findall("testcase/error")) == expected["errors"]
        assert len(suite.findall("testcase/skipped")) == expected["skipped"]
        assert all(float(c.get("time")) >= 0 for c in cases) and float(suite.get("time")) >= 0
        if cls["status"] != "graded":
            assert cls["message"] in suite.find("system-err").text
        for key in totals:
            totals[key] += expected[key]
    assert {k: int(root.get(k)) for k in totals} == totals


def test_junit_hides_hidden_cases_and_details_public_ones(reports):
    report = reports["template_bug"]
    root = ET.fromstring(junit_xml(report).encode())
    suite = root.find("testsuite[@name='conv2d.Conv2dMatrixV2']")
    cases = {c["id"]: c for c in report["items"]["Conv2dMatrixV2"]["cases"]}
    seen_hidden = 0
    for element in suite.findall("testcase"):
        case = cases[element.get("name").split("[")[0]]
        [outcome] = list(element) or [None]
        if case["status"] == "passed":
            assert outcome is None
        elif case["hidden"]:
            seen_hidden += 1
            assert outcome.get("message") == "hidden case" and not (outcome.text or "").strip()
        else:
            assert outcome.get("message") == case["message"]
            if outcome.tag != "skipped":
                assert describe_case(case) in outcome.text
    assert seen_hidden > 0


def test_junit_escapes_what_a_student_can_print(reports):
    report = copy.deepcopy(reports["template_bug"])
    case = next(c for c in report["items"]["Conv2dMatrixV2"]["cases"]
                if c["status"] == "failed" and not c["hidden"])
    case["message"] = 'got <b>&amp; "quotes" ]]> \x1b[31mred\x1b[0m \x00 end'
    root = ET.fromstring(junit_xml(report).encode())
    [failure] = root.findall(f".//testcase[@name='{case['id']}[{case['device']}]'][@classname="
                             "'conv2d.Conv2dMatrixV2']/failure")
    assert failure.get("message").startswith('got <b>&amp; "quotes" ]]> ') and failure.get("message").endswith(" end")


def test_a_grading_that_failed_is_a_gradescope_result_too():
    from grader.exports import gradescope_failure

    data = gradescope_failure("no notebook or module in /autograder/submission \x1b[2J\ntotal 100/100", 3.4)
    jsonschema.validate(data, GRADESCOPE_SCHEMA)
    assert data["score"] == 0 and data["tests"] == [] and data["execution_time"] == 3
    assert "no notebook or module" in data["output"] and "\x1b" not in data["output"]
    assert "\\ntotal 100/100" in data["output"]             # a line break in the reason is shown, not made


# --- gradebook CSV --------------------------------------------------------------------------------


def test_gradebook_csv_round_trips(reports, tmp_path):
    batch = [reports[name] for name in RUNS]
    path = write_gradebook_csv(batch, tmp_path / "grades.csv")
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
        header = reader.fieldnames
    classes = list(batch[0]["items"])
    assert header == ["submission_id", "path", "sha256", "total", "max_total", *classes, "status"]
    assert [r["submission_id"] for r in rows] == list(RUNS)   # the stems: unique in this batch
    for row, report in zip(rows, batch):
        assert row["path"] == report["submission"]["path"] and row["sha256"] == report["submission"]["sha256"]
        assert float(row["total"]) == report["score"] and float(row["max_total"]) == report["max_score"]
        assert [float(row[c]) for c in classes] == [report["items"][c]["score"] for c in classes]
        assert math.isclose(sum(float(row[c]) for c in classes), float(row["total"]), abs_tol=1e-3)
    assert [r["status"] for r in rows] == ["ok", "ok", "missing:Conv2dMatrixV2"]


def test_submission_ids_are_unique_and_do_not_depend_on_order(reports):
    template, correct, missing = (reports[n] for n in RUNS)
    same_stem = copy.deepcopy(missing)
    same_stem["submission"]["path"] = "elsewhere/template_bug.py"
    same_file_elsewhere = copy.deepcopy(template)
    same_file_elsewhere["submission"]["path"] = "another/template_bug.ipynb"
    batch = [template, correct, same_stem, same_file_elsewhere]
    ids = [submission_id(r, batch) for r in batch]
    assert len(set(ids)) == len(ids)
    assert ids[1] == "correct_module"
    assert ids[2] == f"template_bug-{missing['submission']['sha256'][:8]}"
    assert all(i.startswith("template_bug-") for i in (ids[0], ids[3]))
    assert [submission_id(r, batch[::-1]) for r in batch] == ids
    assert [r["submission_id"] for r in gradebook_rows(batch)] == ids
    assert submission_id(template) == "template_bug"
