"""The CLI as users run it: a real subprocess, real files, exit codes and reports."""
import json
import os
import shutil
import subprocess
import sys

import jsonschema
import pytest
import torch

from conftest import ROOT, SUBMISSIONS

SCHEMA = json.loads((ROOT / "grader" / "schema" / "report.schema.json").read_text())


def grade(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def without_timings(report):
    report = json.loads(json.dumps(report))
    report.pop("duration_s")
    for cls in report["items"].values():
        for case in cls["cases"]:
            case.pop("duration_s")
        for check in cls.get("checks", []):
            for timing in ("repeats", "median_s", "baseline_median_s", "ratio"):   # the speed check's clock
                (check.get("speed") or {}).pop(timing, None)
    report["environment"].pop("worker_restarts", None)
    return report


@pytest.fixture(scope="module")
def correct_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("correct") / "report.json"
    result = grade(SUBMISSIONS / "correct.ipynb", "--device", "cpu", "-o", out)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text()), result, out


def test_a_correct_notebook_scores_full_marks_with_a_valid_report(correct_report):
    report, result, _ = correct_report
    jsonschema.validate(report, SCHEMA)
    assert report["score"] == report["max_score"] == 100
    assert all(c["status"] == "graded" and c["score"] == c["max_score"] for c in report["items"].values())
    assert "total 100/100" in result.stdout and "Conv2dMatrixV2" in result.stdout


def test_same_seed_same_report(correct_report):
    again = correct_report[2].parent / "again.json"
    assert grade(SUBMISSIONS / "correct.ipynb", "--device", "cpu", "-o", again, "--quiet").returncode == 0
    assert without_timings(json.loads(again.read_text())) == without_timings(correct_report[0])


def test_another_seed_grades_other_cases(correct_report, tmp_path):
    out = tmp_path / "seed.json"
    assert grade(SUBMISSIONS / "correct.ipynb", "--device", "cpu", "--seed", "99", "-o", out,
                 "--quiet").returncode == 0
    other = json.loads(out.read_text())
    params = lambda r: [c["params"] for c in r["items"]["Conv2dLoop"]["cases"]]
    assert other["seed"] == 99 and params(other) != params(correct_report[0])


def test_case_replays_exactly_one_case(tmp_path):
    out = tmp_path / "one.json"
    full = tmp_path / "full.json"
    sub = SUBMISSIONS / "template_bug.ipynb"
    assert grade(sub, "--device", "cpu", "--case", "stride-002", "-o", out, "--quiet").returncode == 0
    assert grade(sub, "--device", "cpu", "-o", full, "--quiet").returncode == 0
    one, everything = json.loads(out.read_text()), json.loads(full.read_text())
    jsonschema.validate(one, SCHEMA)
    for name, cls in one["items"].items():
        assert [c["id"] for c in cls["cases"]] == ["stride-002"]
        [match] = [c for c in everything["items"][name]["cases"] if c["id"] == "stride-002"]
        assert cls["cases"][0]["status"] == match["status"]
        assert cls["cases"][0]["message"] == match["message"]


def test_fail_under_gates_ci_and_a_low_score_is_still_a_written_report(tmp_path):
    out = tmp_path / "r.json"
    low = grade(SUBMISSIONS / "missing_class.py", "--device", "cpu", "--case", "course-001",
                "--fail-under", "90", "-o", out)
    assert low.returncode == 1 and json.loads(out.read_text())["score"] == 65
    ok = grade(SUBMISSIONS / "missing_class.py", "--device", "cpu", "--case", "course-001",
               "--fail-under", "60", "--quiet")
    assert ok.returncode == 0


@pytest.mark.parametrize("args, code, words", [
    (["nope.ipynb"], 2, "not found"),
    ([SUBMISSIONS / "correct_module.py", "--case", "stride-099"], 2, "no case"),
    ([SUBMISSIONS / "correct_module.py", "--device", "tpu"], 2, "invalid choice"),
    ([SUBMISSIONS / "correct_module.py", "--assignment", "conv3d"], 3, "no assignment"),
    ([], 2, "submission"),
])
def test_setup_mistakes_exit_non_zero_with_one_line(args, code, words):
    result = grade(*args)
    assert result.returncode == code
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_it_is_an_environment_error():
    result = grade(SUBMISSIONS / "correct_module.py", "--device", "cuda")
    assert result.returncode == 4 and "CUDA is not available" in result.stderr


def test_bad_config_exits_3_naming_the_key(assignment_copy):
    path = assignment_copy / "assignment.yaml"
    path.write_text(path.read_text().replace("  stride:\n    description", "  stride:\n    colour: red\n    description"))
    result = grade(SUBMISSIONS / "correct_module.py", "--assignment", path)
    assert result.returncode == 3 and "groups.stride.colour" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA cases run here")
def test_auto_device_skips_cuda_cases_without_counting_them(tmp_path):
    out = tmp_path / "auto.json"
    result = grade(SUBMISSIONS / "correct_module.py", "--case", "basic-001", "-o", out)
    report = json.loads(out.read_text())
    devices = {(c["device"], c["status"]) for c in report["items"]["Conv2dLoop"]["cases"]}
    assert devices == {("cpu", "passed"), ("cuda", "skipped")}
    assert report["score"] == 100 and "CUDA cases skipped" in result.stdout


def test_json_flag_prints_the_same_report(tmp_path):
    out = tmp_path / "r.json"
    result = grade(SUBMISSIONS / "correct_module.py", "--device", "cpu", "--case", "course-001", "--json", "-o", out)
    assert without_timings(json.loads(result.stdout)) == without_timings(json.loads(out.read_text()))


def test_console_script_and_module_behave_the_same():
    import shutil

    script = shutil.which("grade")
    if script is None:
        pytest.skip("the package is not installed (pip install -e .)")
    result = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == grade("--help").stdout


def test_gradescope_and_junit_files_come_from_the_same_report(tmp_path):
    import xml.etree.ElementTree as ET

    out, results, junit = tmp_path / "r.json", tmp_path / "gs" / "results.json", tmp_path / "junit.xml"
    result = grade(SUBMISSIONS / "missing_class.py", "--device", "cpu", "--case", "stride-001", "-o", out,
                   "--gradescope", results, "--junit", junit, "--quiet")
    assert result.returncode == 0, result.stderr
    report, gradescope = json.loads(out.read_text()), json.loads(results.read_text())
    assert gradescope["score"] == report["score"] == 65
    suites = ET.parse(junit).getroot()
    assert int(suites.get("tests")) == sum(len(c["cases"]) for c in report["items"].values())


def test_the_smallest_failing_case_replays_with_the_same_failure(tmp_path):
    out = tmp_path / "r.json"
    sub = SUBMISSIONS / "height_width_swapped.ipynb"
    assert grade(sub, "--device", "cpu", "-o", out, "--quiet").returncode == 0
    smallest = json.loads(out.read_text())["items"]["Conv2dMatrixV2"]["smallest_failing_case"]
    replay = smallest["replay"].split()[2:]          # after "grade <path>"
    again = tmp_path / "again.json"
    assert grade(sub, *replay, "-o", again, "--quiet").returncode == 0
    [case] = json.loads(again.read_text())["items"]["Conv2dMatrixV2"]["cases"]
    assert case["status"] == smallest["status"] and case["message"] == smallest["message"]
    assert case["params"] == smallest["params"]


@pytest.mark.parametrize("params", ["batch=1", "batch=x,in_channels=1", "colour=red"])
def test_bad_params_are_usage_errors(params):
    result = grade(SUBMISSIONS / "correct_module.py", "--params", params)
    assert result.returncode == 2 and "--params" in result.stderr


def test_student_audience_shows_hidden_cases_as_counts_only(tmp_path):
    out = tmp_path / "student.json"
    result = grade(SUBMISSIONS / "single_out_channel.ipynb", "--device", "cpu", "--audience", "student", "-o", out)
    report = json.loads(out.read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["audience"] == "student"
    for cls in report["items"].values():
        assert all(not c["hidden"] for c in cls["cases"])
        [hidden] = [g for g in cls["groups"] if g["name"] == "random"]
        assert hidden["hidden"] and sum(hidden[s] for s in ("passed", "failed", "error")) == 6
        assert not any(c["group"] == "random" for c in cls["cases"])
    assert "random-0" not in result.stdout


# --- which assignment, which items ------------------------------------------------------------

NORMALIZATION_FIXTURES = ROOT / "assignments" / "normalization" / "fixtures"


def test_the_submission_names_pick_its_assignment_and_the_table_says_which(tmp_path):
    out = tmp_path / "norm.json"
    result = grade(NORMALIZATION_FIXTURES / "correct_notes.py", "--device", "cpu", "-o", out,
                   "--item", "batch_norm2d")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("normalization · ")
    report = json.loads(out.read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["assignment"]["id"] == "normalization" and list(report["items"]) == ["batch_norm2d"]
    assert report["items"]["batch_norm2d"]["score"] == 10


def test_a_file_that_defines_no_graded_name_is_a_usage_error_listing_the_assignments(tmp_path):
    stray = tmp_path / "notes.py"
    stray.write_text("import torch\nx = torch.ones(3)\n")
    result = grade(stray, "--device", "cpu")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "defines none of the names an assignment grades" in line and "pass --assignment" in line
    assert "conv2d (Conv2dLoop, Conv2dMatrix, Conv2dMatrixV2)" in line and "normalization (custom_batch_norm1d" in line


def test_a_tie_between_assignments_is_a_usage_error_naming_both(assignment_copy):
    from grader.choose import choose_for
    from grader.config import load_assignment
    from grader.errors import UsageError
    from grader.submission import load_submission

    config = assignment_copy / "assignment.yaml"
    config.write_text(config.read_text().replace("id: conv2d", "id: conv2d-again"))
    candidates = [load_assignment("conv2d"), load_assignment(str(config))]
    with pytest.raises(UsageError, match=r"could be for conv2d, conv2d-again .* pass --assignment"):
        choose_for(load_submission(SUBMISSIONS / "correct_module.py"), candidates)
    # Most names wins over a partial match: three of conv2d's names against none of the lesson's.
    bundled = [load_assignment("conv2d"), load_assignment("normalization")]
    assert choose_for(load_submission(SUBMISSIONS / "correct_module.py"), bundled).assignment.id == "conv2d"


def test_an_unknown_item_is_a_usage_error_listing_the_items():
    result = grade(NORMALIZATION_FIXTURES / "correct_notes.py", "--item", "batch_norm3d")
    assert result.returncode == 2
    assert "no item 'batch_norm3d' in normalization (items: batch_norm1d, batch_norm1d_affine," in result.stderr


# --- issue 11: the grader's own setup errors are not bugs ----------------------------------------

def one_line(result, code, *words):
    """A setup error: the exit code, one line on stderr naming it, nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert all(word in result.stderr for word in words), result.stderr
    assert "internal error" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("option", ["-o", "--gradescope", "--junit", "--feedback"])
def test_an_output_that_cannot_be_written_is_refused_before_grading(tmp_path, option):
    folder = tmp_path / "existing"
    folder.mkdir()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    companion = ["--junit", tmp_path / "ok.xml"] if option == "-o" else ["-o", tmp_path / "ok.json"]
    for target, words in ((folder, "is a folder"), (a_file / "out", "is a file, not a folder")):
        result = grade(SUBMISSIONS / "correct_module.py", "--device", "cpu", "--case", "course-001", *companion,
                       option, target)
        one_line(result, 73, option, str(target), words)
        assert not any(tmp_path.glob("ok.*")), "it graded before checking its outputs"


def test_two_outputs_naming_one_file_or_the_submission_are_usage_errors(tmp_path):
    sub = tmp_path / "hw.py"
    shutil.copy(SUBMISSIONS / "correct_module.py", sub)
    one_line(grade(sub, "-o", tmp_path / "r.json", "--gradescope", tmp_path / "r.json"), 2, "--gradescope", "-o")
    one_line(grade(sub, "--junit", sub), 2, "the submission")


def test_a_folder_given_as_the_submission_says_so(tmp_path):
    one_line(grade(tmp_path, "--device", "cpu"), 2, "is a folder")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="fills a small tmpfs mounted in a mount namespace of its own (root, util-linux)")
@pytest.mark.parametrize("command", ["grade", "batch"])
def test_a_full_disk_is_one_line_with_its_own_exit_code(tmp_path, command):
    full = tmp_path / "full"
    full.mkdir()
    fill = f"mount -t tmpfs -o size=64k tmpfs {full} && (head -c 1M /dev/zero > {full}/filler 2>/dev/null; true)"
    args = ([SUBMISSIONS / "correct_module.py", "--case", "course-001", "-o", full / "report.json"]
            if command == "grade" else ["batch", SUBMISSIONS / "correct_module.py", "--assignment",
                                        ROOT / "tests" / "fixtures" / "hostile" / "assignment.yaml",
                                        "-o", full / "reports"])
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{fill} && exec "$@"',
                             "sh", sys.executable, "-m", "grader", *map(str, args), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 74, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "no space left on device" in last and str(full) in last and "Traceback" not in result.stderr


def broken_assignment(tmp_path):
    """The small test assignment with a subject whose describe() raises: a bug of the grader's
    own side of the seam, hit after the cases ran."""
    import yaml

    hostile = ROOT / "tests" / "fixtures" / "hostile"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "subject.py").write_text(
        "from assignments.conv2d.subject import SUBJECT as _REAL\n"
        "import copy\n"
        "class Broken(type(_REAL)):\n"
        "    def describe(self, params):\n"
        "        raise RuntimeError('a bug of the grader')\n"
        "SUBJECT = copy.copy(_REAL)\n"
        "SUBJECT.__class__ = Broken\n")
    data = yaml.safe_load((hostile / "assignment.yaml").read_text())
    data["scaffold"] = str((hostile / data["scaffold"]).resolve())
    data["subject"] = "subject.py"
    path = tmp_path / "broken" / "assignment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_gradescope_gets_a_zero_with_the_reason_whenever_grading_fails(tmp_path):
    """run_autograder's glob matched nothing or two notebooks, or the grader itself failed:
    Gradescope still gets a results.json (0 points, and why), not a platform error."""
    upload = tmp_path / "submission"
    upload.mkdir()
    results = tmp_path / "results" / "results.json"

    def failing(*args, code):
        results.unlink(missing_ok=True)
        result = grade(*args, "--gradescope", results, "--quiet")
        assert result.returncode == code, result.stderr
        data = json.loads(results.read_text())
        assert data["score"] == 0 and data["tests"] == [] and data["output"], data
        return data["output"]

    assert "matches no file" in failing(upload / "*.ipynb", code=2)
    for name in ("a.ipynb", "b.ipynb"):
        shutil.copy(SUBMISSIONS / "correct.ipynb", upload / name)
    assert "2 submissions" in failing(upload / "a.ipynb", upload / "b.ipynb", code=2)
    assert "internal error" in failing(SUBMISSIONS / "correct_module.py", "--assignment", broken_assignment(tmp_path),
                                       "--device", "cpu", "--case", "course-001", code=70)
    # --find-in: the one notebook of a folder, whatever its name and depth; none or two say so.
    assert "2 notebooks" in failing("--find-in", upload, code=2)
    (upload / "b.ipynb").unlink()
    (upload / "nested").mkdir()
    (upload / "a.ipynb").rename(upload / "nested" / "My Homework.ipynb")
    (upload / ".ipynb_checkpoints").mkdir()
    shutil.copy(SUBMISSIONS / "template_bug.ipynb", upload / ".ipynb_checkpoints" / "x-checkpoint.ipynb")
    found = grade("--find-in", upload, "--gradescope", results, "--device", "cpu", "--case", "course-001", "--quiet")
    assert found.returncode == 0, found.stderr
    assert json.loads(results.read_text())["score"] == 100
    shutil.rmtree(upload)
    upload.mkdir()
    assert "no notebook or module" in failing("--find-in", upload, code=2)
