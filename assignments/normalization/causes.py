"""The normalization lesson's likely causes, read the way a TA would.

Three kinds of evidence, which the harness's engine (grader/diagnose.py) puts together with
its patterns over the features below:

- mechanisms seen in a failure itself: not a tensor, a float32 answer for float64 input, the
  input written into, `.view` refused on a non-contiguous input, a one-row batch refused in
  eval mode, a shape written into the code (it passes the course check's shape only), float64
  statistics kept in float32 buffers, a failure only on CUDA;
- the lesson's common mistakes, matched: each one's output is computed in float64 by the
  reference (reference/normalization.py's `mistakes(step)`: unbiased variance, eps outside the
  root, statistics over the wrong dims, the reversed momentum, running statistics never
  updated or updated in eval mode, eval with the batch's statistics) and a failing case is the
  mistake's when every output the student returned is that mistake's within the case's bound.
  A student's copy of the grader has no reference: there, the features alone speak;
- the features a pattern is described with ("float64 input", "a mean far from zero next to
  the spread", "any shape but the course check's"), each with the cause failing exactly where
  it holds means.

Rules only ever add explanations; they never change a verdict or a score.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from grader.cause_rules import FAILING, cause, cuda_only, example, not_a_tensor, wrong_dtype
from grader.subject import Feature, LikelyCause

from . import answers, tolerance

CAUSES = (
    "unbiased_variance", "biased_running_variance", "eps_outside_sqrt", "wrong_dims", "reversed_momentum",
    "running_stats_not_updated", "running_stats_updated_in_eval", "eval_uses_batch_stats", "hardcoded_shape",
    "float32_buffers", "one_pass_variance", "wrong_dtype", "not_a_tensor", "input_mutated",
    "view_on_noncontiguous", "batch_of_one_fails", "cpu_tensor_for_cuda_input", "out_of_gpu_memory",
    "fails_only_on_cuda", "failure_pattern",
)

# |mean| / spread beyond which a one-pass variance, E[x^2] - E[x]^2, cancels visibly in float32.
LARGE_MEAN = 10.0
# How far a student's output may be from a mistake's float64 output, in the case's bounds, for
# the mistake to explain it (a student's float32 code of the mistake rounds like correct code).
MATCH_BOUNDS = 4.0

# The course check's own shapes, which a hard-coded size or a global from the check fits.
COURSE_SHAPES = {
    "batch_norm1d": lambda p: (p.batch, p.features) == (2, 5),
    "batch_norm1d_affine": lambda p: (p.batch, p.features) == (5, 7),
    "batch_norm1d_module": lambda p: p.features == 3 and all(rows == 5 for rows in p.train_sizes + p.eval_sizes),
    "batch_norm2d": lambda p: (p.batch, p.channels, p.height, p.width) == (3, 3, 10, 10),
    "layer_norm": lambda p: p.shape[0] == 3 and len(p.shape) > 1 and p.shape[1] == 4,
    "instance_norm1d": lambda p: (p.batch, p.channels, p.length) == (5, 2, 30),
    "group_norm": lambda p: (p.batch, p.groups * p.per_group, p.length) == (20, 6, 2),
}
COURSE_WORDS = {
    "batch_norm1d": "2x5", "batch_norm1d_affine": "5x7", "batch_norm1d_module": "3 features, batches of 5 rows",
    "batch_norm2d": "3x3x10x10", "layer_norm": "3x4x...", "instance_norm1d": "5x2x30", "group_norm": "20x6x2",
}

SHAPE_ERRORS = re.compile(r"is invalid for input of size|must match the size of tensor|size mismatch|"
                          r"shapes cannot be multiplied|The size of tensor a|doesn't match the broadcast shape")
VIEW_ERRORS = ("view size is not compatible with input tensor's size and stride",)
ONE_ROW_ERRORS = ("Expected more than 1 value per channel",)


def features(task: str) -> tuple[Feature, ...]:
    found = [
        Feature("float64", lambda p: p.dtype == "float64", "float64 input", "float32 input", "float32_buffers"),
        Feature("large_mean", lambda p: p.mean_ratio > LARGE_MEAN,
                f"a mean more than {LARGE_MEAN:g} spreads from zero", "a mean within a few spreads of zero",
                "one_pass_variance"),
        Feature("transposed", lambda p: p.layout == "transposed", "a transposed (non-contiguous) input",
                "an input .view accepts", "view_on_noncontiguous"),
        Feature("noncontiguous", lambda p: p.layout != "contiguous", "a non-contiguous input",
                "a contiguous input"),
        Feature("course_shape", lambda p: not COURSE_SHAPES[task](p), "any shape but the course check's",
                f"the course check's shape ({COURSE_WORDS[task]})", "hardcoded_shape"),
        Feature("eps_matters", lambda p: p.eps >= 0.1 * p.std ** 2, "eps at least a tenth of the variance",
                "eps far below the variance"),
        Feature("tiny_eps", lambda p: p.eps < 1e-6, "eps below 1e-6", "eps of 1e-6 or more"),
    ]
    if task in ("batch_norm1d", "batch_norm1d_affine"):
        found += [Feature("one_feature", lambda p: p.features == 1, "a single feature", "several features"),
                  Feature("small_batch", lambda p: p.batch <= 3, "a batch of 2 or 3 rows", "a batch of 4 rows or more")]
    elif task == "batch_norm1d_module":
        found += [
            Feature("eval_row", lambda p: 1 in p.eval_sizes, "an eval batch of one row", "eval batches of 2 rows or more",
                    "batch_of_one_fails"),
            Feature("trained", lambda p: bool(p.train_sizes), "training calls before eval()", "no training call"),
            Feature("momentum_half", lambda p: p.momentum == 0.5, "momentum 0.5", "momentum other than 0.5"),
            Feature("one_feature", lambda p: p.features == 1, "a single feature", "several features"),
        ]
    elif task == "batch_norm2d":
        found += [Feature("pixels", lambda p: p.height * p.width > 1, "images larger than 1x1", "1x1 images"),
                  Feature("batched", lambda p: p.batch > 1, "more than one image", "a batch of 1")]
    elif task == "layer_norm":
        found += [Feature("rank_above_2", lambda p: len(p.shape) > 2, "more than two dims", "a 2-D input"),
                  Feature("batched", lambda p: p.shape[0] > 1, "more than one sample", "a batch of 1")]
    elif task == "instance_norm1d":
        found += [Feature("batched", lambda p: p.batch > 1, "more than one sample", "a batch of 1"),
                  Feature("channels", lambda p: p.channels > 1, "more than one channel", "one channel")]
    elif task == "group_norm":
        found += [Feature("inner_groups", lambda p: 1 < p.groups and p.per_group > 1,
                          "between 1 and C groups", "1 group or one channel a group"),
                  Feature("batched", lambda p: p.batch > 1, "more than one sample", "a batch of 1")]
    return tuple(found)


def likely_causes(task: str, results: tuple, options: Mapping[str, Any]) -> tuple[LikelyCause, ...]:
    ran = [r for r in results if r.status not in ("skipped", "unsupported")]
    failing = [r for r in ran if r.status in FAILING]
    if not failing:
        return ()
    found: list[LikelyCause] = []
    explained: set[str] = set()
    for rule in RULES:
        for named in rule(task, ran, [r for r in failing if r.case.key not in explained]):
            found.append(named)
            explained.update(named.cases)
    return tuple(found)


def _shared(rule):
    """A harness rule (grader/cause_rules.py) in this module's form."""
    def run(task, ran, failing):
        named = rule(ran, failing)
        return [named] if named is not None else []
    return run


def _mutation(task, ran, failing):
    wrong = [r for r in failing if r.run.mutated]
    if not wrong:
        return []
    r = example(wrong)
    what = " and ".join(sorted(set(r.run.mutated)))
    return [cause("input_mutated", f"{r.case.id}: the {'function' if task != 'batch_norm1d_module' else 'layer'} "
                                   f"wrote into its {what} (x -= mean on the input, or on a view or reshape of it); "
                                   "compute into a new tensor", wrong)]


def _view(task, ran, failing):
    wrong = [r for r in failing if r.status == "error" and any(text in r.message for text in VIEW_ERRORS)]
    if not wrong:
        return []
    r = example(wrong)
    return [cause("view_on_noncontiguous", f"{r.case.id}: .view raised on a non-contiguous input "
                                           "(a transposed tensor); use .reshape, or .contiguous() first", wrong)]


def _one_row(task, ran, failing):
    """Step 3 refusing a one-row batch in eval mode, where torch normalizes it with the running
    statistics (only a training batch needs more than one row)."""
    if task != "batch_norm1d_module":
        return []
    wrong = [r for r in failing if r.status == "error" and 1 in r.case.params.eval_sizes
             and (any(text in r.message for text in ONE_ROW_ERRORS) or "eval call" in r.message)]
    if not wrong:
        return []
    r = example(wrong)
    return [cause("batch_of_one_fails", f"{r.case.id}: an eval batch of one row raised ({r.message[:120]}); "
                                        "in eval mode the running statistics normalize it", wrong)]


def _hardcoded(task, ran, failing):
    """Passes the course check's shape, raises a size error on others: a size (or a global of
    the course's check) written into the code instead of the input's."""
    on_course = [r for r in ran if COURSE_SHAPES[task](r.case.params)]
    others = [r for r in failing if not COURSE_SHAPES[task](r.case.params)]
    sized = [r for r in others if r.status == "error" and SHAPE_ERRORS.search(r.message)]
    if not on_course or any(r.status != "passed" for r in on_course) or not sized:
        return []
    r = example(sized)
    return [cause("hardcoded_shape", f"passes on the course check's shape ({COURSE_WORDS[task]}) only; "
                                     f"{r.case.id} raises: {r.message[:160]}: a size or a global from the course's "
                                     "check instead of the input's shape or the arguments", others)]


def _float32_buffers(task, ran, failing):
    """float64 input, a float64 output with float32's precision: statistics kept in (or a result
    written into) a tensor made without dtype=."""
    wrong = [r for r in failing if r.case.params.dtype == "float64" and r.status == "failed"
             and _within(task, r, float32_precision=True)]
    if not wrong:
        return []
    r = example(wrong)
    return [cause("float32_buffers", f"{r.case.id}: the float64 output is right to float32's precision only: "
                                     "a tensor made without dtype= (torch.zeros(n) is float32) holds a statistic "
                                     "or the result; make it with dtype=input.dtype", wrong)]


def _mistakes(task, ran, failing):
    """The lesson's mistakes whose output each failing case's outputs are, most cases first."""
    try:
        from reference import normalization as reference
    except ImportError:     # a student's copy of the grader
        return []
    matched: dict[str, list] = {}
    by_name = {m.name: m for m in reference.mistakes(task)}
    for r in failing:
        if r.status != "failed":
            continue
        for mistake in by_name.values():
            if _is_mistake(task, r, mistake.recipe, reference):
                matched.setdefault(mistake.name, []).append(r)
    named = []
    taken: set[str] = set()
    for name in sorted(matched, key=lambda n: -len(matched[n])):
        cases = [r for r in matched[name] if r.case.key not in taken]
        if not cases:
            continue
        taken.update(r.case.key for r in cases)
        mistake = by_name[name]
        r = example(cases)
        named.append(cause(mistake.cause, f"{len(cases)} failing cases match this mistake's output ({r.case.id}): "
                                          f"{mistake.summary}", cases))
    return named


def _returned(r) -> dict[str, torch.Tensor] | None:
    """Every output of the case as float64 tensors, or None where one is missing (not sent, or
    dropped to keep the grader's memory bounded)."""
    outputs = {}
    for output in r.run.outputs:
        if output.tensor is None or output.returned_kind not in ("tensor", "tensor_subclass"):
            return None
        outputs[output.name] = torch.as_tensor(output.tensor).detach().to("cpu", torch.float64)
    return outputs or None


def _is_mistake(task, r, recipe, reference) -> bool:
    actual = _returned(r)
    if actual is None:
        return False
    try:
        variant = _variant(task, r.case, recipe, reference)
    except ValueError:      # the mistake has no answer here (a statistic of one value)
        return False
    bounds = _bounds(task, r.case)
    for name, got in actual.items():
        want = variant.get(name)
        if want is None or got.shape != want.shape:
            return False
        if not _close(got, want, MATCH_BOUNDS * bounds[name]):
            return False
    return True


def _close(got: torch.Tensor, want: torch.Tensor, bound) -> bool:
    same_nan = torch.isnan(got) == torch.isnan(want)
    error = (got - want).abs()
    return bool(same_nan.all()) and bool(((error <= bound) | torch.isnan(want) | (got == want)).all())


def _variant(task, case, recipe, reference) -> dict[str, torch.Tensor]:
    tensors = {name: t.to(torch.float64) for name, t in answers.inputs(task, case).items()}
    p = case.params
    with torch.no_grad():
        if task == "batch_norm1d_module":
            layer = reference.CustomBatchNorm1d(tensors["weight"], tensors["bias"], p.eps, p.momentum, recipe=recipe)
            found = {f"train{k}": layer(tensors[f"train{k}"]) for k in range(len(p.train_sizes))}
            layer.eval()
            found.update({f"eval{k}": layer(tensors[f"eval{k}"]) for k in range(len(p.eval_sizes))})
            return found
        x = tensors["input"]
        if task == "batch_norm1d_affine":
            out = reference.custom_batch_norm1d_affine(x, tensors["weight"], tensors["bias"], p.eps, recipe=recipe)
        elif task == "group_norm":
            out = reference.custom_group_norm(x, p.groups, p.eps, recipe=recipe)
        else:
            out = getattr(reference, f"custom_{task}")(x, p.eps, recipe=recipe)
    return {"output": out}


def _bounds(task, case, float32_precision: bool = False) -> dict[str, torch.Tensor]:
    multiplier = tolerance.K
    if task == "batch_norm1d_module":
        expected = answers.module_answers(case, case.params.momentum, multiplier,
                                          dtype="float32" if float32_precision else None)
        return {name: e.bound for name, e in expected.items()}
    return {"output": answers.function_answer(task, case, multiplier,
                                              dtype="float32" if float32_precision else None)[1]}


def _within(task, r, float32_precision: bool) -> bool:
    """Whether every output is the right answer within the bound of float32 arithmetic."""
    actual = _returned(r)
    if actual is None:
        return False
    if task == "batch_norm1d_module":
        right = {name: e.value for name, e in answers.module_answers(r.case, r.case.params.momentum,
                                                                     tolerance.K).items()}
    else:
        right = {"output": answers.function_answer(task, r.case, tolerance.K)[0]}
    bounds = _bounds(task, r.case, float32_precision)
    return all(name in right and got.shape == right[name].shape and _close(got, right[name], bounds[name])
               for name, got in actual.items())


RULES = (_shared(not_a_tensor), _shared(wrong_dtype), _mutation, _view, _one_row, _shared(cuda_only),
         _hardcoded, _mistakes, _float32_buffers)
