"""Per-method checks and the speed check: two after-class checks for runner.run_submission.

The course asks students to write helper methods, not only `__call__`:
`Conv2dMatrix._unsqueeze_kernel(torch_input, output_height, output_width)` and
`Conv2dMatrixV2._convert_kernel()` / `_convert_input(torch_input, output_height, output_width)`.
Each is called on its own in the worker (course signature, set_kernel, then the method, inside
the same operator recorder as the cases) on a few graded cases, and its result is compared here
with the reference, in the layouts the course's `__call__` accepts:

- `_unsqueeze_kernel`: exactly (out*OH*OW, in*H*W), row o*OH*OW + i*OW + j and column
  c*H*W + y*W + x (the course multiplies it by `torch_input.view(batch, -1)`);
- `_convert_kernel` (out, in*k*k) and `_convert_input` (in*k*k, batch*OH*OW): the reduction
  axis in any order of (c, ky, kx) as long as kernel and input agree, the columns in any order
  of (b, i, j) (the student's own `__call__` reshapes accordingly).

So a student whose conversions are right but whose `__call__` is wrong earns the methods'
points. Without the `reference` package (a student's copy of the grader has none) the methods
are reported `not_run`.

The speed check does what the course's "compare speed" section does: it times the student's
layer against torch.nn.functional.conv2d on a mid-size input (interleaved, median of each), and
counts the operators one call dispatches at two input sizes: a count that grows with the output
means a Python loop over output positions (`vectorized: false`).
"""
from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

import torch

from .cases import Case, case_seed, make_tensors
from .config import Assignment, ClassSpec
from .runner import CaseRun, ErrorInfo, WorkerSession

# Groups whose cases have the course's signature (no padding, no dilation), in the order they
# are taken: at most one case from each.
METHOD_GROUPS = ("course", "basic", "non_square", "channels", "stride", "large_output")
MAX_METHOD_CASES = 6
REDUCTION_AXES = ("c", "ky", "kx")
COLUMN_AXES = ("b", "i", "j")
PERMUTATIONS = tuple(itertools.permutations(range(3)))     # the identity (reference's order) first
UNSQUEEZE_LAYOUT = "rows (o, i, j), columns (c, y, x)"
NO_REFERENCE = ("not checked: the reference solution is not installed here (a student's copy of "
                "the grader has none)")

# The speed check's inputs: the course's mid-size timing input, and two sizes to count operators at.
TIME_PARAMS = {"batch": 2, "in_channels": 8, "out_channels": 16, "height": 32, "width": 32,
               "kernel_size": 3, "stride": 1}
COUNT_PARAMS = {"batch": 1, "in_channels": 2, "out_channels": 1, "kernel_size": 3, "stride": 1}
COUNT_SIZES = (8, 16)
REPEATS = 7


@dataclass(frozen=True)
class MethodCheck:
    """One helper method, checked on `total` cases.

    status: passed (every case), failed, error (raised or timed out on every case it did not
    pass), missing (the class has no such method), not_run (no reference, or no case to use).
    layout: the accepted layout found (None when no case passed). points: what the method is
    worth (carved out of the class's points); score: points * passed / total."""
    name: str
    status: str
    passed: int
    total: int
    message: str
    layout: str | None
    points: float
    score: float
    cases: tuple[str, ...] = ()
    # Forbidden operators the method reached: (operator, the student's line, case id).
    violations: tuple[tuple[str, str | None, str], ...] = ()


@dataclass(frozen=True)
class MethodChecks:
    """What the per-method check found for one class (a WorkerRun extra)."""
    checks: tuple[MethodCheck, ...]


@dataclass(frozen=True)
class SpeedCheck:
    """The class timed against torch.nn.functional.conv2d (a WorkerRun extra).

    status: measured, error (the layer raised), timeout, not_run. ratio: the student's median
    time over torch's (None unless measured). operators: (height, width, operators dispatched)
    for one call at each counting size; vectorized: the count does not grow with the output
    (None when it could not be counted). points: speed_points; score: points when vectorized."""
    status: str
    message: str
    device: str | None
    params: tuple[tuple[str, int], ...]
    repeats: int
    median_s: float | None
    torch_median_s: float | None
    ratio: float | None
    operators: tuple[tuple[int, int, int], ...]
    vectorized: bool | None
    points: float
    score: float


def after_class_checks(assignment: Assignment, seed: int, replay: bool = False) -> tuple:
    """The method and speed checks for run_submission's `after_class`. `replay` (one case
    named with --case or --params): the speed check is not run."""
    return (methods_check(assignment), speed_check(assignment, seed, enabled=not replay))


def lookup(extras: tuple[tuple[str, object], ...], class_name: str) -> tuple[MethodChecks | None,
                                                                           SpeedCheck | None]:
    """This module's results for one class among a WorkerRun's extras."""
    methods = next((e for n, e in extras if n == class_name and isinstance(e, MethodChecks)), None)
    speed = next((e for n, e in extras if n == class_name and isinstance(e, SpeedCheck)), None)
    return methods, speed


def _reference():
    try:
        from reference import conv2d
    except ImportError:
        return None
    return conv2d


# ---------------------------------------------------------------------------------------------
# Per-method checks
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Outcome:
    """One method on one case: the layouts it matches (empty: wrong), or why it did not run."""
    case_id: str
    kind: str                       # returned, error, missing
    layouts: frozenset = frozenset()
    message: str = ""


def methods_check(assignment: Assignment):
    def check(session: WorkerSession, spec: ClassSpec, runs: tuple[CaseRun, ...]) -> MethodChecks | None:
        if not spec.methods:
            return None
        reference = _reference()
        if reference is None:
            return MethodChecks(tuple(_not_run(name, points, NO_REFERENCE) for name, points in spec.methods))
        cases = _method_cases(runs)
        if not cases:
            reason = "not checked: no case with the course's signature was graded"
            return MethodChecks(tuple(_not_run(name, points, reason) for name, points in spec.methods))
        names = [name for name, _ in spec.methods]
        outcomes: dict[str, list[_Outcome]] = {name: [] for name in names}
        violations: dict[str, dict[str, tuple[str, str | None, str]]] = {name: {} for name in names}
        time_limit = spec.case_s or assignment.limits.case_s
        for case in cases:
            reply, data, kernel = _call_methods(session, spec, case, names, time_limit)
            for index, name in enumerate(names):
                outcome, hits = _judge(reference, name, case, reply, index, data, kernel,
                                       spec.forbidden_operators)
                outcomes[name].append(outcome)
                for operator, location in hits:
                    violations[name].setdefault(operator, (operator, location, case.id))
            if reply.get("status") == "timeout":
                break  # a class that hangs would spend the time limit on every case
        return MethodChecks(_aggregate(spec, outcomes, violations))

    return check


def _not_run(name: str, points: float, reason: str) -> MethodCheck:
    return MethodCheck(name=name, status="not_run", passed=0, total=0, message=reason, layout=None,
                       points=points, score=0.0)


def _method_cases(runs: tuple[CaseRun, ...]) -> list[Case]:
    """Up to MAX_METHOD_CASES graded cases with the course's signature, one per group, on the
    CPU when it was graded (else the first device graded)."""
    usable = [r.case for r in runs if r.status not in ("skipped", "not_run")
              and r.case.group in METHOD_GROUPS and r.case.params.padding == 0 and r.case.params.dilation == 1]
    if not usable:
        return []
    device = "cpu" if any(c.device == "cpu" for c in usable) else usable[0].device
    chosen: dict[str, Case] = {}
    for case in usable:
        if case.device == device and case.group not in chosen:
            chosen[case.group] = case
    return [chosen[g] for g in METHOD_GROUPS if g in chosen][:MAX_METHOD_CASES]


def _method_args(name: str, case: Case) -> list:
    p = case.params
    return [] if name == "_convert_kernel" else ["input", p.output_height, p.output_width]


def _call_methods(session: WorkerSession, spec: ClassSpec, case: Case, names: list[str],
                  time_limit: float) -> tuple[dict, torch.Tensor, torch.Tensor]:
    data, kernel = make_tensors(case)
    p = case.params
    request = {"device": case.device, "seed": case.seed, "forbidden": list(spec.forbidden_operators),
               "params": {"in_channels": p.in_channels, "out_channels": p.out_channels,
                          "kernel_size": p.kernel_size, "stride": p.stride},
               "calls": [{"method": name, "args": _method_args(name, case)} for name in names]}
    reply = session.call("methods", request, {"input": data, "kernel": kernel}, time_limit, spec.name)
    return reply, data, kernel


def _judge(reference, name: str, case: Case, reply: dict, index: int, data: torch.Tensor,
           kernel: torch.Tensor, forbidden: tuple[str, ...]) -> tuple[_Outcome, list]:
    """One method's result on one case, and the forbidden operators it reached."""
    status = reply.get("status")
    if status in ("timeout", "crashed"):
        return _Outcome(case.id, "error", message=_text(reply.get("message"))), []
    calls = reply.get("calls")
    if status != "ok" or not isinstance(calls, list) or len(calls) <= index or not isinstance(calls[index], dict):
        error = ErrorInfo.from_wire(reply.get("error"))
        text = _error_text(error) if error else f"malformed reply from the worker (status {status!r})"
        return _Outcome(case.id, "error", message=text), []
    entry = calls[index]
    hits = _hits(entry, forbidden)
    kind = entry.get("status")
    if kind == "missing":
        return _Outcome(case.id, "missing", message="not defined"), hits
    if kind != "returned":
        error = ErrorInfo.from_wire(entry.get("error"))
        return _Outcome(case.id, "error", message=_error_text(error) if error else "malformed result"), hits
    if entry.get("returned_kind") not in ("tensor", "tensor_subclass"):
        returned = _text(entry.get("returned_type")) or "something else"
        return _Outcome(case.id, "returned", message=f"returned {returned}, expected a torch.Tensor"), hits
    actual = reply.get("_tensors", {}).get(f"call{index}")
    if not isinstance(actual, torch.Tensor):
        return _Outcome(case.id, "returned", message=_text(entry.get("message")) or "returned no data"), hits
    if hits:
        operators = ", ".join(f"aten.{op}" for op, _ in hits)
        return _Outcome(case.id, "returned", message=f"uses {operators}"), hits
    candidates = _expected(reference, name, case, data, kernel)
    shape = tuple(next(iter(candidates.values())).shape)
    if tuple(actual.shape) != shape:
        return _Outcome(case.id, "returned", message=f"shape {list(actual.shape)}, expected {list(shape)}"), hits
    if not actual.is_floating_point():
        return _Outcome(case.id, "returned", message=f"dtype {str(actual.dtype).removeprefix('torch.')}, "
                                                     "expected floating point values"), hits
    found = frozenset(layout for layout, expected in candidates.items() if _close(actual, expected, data.dtype))
    if found:
        return _Outcome(case.id, "returned", layouts=found), hits
    if name == "_unsqueeze_kernel":
        message = "values wrong" + _largest_difference(actual, next(iter(candidates.values())))
    else:
        message = "values match no accepted layout" + (
            " (columns: an order of c, ky, kx)" if name == "_convert_kernel"
            else " (rows: an order of c, ky, kx; columns: an order of b, i, j)")
    return _Outcome(case.id, "returned", message=message), hits


def _expected(reference, name: str, case: Case, data: torch.Tensor, kernel: torch.Tensor) -> dict:
    """Every accepted result, by layout key, computed in float64 from the reference."""
    p = case.params
    oh, ow, k = p.output_height, p.output_width, p.kernel_size
    data, kernel = data.double(), kernel.double()
    if name == "_unsqueeze_kernel":
        return {UNSQUEEZE_LAYOUT: reference.unsqueeze_kernel(kernel, tuple(data.shape), p.stride, 0, 1, oh, ow)}
    if name == "_convert_kernel":
        return {rows: kernel.permute(0, *(1 + a for a in rows)).reshape(p.out_channels, -1)
                for rows in PERMUTATIONS}
    columns = reference.convert_input(data, k, p.stride, 1, oh, ow)
    full = columns.view(p.in_channels, k, k, p.batch, oh, ow)
    return {(rows, cols): full.permute(*rows, *(3 + a for a in cols)).reshape(p.reduction, -1)
            for rows in PERMUTATIONS for cols in PERMUTATIONS}


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> bool:
    """Equal up to rounding: the methods only move values, so a misplaced one is far off."""
    if expected.numel() == 0:
        return True
    scale = float(expected.abs().max())
    tolerance = 16 * torch.finfo(dtype).eps * max(scale, 1.0)
    difference = (actual.double() - expected).abs().max()
    return bool(difference <= tolerance)      # False for NaN


def _largest_difference(actual: torch.Tensor, expected: torch.Tensor) -> str:
    if expected.numel() == 0:
        return ""
    difference = (actual.double() - expected).abs()
    flat = int(torch.nan_to_num(difference, nan=math.inf).argmax())
    at = []
    for size in reversed(difference.shape):
        flat, index = divmod(flat, size)
        at.insert(0, index)
    return (f": at {at} got {float(actual.double()[tuple(at)]):.6g}, expected "
            f"{float(expected[tuple(at)]):.6g}")


def _aggregate(spec: ClassSpec, outcomes: dict[str, list[_Outcome]],
               violations: dict[str, dict]) -> tuple[MethodCheck, ...]:
    # The V2 pair is judged in one layout: the one that the most of their results match
    # (the reference's order first on a tie), so kernel and input must agree.
    pair = [n for n in ("_convert_kernel", "_convert_input") if n in outcomes]
    joint = max(((rows, cols) for rows in PERMUTATIONS for cols in PERMUTATIONS),
                key=lambda layout: sum(_matches(n, o, layout) for n in pair for o in outcomes[n]))
    checks = []
    for name, points in spec.methods:
        results = outcomes[name]
        layout = joint if name in pair else UNSQUEEZE_LAYOUT
        ok = [o for o in results if _matches(name, o, layout)]
        failures = [o for o in results if not _matches(name, o, layout)]
        total = len(results)
        if results and all(o.kind == "missing" for o in results):
            status, message = "missing", f"{spec.name}.{name} is not defined"
        elif not failures:
            status, message = "passed", ""
        else:
            first = failures[0]
            status = "error" if not ok and all(o.kind == "error" for o in failures) else "failed"
            message = f"{first.case_id}: {_failure_text(name, first, layout)}"
        passed = len(ok)
        score = round(points * passed / total, 4) if total and status != "missing" else 0.0
        checks.append(MethodCheck(
            name=name, status=status, passed=passed if status != "missing" else 0, total=total,
            message=message[:500], layout=_layout_text(name, layout) if ok else None, points=points,
            score=score, cases=tuple(o.case_id for o in results),
            violations=tuple(violations[name].values())))
    return tuple(checks)


def _matches(name: str, outcome: _Outcome, layout) -> bool:
    if name == "_convert_kernel":
        return layout[0] in outcome.layouts
    if name == "_convert_input":
        return layout in outcome.layouts
    return bool(outcome.layouts)


def _failure_text(name: str, outcome: _Outcome, layout) -> str:
    if not outcome.layouts:
        return outcome.message
    # Right values, in a layout its partner method (or its other cases) does not share.
    found = sorted(outcome.layouts)[0]
    if name == "_convert_kernel":
        return (f"its columns are ordered ({_axes(found, REDUCTION_AXES)}) but _convert_input's rows "
                f"are ordered ({_axes(layout[0], REDUCTION_AXES)}): the two must agree")
    if found[0] != layout[0]:
        return (f"its rows are ordered ({_axes(found[0], REDUCTION_AXES)}) but _convert_kernel's "
                f"columns are ordered ({_axes(layout[0], REDUCTION_AXES)}): the two must agree")
    return (f"its columns are ordered ({_axes(found[1], COLUMN_AXES)}), unlike the other cases' "
            f"({_axes(layout[1], COLUMN_AXES)})")


def _layout_text(name: str, layout) -> str:
    if name == "_convert_kernel":
        return f"columns ({_axes(layout[0], REDUCTION_AXES)})"
    if name == "_convert_input":
        return f"rows ({_axes(layout[0], REDUCTION_AXES)}), columns ({_axes(layout[1], COLUMN_AXES)})"
    return UNSQUEEZE_LAYOUT


def _axes(order: tuple[int, ...], names: tuple[str, ...]) -> str:
    return ", ".join(names[i] for i in order)


def _hits(entry: dict, forbidden: tuple[str, ...]) -> list[tuple[str, str | None]]:
    operators = entry.get("operators")
    where = entry.get("forbidden_hits")
    where = where if isinstance(where, dict) else {}
    if not isinstance(operators, dict):
        return []
    found = [(str(op)[:80], _text(where.get(op)) or None) for op, count in list(operators.items())[:200]
             if op in forbidden and isinstance(count, int) and count > 0]
    # Every hit counts, also one the recorder could not vouch for (not a forbidden operator).
    named = {op for op, _ in found}
    found += [(str(op)[:80], _text(location) or None) for op, location in list(where.items())[:50]
              if str(op)[:80] not in named]
    return found


def _error_text(error: ErrorInfo, limit: int = 120) -> str:
    """`RuntimeError: ... (cell 7, line 32: code)`, the message cut to `limit` characters."""
    text = error.message or error.type
    text = text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
    return text + (f" ({error.location})" if error.location else "")


def _text(value, limit: int = 300) -> str:
    return value[:limit] if isinstance(value, str) else ""


# ---------------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------------

def speed_check(assignment: Assignment, seed: int, enabled: bool = True):
    def check(session: WorkerSession, spec: ClassSpec, runs: tuple[CaseRun, ...]) -> SpeedCheck | None:
        if not spec.speed:
            return None
        graded = [r for r in runs if r.status not in ("skipped", "not_run")]
        device = graded[0].case.device if graded else None
        if not enabled:
            return _speed_not_run(spec, device, "not timed when one case is replayed")
        if device is None:
            return _speed_not_run(spec, None, "not timed: no case of the class was run")
        if not any(r.status == "returned" and r.case.device == device for r in runs):
            return _speed_not_run(spec, device, "not timed: the class returned no output on any case")
        time_limit = spec.case_s or assignment.limits.case_s
        generator = torch.Generator().manual_seed(case_seed(seed, f"speed-{spec.name}"))

        def randn(*shape):
            return torch.randn(shape, generator=generator, dtype=torch.float64).to(torch.float32)

        t, c = TIME_PARAMS, COUNT_PARAMS
        tensors = {
            "time_input": randn(t["batch"], t["in_channels"], t["height"], t["width"]),
            "time_kernel": randn(t["out_channels"], t["in_channels"], t["kernel_size"], t["kernel_size"]),
            "count_small": randn(c["batch"], c["in_channels"], COUNT_SIZES[0], COUNT_SIZES[0]),
            "count_large": randn(c["batch"], c["in_channels"], COUNT_SIZES[1], COUNT_SIZES[1]),
            "count_kernel": randn(c["out_channels"], c["in_channels"], c["kernel_size"], c["kernel_size"]),
        }
        request = {"device": device, "seed": case_seed(seed, f"speed-{spec.name}"),
                   "forbidden": list(spec.forbidden_operators), "count_params": c, "time_params": t,
                   "repeats": REPEATS, "budget_s": time_limit / 2}
        reply = session.call("speed", request, tensors, time_limit, spec.name)
        return _speed_result(spec, device, reply, time_limit)

    return check


def _speed_not_run(spec: ClassSpec, device: str | None, reason: str) -> SpeedCheck:
    return SpeedCheck(status="not_run", message=reason, device=device, params=tuple(TIME_PARAMS.items()),
                      repeats=0, median_s=None, torch_median_s=None, ratio=None, operators=(),
                      vectorized=None, points=spec.speed_points, score=0.0)


def _speed_result(spec: ClassSpec, device: str, reply: dict, time_limit: float) -> SpeedCheck:
    base = dict(device=device, params=tuple(TIME_PARAMS.items()), points=spec.speed_points)
    status = reply.get("status")
    if status in ("timeout", "crashed"):
        message = _text(reply.get("message"))
        if status == "timeout":
            message = f"not timed: counting and timing took longer than {time_limit:g} s"
        return SpeedCheck(status="timeout" if status == "timeout" else "error", message=message, repeats=0,
                          median_s=None, torch_median_s=None, ratio=None, operators=(), vectorized=None,
                          score=0.0, **base)
    if status != "ok":
        error = ErrorInfo.from_wire(reply.get("error"))
        return SpeedCheck(status="error", message="the layer raised: " + (_error_text(error) if error else
                                                                           "malformed reply"),
                          repeats=0, median_s=None, torch_median_s=None, ratio=None, operators=(),
                          vectorized=None, score=0.0, **base)
    counts = reply.get("operators")
    operators, vectorized = (), None
    count_error = ErrorInfo.from_wire(reply.get("count_error"))
    if count_error is None and isinstance(counts, list) and len(counts) == 2 and all(_count(n) for n in counts):
        small, large = counts
        operators = tuple((size, size, n) for size, n in zip(COUNT_SIZES, counts))
        vectorized = large <= small + max(2, small // 10)
    student, baseline = _seconds_list(reply.get("student_s")), _seconds_list(reply.get("torch_s"))
    time_error = ErrorInfo.from_wire(reply.get("time_error"))
    messages = []
    if reply.get("time_skipped") is True and time_error is None:
        messages.append(f"not timed: counting operators took more than {time_limit / 2:g} s, half the "
                        "class's time limit")
    if count_error is not None:
        messages.append("counting raised: " + _error_text(count_error))
    if time_error is not None:
        messages.append("timing raised: " + _error_text(time_error))
    measured = time_error is None and student and baseline and len(student) == len(baseline)
    median = statistics.median(student) if measured else None
    torch_median = statistics.median(baseline) if measured else None
    ratio = round(median / torch_median, 3) if measured and torch_median > 0 else None
    if vectorized is False:
        (_, _, small), (_, _, large) = operators
        messages.append(f"{small} operators for a {_out(COUNT_SIZES[0])} output, {large} for "
                        f"{_out(COUNT_SIZES[1])}: a Python loop over output positions")
    status = "measured" if measured else ("timeout" if reply.get("time_skipped") is True else "error")
    return SpeedCheck(status=status, message="; ".join(messages)[:500],
                      repeats=len(student) if measured else 0,
                      median_s=None if median is None else round(median, 6),
                      torch_median_s=None if torch_median is None else round(torch_median, 6), ratio=ratio,
                      operators=operators, vectorized=vectorized,
                      score=spec.speed_points if vectorized else 0.0, **base)


def _out(size: int) -> str:
    side = size - COUNT_PARAMS["kernel_size"] + 1
    return f"{side}x{side}"


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 9


def _seconds_list(raw) -> list[float]:
    if not isinstance(raw, list) or len(raw) > 100:
        return []
    values = [float(v) for v in raw if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(values) != len(raw) or not all(math.isfinite(v) and 0 <= v < 1e6 for v in values):
        return []
    return values
