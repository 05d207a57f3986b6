import nbformat
import pytest

from conftest import SUBMISSIONS
from grader.errors import UsageError
from grader.submission import load_submission


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


def test_without_nbformat_and_ipython_notebooks_load_the_same(monkeypatch):
    """A bare GPU image has neither; the fallback must keep and skip the same statements."""
    import sys

    names = ("magics.ipynb", "syntax_error_cell.ipynb", "heavy_benchmark.ipynb")
    with_libraries = [load_submission(SUBMISSIONS / n) for n in names]
    monkeypatch.setitem(sys.modules, "nbformat", None)
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "IPython.core.inputtransformer2", None)
    without = [load_submission(SUBMISSIONS / n) for n in names]
    for a, b in zip(with_libraries, without):
        assert [(u.cell, u.line, u.defines) for u in a.units] == [(u.cell, u.line, u.defines) for u in b.units]
        assert [(n.cell, n.line, n.kind) for n in a.notes] == [(n.cell, n.line, n.kind) for n in b.notes]
