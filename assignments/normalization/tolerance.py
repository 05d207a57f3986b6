"""How far a correct implementation's output may be from the float64 expected value.

Per output element, with u = torch.finfo(dtype).eps of the case's dtype, n the number of values
the element's statistics are taken over, s = sqrt(var + eps), yhat = (x - mean) / s, r = |mean| / s
and the affine weight w and bias b (1 and 0 where the step has none):

    |actual - expected| <= K * u * (sqrt(n) * ((1 + r) * (1 + |yhat|) + c * r^2 * |yhat|) * |w| + |b|)

sqrt(n) * u is the rounding error of a sum of n values that behave like random ones (what the
grader's seeded inputs are); (1 + r) * sqrt(n) * u bounds the error of a stable algorithm's mean,
relative to s, and of its variance, relative to var (Welford's update and torch.var carry the
mean's error into the variance); an element amplifies the variance's error by |yhat|; |b| is the
rounding of the bias add. The r^2 term (c = 1, the `cancellation` allowance) is the extra error
of the one-pass variance E[x^2] - E[x]^2, which is mathematically right but cancels when the
mean is large next to the spread. It is on by default, so that formula passes wherever a correct
answer is expected of it, and off (c = 0) in a group that tests numerical stability on purpose,
where a stable algorithm passes and the one-pass formula fails. TOLERANCE.md derives the formula
and measures K with scripts/norm_tolerance_study.py.

Everything here runs in the grader's process on float64 copies of the case's inputs. It needs
no reference solution (a student's copy of the grader has none): the statistics it scales by
are the inputs', computed here.
"""
import math

import torch

from .inputs import reduction, statistics

K = 4.0


def _finish(core, dtype, weight, bias, multiplier=K):
    u = torch.finfo(dtype).eps
    w = 1.0 if weight is None else weight.to(torch.float64).abs()
    b = 0.0 if bias is None else bias.to(torch.float64).abs()
    return multiplier * u * (core * w + b)


def _core(count, mean, scale, normalized, cancellation):
    r = mean.abs() / scale
    core = (1 + r) * (1 + normalized.abs())
    if cancellation:
        core = core + r * r * normalized.abs()
    return math.sqrt(count) * core


def function_bound(step, x, eps, *, dtype, groups=None, weight=None, bias=None, cancellation=True, multiplier=K):
    """The element-wise bound for a functional step's output on input `x` (any dtype; its values
    are what the student was given), as a float64 tensor of x's shape. `dtype` is the case's
    dtype (float32 or float64), whose eps sets the scale; `cancellation` adds the one-pass
    variance's allowance (see above)."""
    x = x.to(torch.float64)
    view, dims = reduction(step, tuple(x.shape), groups)
    mean, var, count = statistics(x, view, dims)
    scale = torch.sqrt(var + eps)
    core = _core(count, mean, scale, (x.reshape(view) - mean) / scale, cancellation)
    return _finish(core.reshape(x.shape), dtype, weight, bias, multiplier)


def module_bounds(weight, bias, eps, momentum, train, evals, *, dtype, cancellation=True, multiplier=K):
    """The bounds for step 3's call plan: one tensor per call, training calls then eval calls.

    A training call is step 2 on its batch. An eval call normalizes with running statistics that
    carry every update's rounding. Their mean's error is at most that of the worst batch (the
    momentum weights sum to at most 1), so r uses the largest |mean_t| + std_t over the batches;
    n is the longest batch plus the number of updates (one rounding each); and the variance's
    error is relative to the largest variance the updates handled (a batch's, or a running value
    before an update: running + m * (batch - running) cancels when the batch's variance is far
    below the running one), so it is scaled by that over the final running variance.
    """
    w64, b64 = weight.to(torch.float64), bias.to(torch.float64)
    bounds, reach, longest, cancels = [], torch.zeros_like(w64), 0, torch.zeros_like(w64)
    running_mean, running_var = torch.zeros_like(w64), torch.ones_like(w64)
    largest = running_var.clone()
    for x in train:
        x = x.to(torch.float64)
        mean, var, count = statistics(x, tuple(x.shape), (0,))
        mean, var = mean[0], var[0]
        scale = torch.sqrt(var + eps)
        bounds.append(_finish(_core(count, mean, scale, (x - mean) / scale, cancellation), dtype, w64, b64,
                              multiplier))
        unbiased = var * count / (count - 1)
        reach = torch.maximum(reach, mean.abs() + var.sqrt())
        cancels = torch.maximum(cancels, mean * mean / (var + eps))
        largest = torch.maximum(largest, unbiased)
        longest = max(longest, count)
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var = (1 - momentum) * running_var + momentum * unbiased
    scale = torch.sqrt(running_var + eps)
    amplified = torch.clamp(largest / (running_var + eps), min=1)
    for x in evals:
        normalized = (x.to(torch.float64) - running_mean) / scale
        core = (1 + reach / scale) * (1 + amplified * normalized.abs())
        if cancellation:
            # a one-pass batch variance's error, relative to that batch's variance, carried over
            core = core + cancels * amplified * normalized.abs()
        core = math.sqrt(max(longest + len(train), 1)) * core
        bounds.append(_finish(core, dtype, w64, b64, multiplier))
    return bounds
