import nbformat
import pytest

from conftest import SUBMISSIONS
from grader.errors import UsageError
from grader.submission import forget_parsed, load_submission


def _notebook(tmp_path, *cells):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# Homework")] + [nbformat.v4.new_code_cell(c) for c in cells]
    path = tmp_path / "sub.ipynb"
    nbformat.write(notebook, path)
    return path


def test_only_definitions_are_kept_and_the_rest_is_listed(tmp_path):
    path = _notebook(tmp_path,
                     "import torch\n%matplotlib inline\nfiles = !ls\n!pip install opencv-python\nx = 3",
                     "class A:\n    pass\nprint(A())\nfor i in range(10**9):\n    pass",
                     "if torch.cuda.is_available():\n    device = 'cuda'\nelse:\n    device = 'cpu'",
                     "if __name__ == '__main__':\n    A()")
    submission = load_submission(path)
    kept = [(u.cell, u.line, u.defines) for u in submission.units]
    assert kept == [(2, 1, ("torch",)), (2, 5, ("x",)), (3, 1, ("A",)), (4, 1, ("device",))]
    skipped = {(n.cell, n.line): n.kind for n in submission.notes}
    assert skipped == {(2, 2): "skipped_magic", (2, 3): "skipped_magic", (2, 4): "skipped_magic",
                       (3, 3): "skipped_statement", (3, 4): "skipped_statement", (5, 1): "skipped_statement"}


def test_a_cell_that_does_not_parse_is_reported_and_the_others_count(tmp_path):
    path = _notebook(tmp_path, "def broken(:\n    pass", "def fine():\n    return 1")
    submission = load_submission(path)
    assert [u.defines for u in submission.units] == [("fine",)]
    [note] = submission.notes
    assert (note.cell, note.kind) == (2, "syntax_error") and "cell 2" in note.message


def test_time_cell_magic_keeps_the_definitions_of_its_body(tmp_path):
    path = _notebook(tmp_path, "%%time\nclass Conv2dLoop:\n    pass\nConv2dLoop()")
    submission = load_submission(path)
    [unit] = submission.units
    assert unit.defines == ("Conv2dLoop",) and unit.line == 2
    assert {n.kind for n in submission.notes} == {"skipped_magic", "skipped_statement"}


def test_other_cell_magics_are_skipped_whole(tmp_path):
    path = _notebook(tmp_path, "%%bash\necho hi", "%%writefile x.py\nclass A: pass")
    submission = load_submission(path)
    assert submission.units == ()
    assert len(submission.notes) == 2


def test_a_module_is_read_the_same_way(tmp_path):
    path = tmp_path / "sub.py"
    path.write_text('"""doc"""\nimport torch\nclass A:\n    pass\nprint(A)\n')
    submission = load_submission(path)
    assert submission.kind == "module"
    assert [u.defines for u in submission.units] == [("torch",), ("A",)]
    assert [n.line for n in submission.notes] == [5]


def test_an_unreadable_notebook_still_gives_a_submission(tmp_path):
    path = tmp_path / "sub.ipynb"
    path.write_text("{not json")
    submission = load_submission(path)
    assert submission.units == () and submission.notes[0].kind == "unreadable"


def test_a_missing_file_or_wrong_suffix_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        load_submission(tmp_path / "nope.ipynb")
    other = tmp_path / "sub.txt"
    other.write_text("x")
    with pytest.raises(UsageError):
        load_submission(other)


def test_fixture_with_magics_keeps_all_three_classes():
    submission = load_submission(SUBMISSIONS / "magics.ipynb")
    defined = {name for u in submission.units for name in u.defines}
    assert {"Conv2dLoop", "Conv2dMatrix", "Conv2dMatrixV2"} <= defined
    assert any(n.kind == "skipped_magic" for n in submission.notes)


def test_same_file_same_hash(tmp_path):
    path = _notebook(tmp_path, "x = 1")
    assert load_submission(path).sha256 == load_submission(path).sha256


def test_a_file_changed_since_it_was_read_is_parsed_again(tmp_path):
    """Parsed files are kept by content hash (a batch reads each twice): new bytes, new parse."""
    path = tmp_path / "sub.py"
    path.write_text("def a():\n    return 1\n")
    first = load_submission(path)
    assert load_submission(path) is first
    path.write_text("def b():\n    return 2\n")
    again = load_submission(path)
    assert again is not first and [u.defines for u in again.units] == [("b",)]
    path.unlink()
    with pytest.raises(UsageError):
        load_submission(path)


def test_without_nbformat_and_ipython_notebooks_load_the_same(monkeypatch):
    """A bare GPU image has neither; the fallback must keep and skip the same statements."""
    import sys

    names = ("magics.ipynb", "syntax_error_cell.ipynb", "heavy_benchmark.ipynb")
    with_libraries = [load_submission(SUBMISSIONS / n) for n in names]
    monkeypatch.setitem(sys.modules, "nbformat", None)
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "IPython.core.inputtransformer2", None)
    forget_parsed()
    without = [load_submission(SUBMISSIONS / n) for n in names]
    for a, b in zip(with_libraries, without):
        assert [(u.cell, u.line, u.defines) for u in a.units] == [(u.cell, u.line, u.defines) for u in b.units]
        assert [(n.cell, n.line, n.kind) for n in a.notes] == [(n.cell, n.line, n.kind) for n in b.notes]


# --- issue 11: any input file loads (and scans) without raising -----------------------------

def _odd_inputs() -> dict[str, bytes]:
    import json

    def notebook(*cells):
        return json.dumps({"cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": [],
                                      "execution_count": None} for c in cells],
                           "metadata": {}, "nbformat": 4, "nbformat_minor": 4})

    chain = "class Conv2dLoop:\n    def unused(self):\n        return x" + ".a" * 800 + ".conv2d\n"
    return {
        "surrogate.ipynb": notebook('x = "\\ud800"\n', "class Conv2dLoop:\n    pass\n")
        .replace("\\\\ud800", "\\ud800").encode(),
        "chain.py": chain.encode(),
        "chain_too_deep.py": ("x = y" + ".a" * 100_000 + "\n").encode(),
        "sum_too_deep.py": ("x = " + " + ".join(['"a"'] * 50_000) + "\n").encode(),
        "lambdas.py": ("f = " + "lambda: " * 3000 + "1\n").encode(),
        "brackets.py": ("x = " + "[" * 5000 + "]" * 5000 + "\n").encode(),
        "if_test_deep.py": ("if " + "a." * 5000 + "b:\n    x = 1\n").encode(),
        "nulls.py": b"x = 1\x00\nclass A: pass\n",
        "utf16.py": "x = 1\nclass Conv2dLoop: pass\n".encode("utf-16"),
        "latin1.py": "# -*- coding: latin-1 -*-\nx = 'caf\xe9'\n".encode("latin-1"),
        "unknown_coding.py": b"# -*- coding: nosuch -*-\nx = 1\n",
        "binary.py": bytes(range(256)) * 10,
        "huge.py": b"x = 1\n" * 400_000,
        "exec_loop.py": b"s = 'exec(s)'\n_ = exec(s)\nclass Conv2dLoop: pass\n",
        "garbage.ipynb": b"\xff\xfe\x00garbage",
        "cells.ipynb": json.dumps({"cells": [1, None, {"cell_type": "code", "source": 5}],
                                   "nbformat": 4, "nbformat_minor": 4, "metadata": {}}).encode(),
        "deep.ipynb": b"[" * 100_000 + b"]" * 100_000,
    }


@pytest.mark.parametrize("name", sorted(_odd_inputs()))
def test_odd_inputs_load_and_scan_without_raising(tmp_path, name):
    from grader.config import load_assignment
    from grader.score import scan_rules
    from grader.shortcuts import scan_class

    path = tmp_path / name
    path.write_bytes(_odd_inputs()[name])
    submission = load_submission(path)
    assignment = load_assignment("conv2d")
    for spec in assignment.items:
        for finding in scan_class(submission, spec.name, scan_rules(assignment, spec.forbidden_operators)):
            assert finding.kind in ("shortcut", "tampering")
    if name in ("surrogate.ipynb", "utf16.py", "chain.py"):
        assert "Conv2dLoop" in {n for u in submission.units for n in u.defines}
    if name == "surrogate.ipynb":
        assert any("lone surrogates" in n.message for n in submission.notes)


def test_a_long_attribute_chain_in_an_unused_method_is_a_note(tmp_path):
    from grader.shortcuts import ScanRules, scan_class

    path = tmp_path / "chain.py"
    path.write_bytes(_odd_inputs()["chain.py"])
    [finding] = scan_class(load_submission(path), "Conv2dLoop", ScanRules(frozenset({"conv2d"})))
    assert finding.kind == "shortcut" and finding.name.endswith(".a.conv2d") and len(finding.name) <= 120


# --- issue 10: %%writefile modules, and what still loads once the budget is spent -------------

def test_a_writefile_module_is_loaded_where_it_is_imported(tmp_path):
    path = _notebook(tmp_path,
                     "%%writefile conv_impl.py\nimport torch\n\nclass Conv2dLoop:\n    pass\n\nclass Helper:\n    pass",
                     "from conv_impl import *\nfrom conv_impl import Helper as H\nimport conv_impl as ci",
                     "%run conv_impl.py")
    submission = load_submission(path)
    units = [(u.cell, u.line, u.defines) for u in submission.units]
    assert units[:3] == [(2, 2, ("torch",)), (2, 4, ("Conv2dLoop",)), (2, 7, ("Helper",))]
    assert (3, 2, ("H",)) in units and (3, 3, ("ci",)) in units
    namespace = next(u for u in submission.units if u.defines == ("ci",))
    assert "Conv2dLoop=Conv2dLoop" in namespace.source and namespace.filename == "cell 3"
    assert len([u for u in submission.units if u.defines == ("Conv2dLoop",)]) == 1   # loaded once
    assert any("conv_impl.py (the %%writefile of cell 2)" in n.message for n in submission.notes)


def test_a_writefile_module_nothing_imports_is_named_in_the_notes(tmp_path):
    path = _notebook(tmp_path, "%%writefile conv_impl.py\nclass Conv2dLoop:\n    pass")
    submission = load_submission(path)
    assert submission.units == ()
    [note] = submission.notes
    assert note.cell == 2 and "nothing imports conv_impl" in note.message


def test_cheap_statements_are_marked_for_the_load_budget(tmp_path):
    path = _notebook(tmp_path, "\n".join([
        "import torch",
        "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "sizes = (1, 2, 3)",
        "scale = 2 ** 10",
        "def f():\n    pass",
        "timings = [f() for _ in range(10)]",
        "big = 10 ** 10 ** 10",
        "result = f()",
        "zeros = torch.zeros(10 ** 9)",
    ]))
    cheap = {u.defines[0]: u.cheap for u in load_submission(path).units}
    assert cheap == {"torch": True, "device": True, "sizes": True, "scale": True, "f": True,
                     "timings": False, "big": False, "result": False, "zeros": False}
