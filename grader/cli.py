"""`grade SUBMISSION ...`: argument parsing, exit codes, and nothing else."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import EXIT_BELOW_THRESHOLD, EXIT_INTERNAL, EXIT_OK, GraderError, UsageError
from .safe_text import one_line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 itself; keep our one-line format
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grade", description="Grade a submission (.ipynb or .py) of a bundled or given "
                                               "assignment.")
    # Any number, so that a glob that matched two notebooks is a report of ours (and a Gradescope
    # result), not an argparse error before --gradescope is known.
    parser.add_argument("submission", nargs="*", metavar="SUBMISSION", help="the student's notebook or module")
    parser.add_argument("--find-in", type=Path, metavar="FOLDER",
                        help="grade the one notebook in FOLDER and its folders (else the one module), whatever "
                             "its name: none or several is an error, written to --gradescope too")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON report here")
    parser.add_argument("--assignment", help="bundled assignment id or path to its YAML (default: the one "
                                             "whose names the submission defines)")
    parser.add_argument("--item", dest="items", action="append", metavar="NAME",
                        help="grade only this item (repeat for several)")
    parser.add_argument("--seed", type=int, help="case seed (default: the assignment's)")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--case", dest="only_case", metavar="CASE_ID", help="replay one case, e.g. basic-003")
    parser.add_argument("--params", metavar="NAME=VALUE,...",
                        help="grade one case with these parameters (the report's smallest failing case "
                             "gives the exact line)")
    parser.add_argument("--audience", choices=("instructor", "student"), default="instructor",
                        help="student: hidden cases appear as counts only, in the table and the JSON")
    parser.add_argument("--fail-under", type=float, metavar="SCORE",
                        help="exit 1 when the total score is below SCORE")
    parser.add_argument("--gradescope", type=Path, metavar="RESULTS.json",
                        help="also write Gradescope's results.json here")
    parser.add_argument("--junit", type=Path, metavar="REPORT.xml", help="also write JUnit XML here (CI test tabs)")
    parser.add_argument("--feedback", type=Path, metavar="OUT.html",
                        help="also write the student's feedback page here (their notebook with the results; "
                             "hidden cases as counts only)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    parser.add_argument("--quiet", action="store_true", help="print nothing; only write the report")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except GraderError as exc:
        print(one_line(exc.format_message()), file=sys.stderr)   # messages quote paths students chose
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line, and the traceback on request
        if os.environ.get("GRADER_DEBUG"):
            raise
        print(one_line(f"internal error: {type(exc).__name__}: {exc} (set GRADER_DEBUG=1 for the traceback)"),
              file=sys.stderr)
        return EXIT_INTERNAL


# Subcommands live in their own modules, imported only when used: `grade batch ...`
# must not pay for what `grade SUBMISSION` needs, and the other way round.
SUBCOMMANDS = {
    "batch": "grader.batch:main",
    "merge": "grader.batch:merge_main",
    "check": "grader.selfcheck:main",
    "bundle": "grader.bundle:main",
}


def _main(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        module_name, _, function = SUBCOMMANDS[argv[0]].partition(":")
        import importlib

        return getattr(importlib.import_module(module_name), function)(argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        build_parser().print_help()
        print(f"\nother commands: {', '.join(f'grade {name} --help' for name in SUBCOMMANDS)}")
        return EXIT_OK
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    written: set[str] = set()
    try:
        # Before the fork server starts (and long before grading): what to grade and where the
        # outputs go, so that a setup mistake costs a second, not a grading.
        found = _submission(args)
        _check_outputs(args, found.path)
        from . import forkserver, reaper

        reaper.become_subreaper()
        forkserver.prestart()  # its torch import overlaps with ours, below
        try:
            return _grade_one(args, found, written)
        finally:
            forkserver.shutdown()
    except Exception as exc:
        if args.gradescope and "gradescope" not in written:
            _gradescope_failure(args.gradescope, exc, time.monotonic() - started)
        raise


def _submission(args):
    """The one file to grade (inputs.Found: refused when it is a link out of its folder)."""
    from . import inputs

    if args.find_in is not None:
        if args.submission:
            raise UsageError("give a SUBMISSION or --find-in FOLDER, not both")
        return inputs.find_one(args.find_in)
    if not args.submission:
        raise UsageError("no submission given: grade SUBMISSION (a .ipynb notebook or a .py module), "
                         "or --find-in FOLDER")
    if len(args.submission) > 1:
        names = ", ".join(args.submission[:3]) + (", ..." if len(args.submission) > 3 else "")
        raise UsageError(f"{len(args.submission)} submissions given ({names}): grade takes one "
                         "(grade batch grades several, --find-in FOLDER the one in a folder)")
    return inputs.single(Path(args.submission[0]))


def _check_outputs(args, submission: Path) -> None:
    from . import outputs

    given = [(option, path) for option, path in (("-o", args.output), ("--gradescope", args.gradescope),
                                                 ("--junit", args.junit), ("--feedback", args.feedback)) if path]
    for option, path in given:
        outputs.check_file(option, path)
    outputs.check_distinct(given, submission)


def _gradescope_failure(path: Path, exc: Exception, elapsed_s: float) -> None:
    """Gradescope shows a platform error when run_autograder leaves no results.json; a 0 with the
    reason is what the student should see instead, whatever went wrong."""
    from .exports import gradescope_failure
    from .outputs import write_text_atomically

    if isinstance(exc, GraderError):
        reason = str(exc)
    else:
        reason = (f"an internal error of the grader ({type(exc).__name__}), not a problem of the submission; "
                  "the instructor has the details")
    try:
        write_text_atomically(json.dumps(gradescope_failure(reason, elapsed_s), indent=2) + "\n", path)
    except (OSError, GraderError):
        pass     # the error being reported is the one that matters


def pick_assignment(submission: Path, requested: str | None, refused: str | None = None):
    """The assignment named, or the one the submission's names point to (the table's first
    line and the report's `assignment.id` say which). A `refused` submission is not read: it
    takes the only bundled assignment, else --assignment is needed."""
    from .config import bundled_assignment_ids, load_assignment

    if requested is not None:
        return load_assignment(requested)
    if refused is not None:
        bundled = bundled_assignment_ids()
        if len(bundled) == 1:
            return load_assignment(bundled[0])
        raise UsageError(f"{submission.name} was not read ({refused}), so it names no assignment: pass --assignment")
    from .choose import choose_for
    from .submission import load_submission

    # Parsed once: grading finds the parse kept (submission.py).
    return choose_for(load_submission(submission), [load_assignment(i) for i in bundled_assignment_ids()]).assignment


def select_items(assignment, names: list[str] | None):
    if not names:
        return assignment
    from .public import only_items

    known = [spec.name for spec in assignment.items]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"no item {unknown[0]!r} in {assignment.id} (items: {', '.join(known)})")
    return only_items(assignment, names)


def _grade_one(args, found, written: set[str]) -> int:
    from . import reaper
    from .pipeline import grade, refused_report, resolve_devices
    from .render import render_text
    from .shrink import parse_params
    from .report import report_to_dict, write_json_atomically, write_text_atomically

    path = found.path
    assignment = select_items(pick_assignment(path, args.assignment, found.refused), args.items)
    extra_hidden = [p.resolve().parent for p in (args.output, args.gradescope, args.junit, args.feedback) if p]
    if args.params and args.only_case:
        raise UsageError("--case and --params both name the cases to grade; give one")
    custom = parse_params(args.params, assignment) if args.params else None
    try:
        if found.refused is not None:     # nothing of it is read; the report says why
            report = refused_report(path, assignment, args.seed, resolve_devices(args.device, assignment)[0],
                                    found.refused)
        else:
            report = grade(path, assignment, seed=args.seed, device=args.device, only_case=args.only_case,
                           extra_hidden=extra_hidden, custom_params=custom)
        data = report_to_dict(report, audience=args.audience)
    except GraderError:
        raise
    except Exception as exc:
        # A bug of ours still leaves a report behind (saying so), then exits 70.
        if args.output and found.refused is None and not os.environ.get("GRADER_DEBUG"):
            from .pipeline import failed_report
            failed = failed_report(path, assignment, args.seed, resolve_devices(args.device, assignment)[0],
                                   f"the grader could not grade this submission: {type(exc).__name__}: {exc}"[:500])
            write_json_atomically(report_to_dict(failed, audience=args.audience), args.output)
        raise
    reaper.sweep_orphans()  # nothing the submission started may outlive the report
    if args.output:
        write_json_atomically(data, args.output)
    if args.gradescope:
        from .exports import gradescope_results
        write_json_atomically(gradescope_results(data), args.gradescope)
        written.add("gradescope")
    if args.junit:
        from .exports import junit_xml
        write_text_atomically(junit_xml(data), args.junit)
    if args.feedback:
        from .feedback import write_feedback
        write_feedback(data, args.feedback, path)
    if args.json:
        print(json.dumps(data, indent=2))
    elif not args.quiet:
        print(render_text(data, color=sys.stdout.isatty()))
        if args.output:
            print(f"report: {args.output}")
    if args.fail_under is not None and report.score < args.fail_under:
        if not args.quiet:
            print(f"score {report.score} is below --fail-under {args.fail_under}", file=sys.stderr)
        return EXIT_BELOW_THRESHOLD
    return EXIT_OK
