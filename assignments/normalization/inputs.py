"""A normalization case's tensors, built from (seed, case id) and the case's parameters.

Every step normalizes over its own reduction (a feature's column, a channel, a sample, a
group). The inputs are made per reduction: standard normal values, standardized, then scaled
to the case's spread and shifted to a mean of `mean_ratio` spreads, so each case's
conditioning is what its group says (the ordinary groups never draw a near-constant feature
whose answer float32 cannot resolve; `large_mean` always does what it says). The course
groups use the course check's own inputs instead.
"""
from __future__ import annotations

import math

import torch

# The course's step 1 check: one fixed batch of two rows.
COURSE_BATCH_NORM1D = [[0.0, 0, 1, 0, 2], [0, 1, 1, 0, 10]]


def shape_of(task: str, p) -> tuple[int, ...]:
    if task in ("batch_norm1d", "batch_norm1d_affine"):
        return (p.batch, p.features)
    if task == "batch_norm2d":
        return (p.batch, p.channels, p.height, p.width)
    if task == "layer_norm":
        return tuple(p.shape)
    if task == "instance_norm1d":
        return (p.batch, p.channels, p.length)
    if task == "group_norm":
        return (p.batch, p.groups * p.per_group, p.length)
    raise KeyError(task)


def reduction(task: str, shape: tuple[int, ...], groups: int | None = None):
    """(the shape to view the input as, the dims its statistics are over) for the step."""
    if task in ("batch_norm1d", "batch_norm1d_affine", "batch_norm1d_module"):
        return shape, (0,)
    if task == "batch_norm2d":
        return shape, (0, 2, 3)
    if task == "layer_norm":
        return shape, tuple(range(1, len(shape)))
    if task == "instance_norm1d":
        return shape, (2,)
    batch, channels, length = shape
    return (batch, groups, channels // groups, length), (2, 3)


def statistics(x: torch.Tensor, view, dims):
    """(mean, biased variance, values per reduction) over `dims` of x seen as `view`, kept
    broadcastable; in x's dtype (float64 where it matters), two passes."""
    seen = x.reshape(view)
    count = math.prod(seen.shape[d] for d in dims) if dims else 1
    mean = torch.mean(seen, dim=dims, keepdim=True)
    variance = torch.mean(torch.square(seen - mean), dim=dims, keepdim=True)
    return mean, variance, count


def _conditioned(task: str, shape, p, generator, groups=None) -> torch.Tensor:
    view, dims = reduction(task, shape, groups)
    z = torch.randn(shape, generator=generator, dtype=torch.float64).reshape(view)
    mean, variance, _ = statistics(z, view, dims)
    unit = torch.where(variance > 0, (z - mean) / variance.sqrt().clamp_min(1e-300), torch.zeros_like(z))
    size = mean.shape
    spread = p.std * 2.0 ** (torch.rand(size, generator=generator, dtype=torch.float64) * 2 - 1)
    ratio = p.mean_ratio * (0.5 + 0.5 * torch.rand(size, generator=generator, dtype=torch.float64))
    sign = torch.where(torch.rand(size, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
    return ((unit + sign * ratio) * spread).reshape(shape)


def _affine(features: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.randn(features, generator=generator, dtype=torch.float64) * 1.5
    bias = torch.randn(features, generator=generator, dtype=torch.float64)
    return weight, bias


def make_inputs(task: str, case) -> dict[str, torch.Tensor]:
    """The case's tensors, on the CPU in the case's dtype. A functional step gets `input` (and
    step 2 `weight`, `bias`); the class step gets `weight`, `bias`, `train<k>` and `eval<k>`."""
    p = case.params
    dtype = getattr(torch, p.dtype)
    generator = torch.Generator().manual_seed(case.seed)
    course = case.inputs == "course"
    if task == "batch_norm1d_module":
        weight, bias = _affine(p.features, generator)
        tensors = {"weight": weight, "bias": bias}
        for kind, sizes in (("train", p.train_sizes), ("eval", p.eval_sizes)):
            for k, rows in enumerate(sizes):
                shape = (rows, p.features)
                tensors[f"{kind}{k}"] = (torch.randn(shape, generator=generator, dtype=torch.float64) if course
                                         else _conditioned(task, shape, p, generator))
        return {name: t.to(dtype) for name, t in tensors.items()}
    shape = shape_of(task, p)
    groups = p.groups if task == "group_norm" else None
    if course and task == "batch_norm1d":
        data = torch.tensor(COURSE_BATCH_NORM1D, dtype=torch.float64)
    elif course:
        data = torch.randn(shape, generator=generator, dtype=torch.float64)
    else:
        data = _conditioned(task, shape, p, generator, groups)
    tensors = {"input": data}
    if task == "batch_norm1d_affine":
        tensors["weight"], tensors["bias"] = _affine(shape[1], generator)
    return {name: t.to(dtype) for name, t in tensors.items()}
