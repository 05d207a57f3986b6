"""Students check their own work on the public cases: `grade check` and `check(...)`.

Both grade the assignment's public view (no hidden groups, the public seed; see
public.py) through the same pipeline as `grade`, so student code still runs only in a
worker process, and both render the same report data: a table in the terminal, an
HTML table in Jupyter.

    from grader import check, check_all
    check(Conv2dLoop)        # or check("Conv2dLoop"): one class, public cases only
    check_all()              # the three classes

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
        return "every class passes all its public cases" if self.passed else \
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
    """Every class graded, without violations, and each of its counted cases passed."""
    for cls in report["classes"].values():
        if cls["status"] != "graded" or cls["violations"]:
            return False
        counted = [c for c in cls["cases"] if c["status"] != "skipped"]
        if not counted or any(c["status"] != "passed" for c in counted):
            return False
    return bool(report["classes"])


def grade_public(submission: Path, assignment_id: str = "conv2d", classes: list[str] | None = None,
                 device: str = "auto", seed: int | None = None, only_case: str | None = None,
                 extra_hidden: list[Path] | None = None) -> dict:
    """The report dict for `submission` on the public cases of `classes` (default: all)."""
    from .config import load_assignment
    from .pipeline import grade
    from .public import only_classes, public_assignment
    from .report import report_to_dict

    assignment = public_assignment(load_assignment(assignment_id))
    known = [spec.name for spec in assignment.classes]
    unknown = [name for name in classes or [] if name not in known]
    if unknown:
        raise UsageError(f"no class {unknown[0]!r} in this assignment (classes: {', '.join(known)})")
    if classes:
        assignment = only_classes(assignment, classes)
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
          assignment: str = "conv2d", namespace: dict | None = None) -> CheckResult:
    """Grade one class on the public cases, in a worker process.

    `target` is the class or its name, looked up where check() was called (or in the
    IPython session). `name` grades it as another of the assignment's classes, e.g.
    check(MyConv, name="Conv2dLoop")."""
    namespace = namespace if namespace is not None else _caller_namespace()
    obj = _resolve(target, namespace)
    graded_as = name or (target if isinstance(target, str) else getattr(obj, "__name__", ""))
    return _check({graded_as: obj}, namespace, device, seed, assignment)


def check_all(*, device: str = "auto", seed: int | None = None, assignment: str = "conv2d",
              namespace: dict | None = None) -> CheckResult:
    """Grade every class of the assignment on the public cases (a missing one is reported)."""
    from .config import load_assignment

    namespace = namespace if namespace is not None else _caller_namespace()
    names = [spec.name for spec in load_assignment(assignment).classes]
    shell_ns = _shell_namespace()
    targets = {n: namespace.get(n, shell_ns.get(n) if shell_ns is not None else None) for n in names}
    return _check(targets, namespace, device, seed, assignment)


def _caller_namespace() -> dict:
    frame = sys._getframe(2)  # check() -> _caller_namespace(); the caller is two frames up
    return frame.f_globals


def _shell_namespace() -> dict | None:
    from .livesource import ipython_shell

    shell = ipython_shell()
    return None if shell is None else shell.user_ns


def _resolve(target, namespace: dict):
    if not isinstance(target, str):
        if not isinstance(target, type):
            raise TypeError(f"check() takes a class or a class name, not {type(target).__name__}")
        return target
    for space in (namespace, _shell_namespace() or {}):
        if target in space:
            return space[target]
    raise NameError(f"check({target!r}): no {target} defined here yet (run the cell that defines it)")


def _check(targets: dict, namespace: dict, device: str, seed: int | None, assignment_id: str) -> CheckResult:
    from . import reaper
    from .config import load_assignment
    from .livesource import write_submission

    assignment = load_assignment(assignment_id)
    known = [spec.name for spec in assignment.classes]
    for graded_as in targets:
        if graded_as not in known:
            raise ValueError(f"check() grades {', '.join(known)}; {graded_as!r} is none of them "
                             f"(to grade it as one: check({graded_as}, name={known[0]!r}))")
    scaffold_names = _defined_names(assignment.scaffold_source)
    folder = Path(tempfile.mkdtemp(prefix="grader-check-"))
    try:
        live = write_submission(targets, namespace, folder, scaffold_names)
        report = grade_public(live.path, assignment_id, list(targets), device=device, seed=seed)
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
        "Check a submission on the assignment's public cases. Exit 0 when every class passes "
        "all its public cases, 1 when not, 2 on a usage error."))
    parser.add_argument("submission", help="your notebook (.ipynb) or module (.py)")
    parser.add_argument("--class", dest="classes", action="append", metavar="NAME",
                        help="check only this class (repeat for several)")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--case", dest="only_case", metavar="CASE_ID", help="replay one public case")
    parser.add_argument("--seed", type=int, help="draw other cases (default: the public seed)")
    parser.add_argument("--assignment", default="conv2d", help="bundled assignment id or path to its YAML")
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
    report = grade_public(Path(args.submission), args.assignment, args.classes, device=args.device,
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
