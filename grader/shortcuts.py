"""Static half of shortcut detection: read an item's source for forbidden calls.

The dispatch-level recorder in the worker is the primary check (it sees the
aten operator however it was reached); this scan backs it up for code that
tries to switch the recorder off, and names the line even when a case never
reached the shortcut. Which names are the library's implementation is the
assignment's to say (its subject's `forbidden_names`); tampering is the same
for every assignment.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from .submission import Submission

FUNCTIONAL_MODULES = {"F", "functional"}
# Names whose only use in a submission is switching the operator recorder off.
TAMPERING_NAMES = {"_python_dispatch", "_pop_mode", "_push_mode", "_unset_dispatch_mode",
                   "_set_dispatch_mode", "_disable_current_modes", "_DisableTorchDispatch",
                   "DisableTorchFunction", "DisableTorchFunctionSubclass", "_len_torch_dispatch_stack",
                   "_get_dispatch_stack_at", "_ExcludeDispatchKeyGuard", "_DisablePythonDispatcher",
                   "_pop_torch_dispatch_stack", "_push_on_torch_dispatch_stack", "_set_torch_dispatch_mode",
                   "_get_torch_dispatch_mode", "_python_dispatcher", "addaudithook"}
# The operator recorder watches the worker's main thread only: a graded class that
# computes on another thread or process could hide a shortcut from it.
CONCURRENCY_MODULES = {"threading", "_thread", "multiprocessing", "concurrent", "subprocess", "ctypes"}
CONCURRENCY_CALLS = {"fork", "forkpty", "posix_spawn", "spawnv", "spawnl", "system", "popen", "start_new_thread"}


@dataclass(frozen=True)
class StaticFinding:
    name: str
    kind: str          # shortcut or tampering
    location: str      # "cell 5, line 12: <code>"


def scan_item(submission: Submission, name: str, forbidden: frozenset[str] = frozenset(),
              functional_only: frozenset[str] = frozenset()) -> tuple[StaticFinding, ...]:
    """Findings in the item's own source and in the submission's functions it uses.
    `forbidden`: attribute or imported names that are the library's implementation by
    themselves; `functional_only`: names forbidden only from the functional modules (a
    method of the same name on a tensor is legitimate)."""
    sources = _reachable_sources(submission, name)
    aliases = _forbidden_aliases(submission, forbidden, functional_only)
    findings: list[StaticFinding] = []
    seen = set()
    for unit, tree in sources:
        lines = unit.source.splitlines()
        for node in ast.walk(tree):
            found = _classify(node, aliases, forbidden, functional_only)
            if found is None:
                continue
            name, kind = found
            line = unit.line + node.lineno - 1
            code = lines[node.lineno - 1].strip()[:120] if node.lineno - 1 < len(lines) else ""
            key = (name, unit.filename, line)
            if key not in seen:
                seen.add(key)
                findings.append(StaticFinding(name, kind, f"{unit.filename}, line {line}: {code}"))
    return tuple(findings)


def _classify(node: ast.AST, aliases: set[str], forbidden: frozenset[str],
              functional_only: frozenset[str]) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            return None  # the student's own attribute (self.<name>), not torch's
        if node.attr in TAMPERING_NAMES:
            return node.attr, "tampering"
        if isinstance(node.value, ast.Name) and node.value.id in ("os", "_thread") \
                and node.attr in CONCURRENCY_CALLS:
            return ast.unparse(node), "tampering"
        if isinstance(node.value, ast.Name) and node.value.id in CONCURRENCY_MODULES:
            return ast.unparse(node), "tampering"
        if node.attr in forbidden:
            return ast.unparse(node), "shortcut"
        if node.attr in functional_only and _is_functional(node.value):
            return ast.unparse(node), "shortcut"
    elif isinstance(node, ast.Name):
        if node.id in aliases:
            return node.id, "shortcut"
        if node.id in TAMPERING_NAMES:
            return node.id, "tampering"
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for module in modules:
            if module.split(".")[0] in CONCURRENCY_MODULES or module.startswith("torch.utils._python_dispatch") \
                    or module in ("grader", "reference") or module.startswith(("grader.", "reference.")):
                return f"import {module}", "tampering"
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
            and len(node.args) >= 2:
        attribute = _constant_string(node.args[1])
        if attribute in forbidden:
            return f"getattr(..., {attribute!r})", "shortcut"
        if attribute in TAMPERING_NAMES:
            return f"getattr(..., {attribute!r})", "tampering"
    return None


def _is_functional(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in FUNCTIONAL_MODULES
    return isinstance(node, ast.Attribute) and node.attr == "functional"


def _constant_string(node: ast.AST) -> str | None:
    """The value of a string built from constants: "con" + "v2d", "".join(["con", "v2d"])."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _constant_string(node.left), _constant_string(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join" \
            and len(node.args) == 1 and isinstance(node.args[0], (ast.List, ast.Tuple)):
        separator = _constant_string(node.func.value)
        parts = [_constant_string(element) for element in node.args[0].elts]
        return None if separator is None or None in parts else separator.join(parts)
    if isinstance(node, ast.JoinedStr):
        parts = [_constant_string(v) if not isinstance(v, ast.FormattedValue) else _constant_string(v.value)
                 for v in node.values]
        return None if None in parts else "".join(parts)
    return None


def _forbidden_aliases(submission: Submission, forbidden: frozenset[str],
                       functional_only: frozenset[str]) -> set[str]:
    """Names bound by importing a forbidden name from torch under any alias."""
    aliases = set()
    for unit in submission.units:
        try:
            tree = ast.parse(unit.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch"):
                for alias in node.names:
                    functional = (node.module or "").endswith("functional")
                    if alias.name in forbidden or (functional and alias.name in functional_only):
                        aliases.add(alias.asname or alias.name)
    return aliases


def _reachable_sources(submission: Submission, class_name: str):
    """The class's defining unit, plus the units defining the global names it uses
    (transitively): helper functions, base classes and the imports they rely on. Plain
    assignments are not followed: a test line `out = nn.SomeLayer(...)(x)` outside the class
    says nothing about the class, even when the class has a local called `out`."""
    by_name = {}
    for unit in submission.units:
        for name in unit.defines:
            by_name[name] = unit          # the last definition wins, as when it ran
    if class_name not in by_name:
        return []
    todo, chosen, result = [class_name], set(), []
    while todo:
        unit = by_name.get(todo.pop())
        if unit is None or unit.index in chosen:
            continue
        chosen.add(unit.index)
        try:
            tree = ast.parse(unit.source)
        except SyntaxError:
            continue
        first = tree.body[0] if tree.body else None
        if len(result) and not isinstance(first, FOLLOWED):
            continue
        result.append((unit, tree))
        if isinstance(first, (ast.Import, ast.ImportFrom)):
            continue
        todo.extend(name for name in _free_names(tree) if name in by_name)
    return result


FOLLOWED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.If, ast.Try)


def _free_names(tree: ast.AST) -> set[str]:
    """Names read in `tree` that no assignment, parameter or loop inside it binds."""
    read, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not tree:
            bound.add(node.name)
    return read - bound
