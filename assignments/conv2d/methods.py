"""The Conv2d assignment's checks: the course's helper methods one at a time, and speed.

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
means a Python loop over output positions (`vectorized: false`). The machinery is the harness's
(grader.checks.speed_check); the inputs and plans are here.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import torch

from grader.cases import Case, case_seed
from grader.checks import (CheckContext, CheckResult, SpeedSpec, error_text, forbidden_reached, method_call,
                           not_run, speed_check)
from grader.plan import Call, Plan, Tensor, Trusted

from .geometry import layer_steps, make_tensors, output_height, output_width, reduction

BASELINE = "torch.nn.functional.conv2d"
METHOD_NAMES = ("_unsqueeze_kernel", "_convert_kernel", "_convert_input")

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
class _Outcome:
    """One method on one case: the layouts it matches (empty: wrong), or why it did not run."""
    case_id: str
    kind: str                       # returned, error, missing
    layouts: frozenset = frozenset()
    message: str = ""
    shapes: tuple = ()              # (layout, the structure of its dims) for each layout found


def _method_cases(runs: tuple) -> list[Case]:
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


def _method_plan(name: str, case: Case) -> Plan:
    """Course signature (never padding= or dilation=), set_kernel, then the method alone."""
    p = case.params
    args = () if name == "_convert_kernel" else (Tensor("input"), output_height(p), output_width(p))
    return Plan(layer_steps(p, extra=False) + (Call("layer", method=name, args=args, output="result"),))


def _judge(reference, name: str, case: Case, run, data: torch.Tensor, kernel: torch.Tensor,
           forbidden: tuple[str, ...]) -> tuple[_Outcome, list]:
    """One method's result on one case (a grader.runner.CaseRun), and the forbidden operators
    it reached."""
    if run.status in ("timeout", "crashed", "not_run"):
        return _Outcome(case.id, "error", message=run.message[:300]), []
    hits = forbidden_reached(run, forbidden)
    if run.status == "error" and run.missing_method == name:
        return _Outcome(case.id, "missing", message="not defined"), hits
    if run.status != "returned":
        return _Outcome(case.id, "error", message=error_text(run.error) if run.error else "malformed result"), hits
    output = run.outputs[0] if run.outputs else None
    if output is None or output.returned_kind not in ("tensor", "tensor_subclass"):
        returned = (output.returned_type if output is not None else None) or "something else"
        return _Outcome(case.id, "returned", message=f"returned {returned}, expected a torch.Tensor"), hits
    actual = output.tensor
    if not isinstance(actual, torch.Tensor):
        return _Outcome(case.id, "returned", message=output.message[:300] or "returned no data"), hits
    if hits:
        operators = ", ".join(f"aten.{op}" for op, _ in hits)
        return _Outcome(case.id, "returned", message=f"uses {operators}"), hits
    if not actual.is_floating_point():
        return _Outcome(case.id, "returned", message=f"dtype {str(actual.dtype).removeprefix('torch.')}, "
                                                     "expected floating point values"), hits
    if name == "_unsqueeze_kernel":
        expected = _unsqueezed(reference, case, data, kernel)
        if tuple(actual.shape) != tuple(expected.shape):
            return _Outcome(case.id, "returned",
                            message=f"shape {list(actual.shape)}, expected {list(expected.shape)}"), hits
        if _close(actual, expected, data.dtype):
            return _Outcome(case.id, "returned", layouts=frozenset({UNSQUEEZE_LAYOUT})), hits
        return _Outcome(case.id, "returned", message="values wrong" + _largest_difference(actual, expected)), hits
    full, kinds = _reference_axes(reference, name, case, data, kernel)
    found = _arrangements(actual, full, kinds, data.dtype)
    if found:
        return _Outcome(case.id, "returned", layouts=frozenset(found), shapes=tuple(sorted(found.items()))), hits
    standard = _standard_shape(name, case)
    if actual.numel() != full.numel():
        return _Outcome(case.id, "returned", message=f"shape {list(actual.shape)}, expected {list(standard)} "
                                                     f"(or another arrangement of its {full.numel()} values)"), hits
    message = "values match no accepted layout" + (
        " (columns: an order of c, ky, kx)" if name == "_convert_kernel"
        else " (rows: an order of c, ky, kx; columns: an order of b, i, j; batched or transposed)")
    return _Outcome(case.id, "returned", message=message), hits


def _unsqueezed(reference, case: Case, data: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The course's one sparse-matrix layout, computed in float64 from the reference."""
    p = case.params
    oh, ow = output_height(p), output_width(p)
    return reference.unsqueeze_kernel(kernel.double(), tuple(data.shape), p.stride, 0, 1, oh, ow)


def _reference_axes(reference, name: str, case: Case, data: torch.Tensor, kernel: torch.Tensor):
    """The reference's result with one axis per meaning, in float64, and each axis's kind:
    the kernel as (o, c, ky, kx); im2col as (c, ky, kx, b, i, j)."""
    if name == "_convert_kernel":
        return kernel.double(), ("o", "r", "r", "r")
    p = case.params
    oh, ow, k = output_height(p), output_width(p), p.kernel_size
    columns = reference.convert_input(data.double(), k, p.stride, 1, oh, ow)
    return columns.view(p.in_channels, k, k, p.batch, oh, ow), ("r", "r", "r", "c", "c", "c")


def _standard_shape(name: str, case: Case) -> tuple[int, int]:
    p = case.params
    if name == "_convert_kernel":
        return (p.out_channels, reduction(p))
    return (reduction(p), p.batch * output_height(p) * output_width(p))


def _arrangements(actual: torch.Tensor, full: torch.Tensor, kinds: tuple[str, ...], dtype) -> dict:
    """Every consistent arrangement of the reference the student's values are: an order of the
    reference's axes whose values, read row by row, are the student's, and whose sizes give the
    student's shape by merging neighbours of one kind (reduction axes with reduction axes,
    batch/position axes with their like: batched, transposed or split results are all right).
    Keyed by (reduction order, column order), each with the shape's structure (kinds per dim)."""
    if actual.numel() != full.numel() or actual.numel() == 0:
        return {}
    full = full.contiguous()          # strides below are read as the logical order's
    flat = actual.reshape(-1)
    orders = _orders(full.dim())
    probes = torch.tensor(sorted({int(flat.numel() * f) for f in (0.13, 0.29, 0.41, 0.58, 0.73, 0.91)}
                                 | {flat.numel() - 1}))
    # A few probed values of every order at once (where each probe of the permuted tensor sits
    # in the reference), then the shape's structure and all values of the orders that survive.
    sizes = torch.tensor(full.shape)[orders]
    strides = torch.tensor(full.stride())[orders]
    left = probes.expand(len(orders), -1)
    sources = torch.zeros_like(left)
    for axis in reversed(range(full.dim())):
        size = sizes[:, axis:axis + 1]
        sources = sources + left % size * strides[:, axis:axis + 1]
        left = left // size
    tolerance = 16 * torch.finfo(dtype).eps * max(float(full.abs().max()), 1.0)
    near = ((full.reshape(-1)[sources] - flat[probes].double()).abs() <= tolerance).all(dim=1)  # NaN: False
    found, close, grouped = {}, {}, {}
    shape = tuple(actual.shape)
    for index in near.nonzero().flatten().tolist():
        order = tuple(orders[index].tolist())
        # Orders that differ only where axes of size 1 go read the same values, and only an
        # axis's size (and the kind of one larger than 1) decides how it merges.
        merged = tuple((full.shape[a], kinds[a] if full.shape[a] > 1 else "") for a in order)
        if merged not in grouped:
            grouped[merged] = _grouping(shape, [size for size, _ in merged], [kind for _, kind in merged])
        groups = grouped[merged]
        if groups is None:
            continue
        moved = tuple(a for a in order if full.shape[a] > 1)
        if moved not in close:
            close[moved] = _close(flat, full.permute(order).reshape(-1), dtype)
        if not close[moved]:
            continue
        reduction_order = tuple(a - (1 if kinds[0] == "o" else 0) for a in order if kinds[a] == "r")
        column_order = tuple(a - 3 for a in order if kinds[a] == "c")
        key = reduction_order if kinds[0] == "o" else (reduction_order, column_order)
        found.setdefault(key, groups)
    return found


@functools.lru_cache(maxsize=None)
def _orders(dims: int) -> torch.Tensor:
    """Every order of `dims` axes, one per row, in itertools' order (the identity first)."""
    return torch.tensor(list(itertools.permutations(range(dims))))


def _grouping(shape: tuple[int, ...], sizes: list[int], kinds: list[str]) -> tuple[str, ...] | None:
    """The kind of each of `shape`'s dims when consecutive axes of `sizes` merge into it, or None
    when they cannot, or a dim would mix kinds (axes of size 1 go anywhere)."""
    structure, axis = [], 0
    for dim in shape:
        members, product = [], 1
        while axis < len(sizes) and (product < dim or (dim == 1 and sizes[axis] == 1 and not members)):
            members.append(axis)
            product *= sizes[axis]
            axis += 1
        if product != dim:
            return None
        real = {kinds[a] for a in members if sizes[a] > 1}
        if len(real) > 1:
            return None
        structure.append(real.pop() if real else "1")
    if any(sizes[a] != 1 for a in range(axis, len(sizes))):
        return None
    return tuple(structure)


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


def _aggregate(context: CheckContext, methods: list[tuple[str, float]], outcomes: dict[str, list[_Outcome]],
               violations: dict[str, dict]) -> tuple[CheckResult, ...]:
    # The V2 pair is judged in one layout: the one that the most of their results match
    # (the reference's order first on a tie), so kernel and input must agree.
    pair = [n for n in ("_convert_kernel", "_convert_input") if n in outcomes]
    joint = max(((rows, cols) for rows in PERMUTATIONS for cols in PERMUTATIONS),
                key=lambda layout: sum(_matches(n, o, layout) for n in pair for o in outcomes[n]))
    checks = []
    for name, points in methods:
        results = outcomes[name]
        layout = joint if name in pair else UNSQUEEZE_LAYOUT
        ok = [o for o in results if _matches(name, o, layout)]
        failures = [o for o in results if not _matches(name, o, layout)]
        total = len(results)
        if results and all(o.kind == "missing" for o in results):
            status, message = "missing", f"{context.item.python_name}.{name} is not defined"
        elif not failures:
            status, message = "passed", ""
        else:
            first = failures[0]
            status = "error" if not ok and all(o.kind == "error" for o in failures) else "failed"
            message = f"{first.case_id}: {_failure_text(name, first, layout)}"
        passed = len(ok)
        score = round(points * passed / total, 4) if total and status != "missing" else 0.0
        # The structure seen where the fewest axes had size 1 (a 1x1 output hides a dim).
        structures = [dict(o.shapes).get(_key(name, layout)) for o in ok if o.shapes]
        structure = max((s for s in structures if s), key=lambda s: sum(k != "1" for k in s), default=None)
        checks.append(CheckResult(
            name=name, kind="method", status=status, passed=passed if status != "missing" else 0, total=total,
            message=message[:500], layout=_layout_text(name, layout, structure) if ok else None, points=points,
            score=score, cases=tuple(o.case_id for o in results),
            violations=tuple(violations[name].values())))
    return tuple(checks)


def _key(name: str, layout):
    return layout[0] if name == "_convert_kernel" else layout


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


def _layout_text(name: str, layout, structure: tuple[str, ...] | None = None) -> str:
    """The course's 2-D layouts as rows and columns; any other structure by its dims' kinds."""
    dims = tuple(kind for kind in structure or () if kind != "1")
    words = {"r": "reduction", "c": "positions", "o": "filters"}
    if name == "_convert_kernel":
        text = f"columns ({_axes(layout[0], REDUCTION_AXES)})"
        return text if dims in ((), ("o", "r")) else f"{text}; dims: {', '.join(words[k] for k in dims)}"
    if name == "_convert_input":
        rows, columns = _axes(layout[0], REDUCTION_AXES), _axes(layout[1], COLUMN_AXES)
        if dims in ((), ("r", "c")):
            return f"rows ({rows}), columns ({columns})"
        if dims == ("c", "r"):
            return f"transposed: rows ({columns}), columns ({rows})"
        return f"reduction ({rows}), positions ({columns}); dims: {', '.join(words[k] for k in dims)}"
    return UNSQUEEZE_LAYOUT


def _axes(order: tuple[int, ...], names: tuple[str, ...]) -> str:
    return ", ".join(names[i] for i in order)


def run_checks(context: CheckContext) -> tuple[CheckResult, ...]:
    """The item's configured checks: its helper methods (judged together: the V2 pair must
    agree on a layout), then speed."""
    methods = [(name, points) for name, points in context.item.checks if name in METHOD_NAMES]
    results = method_checks(context, methods) if methods else ()
    speed = context.item.check_points("speed")
    if speed is not None:
        results += (speed_check(context, _speed_spec(context), case_seed(context.seed, f"speed-{context.item.name}")),)
    return results


def _reference():
    try:
        from reference import conv2d
    except ImportError:
        return None
    return conv2d


def method_checks(context: CheckContext, methods: list[tuple[str, float]]) -> tuple[CheckResult, ...]:
    reference = _reference()
    if reference is None:
        return tuple(not_run(name, "method", points, NO_REFERENCE) for name, points in methods)
    cases = _method_cases(context.runs)
    if not cases:
        reason = "not checked: no case with the course's signature was graded"
        return tuple(not_run(name, "method", points, reason) for name, points in methods)
    names = [name for name, _ in methods]
    outcomes: dict[str, list[_Outcome]] = {name: [] for name in names}
    violations: dict[str, dict[str, tuple[str, str | None, str]]] = {name: {} for name in names}
    for case in cases:
        data, kernel = make_tensors(case)
        timed_out = False
        for name in names:
            run = method_call(context, case, _method_plan(name, case), {"input": data, "kernel": kernel})
            outcome, hits = _judge(reference, name, case, run, data, kernel, context.item.forbidden_operators)
            outcomes[name].append(outcome)
            for operator, location in hits:
                violations[name].setdefault(operator, (operator, location, case.id))
            timed_out = timed_out or run.status in ("timeout", "not_run")
        if timed_out:
            break  # a class that hangs would spend the time limit on every case
    return _aggregate(context, methods, outcomes, violations)


def _speed_spec(context: CheckContext) -> SpeedSpec:
    generator = torch.Generator().manual_seed(case_seed(context.seed, f"speed-{context.item.name}"))

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

    def construct(params: dict, kernel: str) -> Plan:
        from grader.plan import New

        arguments = (params["in_channels"], params["out_channels"], params["kernel_size"], params["stride"])
        return Plan((New(args=arguments, bind="layer"), Call("layer", method="set_kernel", args=(Tensor(kernel),))))

    def one_call(data: str) -> Plan:
        return Plan((Call("layer", args=(Tensor(data),)),))

    side = [size - c["kernel_size"] + 1 for size in COUNT_SIZES]
    return SpeedSpec(
        baseline_name=BASELINE, params=tuple(t.items()),
        setup=construct(t, "time_kernel"), student=one_call("time_input"),
        baseline=Plan((Call(Trusted(BASELINE), args=(Tensor("time_input"), Tensor("time_kernel")),
                            kwargs=(("stride", t["stride"]),)),)),
        count=((construct(c, "count_kernel"), one_call("count_small")),
               (construct(c, "count_kernel"), one_call("count_large"))),
        count_labels=(f"{side[0]}x{side[0]} output", f"{side[1]}x{side[1]} output"),
        tensors=tensors, repeats=REPEATS)
