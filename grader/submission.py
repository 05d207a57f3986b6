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
import threading
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
    # Cheap to run (a definition, an import, an assignment of literals or of constructors of
    # constants): still run once the load budget is spent, when costly statements are skipped.
    cheap: bool = False


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
    # Why the grader did not read the file at all (a link out of the submissions folder, a file
    # the worker's user could not read: inputs.py), or None. Then units and notes are empty and
    # sha256 is that of no bytes.
    refused: str | None = None

    def source_of(self, name: str) -> str | None:
        """The source of the last unit that defines `name` (the one that wins)."""
        defining = [u for u in self.units if name in u.defines]
        return defining[-1].source if defining else None


# Bounds on what is analysed: no honest submission comes near them, and beyond them parsing
# alone could take the grader's memory or time.
MAX_FILE_BYTES = 256 << 20
MAX_SOURCE_CHARS = 2 << 20          # one cell or module
MAX_UNITS = 20_000


def load_submission(path: Path) -> Submission:
    """Never raises for what the file holds: whatever cannot be read becomes a LoadNote."""
    if path.is_dir():
        raise UsageError(f"submission {str(path)!r} is a folder, not a notebook or module")
    if not path.is_file():
        raise UsageError(f"submission {str(path)!r} not found")
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"submission {path.name!r}: expected a .ipynb notebook or a .py module")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        return Submission(path=path, kind=kind, sha256=file_sha256(path), units=(), notes=(LoadNote(
            None, None, "unreadable", f"the file has {size >> 20} MB, more than the {MAX_FILE_BYTES >> 20} MB "
                                      "the grader reads"),))
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    key = (str(path), sha256)
    with _PARSED_LOCK:
        if key in _PARSED:
            return _PARSED[key][0]
    if kind == "module":
        cells = [(None, _decode(data, python=True))]
        notes: list[LoadNote] = []
    else:
        cells, notes = _notebook_cells(data)
    loader = _Loader(path.name, notes)
    for cell_number, source in cells:
        if source is not None:
            loader.cell(cell_number, source)
    loader.finish()
    submission = Submission(path=path, kind=kind, sha256=sha256, units=tuple(loader.units), notes=tuple(notes))
    _remember(key, submission)
    return submission


# The same bytes at the same path parse the same (a batch reads each file to choose its
# assignment, then to grade it): parsed submissions are kept, keyed by their content's hash, so
# a file changed in between is parsed again. Bounded by the code they hold (oldest go first).
_PARSED: dict[tuple[str, str], tuple[Submission, int]] = {}
_PARSED_LOCK = threading.Lock()
PARSED_CHARS_KEPT = 64 << 20


def _remember(key: tuple[str, str], submission: Submission) -> None:
    size = sum(len(unit.source) for unit in submission.units)
    if size > PARSED_CHARS_KEPT:
        return
    with _PARSED_LOCK:
        kept = sum(chars for _, chars in _PARSED.values()) + size
        while kept > PARSED_CHARS_KEPT:
            kept -= _PARSED.pop(next(iter(_PARSED)))[1]
        _PARSED[key] = (submission, size)


def forget_parsed() -> None:
    """Parse every file again from now on (a test that changes how files are parsed)."""
    with _PARSED_LOCK:
        _PARSED.clear()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _decode(data: bytes, python: bool = False) -> str:
    """Text from bytes whatever they are: a byte-order mark (UTF-8, UTF-16, UTF-32) decides, then
    a module's PEP 263 coding line, then UTF-8; bytes that do not decode become U+FFFD."""
    import codecs

    for mark, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                           (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                           (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(mark):
            return data.decode(encoding, errors="replace")
    encoding = "utf-8"
    if python:
        import io
        import tokenize

        try:
            encoding = tokenize.detect_encoding(io.BytesIO(data).readline)[0]
        except (SyntaxError, LookupError):
            encoding = "utf-8"
    try:
        return data.decode(encoding, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _valid_text(source: str) -> tuple[str, bool]:
    """The source with lone surrogates ("\\ud800" in a notebook's JSON) replaced by U+FFFD, which
    no parser or encoder accepts; and whether any were."""
    try:
        source.encode("utf-8")
        return source, False
    except UnicodeEncodeError:
        return SURROGATES.sub("\ufffd", source), True


SURROGATES = re.compile("[\ud800-\udfff]")


def _notebook_cells(data: bytes) -> tuple[list[tuple[int, str]], list[LoadNote]]:
    try:
        notebook = _read_notebook(_decode(data))
    except (Exception, RecursionError) as exc:  # nbformat raises several unrelated types for bad files
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


WRITEFILE = re.compile(r"^%%writefile(?:\s+(?:-a|--append))?\s+(?P<q>[\"']?)(?P<path>[^\"']+?)(?P=q)\s*$")
MAX_MODULE_DEPTH = 8      # a written module that imports a written module that ...


@dataclass
class _WrittenModule:
    """A `%%writefile name.py` module: its cells' bodies, and whether an import loaded it yet."""
    segments: list            # (cell, body, line offset of the body in its cell)
    loaded: bool = False


class _Loader:
    """Cells in, kept units and notes out. `%%writefile name.py` cells are remembered, not run:
    a later `import name` / `from name import ...` (or `%run name.py`) loads their definitions
    there, with the written cell's own numbers in every message."""

    def __init__(self, module_name: str, notes: list[LoadNote]):
        self.module_name = module_name
        self.units: list[CodeUnit] = []
        self.notes = notes
        self.written: dict[str, _WrittenModule] = {}
        self.depth = 0
        self.truncated = False

    def cell(self, cell: int | None, source: str) -> None:
        if len(source) > MAX_SOURCE_CHARS:
            self._note(cell, None, "unreadable", f"{self._where(cell)} has {len(source)} characters, more than "
                                                 f"the {MAX_SOURCE_CHARS} the grader reads; skipped")
            return
        source, replaced = _valid_text(source)
        if replaced:
            self._note(cell, None, "unreadable", f"{self._where(cell)} holds characters that are not valid "
                                                 "Unicode (lone surrogates); they were replaced by U+FFFD")
        try:
            self._collect(cell, source)
        except (RecursionError, MemoryError, ValueError, UnicodeError, SyntaxError) as exc:
            # Fail closed for this cell only: the others still count.
            self._note(cell, None, "syntax_error", f"{self._where(cell)} could not be analysed "
                                                   f"({type(exc).__name__}: too deeply nested or too large); skipped")

    def finish(self) -> None:
        for name, module in self.written.items():
            if not module.loaded:
                cell, _, offset = module.segments[0]
                self._note(cell, offset, "skipped_magic",
                           f"%%writefile {name}.py: nothing imports {name} after it, so its code is not graded "
                           f"(write `from {name} import *` in a later cell)")

    def _where(self, cell: int | None) -> str:
        return f"cell {cell}" if cell is not None else self.module_name

    def _note(self, cell, line, kind, message) -> None:
        self.notes.append(LoadNote(cell=cell, line=line, kind=kind, message=message))

    def _collect(self, cell: int | None, raw_source: str, line_offset: int = 0, python_only: bool = False) -> None:
        if cell is not None and not python_only:
            # Blank lines before a cell magic are allowed, and IPython's transformer drops leading
            # blank lines anyway: count them, so every line number below stays the cell's own.
            stripped = raw_source.lstrip("\r\n \t")
            line_offset = raw_source[:len(raw_source) - len(stripped)].count("\n")
            raw_source = stripped
            first, _, body = raw_source.partition("\n")
            writefile = WRITEFILE.match(first.strip())
            if writefile is not None and self._remember_module(cell, writefile, first, body, line_offset + 1):
                return
            if first.split(" ")[0].strip() in TRANSPARENT_CELL_MAGICS:
                self._note(cell, line_offset + 1, "skipped_magic",
                           f"cell magic {first.strip()[:40]}: only its body's definitions are kept")
                raw_source = body
                line_offset += 1
        source = _translate_ipython(raw_source) if cell is not None and not python_only else raw_source
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            where = self._where(cell)
            line = (exc.lineno or 1) + line_offset
            self._note(cell, line, "syntax_error", f"{where} does not parse (line {line}: {exc.msg}); "
                                                   "its definitions are skipped")
            return
        lines = _lines(source)
        for statement in tree.body:
            if self.truncated:
                return
            line = statement.lineno + line_offset
            if self._load_written(cell, statement, line):
                continue
            segment = _segment(lines, statement)
            reason = _skip_reason(statement)
            if reason == "bare expression":
                continue  # docstrings and string "comments" are not worth a note
            if reason is not None:
                kind = "skipped_magic" if _is_ipython_call(statement) else "skipped_statement"
                self._note(cell, line, kind, f"{reason}: {_first_line(segment)}")
                continue
            self._unit(cell, line, segment, tuple(sorted(_defined_names(statement))), _is_cheap(statement))

    def _unit(self, cell, line, source, defines, cheap) -> None:
        if len(self.units) >= MAX_UNITS:
            if not self.truncated:
                self.truncated = True
                self._note(cell, line, "skipped_statement",
                           f"more than {MAX_UNITS} top-level statements: the rest are skipped")
            return
        self.units.append(CodeUnit(index=len(self.units), cell=cell, line=line, source=source,
                                   filename=self._where(cell), defines=defines, cheap=cheap))

    # %%writefile modules.
    def _remember_module(self, cell: int, match: re.Match, first: str, body: str, offset: int) -> bool:
        path = match.group("path").strip()
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        if not name.endswith(".py") or not name[:-3].isidentifier():
            return False                     # not a module: skipped as any other cell magic
        name = name[:-3]
        module = self.written.get(name)
        if module is None or not first.split()[1:2] or first.split()[1] not in ("-a", "--append"):
            module = self.written[name] = _WrittenModule([])
        module.segments.append((cell, body, offset))    # noted where it is imported, or in finish()
        return True

    def _load_written(self, cell: int | None, statement: ast.stmt, line: int) -> bool:
        """`import name`, `from name import ...` or `%run name.py` of a %%writefile module: its
        definitions, then what the statement binds. True when the statement was one of those."""
        imported = _written_import(statement, self.written)
        if imported is None:
            return False
        name, aliases, namespace = imported
        module = self.written[name]
        if not module.loaded and self.depth < MAX_MODULE_DEPTH:
            module.loaded = True
            self.depth += 1
            try:
                for segment_cell, body, offset in module.segments:
                    self._collect(segment_cell, body, line_offset=offset, python_only=True)
            finally:
                self.depth -= 1
        defined = sorted({n for unit in self.units if unit.cell in
                          {c for c, _, _ in module.segments} for n in unit.defines})
        self._note(cell, line, "skipped_statement",
                   f"loads {name}.py (the %%writefile of cell {module.segments[0][0]}) in place of the import")
        for bound, original in aliases:
            self._unit(cell, line, f"{bound} = {original}", (bound,), True)
        if namespace is not None:
            members = ", ".join(f"{n}={n}" for n in defined if n.isidentifier())
            self._unit(cell, line, f"{namespace} = __import__('types').SimpleNamespace({members})", (namespace,), True)
        return True


def _written_import(statement: ast.stmt, written: dict):
    """(module, [(bound name, name in the module)], name bound to the module itself or None)."""
    if isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module in written:
        aliases = [(a.asname, a.name) for a in statement.names if a.name != "*" and a.asname and a.asname != a.name]
        return statement.module, aliases, None
    if isinstance(statement, ast.Import) and len(statement.names) == 1 and statement.names[0].name in written:
        alias = statement.names[0]
        return alias.name, [], alias.asname or alias.name
    if isinstance(statement, ast.Expr) and _is_ipython_call(statement):
        call = statement.value
        if call.func.attr == "run_line_magic" and len(call.args) == 2 \
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args) \
                and call.args[0].value == "run":
            target = call.args[1].value.strip().rsplit("/", 1)[-1]
            if target.endswith(".py") and target[:-3] in written:
                return target[:-3], [], None
    return None


def _lines(source: str) -> list[str]:
    """The source's lines as the parser counts them (\\r\\n, \\r and \\n end a line; form feeds
    and other characters str.splitlines() breaks on do not)."""
    return re.split(r"\r\n|\r|\n", source)


def _segment(lines: list[str], statement: ast.stmt) -> str:
    """The statement's own source text, as ast.get_source_segment gives it but from lines split
    once (get_source_segment splits the whole source on every call: quadratic in a long module),
    and never ast.unparse (it recurses on deep expressions). Offsets count UTF-8 bytes."""
    first, last = statement.lineno - 1, (statement.end_lineno or statement.lineno) - 1
    start, end = statement.col_offset, statement.end_col_offset
    if not 0 <= first <= last < len(lines) or start is None or end is None:
        return "\n".join(lines[first:last + 1])
    if first == last:
        return lines[first].encode()[start:end].decode(errors="replace")
    head = lines[first].encode()[start:].decode(errors="replace")
    tail = lines[last].encode()[:end].decode(errors="replace")
    return "\n".join([head, *lines[first + 1:last], tail])


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
    return isinstance(statement, ast.If) and any(
        isinstance(node, ast.Name) and node.id == "__name__" for node in ast.walk(statement.test))


def _is_ipython_call(statement: ast.stmt) -> bool:
    """True for what IPython's transformer makes of %magic, %%magic and !shell."""
    value = getattr(statement, "value", None)
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Call)
            and isinstance(value.func.value.func, ast.Name)
            and value.func.value.func.id == "get_ipython")


# Calls that make a constant cheaply (by the called name's last part): what may still run once
# the load budget is spent. Their arguments must be cheap too.
CHEAP_CALLS = frozenset({"device", "dtype", "Size", "is_available", "device_count", "int", "float", "str", "bool",
                         "complex", "tuple", "list", "dict", "set", "frozenset", "slice", "namedtuple", "Path",
                         "getenv", "TypeVar"})
CHEAP_NODES = (ast.Constant, ast.Name, ast.Attribute, ast.Load, ast.Store, ast.Tuple, ast.List, ast.Set,
               ast.Dict, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.keyword, ast.Starred,
               ast.Subscript, ast.Slice, ast.Lambda, ast.arguments, ast.arg, ast.JoinedStr, ast.FormattedValue,
               ast.expr_context, ast.unaryop, ast.boolop, ast.cmpop, ast.operator)
MAX_CHEAP_NODES = 500


def _is_cheap(statement: ast.stmt) -> bool:
    """A statement that is quick to run whatever the names in it hold: definitions and imports,
    and assignments of literals, names, lambdas and CHEAP_CALLS of such things (`device =
    torch.device("cuda" if torch.cuda.is_available() else "cpu")`). Loops, comprehensions,
    other calls and large arithmetic are costly."""
    if isinstance(statement, DEFINITIONS) or isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, (ast.If, ast.Try)):
        header = [statement.test] if isinstance(statement, ast.If) else []
        return all(_is_cheap_expression(e) for e in header) and \
            all(_is_cheap(inner) for block in _child_blocks(statement) for inner in block)
    if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return statement.value is None or _is_cheap_expression(statement.value)
    return False


def _is_cheap_expression(expression: ast.AST) -> bool:
    count = 0
    for node in ast.walk(expression):
        count += 1
        if count > MAX_CHEAP_NODES:
            return False
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name not in CHEAP_CALLS:
                return False
        elif isinstance(node, ast.BinOp):
            if isinstance(node.op, (ast.Pow, ast.Mult, ast.LShift, ast.MatMult)) and not (
                    _small_number(node.left) and _small_number(node.right)):
                return False
        elif not isinstance(node, CHEAP_NODES):
            return False
    return True


def _small_number(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
        and not isinstance(node.value, bool) and abs(node.value) <= 64


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

