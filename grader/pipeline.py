"""The pipeline end to end: load -> build cases -> run in a worker -> compare -> score -> diagnose.

Returns a GradeReport; writing and rendering it are report.py's and render.py's.
"""
from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import __version__
from .cases import Case, build_cases
from .checks import task_checks
from .config import Assignment
from .diagnose import likely_causes
from .errors import EnvironmentUnavailable, UsageError
from .params import Params
from .runner import CaseRun, LoadOutcome, run_submission
from .score import CaseResult, ItemReport, case_values, item_reports, judge
from .shrink import SmallestFailures, cause_key, custom_case, items_for_params, smallest_failure_check
from .submission import Submission, load_submission

# Outputs of failing cases the grader keeps for the likely-cause rules, per submission; the
# rest is judged as it arrives and dropped, so a submission returning huge tensors cannot
# make the grader hold all of them at once.
KEPT_OUTPUT_BYTES = 16 << 20


@dataclass(frozen=True)
class GradeReport:
    assignment: Assignment
    submission: Submission
    seed: int
    devices: tuple[str, ...]
    only_case: str | None
    items: tuple[ItemReport, ...]
    load: LoadOutcome
    protections: tuple[tuple[str, str], ...]
    environment: tuple[tuple[str, str], ...]
    worker_restarts: int
    duration_s: float

    @property
    def score(self) -> float:
        return round(sum(c.score for c in self.items), 4)

    @property
    def max_score(self) -> float:
        return round(sum(c.max_score for c in self.items), 4)


def resolve_devices(requested: str, assignment: Assignment) -> tuple[tuple[str, ...], bool]:
    """The devices to build cases for, and whether CUDA can actually run them."""
    cuda_available = torch.cuda.is_available()
    if requested == "auto":
        return assignment.devices, cuda_available
    if requested not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu, cuda or auto, not {requested!r}")
    if requested == "cuda" and not cuda_available:
        raise EnvironmentUnavailable("--device cuda: CUDA is not available on this machine")
    return (requested,), cuda_available


def grade(submission_path: Path, assignment: Assignment, seed: int | None = None,
          device: str = "auto", only_case: str | None = None,
          extra_hidden: list[Path] | None = None, custom_params: Params | None = None,
          shrink: bool = True) -> GradeReport:
    started = time.monotonic()
    return_large_buffers()
    seed = assignment.seed if seed is None else seed
    devices, cuda_available = resolve_devices(device, assignment)
    submission = load_submission(submission_path)
    if custom_params is not None:
        items = items_for_params(assignment, custom_params)
        cases: tuple[Case, ...] = tuple(custom_case(assignment, custom_params, d, seed, items) for d in devices)
    else:
        cases = build_cases(assignment, seed, devices, only_case)
    replay = only_case is not None or custom_params is not None
    judged: dict[tuple[str, str], CaseResult] = {}
    kept = [0]
    checks = (smallest_failure_check(assignment, seed, str(submission_path),
                                     lambda run: judged[(run.item, run.case.key)].comparison),) if shrink else ()

    def on_run(run: CaseRun) -> CaseRun:
        result = judge(run, assignment)
        size = sum(o.tensor.numel() * o.tensor.element_size() for o in run.outputs if o.tensor is not None)
        if result.status == "failed" and size and kept[0] + size <= KEPT_OUTPUT_BYTES:
            kept[0] += size
            stored = run
        else:
            stored = run.without_tensors()
        judged[(run.item, run.case.key)] = replace(result, run=stored)
        return stored

    worker_run = run_submission(assignment, submission, cases, cuda_available, extra_hidden or [],
                                after_public=checks + (task_checks(assignment, seed, replay),),
                                after_hidden=checks, on_run=on_run)
    shrunk = {name: found for name, found in worker_run.extras if isinstance(found, SmallestFailures)}
    items = tuple(_diagnosed(assignment, report, shrunk.get(report.name))
                  for report in item_reports(assignment, submission, worker_run, judged))
    return GradeReport(
        assignment=assignment, submission=submission, seed=seed, devices=devices, only_case=only_case,
        items=items, load=worker_run.load, protections=worker_run.protections,
        environment=environment_summary(cuda_available), worker_restarts=worker_run.restarts,
        duration_s=round(time.monotonic() - started, 3))


def return_large_buffers() -> None:
    """Have glibc give every large buffer back to the system when it is freed. By default it
    raises its mmap threshold after the first large free, and later outputs (tens of MB each)
    then come from the heap, which it rarely trims: the grader's memory would grow with every
    large output it judged and dropped. Elsewhere (no glibc) nothing changes."""
    import ctypes
    import ctypes.util

    global _buffers_set
    if _buffers_set or not sys.platform.startswith("linux"):
        return
    _buffers_set = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass


M_MMAP_THRESHOLD = -3       # glibc's malloc.h
_buffers_set = False


def _diagnosed(assignment: Assignment, report: ItemReport, shrunk: SmallestFailures | None) -> ItemReport:
    """The item's likely causes over all its cases, costliest first, each with the smallest
    failing case shrinking found for it."""
    if report.status != "graded":
        return report
    spec = assignment.item(report.name)
    carved = sum(c.points for c in report.checks if c.status != "not_run")
    causes = likely_causes(assignment, spec, report.cases, case_values(assignment, spec, report.cases, carved))
    by_cause = dict(shrunk.by_cause) if shrunk is not None else {}
    return replace(report, likely_causes=causes, cause_failures=tuple(by_cause.get(cause_key(c)) for c in causes),
                   smallest_failure=shrunk.overall if shrunk is not None else None)


def environment_summary(cuda_available: bool) -> tuple[tuple[str, str], ...]:
    devices = ["cpu"]
    if cuda_available:
        devices.append(f"cuda ({torch.cuda.get_device_name(0)})")
    return (("grader", __version__), ("python", platform.python_version()), ("torch", torch.__version__),
            ("platform", f"{sys.platform}-{platform.machine()}"), ("devices", ", ".join(devices)))


def failed_report(submission_path: Path, assignment: Assignment, seed: int | None, devices: tuple[str, ...],
                  reason: str, duration_s: float = 0.0) -> GradeReport:
    """A report for a submission the grader could not grade at all (its worker would not start,
    or the grader failed): every class is a load error with the reason. A batch writes one so
    that every submission has a report."""
    from .submission import LoadNote

    try:
        submission = load_submission(submission_path)
    except Exception as exc:  # unreadable: report it with what we know
        import hashlib
        data = submission_path.read_bytes() if submission_path.is_file() else b""
        submission = Submission(path=submission_path, kind=_kind(submission_path),
                                sha256=hashlib.sha256(data).hexdigest(), units=(),
                                notes=(LoadNote(None, None, "unreadable", f"{type(exc).__name__}: {exc}"[:300]),))
    return _ungraded(submission, assignment, seed, devices, reason, duration_s)


def refused_report(submission_path: Path, assignment: Assignment, seed: int | None, devices: tuple[str, ...],
                   reason: str) -> GradeReport:
    """A report for a file the grader will not read (inputs.py: a link out of the submissions
    folder, a file the worker's user could not read). Nothing of it is read, not even to hash it:
    `sha256` is that of no bytes and `submission.refused` says why. Every item is a load error."""
    import hashlib

    submission = Submission(path=submission_path, kind=_kind(submission_path), sha256=hashlib.sha256(b"").hexdigest(),
                            units=(), notes=(), refused=reason)
    return _ungraded(submission, assignment, seed, devices, f"not read: {reason}", 0.0)


def _kind(path: Path) -> str:
    return "notebook" if path.suffix.lower() == ".ipynb" else "module"


def _ungraded(submission: Submission, assignment: Assignment, seed: int | None, devices: tuple[str, ...],
              reason: str, duration_s: float) -> GradeReport:
    load = LoadOutcome(definitions=(), failures=(), stdout_tail="", fatal=reason)
    items = tuple(ItemReport(name=c.name, kind=c.kind, python_name=c.python_name, status="load_error", score=0.0,
                             max_score=c.points, message=reason, violations=(), groups=(), cases=())
                  for c in assignment.items)
    return GradeReport(assignment=assignment, submission=submission,
                       seed=assignment.seed if seed is None else seed, devices=devices, only_case=None,
                       items=items, load=load, protections=(), environment=environment_summary(False),
                       worker_restarts=0, duration_s=round(duration_s, 3))
