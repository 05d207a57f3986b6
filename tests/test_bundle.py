"""The students' distribution: `grade bundle --student` and what its wheel holds (and must not)."""
import ast
import base64
import hashlib
import io
import json
import os
import re
import subprocess
import tokenize
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from grader import bundle, cli
from grader.config import load_assignment
from grader.public import is_public_config, only_items, public_assignment, public_seed

INSTRUCTOR = load_assignment("conv2d")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    assert cli.main(["bundle", "--student", "--assignment", "conv2d", "-o", str(out)]) == 0
    (path,) = out.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def wheel_files(wheel):
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_wheel_is_an_installable_student_package(wheel, wheel_files):
    assert wheel.name == "conv2d_grader_student-0.1.0-py3-none-any.whl"
    names = set(wheel_files)
    info = "conv2d_grader_student-0.1.0.dist-info"
    for required in ("grader/__init__.py", "grader/cli.py", "grader/selfcheck.py", "grader/worker.py",
                     "grader/schema/report.schema.json", "assignments/__init__.py",
                     "assignments/conv2d/assignment.yaml", "assignments/conv2d/scaffold.py",
                     "assignments/conv2d/handout.ipynb", f"{info}/METADATA", f"{info}/WHEEL",
                     f"{info}/RECORD", f"{info}/entry_points.txt"):
        assert required in names, required
    tops = {name.split("/")[0] for name in names}
    assert tops == {"grader", "assignments", info}, tops  # no reference, tests, example, scripts
    assert not any("__pycache__" in name or name.endswith(".pyc") or "example" in name for name in names)
    assert "[console_scripts]\ngrade = grader.cli:main" in wheel_files[f"{info}/entry_points.txt"].decode()
    metadata = wheel_files[f"{info}/METADATA"].decode()
    requires = {re.split(r"[<>=!~ ]", line.split(": ", 1)[1])[0].lower()
                for line in metadata.splitlines() if line.startswith("Requires-Dist: ")}
    assert requires == {"torch", "pyyaml", "nbformat", "ipython"}
    assert "Root-Is-Purelib: true" in wheel_files[f"{info}/WHEEL"].decode()


def test_record_lists_every_file_with_its_sha256(wheel_files):
    info = "conv2d_grader_student-0.1.0.dist-info"
    rows = [line.split(",") for line in wheel_files[f"{info}/RECORD"].decode().splitlines()]
    recorded = {path: (digest, size) for path, digest, size in rows}
    assert set(recorded) == set(wheel_files)
    assert recorded[f"{info}/RECORD"] == ("", "")
    for path, data in wheel_files.items():
        if path == f"{info}/RECORD":
            continue
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert recorded[path] == (f"sha256={digest}", str(len(data))), path


def test_the_same_sources_give_the_same_wheel(wheel, tmp_path):
    again = bundle.build_student_wheel([INSTRUCTOR], tmp_path, {INSTRUCTOR.id: public_seed(INSTRUCTOR)})
    assert again.read_bytes() == wheel.read_bytes()


def test_the_config_in_the_wheel_is_public(wheel_files, tmp_path):
    text = wheel_files["assignments/conv2d/assignment.yaml"].decode()
    raw = yaml.safe_load(text)
    assert not any(isinstance(body, dict) and body.get("hidden") for body in raw["groups"].values())
    assert raw["seed"] != INSTRUCTOR.seed
    assert not re.search(rf"^\s*seed:\s*{INSTRUCTOR.seed}\s*$", text, re.MULTILINE)
    public_names = [g.name for g in INSTRUCTOR.groups if not g.hidden]
    assert list(raw["groups"]) == public_names and len(public_names) < len(INSTRUCTOR.groups)
    # It loads as it is (with the files that travel beside it), and a self-check in this
    # repository draws exactly the students' cases.
    for name, data in wheel_files.items():
        if name.startswith("assignments/conv2d/") and name.count("/") == 2:
            (tmp_path / name.rsplit("/", 1)[1]).write_bytes(data)
    student = load_assignment(str(tmp_path / "assignment.yaml"))
    assert is_public_config(student.path) and not is_public_config(INSTRUCTOR.path)
    assert public_assignment(student).seed == student.seed == public_assignment(INSTRUCTOR).seed
    assert [g.name for g in public_assignment(student).groups] == public_names


def test_a_chosen_public_seed_must_differ_from_the_instructors(tmp_path, capsys):
    one = ["--assignment", "conv2d"]
    assert cli.main(["bundle", "--student", *one, "-o", str(tmp_path), "--public-seed", str(INSTRUCTOR.seed)]) == 2
    assert cli.main(["bundle", "-o", str(tmp_path)]) == 2
    assert "--student" in capsys.readouterr().err
    assert cli.main(["bundle", "--student", *one, "-o", str(tmp_path), "--public-seed", "7"]) == 0
    with zipfile.ZipFile(next(tmp_path.glob("*.whl"))) as archive:
        assert yaml.safe_load(archive.read("assignments/conv2d/assignment.yaml"))["seed"] == 7


def test_public_views_of_the_assignment():
    public = public_assignment(INSTRUCTOR)
    assert public.seed != INSTRUCTOR.seed and not any(g.hidden for g in public.groups)
    loop_only = only_items(public, ["Conv2dLoop"])
    assert [c.name for c in loop_only.items] == ["Conv2dLoop"]
    assert "wide_channels" not in [g.name for g in loop_only.groups]  # it is for the matrix classes
    matrix = only_items(public, ["Conv2dMatrix"])
    assert next(g for g in matrix.groups if g.name == "wide_channels").items == ("Conv2dMatrix",)


# --- no solution in the student package ----------------------------------------------------

def normalized_lines(text: str) -> list[str]:
    """Source lines without comments and whitespace, empty ones dropped."""
    lines = text.splitlines()
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT:
                row, column = token.start
                lines[row - 1] = lines[row - 1][:column]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return [squeezed for squeezed in (re.sub(r"\s+", "", line) for line in lines) if squeezed]


def reference_bodies(name: str = "conv2d") -> dict[str, list[str]]:
    """Every function and method of reference/<name>.py: its normalized body, docstring left out."""
    source = (ROOT / "reference" / f"{name}.py").read_text()
    lines = source.splitlines()
    bodies = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]
            if body:
                text = "\n".join(lines[body[0].lineno - 1:body[-1].end_lineno])
                bodies[f"{node.name} (line {node.lineno})"] = normalized_lines(text)
    return bodies


def file_text(name: str, data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    if name.endswith(".ipynb"):  # the code as a person would read it
        cells = json.loads(text)["cells"]
        return "\n".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in cells)
    return text


def leaks(text: str, bodies: dict[str, list[str]]) -> list[str]:
    """Reference bodies found in `text`: any whole body, or any line of one longer than 20
    characters (normalized), which no public file needs."""
    lines = normalized_lines(text)
    joined = "\n".join(lines)
    present = set(lines)
    found = []
    for name, body in bodies.items():
        if "\n".join(body) in joined:
            found.append(f"{name}: whole body")
        found.extend(f"{name}: {line}" for line in body if len(line) > 20 and line in present)
    return found


def test_no_file_in_the_wheel_holds_the_references_method_bodies(wheel_files):
    bodies = reference_bodies()
    assert len(bodies) >= 10 and all(bodies.values())
    # The check finds them where they are (it cannot pass by finding nothing anywhere).
    assert len(leaks((ROOT / "reference" / "conv2d.py").read_text(), bodies)) >= len(bodies)
    for name, data in wheel_files.items():
        assert leaks(file_text(name, data), bodies) == [], name


@pytest.fixture(scope="module")
def course_wheel_files(tmp_path_factory):
    """`grade bundle --student` with no --assignment: every bundled assignment in one wheel."""
    out = tmp_path_factory.mktemp("course-dist")
    assert cli.main(["bundle", "--student", "-o", str(out)]) == 0
    (path,) = out.glob("*.whl")
    assert path.name == "grader_student-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_course_wheel_has_every_assignment_public_and_no_reference(course_wheel_files):
    names = set(course_wheel_files)
    for required in ("assignments/conv2d/assignment.yaml", "assignments/normalization/assignment.yaml",
                     "assignments/normalization/subject.py", "assignments/normalization/causes.py",
                     "assignments/normalization/tolerance.py", "assignments/normalization/handout.ipynb"):
        assert required in names, required
    assert not any("/fixtures/" in name or "/example/" in name or "/study/" in name or name.startswith("reference/")
                   for name in names), sorted(names)
    # Hidden groups are an item's own in the normalization lesson: none travels.
    raw = yaml.safe_load(course_wheel_files["assignments/normalization/assignment.yaml"])
    groups = [(item, name, body) for item, spec in raw["items"].items() for name, body in spec["groups"].items()]
    assert groups and not [g for g in groups if g[2].get("hidden")]
    assert "random" not in {name for _, name, _ in groups}
    assert raw["seed"] != load_assignment("normalization").seed
    # No reference's code in any file: every function body of every reference module.
    for path in sorted((ROOT / "reference").glob("*.py")):
        if path.name == "__init__.py":
            continue
        bodies = reference_bodies(path.stem)
        assert len(leaks(path.read_text(), bodies)) >= len(bodies), path.name   # the check can fire
        for name, data in course_wheel_files.items():
            assert leaks(file_text(name, data), bodies) == [], (path.name, name, leaks(file_text(name, data), bodies))


def _optional_imports(tree) -> set[int]:
    """ids of the import nodes inside a `try` that catches ImportError."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError"
                                             for h in node.handlers):
            found.update(id(n) for statement in node.body for n in ast.walk(statement))
    return found


def _reference_imports(tree) -> list[tuple[object, list[str]]]:
    found = []
    for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or ""]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            modules = [str(node.args[0].value)]
        if any(m.split(".")[0] == "reference" for m in modules):
            found.append((node, modules))
    return found


def test_nothing_in_the_wheel_needs_the_reference():
    """The student wheel has no reference package. The harness never imports it; an
    assignment's subject may, for checks that need it (per-method layouts), but only inside a
    `try` that catches ImportError: without it those checks are `not_run`."""
    for path in sorted((ROOT / "grader").rglob("*.py")):
        assert _reference_imports(ast.parse(path.read_text(), str(path))) == [], path.name
    optional_somewhere = False
    for path in sorted((ROOT / "assignments").glob("*/*.py")):
        tree = ast.parse(path.read_text(), str(path))
        optional = _optional_imports(tree)
        for node, modules in _reference_imports(tree):
            assert id(node) in optional, f"{path}: {modules} must be optional"
            optional_somewhere = True
    assert optional_somewhere, "the check checks nothing"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GRADER_STUDENT_ACCEPTANCE"),
                    reason="~50 s (a fresh venv installs torch): set GRADER_STUDENT_ACCEPTANCE=1, "
                           "or run scripts/student_acceptance.sh")
def test_student_wheel_in_a_fresh_virtual_environment():
    result = subprocess.run(["bash", str(ROOT / "scripts" / "student_acceptance.sh")], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "student acceptance: all checks passed" in result.stdout
