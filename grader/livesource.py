"""Turn classes that live in a running session into a submission file for the worker.

`check(MyLayer)` is called where the class lives (a notebook's kernel, a script),
but student code only ever runs in a worker process, which needs source. In order of
preference:

1. in IPython/Jupyter, the session's input history (`In [1]`, `In [2]`, ...), written
   as a notebook whose cell N is `In [N]`, so messages say "cell 7" for `In [7]`. It
   is what the kernel actually ran, in the order it ran, and goes through the same
   notebook loader as a submitted file (magics, skipped calls, cell numbers);
2. the .py file the classes were defined in (a script, an imported module);
3. `inspect.getsource` of each class and, best effort, of the module-level functions
   and classes it uses, plus the imports and simple constants it refers to.

Statements that call the grader (`from grader import check`, `check(...)`) are left
out, their lines blanked so that line numbers stay right.
"""
from __future__ import annotations

import ast
import inspect
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .submission import TRANSPARENT_CELL_MAGICS, _translate_ipython, load_submission

GRADER_MODULES = ("grader", "reference")


class SourceUnavailable(Exception):
    """No source could be found for a class (a message for the student)."""


@dataclass(frozen=True)
class LiveSource:
    path: Path             # the submission file written for the worker
    origin: str            # what it was made from, for the report's header
    kind: str              # history, file or inspect
    left_out: int          # statements that call the grader, not sent
    unparsable: int        # history cells that do not parse (left out: a later cell fixed them)


def ipython_shell():
    """The running IPython shell, without importing IPython where nothing else has."""
    if "IPython" not in sys.modules:
        return None
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def write_submission(targets: dict[str, object | None], namespace: dict, folder: Path,
                     scaffold_names: set[str]) -> LiveSource:
    """Write a submission defining `targets` (assignment class name -> live object, None
    when the session has none) into `folder`."""
    live = {name: obj for name, obj in targets.items() if obj is not None}
    shell = ipython_shell()
    if shell is not None and namespace is shell.user_ns and \
            all(getattr(obj, "__module__", None) == "__main__" for obj in live.values()):
        return _from_history(shell, live, namespace, folder, scaffold_names)
    source_file = _common_source_file(live, namespace)
    if source_file is not None:
        return _from_file(source_file, live, namespace, folder, scaffold_names)
    text = _reconstruct(live, namespace, scaffold_names) + _aliases(live, namespace)
    path = folder / "session.py"
    path.write_text(text, encoding="utf-8")
    return LiveSource(path=path, origin="source of the live classes (inspect.getsource)",
                      kind="inspect", left_out=0, unparsable=0)


def _from_history(shell, live: dict, namespace: dict, folder: Path, scaffold_names: set[str]) -> LiveSource:
    raw = list(getattr(shell.history_manager, "input_hist_raw", None) or namespace.get("_ih") or [""])
    cells, left_out, unparsable = [], 0, 0
    names = grader_names(namespace)
    for source in raw[1:]:  # In[0] is empty: position N-1 holds In [N], the notebook's cell N
        text, removed, parsed = _clean_cell(source if isinstance(source, str) else "", names)
        cells.append(text)
        left_out += removed
        unparsable += not parsed
    path = folder / "session.ipynb"
    _write_notebook(path, cells)
    missing = _undefined(path, live, namespace)
    extra = _reconstruct({n: live[n] for n in missing}, namespace, scaffold_names) if missing else ""
    extra += _aliases(live, namespace)
    if extra:
        cells.append(extra)
        _write_notebook(path, cells)
    last = len(raw) - 1
    return LiveSource(path=path, origin=f"this session's cells In [1] to In [{last}]" if last > 0
                      else "this session", kind="history", left_out=left_out, unparsable=unparsable)


def _clean_cell(source: str, names: set[str]) -> tuple[str, int, bool]:
    """A history cell as plain Python (IPython syntax translated), grader calls blanked out.
    A cell that does not parse becomes empty: the kernel ran it and raised, and a later
    cell holds the fixed version."""
    header, body = "", source
    first, _, rest = source.partition("\n")
    if first.split(" ")[0].strip() in TRANSPARENT_CELL_MAGICS:
        header, body = first + "\n", rest
    translated = _translate_ipython(body)
    try:
        ast.parse(translated)
    except SyntaxError:
        return "", 0, False
    cleaned, removed = strip_grader_calls(translated, names)
    return header + cleaned, removed, True


def _write_notebook(path: Path, cells: list[str]) -> None:
    notebook = {"nbformat": 4, "nbformat_minor": 4, "metadata": {},
                "cells": [{"cell_type": "code", "execution_count": number, "metadata": {}, "outputs": [],
                           "source": source} for number, source in enumerate(cells, start=1)]}
    path.write_text(json.dumps(notebook, indent=1), encoding="utf-8")


def _undefined(path: Path, live: dict, namespace: dict) -> list[str]:
    """Classes the written submission does not define, under their name or their binding."""
    defined = {name for unit in load_submission(path).units for name in unit.defines}
    return [name for name, obj in live.items() if name not in defined and _binding(obj, namespace) not in defined]


def _common_source_file(live: dict, namespace: dict) -> Path | None:
    files = set()
    for obj in live.values():
        try:
            files.add(Path(inspect.getsourcefile(obj)).resolve())
        except (TypeError, OSError):
            return None
    if not live:
        caller = namespace.get("__file__")
        if isinstance(caller, str) and caller.endswith(".py"):
            files.add(Path(caller).resolve())
    if len(files) != 1:
        return None
    (only,) = files
    return only if only.suffix == ".py" and only.is_file() else None


def _from_file(source_file: Path, live: dict, namespace: dict, folder: Path, scaffold_names: set[str]) -> LiveSource:
    text = source_file.read_text(encoding="utf-8", errors="replace")
    try:
        text, removed = strip_grader_calls(text, grader_names(namespace))
    except SyntaxError:
        removed = 0  # the loader reports it
    path = folder / source_file.name
    path.write_text(text, encoding="utf-8")
    missing = _undefined(path, live, namespace)
    extra = _reconstruct({n: live[n] for n in missing}, namespace, scaffold_names) if missing else ""
    extra += _aliases(live, namespace)
    if extra:
        path.write_text(text.rstrip("\n") + "\n\n" + extra, encoding="utf-8")
    return LiveSource(path=path, origin=str(source_file), kind="file", left_out=removed, unparsable=0)


def grader_names(namespace: dict) -> set[str]:
    """Names bound to the grader's modules or functions in a namespace (`check`, `grader`)."""
    names = set()
    for key, value in namespace.items():
        module = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
        if isinstance(module, str) and module.split(".")[0] in GRADER_MODULES and key.isidentifier():
            names.add(key)
    return names


def strip_grader_calls(source: str, names: set[str] | None = None) -> tuple[str, int]:
    """Blank out top-level statements that import the grader or use what was imported from
    it (`from grader import check`, `check(MyLayer)`, `r = check_all()`). Function and
    class definitions are never removed: their bodies do not run at load time. `names`
    (grader names known so far) grows with the imports found, across calls."""
    tree = ast.parse(source)
    names = set() if names is None else names
    lines = source.splitlines(keepends=True)
    removed = 0
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if not _uses_grader(statement, names):
            continue
        # What it assigned came from the grader too: `r = check(A)` then `r.passed`.
        names.update(n.id for target in getattr(statement, "targets", [getattr(statement, "target", None)])
                     if target is not None for n in ast.walk(target) if isinstance(n, ast.Name))
        removed += 1
        for number in range(statement.lineno - 1, statement.end_lineno):
            lines[number] = "\n"
    return "".join(lines), removed


def _uses_grader(statement: ast.stmt, names: set[str]) -> bool:
    found = False
    for node in ast.walk(statement):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in GRADER_MODULES:
                    names.add(alias.asname or alias.name.split(".")[0])
                    found = True
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in GRADER_MODULES and node.level == 0:
                names.update(alias.asname or alias.name for alias in node.names)
                found = True
        elif isinstance(node, ast.Name) and node.id in names:
            found = True
    return found


def _binding(obj, namespace: dict) -> str | None:
    """The name `obj` is bound to in `namespace`, preferring its own name."""
    own = getattr(obj, "__name__", None)
    if own is not None and namespace.get(own, obj) is obj:
        return own
    return next((key for key, value in namespace.items() if value is obj and not key.startswith("_")), own)


def _aliases(live: dict, namespace: dict) -> str:
    """`TheLayer = MyLayer` for an item checked under another name."""
    lines = []
    for name, obj in live.items():
        bound = _binding(obj, namespace)
        if bound and bound != name:
            lines.append(f"{name} = {bound}\n")
    return "".join(lines)


def _reconstruct(live: dict, namespace: dict, scaffold_names: set[str]) -> str:
    """Source for `live` from inspect.getsource, with what it uses from `namespace` first."""
    imports: list[str] = []
    blocks: list[str] = []
    visited: set[int] = set()

    def visit(obj, root_module: str | None) -> None:
        if id(obj) in visited:
            return
        visited.add(id(obj))
        try:
            source = textwrap.dedent(inspect.getsource(obj))
        except (TypeError, OSError):
            raise SourceUnavailable(
                f"cannot find the source of {getattr(obj, '__name__', obj)!r}: define it in a notebook "
                "cell or a .py file and run it again") from None
        for name in _referenced_names(source):
            if name not in namespace or name == getattr(obj, "__name__", None):
                continue
            value = namespace[name]
            module = getattr(value, "__module__", None)
            if inspect.ismodule(value):
                if value.__name__.split(".")[0] not in GRADER_MODULES:
                    statement = f"import {value.__name__}" if name == value.__name__ \
                        else f"import {value.__name__} as {name}"
                    if statement not in imports:
                        imports.append(statement)
            elif (inspect.isclass(value) or inspect.isfunction(value)) and module in ("__main__", root_module):
                visit(value, root_module)
            elif name in scaffold_names:
                continue  # the grader defines the course scaffold before the submission
            elif module and module != "__main__" and module.split(".")[0] not in GRADER_MODULES \
                    and getattr(value, "__qualname__", "").isidentifier() \
                    and getattr(sys.modules.get(module), value.__qualname__, None) is value:
                statement = f"from {module} import {value.__qualname__}" + \
                    (f" as {name}" if name != value.__qualname__ else "")
                if statement not in imports:
                    imports.append(statement)
            elif _is_plain_constant(value):
                blocks.append(f"{name} = {value!r}\n")
        blocks.append(source if source.endswith("\n") else source + "\n")

    for obj in live.values():
        visit(obj, getattr(obj, "__module__", None))
    head = "".join(f"{line}\n" for line in imports)
    return head + ("\n" if head else "") + "\n\n".join(blocks)


def _referenced_names(source: str) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in names:
            names.append(node.id)
    return names


def _is_plain_constant(value, depth: int = 0) -> bool:
    if isinstance(value, (bool, int, float, str, type(None))):
        return len(repr(value)) < 1000
    if isinstance(value, (tuple, list)) and depth < 2 and len(value) < 100:
        return all(_is_plain_constant(v, depth + 1) for v in value)
    return False
