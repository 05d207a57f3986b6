"""Static half of shortcut detection: read the code a class runs, for forbidden calls and for code
that works around the operator recorder.

The dispatch-level recorder in the worker is the primary check (it sees the operator however it
was reached); this scan backs it up for code that tries to switch the recorder off, and names the
line even when a case never reached a shortcut. It reads two kinds of code:

- what the class reaches: its own source, and (transitively) every top-level binding of a name it
  reads (functions, classes, assignments, the import that bound the name, code given to exec);
- what runs when the submission loads: every kept top-level statement's executed parts
  (assignments, decorators, default values, class bodies, code given to exec at top level).

Rules (README, "Threat model"): tampering costs points wherever it is found in either kind of code
(it works around the check for every class); a forbidden name is only a note (the dispatch check
decides whether it ran); an import is judged by the uses of the names it binds, never by the
names it merely binds; a student's own attribute or function is never torch's; what the scan
cannot read (exec of a computed string, getattr with a computed name on something not the
student's own, source too deep to analyse) counts as tampering: it fails closed.

Everything here is iterative and bounded: no input can make the scan recurse or run away.
"""
from __future__ import annotations

import ast
import functools
from collections import deque
from dataclasses import dataclass

from .submission import CodeUnit, Submission

FINDING_KINDS = ("shortcut", "tampering")

# Attribute names whose only use in a submission is switching the operator recorder off or
# hiding work from it (dispatch-stack internals; a __torch_dispatch__ of one's own runs while the
# recorder is paused; frames, closures and globals reach the grader's own state).
TAMPERING_NAMES = frozenset({
    "_python_dispatch", "_pop_mode", "_push_mode", "_unset_dispatch_mode", "_set_dispatch_mode",
    "_disable_current_modes", "_DisableTorchDispatch", "DisableTorchFunction", "DisableTorchFunctionSubclass",
    "_len_torch_dispatch_stack", "_get_dispatch_stack_at", "_ExcludeDispatchKeyGuard", "_DisablePythonDispatcher",
    "_pop_torch_dispatch_stack", "_push_on_torch_dispatch_stack", "_set_torch_dispatch_mode",
    "_get_torch_dispatch_mode", "_python_dispatcher", "addaudithook", "__torch_dispatch__",
    "_make_wrapper_subclass", "TorchDispatchMode", "_dispatch_tls_set_dispatch_key_excluded",
    "_dispatch_tls_set_dispatch_key_included", "_IncludeDispatchKeyGuard", "_EnablePythonDispatcher",
    "_get_current_dispatch_mode", "_get_current_dispatch_mode_stack", "_RestorePythonTLSSnapshot",
    "f_back", "f_globals", "f_locals", "f_builtins", "tb_frame", "gi_frame", "cr_frame", "ag_frame",
    "__closure__", "__globals__", "__builtins__", "__subclasses__", "__setattr__", "__delattr__",
    "_getframe", "_current_frames", "settrace", "setprofile",
})
# Modules and module members (dotted paths, a prefix matches its members) whose use works
# around the recorder: other threads and processes run outside it, ctypes writes anywhere, the
# others reach the interpreter's state, register operators it cannot vouch for, or make code.
TAMPERING_PATHS = (
    "threading", "_thread", "multiprocessing", "concurrent", "subprocess", "ctypes", "asyncio",
    "os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp", "os.spawnv", "os.spawnve", "os.spawnl",
    "os.spawnle", "os.system", "os.popen", "os.execv", "os.execve", "os.kill", "os.killpg", "os.register_at_fork",
    "sys.modules", "sys.meta_path", "sys.path_hooks", "sys._getframe", "sys._current_frames", "sys.settrace",
    "sys.setprofile", "sys.addaudithook", "sys.breakpointhook", "sys.monitoring",
    "inspect.currentframe", "inspect.stack", "inspect.trace", "inspect.getouterframes", "inspect.getinnerframes",
    "traceback.walk_stack", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "gc.callbacks",
    "gc.garbage", "gc.freeze", "gc.unfreeze", "signal.signal", "signal.setitimer", "signal.alarm",
    "signal.set_wakeup_fd", "signal.pthread_kill", "builtins", "importlib", "runpy", "imp", "zipimport",
    "marshal", "pickle.loads", "pickle.load", "types.FunctionType", "types.CodeType", "types.LambdaType",
    "torch.library", "torch.utils.cpp_extension", "torch.ops.load_library", "torch.utils._python_dispatch",
    "grader", "reference",
)
# Calls that run code the scan has to read from a string, or import a module by a string.
DYNAMIC_CODE_CALLS = frozenset({"exec", "eval", "compile"})
DYNAMIC_IMPORT_CALLS = frozenset({"__import__", "importlib.import_module", "importlib.__import__"})
ATTRIBUTE_CALLS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
# Modules the grader's worker relies on: assigning to their attributes (monkeypatching) at load
# time or in the class is tampering, except where students legitimately set things.
PROTECTED_MODULES = frozenset({
    "torch", "sys", "builtins", "collections", "traceback", "linecache", "gc", "signal", "inspect", "types",
    "functools", "operator", "json", "struct", "os", "io", "weakref", "abc", "threading", "_thread",
    "hashlib", "ctypes", "importlib", "time", "copy", "grader", "reference",
})
PATCH_ALLOWED = ("torch.backends", "os.environ", "sys.path", "sys.stdout", "sys.stderr", "sys.argv")
# Names that are modules even where the submission never imports them (the scaffold or Python
# provides them, or an import hides in code the scan could not follow): read as those modules.
IMPLICIT_MODULES = PROTECTED_MODULES | {"F", "nn"}
IMPLICIT_PATHS = {"F": "torch.nn.functional", "nn": "torch.nn"}
MAX_NODES = 200_000          # per analysed piece of code: beyond it, the source is not analysed
MAX_EXEC_DEPTH = 8           # exec of code that execs code ...
MAX_NAME = 120


@dataclass(frozen=True)
class ScanRules:
    """What the assignment forbids by name. forbidden_names: attribute, imported or constant
    string names that are a forbidden operator by themselves; module_names: (name, modules) for
    names forbidden only when they come from one of those modules (a tensor method of the same
    name is allowed). Generic: the names are the assignment's data."""
    forbidden_names: frozenset[str] = frozenset()
    module_names: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def forbidden_path(self, path: str) -> bool:
        """Whether a resolved dotted path (torch.nn.functional.x) names a forbidden operator."""
        module, _, name = path.rpartition(".")
        if name in self.forbidden_names:
            return True
        return any(name == forbidden and module in modules for forbidden, modules in self.module_names)


@dataclass(frozen=True)
class StaticFinding:
    name: str
    kind: str          # one of FINDING_KINDS: shortcut (a note) or tampering (costs points)
    location: str      # "cell 5, line 12: <code>"

    @property
    def penalized(self) -> bool:
        return self.kind == "tampering"


def scan_class(submission: Submission, class_name: str, rules: ScanRules = ScanRules(),
               unit: int | None = None) -> tuple[StaticFinding, ...]:
    """Findings in the code the class reaches and in the code that runs at load time. `unit`:
    the statement whose binding of the name is graded, when the name is bound more than once
    (the other bindings are not what runs)."""
    try:
        index = _index(submission)
        scanner = _Scanner(index, rules)
        scanner.reach(class_name, unit)
        scanner.load()
        return scanner.result()
    except (RecursionError, MemoryError) as exc:
        # Fail closed: code the scan cannot analyse is not known to be harmless.
        return (StaticFinding(f"source the scan cannot analyse ({type(exc).__name__})", "tampering",
                              f"{submission.path.name}"),)


# --- the submission's code, parsed once --------------------------------------------------------

@dataclass(frozen=True)
class _Piece:
    """Code to scan: a node, the unit it came from (for locations), and the line offset of code
    given to exec (0 for a unit's own code)."""
    node: ast.AST
    unit: CodeUnit
    exec_line: int | None = None       # the exec call's line, for code that came from a string


@dataclass(frozen=True)
class _Binding:
    piece: _Piece
    module_path: str | None            # for imports: what the name is bound to (torch.nn.functional)


@dataclass(frozen=True)
class _Index:
    bindings: dict                      # name -> [_Binding]
    load_time: tuple                    # _Piece of code that runs while loading
    own_classes: frozenset              # classes the submission defines
    constants: dict                     # name -> str, top-level names bound once to a constant string
    unreadable: tuple                   # _Piece of units that could not be parsed


@functools.lru_cache(maxsize=8)
def _index(submission: Submission) -> _Index:
    statements, unreadable = [], []
    for unit in submission.units:
        tree = _parse(unit.source)
        if tree is None:
            unreadable.append(_Piece(ast.Pass(lineno=1, col_offset=0), unit))
        else:
            statements.extend(_Piece(statement, unit) for statement in tree.body)
    constants = _top_level_constants([piece.node for piece in statements])
    bindings: dict = {}
    load_time: list = []
    own: set = set()
    todo = deque((piece, 0) for piece in statements)
    while todo:
        piece, depth = todo.popleft()
        statement = piece.node
        if isinstance(statement, (ast.If, ast.Try)):
            load_time.append(_Piece(_header_of(statement), piece.unit, piece.exec_line))
            for block in _blocks(statement):
                todo.extend((_Piece(inner, piece.unit, piece.exec_line), depth) for inner in block)
            continue
        for name, path in _bound_names(statement):
            bindings.setdefault(name, []).append(_Binding(piece, path))
            if isinstance(statement, ast.ClassDef):
                own.add(name)
        load_time.append(piece)
        # Code given to exec at top level defines names too (a class made with exec).
        if depth < MAX_EXEC_DEPTH:
            for code, line in _exec_strings(statement, constants):
                tree = _parse(code)
                if tree is not None:
                    exec_line = piece.exec_line if piece.exec_line is not None else line
                    todo.extend((_Piece(inner, piece.unit, exec_line), depth + 1) for inner in tree.body)
    return _Index(bindings, tuple(load_time), frozenset(own), constants, tuple(unreadable))


def _top_level_constants(statements: list) -> dict:
    """Top-level names bound once, to a constant string (what exec and getattr are often given)."""
    flat, todo = [], deque(statements)
    while todo:
        statement = todo.popleft()
        if isinstance(statement, (ast.If, ast.Try)):
            for block in _blocks(statement):
                todo.extend(block)
        else:
            flat.append(statement)
    return _local_constants(flat)


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError, UnicodeError):
        return None


def _header_of(statement: ast.stmt) -> ast.AST:
    """What an if/try runs itself: the test, the exception types."""
    if isinstance(statement, ast.If):
        return ast.Expr(value=statement.test, lineno=statement.lineno, col_offset=0)
    types = [h.type for h in statement.handlers if h.type is not None]
    return ast.Expr(value=ast.Tuple(elts=types, ctx=ast.Load()), lineno=statement.lineno, col_offset=0)


def _blocks(statement: ast.stmt) -> list:
    if isinstance(statement, ast.If):
        return [statement.body, statement.orelse]
    return [statement.body, statement.orelse, statement.finalbody] + [h.body for h in statement.handlers]


def _bound_names(statement: ast.stmt):
    """(name, module path or None) for each top-level name the statement binds."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield statement.name, None
    elif isinstance(statement, ast.Import):
        for alias in statement.names:
            if alias.asname:
                yield alias.asname, alias.name
            else:
                root = alias.name.split(".")[0]
                yield root, root
    elif isinstance(statement, ast.ImportFrom):
        module = "." * statement.level + (statement.module or "")
        for alias in statement.names:
            if alias.name != "*":
                yield alias.asname or alias.name, f"{module}.{alias.name}"
    elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        for target in targets:
            for node in ast.walk(target):
                if isinstance(node, ast.Name):
                    yield node.id, None


# --- the scanner ---------------------------------------------------------------------------------

class _Scanner:
    def __init__(self, index: _Index, rules: ScanRules):
        self.index = index
        self.rules = rules
        self.findings: list[StaticFinding] = []
        self.seen: set = set()
        self.scanned: set = set()
        self.modules = {name: [b.module_path for b in found if b.module_path]
                        for name, found in index.bindings.items()}
        self.trees: list = []          # code parsed from exec strings, alive while ids are keys

    def result(self) -> tuple[StaticFinding, ...]:
        for piece in self.index.unreadable:
            self._add("source the scan cannot analyse", "tampering", piece, piece.node)
        return tuple(self.findings)

    def reach(self, class_name: str, unit: int | None = None) -> None:
        """Scan the class (its binding by `unit`, where given) and every binding its code reads,
        transitively."""
        bindings = self.index.bindings.get(class_name, ())
        chosen = [b for b in bindings if unit is not None and b.piece.unit.index == unit and b.module_path is None]
        if not chosen:
            self.follow({class_name}, "class")
            return
        names = set()
        for binding in chosen:
            names |= self.scan(binding.piece, "class")
        self.follow(names - {class_name}, "class")

    def load(self) -> None:
        """Scan what runs while loading: each top-level statement's executed parts, and what
        they call (transitively), for tampering."""
        names = set()
        for piece in self.index.load_time:
            names |= self.scan(piece, "load", top=True)
        self.follow(names, "load")

    def follow(self, names: set, mode: str) -> None:
        todo, done = deque(names), set()
        while todo:
            name = todo.popleft()
            if name in done:
                continue
            done.add(name)
            for binding in self.index.bindings.get(name, ()):
                if binding.module_path is not None:
                    self._import_use(binding, mode)
                else:
                    todo.extend(self.scan(binding.piece, mode))

    def scan(self, piece: _Piece, mode: str, top: bool = False, depth: int = 0) -> set:
        """Classify every node of the piece; returns the free names it reads. In mode "class"
        (code the class reaches) every finding counts; in mode "load" (code that runs while
        loading) only tampering does, and a top-level statement is its executed parts only."""
        key = (id(piece.node), mode, top)
        if key in self.scanned:
            return set()
        self.scanned.add(key)
        nodes = list(_executed_at_load(piece.node) if top else _walk(piece.node))
        if len(nodes) > MAX_NODES:
            self._add("source too large to analyse", "tampering", piece, piece.node)
            return set()
        constants = dict(self.index.constants)
        constants.update(_local_constants(nodes))
        names = _free_names(nodes)
        reached = mode == "class"
        for node in nodes:
            found = self._classify(node, piece, reached, constants, depth)
            if found:
                names |= found
        return names

    # What one node is.
    def _classify(self, node: ast.AST, piece: _Piece, reached: bool, constants: dict, depth: int) -> set | None:
        """Adds the node's findings; returns the free names of code it hands to exec."""
        if isinstance(node, ast.Attribute):
            self._attribute(node, piece, reached)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id in TAMPERING_NAMES:
                self._add(node.id, "tampering", piece, node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in TAMPERING_NAMES:
            self._add(f"def {node.name}", "tampering", piece, node)
        elif isinstance(node, ast.Call):
            return self._call(node, piece, reached, constants, depth)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                self._patch(target, piece)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key = _constant_string(node.slice, constants)
            if key in TAMPERING_NAMES:
                self._add(f"[{key!r}]", "tampering", piece, node)
        return None

    def _attribute(self, node: ast.Attribute, piece: _Piece, reached: bool) -> None:
        root, parts = _chain(node)
        own = self._own(root)
        if node.attr in TAMPERING_NAMES and not own:
            self._add(node.attr, "tampering", piece, node)
            return
        path = None if own else self._resolve(root, parts)
        if path is None:
            if reached and not own and node.attr in self.rules.forbidden_names:
                self._add(_dotted(root, parts), "shortcut", piece, node)
            return
        if _matches(path, TAMPERING_PATHS):
            self._add(_dotted(root, parts), "tampering", piece, node)
        elif reached and self.rules.forbidden_path(path):
            self._add(_dotted(root, parts), "shortcut", piece, node)

    def _call(self, node: ast.Call, piece: _Piece, reached: bool, constants: dict, depth: int) -> set | None:
        root, parts = _chain(node.func)
        name = root if not parts else None            # a bare name: exec(...), getattr(...)
        path = self._resolve(root, parts) or ""
        if name in DYNAMIC_CODE_CALLS or path.removeprefix("builtins.") in DYNAMIC_CODE_CALLS:
            return self._dynamic_code(node, piece, reached, constants, depth)
        if name in DYNAMIC_IMPORT_CALLS or path in DYNAMIC_IMPORT_CALLS:
            module = _constant_string(node.args[0], constants) if node.args else None
            if module is None:
                self._add(f"{_dotted(root, parts)}(<a computed name>)", "tampering", piece, node)
            elif _matches(module, TAMPERING_PATHS):
                self._add(f"import {module}", "tampering", piece, node)
        elif name in ATTRIBUTE_CALLS and len(node.args) >= 2:
            self._attribute_call(name, node, piece, reached, constants)
        elif name == "vars" and node.args:           # a module's dict is writable (dir() only lists)
            target_root, target_parts = _chain(node.args[0])
            target = None if self._own(target_root) else self._resolve(target_root, target_parts)
            if target is not None and target.split(".")[0] in PROTECTED_MODULES:
                self._add(f"{name}({_dotted(target_root, target_parts)})", "tampering", piece, node)
        return None

    def _attribute_call(self, name: str, node: ast.Call, piece: _Piece, reached: bool, constants: dict) -> None:
        target_root, target_parts = _chain(node.args[0])
        own = self._own(target_root)
        attribute = _constant_string(node.args[1], constants)
        if attribute is None:
            if not own:
                self._add(f"{name}(..., <a computed name>)", "tampering", piece, node)
            return
        target = None if own else self._resolve(target_root, target_parts)
        if attribute in TAMPERING_NAMES and not own:
            self._add(f"{name}(..., {attribute!r})", "tampering", piece, node)
        elif name in ("setattr", "delattr") and target is not None and _patches(target, attribute):
            self._add(f"{name}({_dotted(target_root, target_parts)}, {attribute!r})", "tampering", piece, node)
        elif target is not None and _matches(f"{target}.{attribute}", TAMPERING_PATHS):
            self._add(f"{name}({_dotted(target_root, target_parts)}, {attribute!r})", "tampering", piece, node)
        elif reached and not own and (attribute in self.rules.forbidden_names
                                      or (target is not None and self.rules.forbidden_path(f"{target}.{attribute}"))):
            self._add(f"{name}(..., {attribute!r})", "shortcut", piece, node)

    def _dynamic_code(self, node: ast.Call, piece: _Piece, reached: bool, constants: dict, depth: int) -> set:
        """exec/eval/compile: read the code they are given, as code of the same kind; returns
        the names that code reads, to follow."""
        code = _code_argument(node, constants)
        if code is None:
            self._add(f"{_call_name(node)}(<code the scan cannot read>)", "tampering", piece, node)
            return set()
        tree = _parse(code)
        if tree is None or depth >= MAX_EXEC_DEPTH:
            self._add(f"{_call_name(node)}(<code the scan cannot analyse>)", "tampering", piece, node)
            return set()
        self.trees.append(tree)
        line = piece.exec_line if piece.exec_line is not None else node.lineno
        names = set()
        for statement in tree.body:
            names |= self.scan(_Piece(statement, piece.unit, line), "class" if reached else "load",
                               top=not reached, depth=depth + 1)
        return names

    def _patch(self, target: ast.AST, piece: _Piece) -> None:
        """An assignment to a protected module's attribute (or an item of one) is monkeypatching."""
        base = target.value if isinstance(target, ast.Subscript) else target
        if not isinstance(base, ast.Attribute):
            return
        root, parts = _chain(base)
        if self._own(root):
            return
        path = self._resolve(root, parts)
        if path is not None and _patches(path.rpartition(".")[0], path.rpartition(".")[2]):
            self._add(f"patches {_dotted(root, parts)}", "tampering", piece, target)

    def _import_use(self, binding: _Binding, mode: str) -> None:
        """Code reads a name an import bound: judge what that name is (never what else the
        same import statement binds)."""
        path = binding.module_path
        if path.split(".")[-1] in TAMPERING_NAMES or _matches(path, TAMPERING_PATHS):
            self._add(f"import {path}", "tampering", binding.piece, binding.piece.node)
        elif mode == "class" and self.rules.forbidden_path(path):
            self._add(f"import {path}", "shortcut", binding.piece, binding.piece.node)

    # Helpers.
    def _own(self, root: str | None) -> bool:
        """self, cls, type(...), super(...) and the submission's own classes are the student's."""
        return root in ("self", "cls", "<type>", "<super>") or root in self.index.own_classes

    def _resolve(self, root: str | None, parts: tuple) -> str | None:
        """The dotted path an attribute chain names when its root is a module (or a member of
        one) that an import bound, or a well-known module name; None otherwise."""
        if root is None:
            return None
        paths = self.modules.get(root)
        if paths:
            base = paths[-1]
        elif root in IMPLICIT_MODULES and root not in self.index.bindings:
            base = IMPLICIT_PATHS.get(root, root)
        else:
            return None
        return ".".join((base,) + parts)

    def _add(self, name: str, kind: str, piece: _Piece, node: ast.AST) -> None:
        location = _location(piece, node)
        key = (kind, location)          # one finding of each kind per line: the first says it
        if key not in self.seen:
            self.seen.add(key)
            self.findings.append(StaticFinding(name[:MAX_NAME], kind, location))


def _location(piece: _Piece, node: ast.AST) -> str:
    unit = piece.unit
    if piece.exec_line is not None:
        line = unit.line + piece.exec_line - 1
        return f"{unit.filename}, line {line}: {_code_line(unit, piece.exec_line)} (in code given to exec)"
    lineno = getattr(node, "lineno", 1) or 1
    return f"{unit.filename}, line {unit.line + lineno - 1}: {_code_line(unit, lineno)}"


def _code_line(unit: CodeUnit, lineno: int) -> str:
    lines = unit.source.splitlines()
    return lines[lineno - 1].strip()[:MAX_NAME] if 0 < lineno <= len(lines) else ""


def _matches(path: str, rules) -> bool:
    return any(path == rule or path.startswith(rule + ".") for rule in rules)


def _patches(owner: str, attribute: str) -> bool:
    path = f"{owner}.{attribute}" if owner else attribute
    return path.split(".")[0] in PROTECTED_MODULES and not _matches(path, PATCH_ALLOWED)


def _walk(node: ast.AST):
    """Every node under `node`, iteratively (ast.walk is iterative too; bounded by the caller)."""
    todo = deque([node])
    while todo:
        current = todo.popleft()
        yield current
        todo.extend(ast.iter_child_nodes(current))


def _executed_at_load(node: ast.AST):
    """The parts of a top-level statement that run when it runs: everything but the bodies of
    functions (their decorators, defaults and annotations do run) and of lambdas."""
    todo = deque([node])
    while todo:
        current = todo.popleft()
        yield current
        if isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo.extend(current.decorator_list)
            todo.extend(d for d in current.args.defaults + current.args.kw_defaults if d is not None)
            continue
        if isinstance(current, ast.Lambda):
            todo.extend(d for d in current.args.defaults + current.args.kw_defaults if d is not None)
            continue
        todo.extend(ast.iter_child_nodes(current))


def _chain(node: ast.AST) -> tuple[str | None, tuple[str, ...]]:
    """(root, attributes) of `a.b.c` -> ("a", ("b", "c")); `type(x).y` -> ("<type>", ("y",));
    `super().y` -> ("<super>", ("y",)); anything else at the root -> (None, attributes)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.reverse()
    if isinstance(node, ast.Name):
        return node.id, tuple(parts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("type", "super"):
        return f"<{node.func.id}>", tuple(parts)
    return None, tuple(parts)


def _dotted(root: str | None, parts: tuple) -> str:
    text = ".".join(((root or "<expression>"),) + parts)
    return text if len(text) <= MAX_NAME else "..." + text[-(MAX_NAME - 3):]


def _call_name(node: ast.Call) -> str:
    root, parts = _chain(node.func)
    return _dotted(root, parts)


def _free_names(nodes: list) -> set[str]:
    """Names read in the nodes that no assignment, parameter or definition among them binds."""
    read, bound = set(), set()
    for node in nodes:
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not nodes[0]:
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return read - bound


def _local_constants(nodes: list) -> dict:
    """Names assigned exactly once, to a constant string, within the code."""
    values: dict = {}
    for node in nodes:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values.setdefault(node.targets[0].id, []).append(node.value)
    found = {}
    for name, assigned in values.items():
        if len(assigned) == 1:
            text = _constant_string(assigned[0], {})
            if text is not None:
                found[name] = text
    return found


def _exec_strings(statement: ast.AST, constants: dict):
    """(code, line) for each exec/eval/compile call in a top-level statement's executed parts whose
    code is a constant string (the top-level definitions it makes become bindings)."""
    for node in _executed_at_load(statement):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in DYNAMIC_CODE_CALLS:
            code = _code_argument(node, constants)
            if code is not None:
                yield code, node.lineno


def _code_argument(node: ast.Call, constants: dict) -> str | None:
    if not node.args:
        return None
    argument = node.args[0]
    if isinstance(argument, ast.Call) and isinstance(argument.func, ast.Name) and argument.func.id == "compile":
        return _code_argument(argument, constants) if argument is not node else None
    return _constant_string(argument, constants)


def _constant_string(node: ast.AST, constants: dict) -> str | None:
    """The value of a string built from constants: "con" + "v2d", "".join(["con", "v2d"]),
    f-strings of constants, names bound once to such a string. Iterative, bounded."""
    todo = [(node, False)]
    values: list = []
    steps = 0
    while todo:
        steps += 1
        if steps > 10_000:
            return None
        current, expanded = todo.pop()
        if isinstance(current, ast.Constant):
            if not isinstance(current.value, str):
                return None
            values.append(current.value)
        elif isinstance(current, ast.Name):
            if current.id not in constants:
                return None
            values.append(constants[current.id])
        elif isinstance(current, ast.BinOp) and isinstance(current.op, ast.Add):
            if expanded:
                right, left = values.pop(), values.pop()
                values.append(left + right)
            else:
                todo.append((current, True))
                todo.append((current.right, False))
                todo.append((current.left, False))
        elif isinstance(current, ast.JoinedStr) or (isinstance(current, ast.Call) and _is_join(current)):
            parts = current.values if isinstance(current, ast.JoinedStr) else current.args[0].elts
            separator = "" if isinstance(current, ast.JoinedStr) else current.func.value.value
            if expanded:
                pieces = [values.pop() for _ in parts][::-1]
                values.append(separator.join(pieces))
            else:
                todo.append((current, True))
                for part in reversed(parts):
                    todo.append((part.value if isinstance(part, ast.FormattedValue) else part, False))
        else:
            return None
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


def _is_join(node: ast.Call) -> bool:
    return (isinstance(node.func, ast.Attribute) and node.func.attr == "join" and len(node.args) == 1
            and isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str)
            and isinstance(node.args[0], (ast.List, ast.Tuple)))
