"""Students check their own work on the public cases: `grade check` and `check(...)`.

Both grade the assignment's public view (no hidden groups, the public seed; see
public.py) through the same pipeline as `grade`, so student code still runs only in a
worker process, and both render the same report data: a table in the terminal, an
HTML table in Jupyter.

    from grader import check, check_all
    check(MyLayer)           # or check("MyLayer"): one item, public cases only
    check_all()              # every item of the assignment

`grade check SUBMISSION` exits 0 when every class passes all its public cases, 1 when
not, 2 on a usage error: a step for a course's CI (GitHub Classroom).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import EXIT_OK, UsageError

EXIT_NOT_PASSING = 1
PUBLIC_NOTE = "public cases only: hidden cases are graded by your instructor, so the final grade can differ"


class CheckResult:
    """A self-check's outcome: the report dict, rendered as text (str/repr) or HTML (Jupyter)."""

    def __init__(self, report: dict, notes: tuple[str, ...] = ()):
        self.report = report
        self.notes = tuple(notes)

    @property
    def passed(self) -> bool:
        return report_passes(self.report)

    @property
    def score(self) -> float:
        return self.report["score"]

    def text(self, color: bool = False) -> str:
        from .render import render_text

        return "\n".join([render_text(self.report, color=color), *self.notes, self._verdict()])

    def _verdict(self) -> str:
        from .render import item_word

        return f"every {item_word(self.report)} passes all its public cases" if self.passed else \
            "not every public case passes yet"

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        from .render_html import render_html

        return render_html(self.report, [*self.notes, self._verdict()])

    def __bool__(self) -> bool:
        return self.passed


def report_passes(report: dict) -> bool:
    """Every item graded, without violations, and each of its counted cases passed."""
    for cls in report["items"].values():
        if cls["status"] != "graded" or cls["violations"]:
            return False
        counted = [c for c in cls["cases"] if c["status"] != "skipped"]
        if not counted or any(c["status"] != "passed" for c in counted):
            return False
    return bool(report["items"])


def grade_public(submission: Path, assignment_id: str | None = None, items: list[str] | None = None,
                 device: str = "auto", seed: int | None = None, only_case: str | None = None,
                 extra_hidden: list[Path] | None = None) -> dict:
    """The report dict for `submission` on the public cases of `items` (default: all); the
    assignment is the one named, or the one the submission's names point to."""
    from .cli import pick_assignment, select_items
    from .pipeline import grade
    from .public import public_assignment
    from .report import report_to_dict

    assignment = select_items(public_assignment(pick_assignment(Path(submission), assignment_id)), items)
    report = grade(Path(submission), assignment, seed=seed, device=device, only_case=only_case,
                   extra_hidden=extra_hidden)
    return report_to_dict(report)


def _notes(report: dict, reaps_orphans: bool) -> list[str]:
    from .protections import describe_off

    notes = [PUBLIC_NOTE]
    off = describe_off(report["environment"].get("protections", {}), reaps_orphans)
    if off:
        notes.append(off)
    return notes


# --- in a notebook or a script -------------------------------------------------------------

def check(target, *, name: str | None = None, device: str = "auto", seed: int | None = None,
          assignment: str | None = None, namespace: dict | None = None) -> CheckResult:
    """Grade one item (a class or a function) on the public cases, in a worker process.

    `target` is the object or its name, looked up where check() was called (or in the
    IPython session). `name` grades it as another of the assignment's items, e.g.
    check(MyLayer, name="TheLayer"). `assignment`: by default the bundled one that has an
    item of that name."""
    namespace = namespace if namespace is not None else _caller_namespace()
    obj = _resolve(target, namespace)
    graded_as = name or (target if isinstance(target, str) else getattr(obj, "__name__", ""))
    return _check({graded_as: obj}, namespace, device, seed, _assignment_for([graded_as], assignment))


def check_all(*, device: str = "auto", seed: int | None = None, assignment: str | None = None,
              namespace: dict | None = None) -> CheckResult:
    """Grade every item of the assignment on the public cases (a missing one is reported).
    `assignment`: by default the bundled one whose item names this session defines most of."""
    namespace = namespace if namespace is not None else _caller_namespace()
    shell_ns = _shell_namespace() or {}
    chosen = _assignment_for([n for n in {**shell_ns, **namespace} if isinstance(n, str)], assignment)
    names = list(dict.fromkeys(spec.python_name for spec in chosen.items))
    targets = {n: namespace.get(n, shell_ns.get(n)) for n in names}
    return _check(targets, namespace, device, seed, chosen)


def _assignment_for(names: list[str], requested: str | None):
    """The assignment named, or the bundled one that grades the most of `names` (its items'
    names first, then the names its course scaffold defines, which a notebook often holds)."""
    from .config import bundled_assignment_ids, load_assignment

    if requested is not None:
        return load_assignment(requested)
    candidates = [load_assignment(i) for i in bundled_assignment_ids()]
    present = set(names)

    def score(assignment):
        items = sum(1 for item in assignment.items if item.python_name in present or item.name in present)
        return items, len(_defined_names(assignment.scaffold_source) & present)

    ranked = sorted(candidates, key=score, reverse=True)
    if ranked and score(ranked[0]) > (0, 0) and (len(ranked) == 1 or score(ranked[1]) < score(ranked[0])):
        return ranked[0]
    listing = "; ".join(f"{a.id}: {', '.join(dict.fromkeys(i.python_name for i in a.items))}" for a in candidates)
    example = candidates[0].items[0].python_name if candidates else "Name"
    shown = ", ".join(sorted(n for n in present if not n.startswith("_"))[:6])
    raise ValueError(f"check() grades the items of {listing}; {shown or 'nothing here'} is none of them "
                     f"(to grade another name as one: check(obj, name={example!r}), or pass assignment=)")


def _caller_namespace() -> dict:
    frame = sys._getframe(2)  # check() -> _caller_namespace(); the caller is two frames up
    return frame.f_globals


def _shell_namespace() -> dict | None:
    from .livesource import ipython_shell

    shell = ipython_shell()
    return None if shell is None else shell.user_ns


def _resolve(target, namespace: dict):
    if not isinstance(target, str):
        if not callable(target):
            raise TypeError(f"check() takes a class, a function or its name, not {type(target).__name__}")
        return target
    for space in (namespace, _shell_namespace() or {}):
        if target in space:
            return space[target]
    raise NameError(f"check({target!r}): no {target} defined here yet (run the cell that defines it)")


def _check(targets: dict, namespace: dict, device: str, seed: int | None, assignment) -> CheckResult:
    from . import reaper
    from .livesource import write_submission

    known = list(dict.fromkeys(spec.python_name for spec in assignment.items))
    for graded_as in targets:
        if graded_as not in known:
            raise ValueError(f"check() grades {', '.join(known)}; {graded_as!r} is none of them "
                             f"(to grade it as one: check({graded_as}, name={known[0]!r}))")
    items = _items_for(assignment, targets)
    scaffold_names = _defined_names(assignment.scaffold_source)
    folder = Path(tempfile.mkdtemp(prefix="grader-check-"))
    try:
        live = write_submission(targets, namespace, folder, scaffold_names)
        report = grade_public(live.path, str(assignment.path), items, device=device, seed=seed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report["submission"]["path"] = live.origin
    notes = _notes(report, reaper.is_subreaper())
    if live.kind == "history":
        notes.insert(0, "cell N is In [N] of this session")
    if live.unparsable:
        notes.append(f"left out {live.unparsable} cell{'s' if live.unparsable != 1 else ''} of this session "
                     "that do not parse")
    if live.left_out:
        notes.append(f"left out {live.left_out} statement{'s' if live.left_out != 1 else ''} "
                     "that call the grader")
    return CheckResult(report, tuple(notes))


def _items_for(assignment, targets: dict) -> list[str]:
    """The items the targets are graded as. Where several items share a name (one step's
    function and the next step's, with more parameters), only those whose signature the live
    object has: a student checking one step is not told that it is not the other."""
    import inspect

    chosen = []
    for name, obj in targets.items():
        sharing = [spec for spec in assignment.items if spec.python_name == name]
        fitting = sharing
        if len(sharing) > 1 and obj is not None:
            try:
                parameters = inspect.signature(obj).parameters
            except (TypeError, ValueError):
                parameters = None
            if parameters is not None:
                count = sum(1 for p in parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
                fitting = [spec for spec in sharing
                           if assignment.task_of(spec).signature.positional in (None, count)] or sharing
        chosen.extend(spec.name for spec in fitting)
    return [spec.name for spec in assignment.items if spec.name in chosen]


def _defined_names(source: str) -> set[str]:
    """Functions and classes the course scaffold defines (the grader runs it first)."""
    import ast

    return {node.name for node in ast.parse(source).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


# --- grade check SUBMISSION ----------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grade check", description=(
        "Check a submission on the assignment's public cases. Exit 0 when every item passes "
        "all its public cases, 1 when not, 2 on a usage error."))
    parser.add_argument("submission", help="your notebook (.ipynb) or module (.py)")
    parser.add_argument("--item", "--class", dest="items", action="append", metavar="NAME",
                        help="check only this item (repeat for several)")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--case", dest="only_case", metavar="CASE_ID", help="replay one public case")
    parser.add_argument("--seed", type=int, help="draw other cases (default: the public seed)")
    parser.add_argument("--assignment", help="bundled assignment id or path to its YAML (default: the one "
                                             "whose names the submission defines)")
    parser.add_argument("-o", "--output", type=Path, help="also write the JSON report here")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    parser.add_argument("--quiet", action="store_true", help="print nothing; the exit code says it all")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    # torch warns on import where numpy is missing; the grader does not need numpy.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    from . import reaper
    from .report import write_json_atomically

    reaper.become_subreaper()
    extra_hidden = [args.output.resolve().parent] if args.output else []
    report = grade_public(Path(args.submission), args.assignment, args.items, device=args.device,
                          seed=args.seed, only_case=args.only_case, extra_hidden=extra_hidden)
    reaper.sweep_orphans()  # nothing the submission started may outlive the report
    if args.output:
        write_json_atomically(report, args.output)
    result = CheckResult(report, tuple(_notes(report, reaper.is_subreaper())))
    if args.json:
        print(json.dumps(report, indent=2))
    elif not args.quiet:
        print(result.text(color=sys.stdout.isatty()))
    return EXIT_OK if result.passed else EXIT_NOT_PASSING
