"""`grade batch` and `grade merge`: a course's submissions, one report each.

Every submission gets a fresh worker forked from one warm fork server, and the
cases and their expected outputs are computed once for the whole batch. A
submission whose worker crashes, is killed or hangs costs only itself: it still
gets a report saying what happened. Reports are written atomically, so a rerun
after Ctrl-C skips every submission whose report is complete and whose file and
config are unchanged.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from .cli import _Parser
from .errors import EXIT_INTERNAL, EXIT_OK, UsageError
from .exports import write_gradebook_csv

SUFFIXES = (".ipynb", ".py")
GRADER_FAILURE = "the grader could not grade this submission"
OUTPUT_FILES = ("gradebook.csv", "summary.json")
RESERVED = {"summary.json", "gradebook.json", "manifest.json", "roster.json"}


@dataclass(frozen=True)
class Item:
    path: Path
    id: str
    sha256: str

    @property
    def report_name(self) -> str:
        return f"{self.id}.json"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grade batch", description="Grade many submissions: one report each, a CSV "
                                                     "gradebook and a summary.")
    parser.add_argument("paths", nargs="+", help="files, folders (searched recursively) or glob patterns")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the reports")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at once (default 2)")
    parser.add_argument("--shard", metavar="K/N", help="grade only the K-th of N shares (1-based), or env: "
                                                       "the shard a Slurm array or Kubernetes Indexed Job gives")
    parser.add_argument("--assignment", default="conv2d")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--quiet", action="store_true")
    from .course_outputs import add_options
    add_options(parser, batch=True)
    return parser


def collect(paths: list[str]) -> list[Path]:
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if any(ch in raw for ch in "*?["):
            matches = [Path(p) for p in glob.glob(raw, recursive=True)]
            if not matches:
                raise UsageError(f"no submissions match {raw!r}")
            found.update(p for p in matches if p.is_file() and p.suffix in SUFFIXES)
        elif path.is_dir():
            found.update(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()
                         and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            found.add(path)
        else:
            raise UsageError(f"{raw!r} is not a file, a folder or a pattern that matches")
    return sorted(found, key=lambda p: p.as_posix())


def identify(paths: list[Path]) -> list[Item]:
    """Ids that name report files: the stem, or stem-<hash of the path> where stems collide.
    They depend on the whole input list, not on the shard, so every shard names alike."""
    stems: dict[str, int] = {}
    for path in paths:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    safe_counts: dict[str, int] = {}
    for path in paths:
        safe_counts[_safe(path.stem)] = safe_counts.get(_safe(path.stem), 0) + 1
    items = []
    for path in paths:
        safe = _safe(path.stem)
        # Two stems that differ only in characters _safe replaces ("a b", "a_b"), or a stem that
        # is one of our own output names, would overwrite another report: add the path's hash.
        unique = stems[path.stem] == 1 and safe_counts[safe] == 1 and f"{safe}.json" not in RESERVED
        identity = safe if unique else f"{safe}-{hashlib.sha256(path.as_posix().encode()).hexdigest()[:8]}"
        items.append(Item(path=path, id=identity, sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    return items


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:120] or "submission"


def is_complete(report_path: Path, item: Item, assignment_sha: str, seed: int, devices: tuple[str, ...]) -> bool:
    from .provenance import grading_fingerprint
    from .schema_check import is_valid

    try:
        report = json.loads(report_path.read_text())
        if str(report["load"].get("fatal") or "").startswith(GRADER_FAILURE):
            return False  # our failure, not the student's: try again
        # A report of another grader is regraded: the new code may grade it differently.
        return (report["schema_version"].startswith("1.") and report["submission"]["sha256"] == item.sha256
                and report["assignment"]["sha256"] == assignment_sha and report["seed"] == seed
                and tuple(report["devices"]) == devices and "score" in report
                and report["environment"].get("grader_fingerprint") == grading_fingerprint()
                and is_valid(report))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    from . import forkserver, reaper

    reaper.become_subreaper()
    forkserver.prestart()
    try:
        return _run(args)
    finally:
        forkserver.shutdown()
        reaper.sweep_orphans()


def _run(args) -> int:
    from .config import load_assignment
    from .pipeline import resolve_devices

    from .shards import resolve
    everything = identify(collect(args.paths))
    spec = resolve(args.shard, args.shard_index, args.shard_count)
    items = [item for item in everything if spec.owns(item.id)]
    assignment = load_assignment(args.assignment)
    seed = assignment.seed if args.seed is None else args.seed
    devices, _ = resolve_devices(args.device, assignment)
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    todo = [i for i in items if not is_complete(out / i.report_name, i, assignment.sha256, seed, devices)]
    log = sys.stderr
    if not args.quiet:
        print(f"{len(items)} submissions{f' (shard {spec.label})' if spec.count > 1 else ''}, "
              f"{len(items) - len(todo)} already graded, {len(todo)} to grade with {args.jobs} jobs", file=log)
    _write_manifest(out, spec, everything, items, assignment, seed, devices, "started")
    started = time.monotonic()
    interrupted = _grade_all(todo, assignment, seed, args, out, log)
    summary = write_outputs(out, items, assignment.id, seed, time.monotonic() - started,
                            args=args, log=log if not args.quiet else _Null())
    _write_manifest(out, spec, everything, items, assignment, seed, devices,
                    "interrupted" if interrupted else "finished", summary["graded"])
    if args.feedback and not interrupted:
        from .course_outputs import write_feedback
        write_feedback(args.feedback, out, [(i.id, i.path) for i in items], {i.id for i in todo},
                       log if not args.quiet else _Null())
    if interrupted:
        print(f"interrupted: {summary['graded']} of {len(items)} have reports; run the same command again "
              "to grade the rest", file=log)
        return 130
    failures = [r["id"] for r in summary["reports"] if r.get("grader_failure")]
    if failures:
        print(f"{len(failures)} submissions could not be graded because of a grader failure "
              f"({', '.join(failures[:5])}); their reports say so, and rerunning retries them", file=log)
        return EXIT_INTERNAL
    if not args.quiet:
        print(f"{summary['graded']} reports in {out}; gradebook: {out / 'gradebook.csv'}", file=log)
    return EXIT_OK


def _grade_all(todo: list[Item], assignment, seed: int, args, out: Path, log) -> bool:
    from .progress import Progress

    progress = Progress(len(todo), stream=log if not args.quiet else _Null())
    # Every submission's folder is hidden from every worker: one student's code must not
    # read another's notebook.
    common = _common_folder([i.path for i in todo])
    if getattr(args, "feedback", None):
        common += (args.feedback,)   # earlier runs' pages hold other students' notebooks
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    pending = set()
    queue = list(todo)
    try:
        while queue or pending:
            while queue and len(pending) < args.jobs:
                item = queue.pop(0)
                pending.add(pool.submit(grade_one, item, assignment, seed, args.device, out, stop, common))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                label, outcome = future.result()
                progress.advance(label, outcome)
        return False
    except KeyboardInterrupt:
        # Reports already written stay; the ones in flight are dropped, not half-written.
        stop.set()
        from . import reaper
        reaper.kill_all_workers()
        pool.shutdown(wait=True, cancel_futures=True)
        return True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def grade_one(item: Item, assignment, seed: int, device: str, out: Path, stop: threading.Event,
              also_hidden: tuple[Path, ...] = ()) -> tuple[str, str]:
    from .pipeline import failed_report, grade
    from .report import report_to_dict, write_json_atomically

    started = time.monotonic()
    try:
        report = grade(item.path, assignment, seed=seed, device=device, extra_hidden=[out, *also_hidden])
    except Exception as exc:  # one submission's failure must not stop the batch
        from .pipeline import resolve_devices
        devices, _ = resolve_devices(device, assignment)
        report = failed_report(item.path, assignment, seed, devices,
                               f"{GRADER_FAILURE}: {type(exc).__name__}: {exc}"[:500],
                               time.monotonic() - started)
    if stop.is_set():
        return item.id, "dropped (interrupted)"
    write_json_atomically(report_to_dict(report), out / item.report_name)
    if str(report.load.fatal or "").startswith(GRADER_FAILURE):
        return item.id, "GRADER FAILURE (rerun to retry): " + report.load.fatal
    return item.id, f"{report.score:g}/{report.max_score:g} ({time.monotonic() - started:.1f} s)"


def _common_folder(paths: list[Path]) -> tuple[Path, ...]:
    import os

    if not paths:
        return ()
    try:
        return (Path(os.path.commonpath([str(p.resolve().parent) for p in paths])),)
    except ValueError:
        return ()


def _write_manifest(out: Path, spec, everything: list[Item], items: list[Item], assignment, seed: int,
                    devices: tuple[str, ...], status: str, graded: int = 0) -> None:
    from .report import write_json_atomically
    from .shards import MANIFEST, manifest
    write_json_atomically(manifest(spec, [i.id for i in everything], items, assignment, seed, devices, status,
                                   graded), out / MANIFEST)


def write_outputs(out: Path, items: list[Item], assignment_id: str, seed: int, duration_s: float,
                  args=None, log=None) -> dict:
    from .report import write_json_atomically

    reports, ids = [], []
    for item in items:
        try:
            reports.append(json.loads((out / item.report_name).read_text()))
            ids.append(item.id)
        except (OSError, ValueError):
            continue
    write_gradebook_csv(reports, out / "gradebook.csv", ids=ids)
    summary = summarize(reports, ids, assignment_id, seed, duration_s, expected=len(items))
    write_json_atomically(summary, out / "summary.json")
    from .course_outputs import write as write_course_outputs
    write_course_outputs(out, reports, ids, args, log or _Null())
    return summary


def summarize(reports: list[dict], ids: list[str], assignment_id: str, seed: int | None, duration_s: float,
              expected: int) -> dict:
    scores = [r["score"] for r in reports]
    return {
        "assignment": assignment_id,
        "seed": seed,
        "submissions": expected,
        "graded": len(reports),
        "missing": expected - len(reports),
        "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
        "max_score": reports[0]["max_score"] if reports else None,
        "duration_s": round(duration_s, 3),
        "reports": [{"id": i, "path": r["submission"]["path"], "score": r["score"],
                     "grader_failure": str(r["load"].get("fatal") or "").startswith(GRADER_FAILURE)}
                    for i, r in zip(ids, reports)],
    }


def merge_main(argv: list[str]) -> int:
    parser = _Parser(prog="grade merge", description="One gradebook from the report folders of several shards.")
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    from .course_outputs import add_options
    add_options(parser, batch=False)
    args = parser.parse_args(argv)
    from .report import write_json_atomically
    from .shards import EXIT_INCOMPLETE, merge

    merged = merge(args.folders)
    reports, ids = list(merged.reports), list(merged.ids)
    out = args.output
    merged.copy_into(out)
    write_gradebook_csv(reports, out / "gradebook.csv", ids=ids)
    seeds = {r.get("seed") for r in reports}
    summary = summarize(reports, ids, reports[0]["assignment"]["id"] if reports else "",
                        seeds.pop() if len(seeds) == 1 else None, 0.0, merged.expected)
    write_json_atomically(summary | merged.summary_fields(), out / "summary.json")
    from .course_outputs import write as write_course_outputs
    write_course_outputs(out, reports, ids, args, sys.stderr)
    print(f"merged {len(reports)} reports from {len(args.folders)} folders into {out}", file=sys.stderr)
    for line in merged.problems():
        print(line, file=sys.stderr)
    return EXIT_INCOMPLETE if merged.missing else EXIT_OK


class _Null:
    def write(self, _):
        pass

    def flush(self):
        pass
