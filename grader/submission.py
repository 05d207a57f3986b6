"""Turn a submitted notebook or module into the definitions the worker will run.

Parsing only: nothing from the submission is executed here. A notebook is a
source of definitions, not a script to replay, so only top-level statements that
define things are kept; everything else is recorded as skipped, with its cell
and line, so the report can say what was left out and why.
"""
from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

KINDS = {".ipynb": "notebook", ".py": "module"}


@dataclass(frozen=True)
class CodeUnit:
    """One kept top-level statement, with where it came from."""
    index: int
    cell: int | None        # notebook cell number (1-based, counting all cells), None for modules
    line: int               # first line of the statement within its cell or module
    source: str             # the statement's Python source (after IPython syntax is translated)
    filename: str           # what tracebacks show, e.g. "cell 7" or "submission.py"
    defines: tuple[str, ...]


@dataclass(frozen=True)
class LoadNote:
    """Something left out of the submission while loading, and why."""
    cell: int | None
    line: int | None
    kind: str               # syntax_error, skipped_statement, skipped_magic, unreadable
    message: str


@dataclass(frozen=True)
class Submission:
    path: Path
    kind: str
    sha256: str
    units: tuple[CodeUnit, ...]
    notes: tuple[LoadNote, ...]

    def source_of(self, name: str) -> str | None:
        """The source of the last unit that defines `name` (the one that wins)."""
        defining = [u for u in self.units if name in u.defines]
        return defining[-1].source if defining else None


def load_submission(path: Path) -> Submission:
    if not path.is_file():
        raise UsageError(f"submission {str(path)!r} not found")
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"submission {path.name!r}: expected a .ipynb notebook or a .py module")
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if kind == "module":
        cells = [(None, _decode(data))]
        notes: list[LoadNote] = []
    else:
        cells, notes = _notebook_cells(data)
    units: list[CodeUnit] = []
    for cell_number, source in cells:
        if source is None:
            continue
        _collect_units(cell_number, source, path.name, units, notes)
    return Submission(path=path, kind=kind, sha256=sha256, units=tuple(units), notes=tuple(notes))


def _decode(data: bytes) -> str:
    # utf-8-sig drops the byte-order mark older Windows editors write at the start.
    return data.decode("utf-8-sig", errors="replace")


def _notebook_cells(data: bytes) -> tuple[list[tuple[int, str]], list[LoadNote]]:
    try:
        notebook = _read_notebook(_decode(data))
    except Exception as exc:  # nbformat raises several unrelated types for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return [], [LoadNote(cell=None, line=None, kind="unreadable",
                             message=f"not a readable notebook: {reason[:200]}")]
    cells = []
    for number, cell in enumerate(notebook.get("cells", []), start=1):
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            source = cell.get("source", "")
            if isinstance(source, list):
                source = "".join(part for part in source if isinstance(part, str))
            cells.append((number, source if isinstance(source, str) else ""))
    return cells, []


def _read_notebook(text: str) -> dict:
    try:
        import nbformat
    except ImportError:
        # Where nbformat is not installed (a bare GPU image), read the v4 JSON directly:
        # only cells, their type and their source are needed.
        import json

        notebook = json.loads(text)
        if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
            raise ValueError("no list of cells") from None
        return notebook
    return nbformat.reads(text, as_version=4)


def _translate_ipython(source: str) -> str:
    """IPython syntax (%magic, %%cell magic, !shell, x = !cmd) to plain Python calls."""
    try:
        ast.parse(source)
        return source  # plain Python: nothing to translate, and IPython need not be imported
    except SyntaxError:
        pass
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return _translate_without_ipython(source)
    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # a cell IPython cannot transform is reported as a syntax error below
        return source


MAGIC_ASSIGNMENT = re.compile(r"^(\s*)([\w.]+\s*=\s*)([%!].*)$")


def _translate_without_ipython(source: str) -> str:
    """Line magics and shell escapes become the calls IPython would make, so they are
    classified (and skipped) the same way; a %%cell magic takes the whole cell."""
    if source.lstrip().startswith("%%"):
        return f"get_ipython().run_cell_magic({source!r})\n"
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        indent = line[:len(line) - len(stripped)]
        assignment = MAGIC_ASSIGNMENT.match(line)
        if assignment:
            lines.append(f"{assignment.group(1)}{assignment.group(2)}get_ipython().getoutput({assignment.group(3)!r})")
        elif stripped.startswith(("%", "!")):
            lines.append(f"{indent}get_ipython().system({stripped!r})")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


# Cell magics whose body is ordinary Python that the cell also defines things with.
TRANSPARENT_CELL_MAGICS = ("%%time", "%%timeit", "%%capture")


def _collect_units(cell: int | None, raw_source: str, module_name: str,
                   units: list[CodeUnit], notes: list[LoadNote]) -> None:
    line_offset = 0
    if cell is not None:
        # Blank lines before a cell magic are allowed, and IPython's transformer drops leading
        # blank lines anyway: count them, so every line number below stays the cell's own.
        stripped = raw_source.lstrip("\r\n \t")
        line_offset = raw_source[:len(raw_source) - len(stripped)].count("\n")
        raw_source = stripped
        first, _, body = raw_source.partition("\n")
        if first.split(" ")[0].strip() in TRANSPARENT_CELL_MAGICS:
            notes.append(LoadNote(cell=cell, line=line_offset + 1, kind="skipped_magic",
                                  message=f"cell magic {first.strip()[:40]}: only its body's definitions are kept"))
            raw_source = body
            line_offset += 1
    source = _translate_ipython(raw_source) if cell is not None else raw_source
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        where = f"cell {cell}" if cell is not None else module_name
        line = (exc.lineno or 1) + line_offset
        notes.append(LoadNote(cell=cell, line=line, kind="syntax_error",
                              message=f"{where} does not parse (line {line}: {exc.msg}); "
                                      "its definitions are skipped"))
        return
    for statement in tree.body:
        segment = ast.get_source_segment(source, statement) or ast.unparse(statement)
        line = statement.lineno + line_offset
        reason = _skip_reason(statement)
        if reason == "bare expression":
            continue  # docstrings and string "comments" are not worth a note
        if reason is not None:
            kind = "skipped_magic" if _is_ipython_call(statement) else "skipped_statement"
            notes.append(LoadNote(cell=cell, line=line, kind=kind,
                                  message=f"{reason}: {_first_line(segment)}"))
            continue
        units.append(CodeUnit(
            index=len(units), cell=cell, line=line, source=segment,
            filename=f"cell {cell}" if cell is not None else module_name,
            defines=tuple(sorted(_defined_names(statement))),
        ))


def _first_line(segment: str) -> str:
    line = segment.strip().splitlines()[0] if segment.strip() else ""
    return line if len(line) <= 80 else line[:77] + "..."


DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _skip_reason(statement: ast.stmt) -> str | None:
    if isinstance(statement, DEFINITIONS) or isinstance(statement, ast.Pass):
        return None
    if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        if _is_ipython_call(statement):
            return "shell or magic output assignment"
        return None
    if isinstance(statement, (ast.If, ast.Try)) and not _is_main_guard(statement):
        blocks = _child_blocks(statement)
        if all(_skip_reason(inner) is None for block in blocks for inner in block):
            return None
        return "block that does more than define names"
    if isinstance(statement, ast.Expr):
        if _is_ipython_call(statement):
            return "IPython magic or shell command"
        if isinstance(statement.value, ast.Constant):
            return "bare expression"
        return "expression (calls and prints are not definitions)"
    if _is_main_guard(statement):
        return "`if __name__ == '__main__'` block"
    return f"{type(statement).__name__.lower()} statement"


def _child_blocks(statement: ast.stmt) -> list[list[ast.stmt]]:
    if isinstance(statement, ast.If):
        return [statement.body, statement.orelse]
    blocks = [statement.body, statement.orelse, statement.finalbody]
    blocks.extend(handler.body for handler in statement.handlers)
    return blocks


def _is_main_guard(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.If) and "__name__" in ast.unparse(statement.test)


def _is_ipython_call(statement: ast.stmt) -> bool:
    """True for what IPython's transformer makes of %magic, %%magic and !shell."""
    value = getattr(statement, "value", None)
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Call)
            and isinstance(value.func.value.func, ast.Name)
            and value.func.value.func.id == "get_ipython")


def _defined_names(statement: ast.stmt) -> set[str]:
    names: set[str] = set()
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names.add(statement.name)
    elif isinstance(statement, (ast.Import, ast.ImportFrom)):
        for alias in statement.names:
            names.add((alias.asname or alias.name).split(".")[0])
    elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        for target in targets:
            names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    elif isinstance(statement, (ast.If, ast.Try)):
        for block in _child_blocks(statement):
            for inner in block:
                names.update(_defined_names(inner))
    return names


def submission_summary(submission: Submission) -> dict:
    """What the report says about the file itself."""
    return {"path": str(submission.path), "sha256": submission.sha256, "kind": submission.kind}

