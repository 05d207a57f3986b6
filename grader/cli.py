"""`grade SUBMISSION ...`: argument parsing, exit codes, and nothing else."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import EXIT_BELOW_THRESHOLD, EXIT_INTERNAL, EXIT_OK, GraderError, UsageError
from .safe_text import one_line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 itself; keep our one-line format
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grade", description="Grade a submission (.ipynb or .py) of a bundled or given "
                                               "assignment.")
    parser.add_argument("submission", help="the student's notebook or module")
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
    from . import forkserver, reaper

    reaper.become_subreaper()
    forkserver.prestart()  # its torch import overlaps with ours, below
    try:
        return _grade_one(args)
    finally:
        forkserver.shutdown()


def pick_assignment(submission: Path, requested: str | None):
    """The assignment named, or the one the submission's names point to (the table's first
    line and the report's `assignment.id` say which)."""
    from .config import load_assignment

    if requested is not None:
        return load_assignment(requested)
    from .choose import choose_assignment

    return choose_assignment(submission).assignment


def select_items(assignment, names: list[str] | None):
    if not names:
        return assignment
    from .public import only_items

    known = [spec.name for spec in assignment.items]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"no item {unknown[0]!r} in {assignment.id} (items: {', '.join(known)})")
    return only_items(assignment, names)


def _grade_one(args) -> int:
    from . import reaper
    from .pipeline import grade
    from .render import render_text
    from .shrink import parse_params
    from .report import report_to_dict, write_json_atomically, write_text_atomically

    assignment = select_items(pick_assignment(Path(args.submission), args.assignment), args.items)
    extra_hidden = [path.resolve().parent for path in (args.output, args.gradescope, args.junit, args.feedback)
                    if path]
    if args.params and args.only_case:
        raise UsageError("--case and --params both name the cases to grade; give one")
    custom = parse_params(args.params, assignment) if args.params else None
    try:
        report = grade(Path(args.submission), assignment, seed=args.seed, device=args.device,
                       only_case=args.only_case, extra_hidden=extra_hidden, custom_params=custom)
    except GraderError:
        raise
    except Exception as exc:
        # A bug of ours still leaves a report behind (saying so), then exits 70.
        if args.output and not os.environ.get("GRADER_DEBUG"):
            from .pipeline import failed_report, resolve_devices
            failed = failed_report(Path(args.submission), assignment, args.seed,
                                   resolve_devices(args.device, assignment)[0],
                                   f"the grader could not grade this submission: {type(exc).__name__}: {exc}"[:500])
            write_json_atomically(report_to_dict(failed, audience=args.audience), args.output)
        raise
    data = report_to_dict(report, audience=args.audience)
    reaper.sweep_orphans()  # nothing the submission started may outlive the report
    if args.output:
        write_json_atomically(data, args.output)
    if args.gradescope:
        from .exports import gradescope_results
        write_json_atomically(gradescope_results(data), args.gradescope)
    if args.junit:
        from .exports import junit_xml
        write_text_atomically(junit_xml(data), args.junit)
    if args.feedback:
        from .feedback import write_feedback
        write_feedback(data, args.feedback, Path(args.submission))
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
