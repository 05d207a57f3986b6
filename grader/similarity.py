"""Similar submissions: a fingerprint of an item's graded code that survives cosmetic edits.

`fingerprint(submission, name)` reads the item's defining unit and the helpers it uses (the
same units the static scan reads) and normalizes them away from what a copier changes cheaply:

- comments and whitespace (the code is re-printed from its syntax tree);
- docstrings, bare strings and annotations;
- the names of locals (parameters, assigned names, loop and comprehension variables become
  `_v0, _v1, ...` in order of first use within their function);
- the names of the submission's own helpers (they all become `_h`; the graded item keeps its
  name, which every submission shares anyway);
- the order of definitions (units, and the statements of a class body, are sorted).

What is left gives an exact hash (same normalized code, same hash) and a near-copy signature:
MOSS-style winnowing (Schleimer, Wilkerson, Aiken, SIGMOD 2003) of the normalized token stream,
K tokens per k-gram and the minimum of every window of WINDOW k-gram hashes. Any run of
K + WINDOW - 1 tokens two submissions share is guaranteed to leave a common hash.

Units that are the assignment's own scaffold (pasted by the student) are left out: every
student shares them, so they say nothing about copying. Parsing only: nothing is executed.

`similar_groups` compares the signatures of a whole class: exact copies share a group, and
near copies above a threshold join it. It reads plain data (report fields), so merged shards
group exactly as one batch does.
"""
from __future__ import annotations

import ast
import hashlib
import io
import tokenize
from collections import defaultdict
from dataclasses import dataclass

from .submission import Submission

VERSION = 1          # bump when the normalization changes: signatures of two versions do not compare
K = 5                # tokens per k-gram
WINDOW = 4           # k-gram hashes per winnowing window
SOURCE_LIMIT = 20_000   # characters of original source kept for the side-by-side view
NEAR_THRESHOLD = 0.6    # shared share of the smaller signature that makes a near copy
MIN_SIGNATURE = 12      # signatures smaller than this are too short to call a near copy
COMMON_SHARE = 0.5      # hashes found in more than this share of a class are boilerplate...
COMMON_MIN_CLASS = 20   # ...once the class is this large (in a small one a copy ring can be half of it)


@dataclass(frozen=True)
class Fingerprint:
    exact: str                    # sha256 of the normalized code
    signature: tuple[int, ...]    # sorted winnowed k-gram hashes (32-bit)
    tokens: int                   # normalized tokens fingerprinted
    source: str                   # the original text of the units, at most SOURCE_LIMIT characters
    truncated: bool


def fingerprint(submission: Submission, name: str, common: frozenset[str] = frozenset()) -> Fingerprint | None:
    """The item's fingerprint, or None when the submission does not define it. `common` holds
    the exact hashes (`unit_hashes`) of units every student gets, e.g. the course scaffold."""
    found = [(unit, tree) for unit, tree in reachable_sources(submission, name)
             if not all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in tree.body)]
    if not found:
        return None
    helpers = {n for unit, _ in found for n in unit.defines} - {name}
    units = []
    for unit, tree in found:
        try:
            code = _normalize(tree, helpers)
        except (RecursionError, MemoryError, ValueError):
            # Too deep to re-print (an 800-long attribute chain): compared as written, which
            # still finds a verbatim copy; the grading never depends on it.
            code = unit.source
        if _hash(code) in common:
            continue
        where = f"cell {unit.cell}, line {unit.line}" if unit.cell is not None else f"line {unit.line}"
        units.append((name not in unit.defines, code, f"# {where}\n{unit.source}"))
    # The item first, then its helpers in the order of their normalized code: the same order for
    # every run (the helpers are found through a set) and for copies that reorder definitions,
    # so a side-by-side view lines copies up.
    units.sort()
    normalized = sorted(code for _, code, _ in units)
    texts = [text for _, _, text in units]
    signature: set[int] = set()
    tokens = 0
    for code in normalized:
        stream = _tokens(code)
        tokens += len(stream)
        signature |= _winnow(stream)
    source = "\n\n".join(texts)
    return Fingerprint(exact=_hash("\n".join(normalized)), signature=tuple(sorted(signature)), tokens=tokens,
                       source=source[:SOURCE_LIMIT], truncated=len(source) > SOURCE_LIMIT)


def reachable_sources(submission: Submission, name: str) -> list:
    """The item's defining unit, plus the units defining the global names it uses
    (transitively): helper functions, base classes and the imports they rely on. Plain
    assignments are not followed: a test line outside the item says nothing about it, even
    when the item has a local of the same name."""
    by_name = {}
    for unit in submission.units:
        for defined in unit.defines:
            by_name[defined] = unit          # the last definition wins, as when it ran
    if name not in by_name:
        return []
    todo, chosen, result = [name], set(), []
    while todo:
        unit = by_name.get(todo.pop())
        if unit is None or unit.index in chosen:
            continue
        chosen.add(unit.index)
        try:
            tree = ast.parse(unit.source)
        except (SyntaxError, RecursionError, MemoryError, ValueError):
            continue
        first = tree.body[0] if tree.body else None
        if len(result) and not isinstance(first, FOLLOWED):
            continue
        result.append((unit, tree))
        if isinstance(first, (ast.Import, ast.ImportFrom)):
            continue
        todo.extend(n for n in _read_names(tree) if n in by_name)
    return result


FOLLOWED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.If, ast.Try)


def _read_names(tree: ast.AST) -> set[str]:
    """Names read in `tree` that no assignment, parameter or definition inside it binds."""
    read, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not tree:
            bound.add(node.name)
    return read - bound


def unit_hashes(source: str) -> frozenset[str]:
    """Exact hashes of each top-level definition in `source` (a scaffold), normalized as a
    submission's units are, so a pasted copy of it can be left out of fingerprints."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return frozenset(_hash(_normalize(ast.Module(body=[statement], type_ignores=[]), names))
                     for statement in tree.body if not isinstance(statement, (ast.Import, ast.ImportFrom)))


# ---------------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------------

HELPER = "_h"


def _normalize(tree: ast.AST, helpers: set[str]) -> str:
    tree = _Strip().visit(_copy(tree))
    tree = _Rename(helpers).visit(tree)
    _sort_bodies(tree)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


def _copy(tree: ast.AST) -> ast.AST:
    return ast.parse(ast.unparse(tree))


class _Strip(ast.NodeTransformer):
    """Docstrings, bare strings and annotations go: they change nothing that runs."""

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant):
            return None
        return self.generic_visit(node)

    def visit_arg(self, node):
        node.annotation = None
        return node

    def visit_FunctionDef(self, node):
        node.returns = None
        self.generic_visit(node)
        if not node.body:
            node.body = [ast.Pass()]
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self.generic_visit(node)
        if not node.body:
            node.body = [ast.Pass()]
        return node

    def visit_AnnAssign(self, node):
        if node.value is None:
            return None
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)


class _Rename(ast.NodeTransformer):
    """Locals become _v0, _v1, ... per function, in order of first use; helpers become _h."""

    def __init__(self, helpers: set[str]):
        self.helpers = helpers
        self.scopes: list[dict[str, str]] = []

    def _function(self, node):
        local_names = _local_names(node)
        mapping: dict[str, str] = {}
        # Parameters first, in their order, so `def f(self, x)` always starts _v0, _v1.
        for arg in _all_args(node.args):
            mapping.setdefault(arg.arg, f"_v{len(mapping)}")
        for name in local_names:
            mapping.setdefault(name, f"_v{len(mapping)}")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in self.helpers:
            node.name = HELPER
        self.scopes.append(mapping)
        for arg in _all_args(node.args):
            arg.arg = mapping[arg.arg]
        node.args = self.visit(node.args)
        if isinstance(node, ast.Lambda):
            node.body = self.visit(node.body)
        else:
            node.body = [self.visit(s) for s in node.body]
            node.decorator_list = [self.visit(d) for d in node.decorator_list]
        self.scopes.pop()
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_ClassDef(self, node):
        if node.name in self.helpers:
            node.name = HELPER
        return self.generic_visit(node)

    def visit_Name(self, node):
        for scope in reversed(self.scopes):
            if node.id in scope:
                node.id = scope[node.id]
                return node
        if node.id in self.helpers:
            node.id = HELPER
        return node


def _all_args(args: ast.arguments) -> list[ast.arg]:
    found = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    found += [a for a in (args.vararg, args.kwarg) if a is not None]
    return found


def _local_names(function) -> list[str]:
    """Names a function binds, in order of first appearance in its source (names bound only in
    a nested function are numbered here too: harmless, the nested scope renames them first)."""
    names: list[str] = []
    body = function.body if isinstance(function.body, list) else [function.body]
    todo = sorted((n for n in ast.walk(ast.Module(body=body, type_ignores=[])) if hasattr(n, "lineno")),
                  key=lambda n: (n.lineno, n.col_offset))
    declared_global = {name for n in todo if isinstance(n, (ast.Global, ast.Nonlocal)) for name in n.names}
    for node in todo:
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            name = node.id
        elif isinstance(node, ast.ExceptHandler) and node.name:
            name = node.name
        else:
            continue
        if name not in names and name not in declared_global:
            names.append(name)
    return names


def _sort_bodies(tree: ast.AST) -> None:
    """Definitions in any order: the methods of a class body are sorted by their code."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            node.body.sort(key=ast.unparse)


def _tokens(code: str) -> list[str]:
    skip = {tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.ENCODING, tokenize.ENDMARKER}
    try:
        return [t.string or tokenize.tok_name[t.type] for t in tokenize.generate_tokens(io.StringIO(code).readline)
                if t.type not in skip]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return code.split()


def _winnow(tokens: list[str]) -> set[int]:
    grams = [int.from_bytes(hashlib.blake2b("\x1f".join(tokens[i:i + K]).encode(), digest_size=4).digest(), "big")
             for i in range(max(0, len(tokens) - K + 1))]
    if len(grams) <= WINDOW:
        return set(grams)
    chosen = set()
    for start in range(len(grams) - WINDOW + 1):
        window = grams[start:start + WINDOW]
        chosen.add(min(window))
    return chosen


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Grouping a class
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    id: str                       # the submission's report id
    exact: str
    signature: tuple[int, ...]


@dataclass(frozen=True)
class SimilarGroup:
    item: str
    members: tuple[str, ...]              # report ids, sorted
    exact: bool                           # every member has the same normalized code
    pairs: tuple[tuple[str, str, float], ...]   # (a, b, similarity) that joined the group, best first


def similar_groups(item: str, members: list[Member], threshold: float = NEAR_THRESHOLD) -> tuple[SimilarGroup, ...]:
    """Groups of submissions whose `item` is the same after normalization, or shares at least
    `threshold` of the smaller signature's hashes (once hashes found in more than COMMON_SHARE
    of the class, boilerplate everyone writes, are set aside). Deterministic: sorted by size,
    then by first member."""
    members = sorted(members, key=lambda m: m.id)
    parent = {m.id: m.id for m in members}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_exact: dict[str, list[str]] = defaultdict(list)
    for m in members:
        by_exact[m.exact].append(m.id)
    for ids in by_exact.values():
        for other in ids[1:]:
            union(ids[0], other)
    pairs = near_pairs(members, threshold)
    for a, b, _ in pairs:
        union(a, b)
    groups: dict[str, list[str]] = defaultdict(list)
    for m in members:
        groups[find(m.id)].append(m.id)
    exact_of = {m.id: m.exact for m in members}
    result = []
    for ids in groups.values():
        if len(ids) < 2:
            continue
        inside = set(ids)
        joined = tuple(p for p in pairs if p[0] in inside)
        exact = len({exact_of[i] for i in ids}) == 1
        result.append(SimilarGroup(item=item, members=tuple(sorted(ids)), exact=exact, pairs=joined))
    result.sort(key=lambda g: (-len(g.members), g.members[0]))
    return tuple(result)


def near_pairs(members: list[Member], threshold: float) -> list[tuple[str, str, float]]:
    """(a, b, similarity) for every pair of members with different exact hashes whose shared
    rare hashes cover at least `threshold` of the smaller signature; an inverted index keeps
    this far from comparing every pair with every other."""
    frequency: dict[int, int] = defaultdict(int)
    for m in members:
        for h in m.signature:
            frequency[h] += 1
    # A hash most of the class shares is the assignment's boilerplate, not evidence. In a small
    # class three copies are "most of the class", so nothing is set aside there.
    cap = len(members) if len(members) < COMMON_MIN_CLASS else int(COMMON_SHARE * len(members))
    rare = {m.id: frozenset(h for h in m.signature if frequency[h] <= cap) for m in members}
    index: dict[int, list[str]] = defaultdict(list)
    for m in members:
        for h in rare[m.id]:
            index[h].append(m.id)
    shared: dict[tuple[str, str], int] = defaultdict(int)
    for ids in index.values():
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                shared[(a, b) if a < b else (b, a)] += 1
    exact_of = {m.id: m.exact for m in members}
    found = []
    for (a, b), count in shared.items():
        if exact_of[a] == exact_of[b]:
            continue
        smaller = min(len(rare[a]), len(rare[b]))
        if smaller < MIN_SIGNATURE:
            continue
        score = count / smaller
        if score >= threshold:
            found.append((a, b, round(score, 3)))
    found.sort(key=lambda p: (-p[2], p[0], p[1]))
    return found
