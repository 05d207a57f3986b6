"""The answers a normalization case is graded against: torch's own layers in float64, in the
grader's process, with the bound per element from tolerance.py. Cached per case, since the
comparison, the likely causes and shrinking all ask for the same ones."""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from grader.subject import Expected

from . import tolerance
from .inputs import make_inputs


@lru_cache(maxsize=256)
def inputs(task: str, case) -> dict[str, torch.Tensor]:
    return make_inputs(task, case)


def _stable(case) -> bool:
    """A group that tests numerical stability drops the one-pass variance's allowance."""
    return case.settings.get("tolerance_mode") == "stable"


@lru_cache(maxsize=256)
def function_answer(task: str, case, multiplier: float, dtype: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's own layer's answer in float64, and the bound per element for the case's dtype
    (or `dtype`'s: how far float32 arithmetic may stray, for a cause)."""
    tensors = inputs(task, case)
    p = case.params
    x = tensors["input"].to(torch.float64)
    with torch.no_grad():
        if task == "batch_norm1d_affine":
            weight, bias = tensors["weight"].to(torch.float64), tensors["bias"].to(torch.float64)
            answer = F.batch_norm(x, None, None, weight, bias, training=True, eps=p.eps)
        elif task in ("batch_norm1d", "batch_norm2d"):
            answer, weight, bias = F.batch_norm(x, None, None, training=True, eps=p.eps), None, None
        elif task == "layer_norm":
            answer, weight, bias = F.layer_norm(x, x.shape[1:], eps=p.eps), None, None
        elif task == "instance_norm1d":
            answer, weight, bias = F.instance_norm(x, eps=p.eps), None, None
        else:
            answer, weight, bias = F.group_norm(x, p.groups, eps=p.eps), None, None
    bound = tolerance.function_bound(task, tensors["input"], p.eps, dtype=getattr(torch, dtype or p.dtype),
                                     groups=p.groups if task == "group_norm" else None, weight=weight, bias=bias,
                                     cancellation=not _stable(case), multiplier=multiplier)
    return answer, bound


@lru_cache(maxsize=256)
def module_answers(case, momentum: float, multiplier: float, dtype: str | None = None) -> dict[str, Expected]:
    """nn.BatchNorm1d trained on the case's training batches, then put in eval mode, in float64."""
    tensors = inputs("batch_norm1d_module", case)
    p = case.params
    weight, bias = tensors["weight"].to(torch.float64), tensors["bias"].to(torch.float64)
    train = [tensors[f"train{k}"].to(torch.float64) for k in range(len(p.train_sizes))]
    evals = [tensors[f"eval{k}"].to(torch.float64) for k in range(len(p.eval_sizes))]
    layer = torch.nn.BatchNorm1d(p.features, eps=p.eps, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
        answers = [layer(x) for x in train]
        layer.eval()
        answers += [layer(x) for x in evals]
    bounds = tolerance.module_bounds(tensors["weight"], tensors["bias"], p.eps, momentum, train, evals,
                                     dtype=getattr(torch, dtype or p.dtype), cancellation=not _stable(case),
                                     multiplier=multiplier)
    names = [f"train{k}" for k in range(len(train))] + [f"eval{k}" for k in range(len(evals))]
    return {name: Expected(value=answer, bound=bound, dtype=p.dtype)
            for name, answer, bound in zip(names, answers, bounds)}
