"""The Conv2d assignment's likely causes, read the way a TA would.

Two parts, which the harness's engine (grader/diagnose.py) puts together:

- rules that recognise a mechanism in a failure itself: a returned value that is not a
  tensor, a float32 answer for float64 input, an input changed in place, an output whose
  shape is the right one with padding applied twice, or padding, dilation or stride
  ignored, a right answer transposed or off by a constant, a failure only on CUDA. Each
  names exactly the failing cases it explains;
- the features of a case that patterns are described with ("height != width", "more than
  one output channel", ...), each with the cause that failing exactly where it holds means.

Rules only ever add explanations; they never change a verdict or a score.
"""
from __future__ import annotations

from typing import Callable

import torch

from grader.cause_rules import FAILING, cause as _cause, cuda_only, example as _example, not_a_tensor, wrong_dtype
from grader.subject import Feature, LikelyCause

from .geometry import expected_output, output_height, output_shape, output_width

CAUSES = (
    "height_width_swapped", "single_output_channel", "output_larger_than_1x1", "padding_applied_twice",
    "padding_ignored", "dilation_ignored", "cpu_tensor_for_cuda_input", "not_a_tensor", "wrong_dtype",
    "input_mutated", "transposed_output", "off_by_constant", "stride_ignored", "padding_wrong", "stride_wrong",
    "batch_wrong", "out_of_gpu_memory", "fails_only_on_cuda", "failure_pattern",
)

FEATURES = (
    Feature("non_square", lambda p: p.height != p.width, "height != width", "height == width",
            "height_width_swapped"),
    Feature("filters", lambda p: p.out_channels > 1, "more than one output channel", "out_channels == 1",
            "single_output_channel"),
    Feature("large_output", lambda p: output_height(p) * output_width(p) > 1, "an output larger than 1x1",
            "the output is 1x1", "output_larger_than_1x1"),
    Feature("dilated", lambda p: p.dilation > 1, "dilation > 1", "dilation 1", "dilation_ignored"),
    Feature("padded", lambda p: p.padding > 0, "padding > 0", "no padding", "padding_wrong"),
    Feature("strided", lambda p: p.stride > 1, "stride > 1", "stride 1", "stride_wrong"),
    Feature("batched", lambda p: p.batch > 1, "more than one image in the batch", "a batch of 1", "batch_wrong"),
    Feature("channels", lambda p: p.in_channels > 1, "more than one input channel", "in_channels == 1"),
    Feature("kernel", lambda p: p.kernel_size > 1, "a kernel larger than 1x1", "a 1x1 kernel"),
    Feature("float64", lambda p: p.dtype == "float64", "float64 input", "float32 input"),
)

def likely_causes(results: tuple) -> tuple[LikelyCause, ...]:
    ran = [r for r in results if r.status not in ("skipped", "unsupported")]
    failing = [r for r in ran if r.status in FAILING]
    if not failing:
        return ()
    found = []
    explained: set[str] = set()
    for rule in SPECIFIC_RULES:
        cause = rule(ran, [r for r in failing if r.case.key not in explained])
        if cause is not None:
            found.append(cause)
            explained.update(cause.cases)
    return tuple(found)


def _shape_without(failing, cause: str, uses, changes, what: str) -> LikelyCause | None:
    """Failures whose output has exactly the shape of the same convolution with `changes`
    applied: the parameter is ignored."""
    hits = [r for r in failing if uses(r.case.params) and _shape_as_if(r, **changes(r.case.params))]
    if not hits:
        return None
    r = _example(hits)
    return _cause(cause, f"{r.case.id}: output {list(r.comparison.actual_shape)} is the shape of the same "
                         f"convolution {what}", hits)


def _dilation(ran, failing):
    return _shape_without(failing, "dilation_ignored", lambda p: p.dilation > 1, lambda p: {"dilation": 1},
                          "without dilation")


def _padding(ran, failing):
    padded = [r for r in failing if r.case.params.padding > 0]
    twice = [r for r in padded if _shape_as_if(r, padding=2 * r.case.params.padding)]
    if twice:
        r = _example(twice)
        return _cause("padding_applied_twice",
                      f"{r.case.id}: output {list(r.comparison.actual_shape)} is "
                      f"{2 * r.case.params.padding} larger per side than {list(r.comparison.expected_shape)}, "
                      "as if the input were padded twice", twice)
    return _shape_without(failing, "padding_ignored", lambda p: p.padding > 0, lambda p: {"padding": 0},
                          "without padding")


def _stride(ran, failing):
    return _shape_without(failing, "stride_ignored", lambda p: p.stride > 1, lambda p: {"stride": 1},
                          "with stride 1")


def _mutation(ran, failing):
    wrong = [r for r in failing if r.run.mutated]
    if wrong:
        r = _example(wrong)
        what = "input" if "input" in r.run.mutated else "kernel"
        return _cause("input_mutated", f"{r.case.id}: the layer changed its {what} in place; "
                                       "work on a copy (e.g. padded = get_padding2d(x, p))", wrong)
    return None


def _numbers(ran, failing):
    """Right shape, wrong values: compare with simple transforms of the right answer."""
    transposed, offsets = [], []
    for r in failing:
        output = r.run.output
        if output is None or r.comparison.actual_shape != r.comparison.expected_shape:
            continue
        expected, _ = expected_output(r.case)
        actual = output.to(torch.float64)
        scale = float(expected.abs().max()) or 1.0
        tolerance = 1e-4 * scale
        if expected.shape[-1] == expected.shape[-2] and expected.shape[-1] > 1 and \
                torch.allclose(actual, expected.transpose(-1, -2), atol=tolerance, rtol=0):
            transposed.append(r)
            continue
        difference = actual - expected
        offset = float(difference.flatten()[0])
        if abs(offset) > tolerance and torch.allclose(difference, torch.full_like(difference, offset),
                                                      atol=tolerance, rtol=0):
            offsets.append((r, offset))
    if transposed:
        return _cause("transposed_output", f"{_example(transposed).case.id}: the output is the right answer with "
                                           "height and width transposed", transposed)
    if offsets:
        r, offset = min(offsets, key=lambda pair: (pair[0].case.hidden, pair[0].case.id))
        return _cause("off_by_constant", f"{r.case.id}: every value is off by {offset:.4g} "
                                         "(a bias or an initial value that is not zero?)", [o for o, _ in offsets])
    return None


def _shape_as_if(result, **changes) -> bool:
    actual = result.comparison.actual_shape
    if actual is None or actual == result.comparison.expected_shape:
        return False
    other = result.case.params.replace(**changes)
    return output_height(other) >= 1 and output_width(other) >= 1 and tuple(actual) == output_shape(other)


SPECIFIC_RULES: tuple[Callable, ...] = (not_a_tensor, wrong_dtype, _mutation, cuda_only, _padding, _dilation,
                                        _stride, _numbers)
