"""Students' self-check: `grade check`, `check()` / `check_all()` in scripts and notebooks,
and grading where some protections are missing."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest

from conftest import ROOT, SUBMISSIONS
from grader import livesource, protections
from grader.config import load_assignment
from grader.public import public_assignment
from grader.render_html import render_html
from grader.selfcheck import CheckResult, report_passes

SCHEMA = json.loads((ROOT / "grader" / "schema" / "report.schema.json").read_text())
PUBLIC_SEED = public_assignment(load_assignment("conv2d")).seed
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}


def grade_check(*args, cwd=ROOT, env=ENV, prefix=(), timeout=300):
    return subprocess.run([*prefix, sys.executable, "-m", "grader", "check", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def run_python(script: str, cwd: Path, timeout=300):
    path = cwd / "student_script.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=ENV)


# --- grade check -----------------------------------------------------------------------------

def test_grade_check_passes_a_correct_class_on_public_cases_only(tmp_path):
    out = tmp_path / "report.json"
    result = grade_check(SUBMISSIONS / "correct.ipynb", "--device", "cpu", "--class", "Conv2dMatrix", "-o", out)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    jsonschema.validate(report, SCHEMA)
    assert list(report["items"]) == ["Conv2dMatrix"] and report["seed"] == PUBLIC_SEED
    cases = report["items"]["Conv2dMatrix"]["cases"]
    assert cases and not any(c["hidden"] for c in cases) and not any(c["group"] == "random" for c in cases)
    assert "Conv2dMatrix" in result.stdout and "every class passes all its public cases" in result.stdout
    assert "public cases only" in result.stdout


def test_grade_check_exits_1_when_a_public_case_fails_and_2_on_usage_errors(tmp_path):
    failing = grade_check(SUBMISSIONS / "template_bug.ipynb", "--device", "cpu", "--class", "Conv2dMatrixV2")
    assert failing.returncode == 1, failing.stderr
    assert "smallest failing case" in failing.stdout and "replay: grade" in failing.stdout and "not every public case passes" in failing.stdout
    assert grade_check(SUBMISSIONS / "correct.ipynb", "--class", "Conv2dNope").returncode == 2
    assert grade_check(tmp_path / "missing.ipynb").returncode == 2
    hidden = grade_check(SUBMISSIONS / "correct.ipynb", "--device", "cpu", "--case", "random-001")
    assert hidden.returncode == 2 and "no case 'random-001'" in hidden.stderr


# --- check() and check_all() -------------------------------------------------------------------

def test_check_in_a_script_runs_in_process_without_the_subreaper(tmp_path):
    """check() does not make the caller a subreaper (that would reap a notebook kernel's own
    children); grading still runs in a worker, and the result says the reaper is off."""
    shutil.copy(SUBMISSIONS / "correct_module.py", tmp_path / "mine.py")
    result = run_python("""
        import json, os, sys
        from grader import check, reaper

        from mine import Conv2dLoop, Conv2dMatrixV2

        by_class = check(Conv2dLoop, device="cpu")
        by_name = check("Conv2dMatrixV2", device="cpu")  # looked up in this module's globals
        print(json.dumps({"passed": [by_class.passed, by_name.passed], "subreaper": reaper.is_subreaper(),
                          "classes": [list(by_class.report["items"]), list(by_name.report["items"])],
                          "seed": by_class.report["seed"], "source": by_class.report["submission"]["path"],
                          "text": str(by_class), "html": by_class._repr_html_()}))
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["passed"] == [True, True] and data["subreaper"] is False
    assert data["classes"] == [["Conv2dLoop"], ["Conv2dMatrixV2"]] and data["seed"] == PUBLIC_SEED
    assert data["source"].endswith("mine.py")
    assert "reaps_orphans" in data["text"] and "Conv2dLoop" in data["text"]
    assert "<table" in data["html"] and "reaps_orphans" in data["html"]


def test_check_of_a_function_picks_the_lessons_step_by_its_parameters(tmp_path):
    """Issue 12: check() works for every assignment; two steps sharing a name are told apart by
    the function's parameter count."""
    shutil.copy(ROOT / "assignments" / "normalization" / "fixtures" / "correct_notes.py", tmp_path / "notes.py")
    result = run_python("""
        import json
        from grader import check
        import notes

        step2 = check(notes.custom_batch_norm1d, device="cpu")     # the 4-parameter form, the last def
        step4 = check("custom_batch_norm2d", device="cpu", namespace=vars(notes))
        print(json.dumps({"items": [list(step2.report["items"]), list(step4.report["items"])],
                          "assignment": step2.report["assignment"]["id"],
                          "passed": [step2.passed, step4.passed]}))
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data == {"items": [["batch_norm1d_affine"], ["batch_norm2d"]], "assignment": "normalization",
                    "passed": [True, True]}


def test_check_all_and_a_class_checked_under_another_name(tmp_path):
    # Like the real grader, check() sends the file, not its folder: helpers live in the file.
    result = run_python("""
        import json
        import torch as T
        from grader import check_all, check
        from grader.config import load_assignment

        SCALE = 1.0

        def window(x, i, j, k, s):
            return x[:, :, i * s:i * s + k, j * s:j * s + k]

        exec(load_assignment("conv2d").scaffold_source)  # ABCConv2d, calc_out_shape, as a notebook has

        class MyLoop(ABCConv2d):
            def __call__(self, x):
                b, o, oh, ow = calc_out_shape(x.shape, self.out_channels, self.kernel_size, self.stride, 0)
                out = x.new_zeros(b, o, oh, ow)
                for i in range(oh):
                    for j in range(ow):
                        w = window(x, i, j, self.kernel_size, self.stride)
                        out[:, :, i, j] = SCALE * (w.unsqueeze(1) * self.kernel).sum(dim=(2, 3, 4))
                return out

        renamed = check(MyLoop, name="Conv2dLoop", device="cpu", seed=5)
        everything = check_all(device="cpu", seed=5)
        loop = renamed.report["items"]["Conv2dLoop"]
        print(json.dumps({"loop": [loop["status"], loop["score"], loop["max_score"]],
                          "groups": {g["name"]: g["passed"] for g in loop["groups"]},
                          "all": {n: c["status"] for n, c in everything.report["items"].items()},
                          "passed": [renamed.passed, everything.passed],
                          "load_errors": renamed.report["load"]["errors"]}))
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    # No padding= support, so the padding and dilation groups are unsupported: not a full pass.
    assert data["loop"][0] == "graded" and 25 <= data["loop"][1] < data["loop"][2]
    assert data["groups"]["padding"] == 0 and data["groups"]["stride"] > 0
    assert data["all"] == {"Conv2dLoop": "missing", "Conv2dMatrix": "missing", "Conv2dMatrixV2": "missing"}
    assert data["passed"] == [False, False]
    assert data["load_errors"] == []  # the grader calls (and what they returned) were not sent


def test_check_reports_a_name_it_cannot_find():
    from grader import check

    with pytest.raises(NameError, match="no Conv2dLoop defined"):
        check("Conv2dLoop", namespace={})
    with pytest.raises(ValueError, match="none of them"):
        check(int, namespace={})


def test_import_grader_stays_cheap():
    probe = ("import sys, grader; print('torch' in sys.modules, 'grader.selfcheck' in sys.modules); "
             "from grader import check, check_all; print(callable(check), callable(check_all))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert result.stdout.split() == ["False", "False", "True", "True"], result.stderr


# --- turning a live session into source --------------------------------------------------------

def test_grader_calls_are_left_out_and_line_numbers_kept():
    source = textwrap.dedent("""\
        import torch
        from grader import check as c, check_all
        class A:
            def f(self):
                check = 1
                return check
        c(A)
        result = check_all()
        x = 1
        try:
            import grader
        except ImportError:
            pass
    """)
    cleaned, removed = livesource.strip_grader_calls(source)
    assert removed == 4  # the import, c(A), result = check_all(), the try
    lines = cleaned.splitlines()
    assert len(lines) == len(source.splitlines())
    assert lines[0] == "import torch" and lines[2] == "class A:" and lines[8] == "x = 1"
    assert "grader" not in cleaned and "check_all" not in cleaned and "c(A)" not in cleaned
    # Names imported in an earlier cell are known in later ones.
    names = set()
    livesource.strip_grader_calls("from grader import check\n", names)
    assert livesource.strip_grader_calls("r = check(A)\ny = 2\n", names) == ("\ny = 2\n", 1)


def test_history_cells_become_a_notebook_numbered_like_the_session(tmp_path):
    class Shell:
        class history_manager:
            input_hist_raw = ["", "import torch\nfrom grader import check",
                              "%%time\nclass Conv2dLoop:\n    pass", "class Broken(:", "check(Conv2dLoop)"]
        user_ns = {}

    shell = Shell()
    made = livesource._from_history(shell, {"Conv2dLoop": type("Conv2dLoop", (), {"__module__": "__main__"})},
                                    shell.user_ns, tmp_path, set())
    notebook = json.loads(made.path.read_text())
    sources = [cell["source"] for cell in notebook["cells"]]
    assert [cell["execution_count"] for cell in notebook["cells"]] == [1, 2, 3, 4]
    assert sources[0].startswith("import torch\n") and "grader" not in sources[0]
    assert sources[1].startswith("%%time\nclass Conv2dLoop")
    assert sources[2] == "" and sources[3].strip() == ""
    assert (made.left_out, made.unparsable, made.origin) == (2, 1, "this session's cells In [1] to In [4]")


def test_reconstructed_source_brings_what_the_class_uses(tmp_path):
    module = tmp_path / "student_mod.py"
    module.write_text(textwrap.dedent("""
        import torch as T
        from math import prod
        OFFSET = (0, 0)

        def helper(x):
            return T.zeros(prod(x)) + OFFSET[0]

        class Base:
            pass

        class Conv2dLoop(Base):
            def __call__(self, x):
                return helper(x.shape)
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        import student_mod
        source = livesource._reconstruct({"Conv2dLoop": student_mod.Conv2dLoop}, vars(student_mod), set())
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("student_mod", None)
    assert "import torch as T" in source and "from math import prod" in source and "OFFSET = (0, 0)" in source
    assert source.index("def helper") < source.index("class Conv2dLoop")
    assert source.index("class Base") < source.index("class Conv2dLoop")
    namespace = {}
    exec(source, namespace)
    assert namespace["Conv2dLoop"]()(namespace["T"].zeros(2, 3)).shape == (6,)


# --- rendering and verdicts --------------------------------------------------------------------

def fake_report(cases, status="graded", violations=()):
    return {"assignment": {"id": "conv2d"}, "submission": {"path": "<b>x</b>"}, "seed": 1, "score": 1.0,
            "max_score": 2.0, "load": {"errors": [], "skipped": [], "fatal": None},
            "environment": {"protections": {}},
            "items": {"Conv2dLoop": {"kind": "class", "status": status, "score": 1.0, "max_score": 2.0, "message": "",
                                       "violations": list(violations), "likely_causes": [],
                                       "groups": [{"name": "basic", "description": "d", "passed": 1,
                                                   "failed": 1, "error": 0, "timeout": 0,
                                                   "unsupported": 0, "skipped": 0}],
                                       "cases": cases}}}


def case(status, message=""):
    return {"id": "basic-001", "device": "cpu", "status": status, "message": message,
            "params": {"batch": 1, "in_channels": 1, "height": 4, "width": 4, "kernel_size": 3,
                       "out_channels": 1, "stride": 1, "padding": 0, "dilation": 1, "dtype": "float32"},
            "description": "input 1x1x4x4, kernel 3, 1 filters, stride 1"}


def test_a_pass_needs_every_counted_case_passed():
    assert report_passes(fake_report([case("passed"), case("skipped")]))
    assert not report_passes(fake_report([case("passed"), case("unsupported")]))
    assert not report_passes(fake_report([case("skipped")]))
    assert not report_passes(fake_report([], status="missing"))
    assert not report_passes(fake_report([case("passed")], violations=[{"message": "uses aten.convolution"}]))


def test_html_escapes_what_the_submission_wrote():
    report = fake_report([case("passed"), case("failed", "<script>alert(1)</script>")])
    html = CheckResult(report, ("note <i>",))._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "note &lt;i&gt;" in html
    assert "<table" in html and "basic 1/2" in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert render_html(report).count("<tr") == 2


def test_protections_that_are_off_are_named():
    active = {name: "on" for name in protections.WORKER_PROTECTIONS}
    assert protections.describe_off(active, reaps_orphans=True) is None
    del active["no_network"]
    text = protections.describe_off(active, reaps_orphans=False)
    assert "no_network" in text and "reaps_orphans" in text and "unprivileged_user" not in text


# --- where protections are missing ---------------------------------------------------------------

def _can_drop_capabilities() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("setpriv") is not None


@pytest.mark.skipif(not _can_drop_capabilities(), reason="needs root and setpriv to take capabilities away")
def test_without_namespaces_or_setuid_grading_runs_enforces_time_limits_and_says_what_is_off(
        assignment_copy, tmp_path):
    """Root without CAP_SYS_ADMIN/CAP_SETUID whose seccomp filter also refuses user namespaces
    (a default Docker container; GRADER_USERNS=0 stands for the filter): no namespaces, no
    unprivileged user. The worker still runs, a hung case still times out."""
    no_userns = {**ENV, "GRADER_USERNS": "0"}
    config = assignment_copy / "assignment.yaml"
    config.write_text(config.read_text().replace("case_s: 20", "case_s: 1"))
    (tmp_path / "hangs.py").write_text(textwrap.dedent("""
        class Conv2dLoop(ABCConv2d):
            def __call__(self, x):
                while True:
                    pass
    """))
    drop = ["setpriv", "--bounding-set", "-sys_admin,-setuid,-setgid", "--"]
    result = grade_check(tmp_path / "hangs.py", "--assignment", config, "--device", "cpu", "--class",
                         "Conv2dLoop", "--case", "basic-001", "--json", prefix=drop, timeout=120,
                         env=no_userns)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    (only,) = report["items"]["Conv2dLoop"]["cases"]
    assert only["status"] == "timeout" and "1 s" in only["message"]
    active = report["environment"]["protections"]
    assert "resource_limits" in active and not {"no_network", "hidden_paths", "unprivileged_user"} & set(active)
    table = grade_check(SUBMISSIONS / "correct.ipynb", "--device", "cpu", "--class", "Conv2dLoop", prefix=drop,
                        env=no_userns)
    assert table.returncode == 0, table.stderr
    off_line = next(line for line in table.stdout.splitlines() if line.startswith("protections off here"))
    assert "no_network" in off_line and "unprivileged_user" in off_line and "reaps_orphans" not in off_line


@pytest.mark.skipif(not _can_drop_capabilities(), reason="needs root and setpriv to take capabilities away")
def test_root_without_setuid_capabilities_still_grades():
    result = grade_check(SUBMISSIONS / "correct.ipynb", "--device", "cpu", "--class", "Conv2dLoop",
                         prefix=["setpriv", "--bounding-set", "-setuid,-setgid", "--"])
    assert result.returncode == 0, result.stderr[-500:]
    assert "unprivileged_user" in next(line for line in result.stdout.splitlines()
                                       if line.startswith("protections off here"))


def _nobody_can_run_python() -> bool:
    if not _can_drop_capabilities():
        return False
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                            "-c", f"import subprocess, sys; sys.path.insert(0, {str(ROOT)!r}); import torch, grader; "
                                  "subprocess.run([sys.executable, '-c', '0'], check=True, cwd='/')"],
                           capture_output=True, timeout=120, cwd="/")
    return probe.returncode == 0


@pytest.mark.skipif(not _nobody_can_run_python(),
                    reason="this Python or the repository is not readable by `nobody` (e.g. pyenv under "
                           "/root, mode 0700); scripts/student_acceptance.sh runs `grade check` as nobody "
                           "from a venv outside /root")
def test_as_a_normal_user_grading_runs_and_says_what_is_off():
    import tempfile
    # Not pytest's tmp_path: its parent folders are root's, mode 0700, so nobody could not enter.
    tmp_path = Path(tempfile.mkdtemp(prefix="grader-nobody-"))
    tmp_path.chmod(0o777)
    submission = tmp_path / "correct.ipynb"
    shutil.copy(SUBMISSIONS / "correct.ipynb", submission)
    submission.chmod(0o644)
    env = {**ENV, "HOME": str(tmp_path)}
    result = grade_check(submission, "--device", "cpu", "--class", "Conv2dLoop", cwd=tmp_path, env=env,
                         prefix=["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "protections off here" in result.stdout and "unprivileged_user" in result.stdout


# --- in a real notebook ----------------------------------------------------------------------

@pytest.mark.slow
def test_check_in_an_executed_notebook_shows_the_table(tmp_path):
    # A real kernel, as a student's notebook runs: `pip install -e ".[test]"` installs ipykernel
    # (README, "Set up"), so this never skips for want of one.
    import ipykernel  # noqa: F401
    assert shutil.which("jupyter"), "jupyter (jupyter_core, with nbconvert) must be on PATH"
    import nbformat

    scaffold = load_assignment("conv2d").scaffold_source
    cells = [
        scaffold,
        textwrap.dedent("""\
            class Conv2dLoop(ABCConv2d):
                def __call__(self, x):
                    b, o, oh, ow = calc_out_shape(x.shape, self.out_channels, self.kernel_size, self.stride, 0)
                    out = x.new_zeros(b, o, oh, ow)
                    k, s = self.kernel_size, self.stride
                    for i in range(oh):
                        for j in range(ow):
                            window = x[:, :, i * s:i * s + k, j * s:j * s + k]
                            out[:, :, i, j] = (window.unsqueeze(1) * self.kernel).sum(dim=(2, 3, 4))
                    return out"""),
        "%%time\nclass Conv2dMatrixV2(ABCConv2d):\n    def __call__(self, x):\n        return x.new_zeros(1)",
        "%time x = 1",
        "from grader import check, check_all\ncheck(Conv2dLoop, device='cpu')",
        "result = check('Conv2dMatrixV2', device='cpu')\nprint(result.passed, result.report['submission']['path'])",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    path = tmp_path / "selfcheck.ipynb"
    nbformat.write(notebook, path)
    result = subprocess.run(["jupyter", "nbconvert", "--to", "notebook", "--execute", str(path),
                             "--output", "executed.ipynb", "--ExecutePreprocessor.timeout=300"],
                            capture_output=True, text=True, timeout=400, cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    executed = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    (shown,) = [o for o in executed.cells[4].outputs if o.output_type == "execute_result"]
    html, text = shown.data["text/html"], shown.data["text/plain"]
    assert "<table" in html and "Conv2dLoop" in html and "stride ok" in html
    assert "Conv2dLoop" in text and "cell N is In [N] of this session" in text
    assert "padding unsupported" in text  # this class takes no padding=: the table says so
    printed = "".join(o.get("text", "") for o in executed.cells[5].outputs)
    assert printed.strip() == "False this session's cells In [1] to In [6]"
