"""Judge one case: the student's output against the float64 answer.

Runs in the grader process only. The answer is computed here, on the CPU in
float64, and the tolerance scales with the reduction length and with the
magnitudes summed, so a correct float32 implementation passes at 64 channels
while a wrong one (a missing term, a shifted window) fails by orders of magnitude.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .cases import Case, make_tensors
from .config import Tolerance
from .runner import CaseRun


@dataclass(frozen=True)
class Comparison:
    verdict: str                 # passed, failed, error, timeout, unsupported, skipped
    message: str
    expected_shape: tuple[int, ...]
    actual_shape: tuple[int, ...] | None = None
    max_abs_error: float | None = None
    tolerance: float | None = None
    mismatched: int = 0
    first_mismatch: tuple[int, ...] | None = None
    values_match: bool | None = None   # for wrong-type/dtype/device outputs: would the numbers pass?


@lru_cache(maxsize=512)
def expected_output(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """(answer, magnitude) in float64: magnitude[i] = sum |x| * |w| over output i's window."""
    data, kernel = make_tensors(case)
    p = case.params
    data64, kernel64 = data.double(), kernel.double()
    conv = lambda x, w: torch.nn.functional.conv2d(x, w, stride=p.stride, padding=p.padding,
                                                   dilation=p.dilation)
    return conv(data64, kernel64), conv(data64.abs(), kernel64.abs())


def tolerance_for(case: Case, magnitude: torch.Tensor, tolerance: Tolerance) -> torch.Tensor:
    eps = torch.finfo(getattr(torch, case.params.dtype)).eps
    return eps * (tolerance.eps_multiplier * case.params.reduction * magnitude + tolerance.abs_floor)


def compare(run: CaseRun, tolerance: Tolerance) -> Comparison:
    case = run.case
    shape = case.params.output_shape
    if run.status == "skipped":
        return Comparison("skipped", run.message, shape)
    if run.status in ("timeout", "not_run"):
        return Comparison("timeout", run.message, shape)
    if run.status == "unsupported":
        return Comparison("unsupported", run.message, shape)
    if run.status == "crashed":
        return Comparison("error", run.message, shape)
    if run.status == "error":
        return Comparison("error", _error_message(run), shape)
    return _compare_output(run, tolerance)


def _error_message(run: CaseRun) -> str:
    if run.error is None:
        return run.message or "raised an error"
    where = f" ({run.error.location})" if run.error.location else ""
    return f"raised {run.error.message}{where}"


def _compare_output(run: CaseRun, tolerance: Tolerance) -> Comparison:
    case = run.case
    expected, magnitude = expected_output(case)
    shape = tuple(expected.shape)
    output = run.output
    if output is None:
        if run.returned_kind in ("tensor", "tensor_subclass") and run.message:
            return Comparison("failed", run.message, shape)   # a tensor the grader cannot read
        return Comparison("failed", f"returned {run.returned_type}, expected a torch.Tensor", shape)
    actual_shape = tuple(output.shape)
    values = _value_check(output, expected, magnitude, case, tolerance) if actual_shape == shape else None
    values_match = None if values is None else values.verdict == "passed"
    if run.returned_kind not in ("tensor", "tensor_subclass"):
        hint = " (its values are right)" if values_match else ""
        return Comparison("failed", f"returned {run.returned_type}, expected a torch.Tensor{hint}",
                          shape, actual_shape, values_match=values_match)
    if run.output_device is not None and run.output_device.split(":")[0] != case.device:
        hint = " (its values are right)" if values_match else ""
        return Comparison("failed", f"returned a tensor on {run.output_device} for a {case.device} input"
                                    f"{hint}; create tensors with device=input.device",
                          shape, actual_shape, values_match=values_match)
    dtype_name = str(output.dtype).removeprefix("torch.")
    if dtype_name != case.params.dtype:
        hint = " (its values are right)" if values_match else ""
        return Comparison("failed", f"returned {dtype_name} for {case.params.dtype} input{hint}",
                          shape, actual_shape, values_match=values_match)
    if actual_shape != shape:
        return Comparison("failed", f"output shape {list(actual_shape)}, expected {list(shape)}",
                          shape, actual_shape)
    if run.input_mutated or run.kernel_mutated:
        what = "input tensor" if run.input_mutated else "kernel"
        return Comparison("failed", f"modified its {what} in place", shape, actual_shape,
                          values.max_abs_error, values.tolerance, values.mismatched,
                          values.first_mismatch, values_match)
    if run.returned_kind == "tensor_subclass" and values.verdict == "passed":
        return Comparison("passed", f"returned a {run.returned_type} (a Tensor subclass), graded as "
                                    "its plain data", shape, actual_shape, values.max_abs_error,
                          values.tolerance, values_match=True)
    return values


def _value_check(output: torch.Tensor, expected: torch.Tensor, magnitude: torch.Tensor,
                 case: Case, tolerance: Tolerance) -> Comparison:
    shape = tuple(expected.shape)
    actual = output.real if output.is_complex() else output
    actual = actual.to(torch.float64)
    bound = tolerance_for(case, magnitude, tolerance)
    error = (actual - expected).abs()
    bad = ~(error <= bound)  # NaN compares false, so NaN outputs count as wrong
    count = int(bad.sum())
    finite = torch.where(torch.isfinite(error), error, torch.zeros_like(error))
    max_error = float(finite.max()) if error.numel() else 0.0
    if count == 0:
        return Comparison("passed", "", shape, shape, max_error, float(bound.max()) if bound.numel() else 0.0)
    index = tuple(int(i) for i in bad.nonzero()[0])
    got, want = float(actual[index]), float(expected[index])
    message = (f"{count} of {expected.numel()} values wrong; first at index {list(index)}: "
               f"got {got:.6g}, expected {want:.6g} (tolerance {float(bound[index]):.2g})")
    return Comparison("failed", message, shape, shape, max_error, float(bound[index]), count, index)
