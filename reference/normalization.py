"""Reference solutions for the normalization lesson's seven steps, and the outputs of its mistakes.

The lesson (`shared/lessons/normalization.md`) has students rewrite batch, layer, instance and
group normalization without the library. This module is the grader's oracle for it, so it is
built only from elementary operations (sums, division, sqrt, broadcasting, reshape): no torch
normalization layer, function or aten operator, which keeps it independent of what it checks.

Every step normalizes `x` over a *layout*: an optional reshape of `x` and the dims of that view
the statistics are taken over. A `Recipe` says how the statistics are turned into the output;
`CORRECT` is the lesson's recipe and each common mistake is another `Recipe`, so one code path
computes both what a student should return and what a student who made a given mistake returns.
`mistakes(step)` lists a step's named variants for a grader's diagnosis to iterate over:

    for mistake in mistakes("group_norm"):
        if matches(student_output, custom_group_norm(x, groups, eps, recipe=mistake.recipe)):
            ...  # mistake.cause names it, mistake.summary says it in a TA's words

Everything is computed on the input's device in the input's dtype (the grader passes float64),
and nothing writes into the input. The functions raise ValueError exactly where torch's layers do
(a statistic over a single value in training), since there is no torch answer to compare with.
"""
import math
from dataclasses import dataclass, replace
from typing import Literal

import torch

__all__ = [
    "CORRECT", "CustomBatchNorm1d", "Mistake", "Recipe", "STEPS", "custom_batch_norm1d",
    "custom_batch_norm1d_affine", "custom_batch_norm2d", "custom_group_norm",
    "custom_instance_norm1d", "custom_layer_norm", "layout", "layouts", "mistakes", "moments",
]

# Step ids, in the lesson's order. Steps 1 and 2 share the student's name custom_batch_norm1d,
# so the ids (not the student's names) are what a config and this module key on.
STEPS = ("batch_norm1d", "batch_norm1d_affine", "batch_norm1d_module", "batch_norm2d",
         "layer_norm", "instance_norm1d", "group_norm")


@dataclass(frozen=True)
class Recipe:
    """How the statistics become the output; every field's first value is the lesson's.

    variance: which variance normalizes the batch ("unbiased" divides by n - 1).
    eps: where eps goes: "under_sqrt" (x-m)/sqrt(v+eps); "added_to_std" (x-m)/(sqrt(v)+eps);
        "added_to_output" (x-m)/sqrt(v) + eps, the missing-parentheses form.
    stats: the layout the statistics are taken over, a name from `layouts(step)`; None is the
        step's correct one.
    The rest only matter to the class step (3):
    running_variance: which batch variance the running variance averages (torch: unbiased).
    momentum: "torch" running = (1-m)*running + m*batch; "reversed" m*running + (1-m)*batch.
    update: when the running statistics are updated: "train" (torch), "never", or also in eval
        mode, "eval_after" (after the eval output is computed) or "eval_before" (before, so the
        eval output already uses the eval batch).
    eval_stats: what eval mode normalizes with: "running" (torch) or the eval batch's own "batch".
    """
    variance: Literal["biased", "unbiased"] = "biased"
    eps: Literal["under_sqrt", "added_to_std", "added_to_output"] = "under_sqrt"
    stats: str | None = None
    running_variance: Literal["unbiased", "biased"] = "unbiased"
    momentum: Literal["torch", "reversed"] = "torch"
    update: Literal["train", "never", "eval_after", "eval_before"] = "train"
    eval_stats: Literal["running", "batch"] = "running"


CORRECT = Recipe()


@dataclass(frozen=True)
class Mistake:
    """One common mistake of a step: `cause` is the likely-cause id a report would name (several
    variants can share one, e.g. both wrong eps placements are eps_outside_sqrt), `name` is unique
    within the step, `summary` says it as a TA would."""
    name: str
    cause: str
    summary: str
    recipe: Recipe


# --- layouts -------------------------------------------------------------------------------------
# A layout maps the input's shape (and the group count, for group norm) to (view, dims): reshape
# the input to `view` (None: keep its shape) and take the statistics over `dims` of that view.
# The first entry of each step is the correct one; the others are the plausible wrong ones, each
# with the code a student writes to get it.

def _all_dims(shape, groups=None):
    return None, tuple(range(len(shape)))


def _grouped(shape, groups):
    n, c = shape[:2]
    return (n, groups, c // groups, *shape[2:])


def _split_by_size(shape, groups):
    # Channels split as (c // groups, groups): what view(n, c // groups, groups, ...) gives.
    n, c = shape[:2]
    return (n, c // groups, groups, *shape[2:])


_FEATURE_LAYOUTS = {
    "per_feature": (lambda shape, groups=None: (None, (0,)),
                    "over the batch, per feature: x.mean(dim=0)"),
    "per_sample": (lambda shape, groups=None: (None, (1,)),
                   "over the features, per sample: x.mean(dim=1)"),
    "whole_batch": (_all_dims, "over the whole batch: x.mean() without dim"),
}

_LAYOUTS = {
    "batch_norm1d": _FEATURE_LAYOUTS,
    "batch_norm1d_affine": _FEATURE_LAYOUTS,
    "batch_norm1d_module": _FEATURE_LAYOUTS,
    "batch_norm2d": {
        "per_channel": (lambda shape, groups=None: (None, (0, 2, 3)),
                        "over batch, height and width, per channel: dim=(0, 2, 3)"),
        "batch_only": (lambda shape, groups=None: (None, (0,)),
                       "over the batch only, per channel and pixel: step 1's dim=0"),
        "batch_and_height": (lambda shape, groups=None: (None, (0, 2)),
                             "over batch and height only: dim=(0, 2), width forgotten"),
        "batch_and_width": (lambda shape, groups=None: (None, (0, 3)),
                            "over batch and width only: dim=(0, 3), height forgotten"),
        "per_sample": (lambda shape, groups=None: (None, (1, 2, 3)),
                       "over channels, height and width, per sample: layer norm"),
        "per_sample_channel": (lambda shape, groups=None: (None, (2, 3)),
                               "over height and width, per sample and channel: instance norm"),
        "whole_batch": (_all_dims, "over the whole tensor: x.mean() without dim"),
    },
    "layer_norm": {
        "per_sample": (lambda shape, groups=None: (None, tuple(range(1, len(shape)))),
                       "over every dim but the batch"),
        "last_dim": (lambda shape, groups=None: (None, (len(shape) - 1,)),
                     "over the last dim only: dim=-1, as nn.LayerNorm(x.shape[-1])"),
        "dim_1": (lambda shape, groups=None: (None, (1,)),
                  "over dim 1 only: the 2-D case's dim=1 kept for every rank"),
        "per_feature": (lambda shape, groups=None: (None, (0,)),
                        "over the batch, per feature: batch norm"),
        "whole_batch": (_all_dims, "over the whole tensor: x.mean() without dim"),
    },
    "instance_norm1d": {
        "per_sample_channel": (lambda shape, groups=None: (None, (2,)),
                               "over the length, per sample and channel: dim=2"),
        "per_sample": (lambda shape, groups=None: (None, (1, 2)),
                       "over channels and length, per sample: layer norm"),
        "per_channel": (lambda shape, groups=None: (None, (0, 2)),
                        "over batch and length, per channel: batch norm"),
        "channels": (lambda shape, groups=None: (None, (1,)),
                     "over the channels, per sample and position: dim=1"),
        "whole_batch": (_all_dims, "over the whole tensor: x.mean() without dim"),
    },
    "group_norm": {
        "per_group": (lambda shape, groups: (_grouped(shape, groups), (2, 3)),
                      "over each block of C/groups consecutive channels and the length"),
        "interleaved": (lambda shape, groups: (_split_by_size(shape, groups), (1, 3)),
                        "channels grouped c % groups (every groups-th channel together)"),
        "groups_as_size": (lambda shape, groups: (_split_by_size(shape, groups), (2, 3)),
                           "groups taken as the group size: C/groups groups of `groups` channels"),
        "channels_only": (lambda shape, groups: (_grouped(shape, groups), (2,)),
                          "over the group's channels only, per position (length forgotten)"),
        "per_sample_channel": (lambda shape, groups: (None, (2,)),
                               "per channel, as if groups = C: instance norm"),
        "per_sample": (lambda shape, groups: (None, (1, 2)),
                       "per sample, as if groups = 1: layer norm"),
    },
}


def layouts(step):
    """The names of a step's layouts, the correct one first."""
    return tuple(_LAYOUTS[step])


def layout(step, shape, groups=None, stats=None):
    """(view, dims) of layout `stats` (None: the correct one) for an input of this shape."""
    table = _LAYOUTS[step]
    make, _ = table[stats if stats is not None else next(iter(table))]
    return make(tuple(shape), groups)


def moments(x, view, dims):
    """(mean, biased variance, count) of `x` over `dims` of `x.reshape(view)`, both kept as
    broadcastable to that view. Two-pass, so float64 is exact to a few ulps even for means far
    larger than the spread."""
    v = x if view is None else x.reshape(view)
    count = math.prod(v.shape[d] for d in dims)
    mean = v.sum(dim=dims, keepdim=True) / count
    centered = v - mean
    return mean, (centered * centered).sum(dim=dims, keepdim=True) / count, count


def _variance(biased, count, which):
    # n/(n-1) on the biased value; count 1 gives nan, as torch.var does for one element.
    if which == "biased":
        return biased
    return biased * count / (count - 1) if count > 1 else biased * math.nan


def _scale(centered, variance, eps, placement):
    if placement == "under_sqrt":
        return centered / torch.sqrt(variance + eps)
    if placement == "added_to_std":
        return centered / (torch.sqrt(variance) + eps)
    return centered / torch.sqrt(variance) + eps   # "added_to_output"


def _need_more_than_one(x, count, what):
    # torch raises here (F.batch_norm's _verify_batch_size, F.instance_norm's
    # _verify_spatial_size, F.group_norm's check); there is no expected value to grade against.
    if count == 1:
        raise ValueError(f"Expected more than 1 {what} when training, got input size {tuple(x.shape)}")


def _normalize(x, eps, view, dims, recipe):
    mean, biased, count = moments(x, view, dims)
    v = x if view is None else x.reshape(view)
    out = _scale(v - mean, _variance(biased, count, recipe.variance), eps, recipe.eps)
    return out.reshape(x.shape)


def _check_rank(x, ranks, step):
    if x.dim() not in ranks:
        raise ValueError(f"{step}: expected a {' or '.join(map(str, ranks))}-D input, got {x.dim()}-D")


# --- steps 1, 2, 4-7: functions ------------------------------------------------------------------

def custom_batch_norm1d(input_tensor, eps, *, recipe=CORRECT):
    """Step 1: (N, F) normalized per feature over the batch, biased variance, no affine.
    torch: nn.BatchNorm1d(F, affine=False, eps=eps) in training mode (raises for N = 1)."""
    _check_rank(input_tensor, (2,), "batch_norm1d")
    _need_more_than_one(input_tensor, input_tensor.shape[0], "value per channel")
    view, dims = layout("batch_norm1d", input_tensor.shape, stats=recipe.stats)
    return _normalize(input_tensor, eps, view, dims, recipe)


def custom_batch_norm1d_affine(input_tensor, weight, bias, eps, *, recipe=CORRECT):
    """Step 2: step 1, then * weight + bias per feature ((F,) tensors).
    torch: nn.BatchNorm1d(F, eps=eps) with weight and bias set, training mode."""
    return custom_batch_norm1d(input_tensor, eps, recipe=recipe) * weight + bias


def custom_batch_norm2d(input_tensor, eps, *, recipe=CORRECT):
    """Step 4: (N, C, H, W) normalized per channel over dims (0, 2, 3).
    torch: nn.BatchNorm2d(C, affine=False, eps=eps) in training mode (raises for N*H*W = 1)."""
    _check_rank(input_tensor, (4,), "batch_norm2d")
    n, _, h, w = input_tensor.shape
    _need_more_than_one(input_tensor, n * h * w, "value per channel")
    view, dims = layout("batch_norm2d", input_tensor.shape, stats=recipe.stats)
    return _normalize(input_tensor, eps, view, dims, recipe)


def custom_layer_norm(input_tensor, eps, *, recipe=CORRECT):
    """Step 5: any rank >= 2, normalized per sample over every dim but 0.
    torch: nn.LayerNorm(x.shape[1:], elementwise_affine=False, eps=eps); a sample of one element
    normalizes to 0 (torch does not raise)."""
    if input_tensor.dim() < 2:
        raise ValueError(f"layer_norm: expected an input of rank >= 2, got {input_tensor.dim()}-D")
    view, dims = layout("layer_norm", input_tensor.shape, stats=recipe.stats)
    return _normalize(input_tensor, eps, view, dims, recipe)


def custom_instance_norm1d(input_tensor, eps, *, recipe=CORRECT):
    """Step 6: (N, C, L) normalized over the last dim, per sample and channel.
    torch: nn.InstanceNorm1d(C, affine=False, eps=eps), which raises for L = 1 in either mode."""
    _check_rank(input_tensor, (3,), "instance_norm1d")
    _need_more_than_one(input_tensor, input_tensor.shape[2], "spatial element")
    view, dims = layout("instance_norm1d", input_tensor.shape, stats=recipe.stats)
    return _normalize(input_tensor, eps, view, dims, recipe)


def custom_group_norm(input_tensor, groups, eps, *, recipe=CORRECT):
    """Step 7: (N, C, L) normalized per sample over each block of C/groups consecutive channels
    and the length. torch: nn.GroupNorm(groups, C, eps=eps, affine=False), which requires C %
    groups == 0 and raises when N * C/groups * L = 1 (not when only a group has one element)."""
    _check_rank(input_tensor, (3,), "group_norm")
    n, c, length = input_tensor.shape
    if c % groups:
        raise ValueError(f"num_channels ({c}) must be divisible by num_groups ({groups})")
    _need_more_than_one(input_tensor, n * (c // groups) * length, "value per channel")
    view, dims = layout("group_norm", input_tensor.shape, groups, recipe.stats)
    return _normalize(input_tensor, eps, view, dims, recipe)


# --- step 3: the class ---------------------------------------------------------------------------

class CustomBatchNorm1d:
    """Step 3, with torch's semantics (nn.BatchNorm1d(F, eps=eps, momentum=momentum) with weight
    and bias set): the running mean starts at 0 and the running variance at 1, in the weight's
    dtype and device; a training call returns step 2 on the batch, then
    running = (1 - momentum) * running + momentum * batch statistic, with the batch's *unbiased*
    variance; after eval() the output uses the running statistics and nothing is updated.
    `recipe` switches in one of the lesson's mistakes instead."""

    def __init__(self, weight, bias, eps, momentum, *, recipe=CORRECT):
        self.weight = weight
        self.bias = bias
        self.eps = eps
        self.momentum = momentum
        self.recipe = recipe
        self.training = True
        self.running_mean = torch.zeros_like(weight)
        self.running_var = torch.ones_like(weight)

    def eval(self):
        self.training = False
        return self

    def _update(self, mean, biased, count):
        m, recipe = self.momentum, self.recipe
        var = _variance(biased, count, recipe.running_variance)
        old, new = (m, 1 - m) if recipe.momentum == "reversed" else (1 - m, m)
        self.running_mean = old * self.running_mean + new * mean
        self.running_var = old * self.running_var + new * var

    def __call__(self, input_tensor):
        _check_rank(input_tensor, (2,), "batch_norm1d_module")
        recipe = self.recipe
        if self.training:
            _need_more_than_one(input_tensor, input_tensor.shape[0], "value per channel")
        mean, biased, count = moments(input_tensor, None, (0,))
        mean, biased = mean.reshape(-1), biased.reshape(-1)
        updates = recipe.update != "never" if self.training else recipe.update.startswith("eval")
        if updates and recipe.update != "eval_after":
            self._update(mean, biased, count)
        if self.training or recipe.eval_stats == "batch":
            out = _scale(input_tensor - mean, _variance(biased, count, recipe.variance),
                         self.eps, recipe.eps)
        else:
            out = _scale(input_tensor - self.running_mean, self.running_var, self.eps, recipe.eps)
        if updates and recipe.update == "eval_after":
            self._update(mean, biased, count)
        return out * self.weight + self.bias


# --- the mistakes --------------------------------------------------------------------------------

_COMMON = (
    Mistake("unbiased_variance", "unbiased_variance",
            "normalizes with the unbiased variance (divides by n - 1); the lesson's is biased",
            Recipe(variance="unbiased")),
    Mistake("eps_added_to_std", "eps_outside_sqrt",
            "adds eps to the standard deviation, (x - mean) / (sqrt(var) + eps), "
            "not under the square root", Recipe(eps="added_to_std")),
    Mistake("eps_added_to_output", "eps_outside_sqrt",
            "adds eps after dividing, (x - mean) / sqrt(var) + eps (parentheses missing)",
            Recipe(eps="added_to_output")),
)

_MODULE = (
    Mistake("biased_running_variance", "biased_running_variance",
            "updates the running variance with the biased batch variance; torch uses the "
            "unbiased one", Recipe(running_variance="biased")),
    Mistake("reversed_momentum", "reversed_momentum",
            "running = momentum * running + (1 - momentum) * batch: the reversed convention "
            "(the same numbers as torch's at momentum 0.5)", Recipe(momentum="reversed")),
    Mistake("running_stats_not_updated", "running_stats_not_updated",
            "never updates the running statistics, so eval() normalizes with mean 0, var 1",
            Recipe(update="never")),
    Mistake("running_stats_updated_in_eval", "running_stats_updated_in_eval",
            "updates the running statistics in eval mode too, after computing the output",
            Recipe(update="eval_after")),
    Mistake("running_stats_updated_in_eval_first", "running_stats_updated_in_eval",
            "updates the running statistics in eval mode too, before normalizing with them",
            Recipe(update="eval_before")),
    Mistake("eval_uses_batch_stats", "eval_uses_batch_stats",
            "normalizes with the batch's own statistics in eval mode, not the running ones",
            Recipe(eval_stats="batch")),
)


def mistakes(step):
    """The step's common mistakes: the three shared ones, the class's running-statistics ones
    (step 3), and one per wrong layout (the functional steps; a class with wrong dims breaks its
    running statistics' shapes, so it is told apart by its training outputs, not modelled)."""
    found = list(_COMMON)
    if step == "batch_norm1d_module":
        found += _MODULE
    else:
        table = _LAYOUTS[step]
        for name in list(table)[1:]:
            found.append(Mistake(f"stats_{name}", "wrong_dims", f"statistics {table[name][1]}",
                                 replace(CORRECT, stats=name)))
    return tuple(found)
