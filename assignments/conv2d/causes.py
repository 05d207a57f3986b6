"""The Conv2d assignment's likely causes: the pattern of passes and failures, and the
numbers, read the way a TA would.

Each rule looks at one class's case results (grader.score.CaseResult) and, when its
pattern holds, states a cause with the evidence that supports it. Rules only ever add
explanations; they never change a verdict or a score.
"""
from __future__ import annotations

from typing import Callable

import torch

from grader.subject import LikelyCause

from .geometry import expected_output, output_height, output_shape, output_width

CAUSES = (
    "height_width_swapped", "single_output_channel", "output_larger_than_1x1", "padding_applied_twice",
    "padding_ignored", "dilation_ignored", "cpu_tensor_for_cuda_input", "not_a_tensor", "wrong_dtype",
    "input_mutated", "transposed_output", "off_by_constant", "stride_ignored", "padding_wrong", "stride_wrong",
    "batch_wrong", "out_of_gpu_memory", "fails_only_on_cuda",
)


def likely_causes(results: tuple) -> tuple[LikelyCause, ...]:
    ran = [r for r in results if r.status not in ("skipped", "unsupported")]
    failing = [r for r in ran if r.status != "passed"]
    if not failing:
        return ()
    specific = [cause for rule in SPECIFIC_RULES if (cause := rule(ran, failing)) is not None]
    explained = [r for r in failing if _explained_by(r, specific)]
    if specific and len(explained) == len(failing):
        return tuple(specific)
    return tuple(specific) + _best_patterns(ran, failing)


# A pattern cause must separate the cases: most cases with the property fail and
# (almost) none without it do. Several properties can hold for the same failures by
# coincidence (every dilation case here also has two filters), so only the best
# separating ones are named.
PATTERNS = (
    ("height_width_swapped", "height != width", lambda p: p.height != p.width),
    ("single_output_channel", "more than one output channel", lambda p: p.out_channels > 1),
    ("output_larger_than_1x1", "an output larger than 1x1", lambda p: output_height(p) * output_width(p) > 1),
    ("dilation_ignored", "dilation > 1", lambda p: p.dilation > 1),
    ("padding_wrong", "padding > 0", lambda p: p.padding > 0),
    ("stride_wrong", "stride > 1", lambda p: p.stride > 1),
    ("batch_wrong", "more than one image in the batch", lambda p: p.batch > 1),
)
MIN_SEPARATION = 0.6


def _best_patterns(ran, failing) -> tuple[LikelyCause, ...]:
    scored = []
    for cause, what, holds in PATTERNS:
        with_it = [r for r in ran if holds(r.case.params)]
        without = [r for r in ran if not holds(r.case.params)]
        if not with_it or not without:
            continue
        bad_in = sum(1 for r in with_it if r.status != "passed")
        bad_out = sum(1 for r in without if r.status != "passed")
        separation = bad_in / len(with_it) - bad_out / len(without)
        if separation >= MIN_SEPARATION:
            example = next(r for r in with_it if r.status != "passed")
            evidence = (f"fails {bad_in} of {len(with_it)} cases with {what}, "
                        f"{bad_out} of {len(without)} without; e.g. {example.case.id}")
            permuted = _permuted_dims(example)
            if permuted:
                evidence += f"; {permuted}"
            scored.append((separation, LikelyCause(cause, evidence)))
    if not scored:
        return ()
    best = max(score for score, _ in scored)
    return tuple(cause for score, cause in scored if score >= best - 0.05)


def _permuted_dims(result) -> str | None:
    actual, expected = result.comparison.actual_shape, result.comparison.expected_shape
    if actual is None or tuple(actual) == tuple(expected) or sorted(actual) != sorted(expected):
        return None
    return (f"its output {list(actual)} has the right sizes in the wrong order (expected {list(expected)}): "
            "a view/transpose mixes up the batch, channel and spatial dimensions")


def _explained_by(result, causes: list[LikelyCause]) -> bool:
    everywhere = ("not_a_tensor", "wrong_dtype", "cpu_tensor_for_cuda_input", "input_mutated",
                  "out_of_gpu_memory", "fails_only_on_cuda")
    return any(cause.cause in everywhere or f"{result.case.id}:" in cause.evidence
               or (cause.cause == "padding_applied_twice" and result.case.params.padding > 0)
               or (cause.cause == "dilation_ignored" and result.case.params.dilation > 1)
               for cause in causes)


def _shape_without(failing, cause: str, uses, changes, what: str) -> LikelyCause | None:
    """A failure whose output has exactly the shape of the same convolution with `changes`
    applied: the parameter is ignored."""
    for r in failing:
        if uses(r.case.params) and _shape_as_if(r, **changes(r.case.params)):
            return LikelyCause(cause, f"{r.case.id}: output {list(r.comparison.actual_shape)} is the shape "
                                      f"of the same convolution {what}")
    return None


def _dilation(ran, failing):
    return _shape_without(failing, "dilation_ignored", lambda p: p.dilation > 1, lambda p: {"dilation": 1},
                          "without dilation")


def _padding(ran, failing):
    padded = [r for r in failing if r.case.params.padding > 0]
    twice = [r for r in padded if _shape_as_if(r, padding=2 * r.case.params.padding)]
    if twice:
        r = twice[0]
        return LikelyCause("padding_applied_twice",
                           f"{r.case.id}: output {list(r.comparison.actual_shape)} is "
                           f"{2 * r.case.params.padding} larger per side than {list(r.comparison.expected_shape)}, "
                           "as if the input were padded twice")
    return _shape_without(failing, "padding_ignored", lambda p: p.padding > 0, lambda p: {"padding": 0},
                          "without padding")


def _stride(ran, failing):
    return _shape_without(failing, "stride_ignored", lambda p: p.stride > 1, lambda p: {"stride": 1},
                          "with stride 1")


def _cuda_only(ran, failing):
    cuda_failures = [r for r in failing if r.case.device == "cuda"]
    cpu_passed = {r.case.id for r in ran if r.case.device == "cpu" and r.status == "passed"}
    only_cuda = [r for r in cuda_failures if r.case.id in cpu_passed]
    if not only_cuda:
        return None
    example = only_cuda[0]
    text = example.message
    where = f"{len(only_cuda)} cases pass on the CPU and fail on CUDA ({example.case.id}: {text[:160]})"
    if any(marker in text for marker in DEVICE_MISMATCH):
        return LikelyCause("cpu_tensor_for_cuda_input", f"{where}; create tensors with device=input.device")
    if "out of GPU memory" in text or "CUDA out of memory" in text:
        return LikelyCause("out_of_gpu_memory", f"{where}; the layer allocates more than the GPU has")
    return LikelyCause("fails_only_on_cuda", where)


def _not_a_tensor(ran, failing):
    wrong = [r for r in failing if r.run.returned_kind in ("ndarray", "sequence", "other")]
    if wrong:
        return LikelyCause("not_a_tensor", f"returns {wrong[0].run.returned_type} in {len(wrong)} cases; "
                                           "return a torch.Tensor")
    return None


def _dtype(ran, failing):
    wrong = [r for r in failing if " for float" in r.message and r.message.startswith("returned float")]
    if wrong:
        return LikelyCause("wrong_dtype", f"{wrong[0].case.id}: {wrong[0].message}; create tensors with "
                                          "dtype=input.dtype")
    return None


def _mutation(ran, failing):
    wrong = [r for r in failing if r.run.mutated]
    if wrong:
        what = "input" if "input" in wrong[0].run.mutated else "kernel"
        return LikelyCause("input_mutated", f"{wrong[0].case.id}: the layer changed its {what} in place; "
                                            "work on a copy (e.g. padded = get_padding2d(x, p))")
    return None


def _numbers(ran, failing):
    """Right shape, wrong values: compare with simple transforms of the right answer."""
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
            return LikelyCause("transposed_output", f"{r.case.id}: the output is the right answer with height "
                                                    "and width transposed")
        difference = actual - expected
        offset = float(difference.flatten()[0])
        if abs(offset) > tolerance and torch.allclose(difference, torch.full_like(difference, offset),
                                                      atol=tolerance, rtol=0):
            return LikelyCause("off_by_constant", f"{r.case.id}: every value is off by {offset:.4g} "
                                                  "(a bias or an initial value that is not zero?)")
    return None


def _shape_as_if(result, **changes) -> bool:
    actual = result.comparison.actual_shape
    if actual is None or actual == result.comparison.expected_shape:
        return False
    other = result.case.params.replace(**changes)
    return output_height(other) >= 1 and output_width(other) >= 1 and tuple(actual) == output_shape(other)



SPECIFIC_RULES: tuple[Callable, ...] = (_not_a_tensor, _dtype, _mutation, _cuda_only, _padding, _dilation,
                                        _stride, _numbers)
