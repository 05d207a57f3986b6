"""Checks beyond the cases: results, their points, and the speed check's machinery.

An assignment's task may offer checks an item can configure with points (`checks:` in
the config): its helper methods called one at a time, its speed against the library.
They run after the item's public cases with the worker still up (runner.run_submission),
each returns `CheckResult`s, and their points are carved out of the item's points
(score.py). Judging a method's result is the assignment's; timing an item against a
trusted baseline and counting the operators one call dispatches is generic, here.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch

from .cases import Case
from .config import Assignment, ItemSpec
from .plan import Plan
from .runner import CaseRun, ErrorInfo, WorkerSession

CHECK_KINDS = ("method", "speed")
# method: passed, failed, error, missing, not_run; speed: measured, error, timeout, not_run.
CHECK_STATUSES = ("passed", "failed", "error", "missing", "not_run", "measured", "timeout")


@dataclass(frozen=True)
class SpeedMeasurement:
    """The item timed against a library baseline. ratio: the item's median time over the
    baseline's (None unless measured). operators: (label, operators dispatched) for one call
    at each counting size; vectorized: the count does not grow with the input (None when it
    could not be counted)."""
    device: str | None
    baseline: str
    params: tuple[tuple[str, Any], ...]
    repeats: int
    median_s: float | None
    baseline_median_s: float | None
    ratio: float | None
    operators: tuple[tuple[str, int], ...]
    vectorized: bool | None


@dataclass(frozen=True)
class CheckResult:
    """One check of one item. points: what it is worth (carved out of the item's points);
    score: what it earned. For method checks: passed of total cases, the accepted layout
    found; for the speed check, `speed`."""
    name: str
    kind: str
    status: str
    message: str
    points: float
    score: float
    passed: int = 0
    total: int = 0
    layout: str | None = None
    cases: tuple[str, ...] = ()
    # Forbidden operators the check's calls reached: (operator, the student's line, case id).
    violations: tuple[tuple[str, str | None, str], ...] = ()
    speed: SpeedMeasurement | None = None


@dataclass(frozen=True)
class CheckResults:
    """What an item's checks found (a WorkerRun extra)."""
    results: tuple[CheckResult, ...]


@dataclass(frozen=True)
class CheckContext:
    """What a task's checks may use: the worker (to run plans), the item and its case runs."""
    assignment: Assignment
    item: ItemSpec
    session: WorkerSession
    runs: tuple[CaseRun, ...]
    seed: int
    replay: bool          # one case named with --case/--params: no timing

    @property
    def time_limit(self) -> float:
        return self.item.case_s or self.assignment.limits.case_s


def not_run(name: str, kind: str, points: float, reason: str) -> CheckResult:
    return CheckResult(name=name, kind=kind, status="not_run", message=reason, points=points, score=0.0)


def task_checks(assignment: Assignment, seed: int, replay: bool):
    """The after-public check for runner.run_submission that runs the item's configured checks."""
    def check(session: WorkerSession, spec: ItemSpec, runs: tuple[CaseRun, ...]) -> CheckResults | None:
        if not spec.checks:
            return None
        context = CheckContext(assignment, spec, session, runs, seed, replay)
        return CheckResults(tuple(assignment.task_of(spec).checks(context)))

    return check


def results_of(extras: tuple[tuple[str, object], ...], item_name: str) -> tuple[CheckResult, ...]:
    found = next((e for n, e in extras if n == item_name and isinstance(e, CheckResults)), None)
    return found.results if found is not None else ()


# ---------------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpeedSpec:
    """How to time an item: `setup` binds what `student` calls (both plans); `baseline` calls a
    trusted library callable (plan.Trusted) on the same inputs; each of `count` (two (setup,
    counted) plan pairs, a small and a larger input, labelled by `count_labels`) has its second
    plan run once in the operator recorder. `params` describe the timing input for the report."""
    baseline_name: str
    params: tuple[tuple[str, Any], ...]
    setup: Plan
    student: Plan
    baseline: Plan
    count: tuple[tuple[Plan, Plan], tuple[Plan, Plan]]
    count_labels: tuple[str, str]
    tensors: dict
    repeats: int = 7


def speed_check(context: CheckContext, spec: SpeedSpec, case_seed: int) -> CheckResult:
    """Time the item against the baseline on the first device graded (half the item's time
    limit for counting and timing together)."""
    points = context.item.check_points("speed") or 0.0
    graded = [r for r in context.runs if r.status not in ("skipped", "not_run")]
    device = graded[0].case.device if graded else None

    def skipped(reason: str) -> CheckResult:
        return CheckResult(name="speed", kind="speed", status="not_run", message=reason, points=points, score=0.0,
                           speed=_measurement(spec, device))

    if context.replay:
        return skipped("not timed when one case is replayed")
    if device is None:
        return skipped("not timed: no case of the item was run")
    if not any(r.status == "returned" and r.case.device == device for r in context.runs):
        return skipped("not timed: the item returned no output on any case")
    time_limit = context.time_limit
    request = {"device": device, "seed": case_seed, "forbidden": list(context.item.forbidden_operators),
               "count": [[setup.to_wire(), counted.to_wire()] for setup, counted in spec.count],
               "setup": spec.setup.to_wire(),
               "student": spec.student.to_wire(), "baseline": spec.baseline.to_wire(),
               "repeats": spec.repeats, "budget_s": time_limit / 2}
    reply = context.session.call("time", request, spec.tensors, time_limit, context.item)
    return _speed_result(spec, device, reply, time_limit, points)


def _measurement(spec: SpeedSpec, device: str | None, **values) -> SpeedMeasurement:
    fields = dict(repeats=0, median_s=None, baseline_median_s=None, ratio=None, operators=(), vectorized=None)
    fields.update(values)
    return SpeedMeasurement(device=device, baseline=spec.baseline_name, params=spec.params, **fields)


def _speed_result(spec: SpeedSpec, device: str, reply: dict, time_limit: float, points: float) -> CheckResult:
    def result(status: str, message: str, **values) -> CheckResult:
        measurement = _measurement(spec, device, **values)
        score = points if measurement.vectorized else 0.0
        return CheckResult(name="speed", kind="speed", status=status, message=message[:500], points=points,
                           score=score, speed=measurement)

    status = reply.get("status")
    if status in ("timeout", "crashed", "not_run"):
        message = _text(reply.get("message"))
        if status == "timeout":
            message = f"not timed: counting and timing took longer than {time_limit:g} s"
        return result({"crashed": "error"}.get(status, status), message)
    if status != "ok":
        error = ErrorInfo.from_wire(reply.get("error"))
        return result("error", "the item raised: " + (error_text(error) if error else "malformed reply"))
    counts = reply.get("operators")
    operators, vectorized = (), None
    count_error = ErrorInfo.from_wire(reply.get("count_error"))
    if count_error is None and isinstance(counts, list) and len(counts) == 2 and all(_count(n) for n in counts):
        small, large = counts
        operators = tuple(zip(spec.count_labels, counts))
        vectorized = large <= small + max(2, small // 10)
    student, baseline = _seconds_list(reply.get("student_s")), _seconds_list(reply.get("baseline_s"))
    time_error = ErrorInfo.from_wire(reply.get("time_error"))
    messages = []
    if reply.get("time_skipped") is True and time_error is None:
        messages.append(f"not timed: counting operators took more than {time_limit / 2:g} s, half the "
                        "item's time limit")
    if count_error is not None:
        messages.append("counting raised: " + error_text(count_error))
    if time_error is not None:
        messages.append("timing raised: " + error_text(time_error))
    measured = bool(time_error is None and student and baseline and len(student) == len(baseline))
    median = statistics.median(student) if measured else None
    baseline_median = statistics.median(baseline) if measured else None
    ratio = round(median / baseline_median, 3) if measured and baseline_median > 0 else None
    if vectorized is False:
        (small_label, small), (large_label, large) = operators
        messages.append(f"{small} operators for the {small_label}, {large} for the {large_label}: a Python "
                        "loop over output positions")
    status = "measured" if measured else ("timeout" if reply.get("time_skipped") is True else "error")
    return result(status, "; ".join(messages), repeats=len(student) if measured else 0,
                  median_s=None if median is None else round(median, 6),
                  baseline_median_s=None if baseline_median is None else round(baseline_median, 6),
                  ratio=ratio, operators=operators, vectorized=vectorized)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 9


def _seconds_list(raw) -> list[float]:
    if not isinstance(raw, list) or len(raw) > 100:
        return []
    values = [float(v) for v in raw if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(values) != len(raw) or not all(math.isfinite(v) and 0 <= v < 1e6 for v in values):
        return []
    return values


# ---------------------------------------------------------------------------------------------
# Helpers for method checks (an assignment judges the values; these read the worker's reply)
# ---------------------------------------------------------------------------------------------

def method_call(context: CheckContext, case: Case, plan: Plan, inputs: dict[str, torch.Tensor]) -> CaseRun:
    """One method check's plan on one case, with the item's limits."""
    return context.session.run_plan(case, context.item, plan, inputs, context.time_limit)


def forbidden_reached(run: CaseRun, forbidden: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """The forbidden operators a run dispatched, with the student's line for each, and every
    hit the recorder could not vouch for (not a forbidden operator: it works around the check)."""
    where = dict(run.forbidden_hits)
    found = [(op, where.get(op)) for op, count in run.operators if op in forbidden and count > 0]
    named = {op for op, _ in found}
    return found + [(op, location) for op, location in where.items() if op not in named]


def error_text(error: ErrorInfo, limit: int = 120) -> str:
    """`RuntimeError: ... (cell 7, line 32: code)`, the message cut to `limit` characters."""
    text = error.message or error.type
    text = text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
    return text + (f" ({error.location})" if error.location else "")


def _text(value, limit: int = 300) -> str:
    return value[:limit] if isinstance(value, str) else ""
