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
import hashlib
import json
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from .cli import _Parser
from .errors import EXIT_INTERNAL, EXIT_OK, UsageError
from .exports import write_gradebook_csv
from .inputs import Found
from .safe_text import one_line

GRADER_FAILURE = "the grader could not grade this submission"
DISAPPEARED = "the file disappeared before it was graded (deleted or moved while the batch ran)"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
OUTPUT_FILES = ("gradebook.csv", "summary.json")
RESERVED = {"summary.json", "gradebook.json", "manifest.json", "roster.json"}


@dataclass(frozen=True)
class Item:
    path: Path
    id: str
    sha256: str
    refused: str | None = None   # why the file is not read (inputs.py); its report says so

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
    parser.add_argument("--assignment", help="bundled assignment id or path to its YAML (default: each "
                                             "submission's own, from the names it defines)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--quiet", action="store_true")
    from .course_outputs import add_options
    add_options(parser, batch=True)
    return parser


def identify(found: list[Found]) -> list[Item]:
    """Ids that name report files: the stem, or stem-<hash of the path> where stems collide.
    They depend on the whole input list, not on the shard, so every shard names alike. A refused
    file is not read, not even to hash it."""
    paths = [f.path for f in found]
    stems: dict[str, int] = {}
    for path in paths:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    safe_counts: dict[str, int] = {}
    for path in paths:
        safe_counts[_safe(path.stem)] = safe_counts.get(_safe(path.stem), 0) + 1
    items = []
    for entry in found:
        path = entry.path
        safe = _safe(path.stem)
        # Two stems that differ only in characters _safe replaces ("a b", "a_b"), or a stem that
        # is one of our own output names, would overwrite another report: add the path's hash.
        unique = stems[path.stem] == 1 and safe_counts[safe] == 1 and f"{safe}.json" not in RESERVED \
            and not safe.startswith("roster-")
        identity = safe if unique else f"{safe}-{hashlib.sha256(path.as_posix().encode()).hexdigest()[:8]}"
        items.append(Item(path=path, id=identity, sha256=EMPTY_SHA256 if entry.refused else _sha256(path),
                          refused=entry.refused))
    return items


def _sha256(path: Path) -> str:
    from .submission import file_sha256

    try:
        return file_sha256(path)
    except OSError:        # gone since it was listed: grading it will say so
        return EMPTY_SHA256


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
        return (report["schema_version"].startswith("2.") and report["submission"]["sha256"] == item.sha256
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
    from . import outputs
    from .inputs import collect
    from .pipeline import resolve_devices
    from .shards import resolve

    # The outputs first: a typo in -o must not cost the grading it would waste.
    outputs.check_folder("-o", args.output)
    if args.feedback:
        outputs.check_folder("--feedback", args.feedback)
    collected = collect(args.paths)
    everything = identify(list(collected.files))
    spec = resolve(args.shard, args.shard_index, args.shard_count)
    items = [item for item in everything if spec.owns(item.id)]
    chosen = assign(items, args.assignment)
    out = args.output
    outputs.make_folder("-o", out)
    plans = {a.id: Plan(a, a.seed if args.seed is None else args.seed, resolve_devices(args.device, a)[0])
             for a in chosen.values()}
    refused = [i for i in items if i.refused]
    todo = [i for i in items if not i.refused and not is_complete(
        out / i.report_name, i, chosen[i.id].sha256, plans[chosen[i.id].id].seed, plans[chosen[i.id].id].devices)]
    log = sys.stderr
    if not args.quiet:
        print(f"{len(items)} submissions{f' (shard {spec.label})' if spec.count > 1 else ''}, "
              f"{len(items) - len(todo) - len(refused)} already graded, {len(todo)} to grade with {args.jobs} jobs"
              + (f", {len(refused)} refused" if refused else ""), file=log)
        # Paths are the students' file names: one line each, nothing raw.
        for entry in [*refused, *collected.folder_links]:
            print(one_line(f"refused {entry.path}: {entry.refused}"), file=log)
        for duplicate, kept in collected.duplicates:
            print(one_line(f"{duplicate} is the same file as {kept}: graded once, as {kept}"), file=log)
    for item in refused:       # nothing to grade: the report says why, every run
        _write_refused(item, chosen[item.id], plans[chosen[item.id].id], out)
    _write_manifest(out, spec, everything, items, chosen, plans, "started")
    started = time.monotonic()
    interrupted = _grade_all(todo, chosen, plans, args, out, log)
    extra = {"refused": [{"id": None, "path": str(f.path), "reason": f.refused} for f in collected.folder_links],
             "duplicates": [{"path": str(d), "same_as": str(k)} for d, k in collected.duplicates]}
    summary = write_outputs(out, items, chosen, plans, time.monotonic() - started,
                            args=args, log=log if not args.quiet else _Null(), extra=extra)
    _write_manifest(out, spec, everything, items, chosen, plans, "interrupted" if interrupted else "finished",
                    summary["graded"])
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
        books = ", ".join(str(out / name) for name in book_names(plans).values())
        print(f"{summary['graded']} reports in {out}; gradebook: {books}", file=log)
    return EXIT_OK


def _write_refused(item: Item, assignment, plan, out: Path) -> None:
    from .pipeline import refused_report
    from .report import report_to_dict, write_json_atomically

    report = refused_report(item.path, assignment, plan.seed, plan.devices, item.refused)
    write_json_atomically(report_to_dict(report), out / item.report_name)


@dataclass(frozen=True)
class Plan:
    """How a batch grades one of its assignments."""
    assignment: "Assignment"
    seed: int
    devices: tuple[str, ...]


def assign(items: list[Item], requested: str | None) -> dict[str, "Assignment"]:
    """Each submission's assignment: the one named, or the one its names point to. A file whose
    names point nowhere (an empty notebook) is graded with the batch's assignment when the batch
    has one (its items are then simply missing), else with the first candidate."""
    from .choose import choose_for
    from .config import bundled_assignment_ids, load_assignment
    from .submission import load_submission

    if requested is not None:
        assignment = load_assignment(requested)
        return {item.id: assignment for item in items}
    candidates = [load_assignment(i) for i in bundled_assignment_ids()]
    chosen: dict[str, "Assignment"] = {}
    unknown = []
    for item in items:
        if item.refused:          # not read: it goes with the batch's assignment
            unknown.append(item)
            continue
        try:
            chosen[item.id] = choose_for(load_submission(item.path), candidates).assignment
        except UsageError:
            unknown.append(item)
    used = {a.id: a for a in chosen.values()}
    fallback = next(iter(used.values())) if len(used) == 1 else candidates[0]
    for item in unknown:
        chosen[item.id] = fallback
    return chosen


def book_names(assignment_ids) -> dict[str | None, str]:
    """The suffix of a batch's per-assignment files: none for a batch of one assignment
    (gradebook.csv, class_report.html), -<id> for each of a mixed one (gradebook-<id>.csv)."""
    ids = sorted(i for i in set(assignment_ids) if i is not None)
    if len(ids) <= 1:
        return {ids[0] if ids else None: ""}
    return {i: f"-{_safe(i)}" for i in ids}


def _grade_all(todo: list[Item], chosen: dict, plans: dict, args, out: Path, log) -> bool:
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
                assignment = chosen[item.id]
                pending.add(pool.submit(grade_one, item, assignment, plans[assignment.id].seed, args.device, out,
                                        stop, common))
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
        # A file deleted after the batch listed it is not our failure (a rerun has nothing to retry).
        reason = DISAPPEARED if not os.path.lexists(item.path) else \
            f"{GRADER_FAILURE}: {type(exc).__name__}: {exc}"[:500]
        report = failed_report(item.path, assignment, seed, devices, reason, time.monotonic() - started)
    if stop.is_set():
        return item.id, "dropped (interrupted)"
    write_json_atomically(report_to_dict(report), out / item.report_name)
    if str(report.load.fatal or "").startswith(GRADER_FAILURE):
        return item.id, "GRADER FAILURE (rerun to retry): " + report.load.fatal
    return item.id, f"{report.score:g}/{report.max_score:g} ({time.monotonic() - started:.1f} s)"


def _common_folder(paths: list[Path]) -> tuple[Path, ...]:
    if not paths:
        return ()
    try:
        return (Path(os.path.commonpath([str(p.resolve().parent) for p in paths])),)
    except ValueError:
        return ()


def _write_manifest(out: Path, spec, everything: list[Item], items: list[Item], chosen: dict, plans: dict,
                    status: str, graded: int = 0) -> None:
    from .report import write_json_atomically
    from .shards import MANIFEST, manifest
    write_json_atomically(manifest(spec, [i.id for i in everything], items, list(plans.values()), status, graded,
                                   assignment_of=lambda item: chosen[item.id].id), out / MANIFEST)


def write_outputs(out: Path, items: list[Item], chosen: dict, plans: dict, duration_s: float,
                  args=None, log=None, extra: dict | None = None) -> dict:
    groups = {}
    for assignment_id in sorted({a.id for a in chosen.values()}) or [None]:
        mine = [item for item in items if chosen[item.id].id == assignment_id]
        reports, ids = [], []
        for item in mine:
            try:
                reports.append(json.loads((out / item.report_name).read_text()))
                ids.append(item.id)
            except (OSError, ValueError):
                continue
        groups[assignment_id] = (reports, ids, len(mine), plans[assignment_id].seed if assignment_id else None)
    return write_books(out, groups, len(items), duration_s, args, log, extra)


def write_books(out: Path, groups: dict, submissions: int, duration_s: float, args=None, log=None,
                extra: dict | None = None) -> dict:
    """Per assignment, a gradebook and the instructor's files (course_outputs.py), and one
    summary.json: the batch's summary when it has one assignment, else one per assignment under
    `assignments` beside the totals. `groups`: assignment id -> (reports, their ids, submissions
    expected, seed)."""
    from .course_outputs import write as write_course_outputs
    from .report import write_json_atomically

    suffixes = book_names(groups)
    summaries = {}
    for assignment_id, (reports, ids, expected, seed) in groups.items():
        suffix = suffixes[assignment_id]
        write_gradebook_csv(reports, out / f"gradebook{suffix}.csv", ids=ids)
        summaries[assignment_id] = summarize(reports, ids, assignment_id, seed, duration_s, expected=expected)
        write_course_outputs(out, reports, ids, args, log or _Null(), suffix)
    if len(summaries) == 1:
        summary = next(iter(summaries.values()))
    else:
        parts = list(summaries.values())
        summary = {"assignment": None, "seed": None, "submissions": submissions,
                   "graded": sum(p["graded"] for p in parts), "missing": sum(p["missing"] for p in parts),
                   "duration_s": round(duration_s, 3), "reports": [r for p in parts for r in p["reports"]],
                   "refused": [r for p in parts for r in p["refused"]], "assignments": summaries}
    extra = dict(extra or {})
    # Files refused are in the reports; linked folders (no report of their own) come from the batch.
    summary = summary | {"refused": summary["refused"] + extra.pop("refused", [])} | extra
    write_json_atomically(summary, out / "summary.json")
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
        # What the grader would not read (inputs.py), with why; a linked folder has no id.
        "refused": [{"id": i, "path": r["submission"]["path"], "reason": r["submission"]["refused"]}
                    for i, r in zip(ids, reports) if r["submission"].get("refused")],
    }


def merge_main(argv: list[str]) -> int:
    parser = _Parser(prog="grade merge", description="One gradebook from the report folders of several shards.")
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    from .course_outputs import add_options
    add_options(parser, batch=False)
    args = parser.parse_args(argv)
    from .outputs import check_folder
    from .shards import EXIT_INCOMPLETE, merge

    check_folder("-o", args.output)
    merged = merge(args.folders)
    out = args.output
    merged.copy_into(out)
    groups: dict = {}
    for report, identity in zip(merged.reports, merged.ids):
        group = groups.setdefault(report["assignment"]["id"], ([], [], set()))
        group[0].append(report)
        group[1].append(identity)
        group[2].add(report.get("seed"))
    # What each gradebook should hold: the whole batch for one assignment (a missing shard's
    # submissions too); per assignment, what the present shards own.
    expected = merged.expected_by_assignment() if len(groups) > 1 else {aid: merged.expected for aid in groups}
    groups = {aid: (r, i, expected.get(aid, len(r)), seeds.pop() if len(seeds) == 1 else None)
              for aid, (r, i, seeds) in groups.items()} or {None: ([], [], merged.expected, None)}
    write_books(out, groups, merged.expected, 0.0, args, sys.stderr, merged.summary_fields())
    print(f"merged {len(merged.reports)} reports from {len(args.folders)} folders into {out}", file=sys.stderr)
    for line in merged.problems():
        print(one_line(line), file=sys.stderr)   # names files found in the folders and their reports' text
    return EXIT_INCOMPLETE if merged.missing else EXIT_OK


class _Null:
    def write(self, _):
        pass

    def flush(self):
        pass
