"""Judge one case: each output the student's code returned against the float64 answer.

Runs in the grader process only. The answers and their element-wise tolerances are the
assignment's (its task's `expected`, computed here on the CPU in float64); what makes an
output right is the harness's and the same for every assignment: a torch.Tensor, on the
input's device, of the expected dtype and shape, inputs untouched, every value within
its bound. A plan with several outputs (a training call, then an evaluation call) passes
when all of them do; the first that fails gives the verdict, named by its call.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import torch

from .cases import Case
from .config import Assignment, ItemSpec
from .runner import CaseRun, OutputRun
from .subject import Expected, Task


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
    output: str | None = None          # which output decided, when the plan has several


@dataclass(frozen=True)
class Answer:
    """One output's answer with how the report names its call."""
    name: str
    label: str
    expected: Expected


@dataclass(frozen=True)
class Answers:
    """A case's answer per output, and the alternatives the item accepts (label, answers)."""
    primary: tuple[Answer, ...]
    alternatives: tuple[tuple[str, tuple[Answer, ...]], ...] = ()
    step_labels: tuple[str, ...] = ()     # per plan step, how messages name it ("" for none)


def answers_for(assignment: Assignment, item: ItemSpec, case: Case) -> Answers:
    task = assignment.task_of(item)
    return _answers(task, case, assignment.tolerance, item.options)


@lru_cache(maxsize=1024)
def _answers(task: Task, case: Case, tolerance: tuple, options: tuple) -> Answers:
    options_map = dict(options)
    plan = task.plan(case, options_map)

    def named(expected: dict) -> tuple[Answer, ...]:
        return tuple(Answer(name, plan.label_of(name) if len(plan.outputs) > 1 else "", expected[name])
                     for name in plan.outputs)

    inputs = task.inputs(case)
    with _one_thread():
        primary = named(task.expected(case, inputs, dict(tolerance), options_map))
        others = task.alternatives(case, inputs, dict(tolerance), options_map)
    labels = tuple(getattr(step, "label", "") for step in plan.steps)
    return Answers(primary, tuple((label, named(expected)) for label, expected in others.items()), labels)


@contextmanager
def _one_thread():
    """Answers are computed while a worker runs beside us: torch's thread pool, woken for each
    small case, would spin on the cores the worker needs (the answers are small; one thread
    is as fast)."""
    threads = torch.get_num_threads()
    if threads != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads != 1:
            torch.set_num_threads(threads)


def judge_run(assignment: Assignment, item: ItemSpec, run: CaseRun) -> Comparison:
    return compare(run, answers_for(assignment, item, run.case), assignment.task_of(item).input_labels)


def compare(run: CaseRun, answers: Answers | tuple[Answer, ...],
            input_labels: Mapping[str, str] | None = None) -> Comparison:
    """The verdict on a run: against the answers, or else one accepted alternative."""
    if not isinstance(answers, Answers):
        answers = Answers(tuple(answers))
    verdict = _compare_all(run, answers.primary, input_labels, answers.step_labels)
    if verdict.verdict != "failed":
        return verdict
    for label, alternative in answers.alternatives:
        other = _compare_all(run, alternative, input_labels, answers.step_labels)
        if other.verdict == "passed":
            return Comparison("passed", f"matches {label}, which this item accepts", other.expected_shape,
                              other.actual_shape, other.max_abs_error, other.tolerance, values_match=True)
    return verdict


def _compare_all(run: CaseRun, answers: tuple[Answer, ...], input_labels: Mapping[str, str] | None,
                 step_labels: tuple[str, ...] = ()) -> Comparison:
    shape = tuple(answers[0].expected.value.shape) if answers else ()
    if run.status == "skipped":
        return Comparison("skipped", run.message, shape)
    if run.status in ("timeout", "not_run"):
        return Comparison("timeout", run.message, shape)
    if run.status == "unsupported":
        return Comparison("unsupported", run.message, shape)
    if run.status == "crashed":
        return Comparison("error", run.message, shape)
    if run.status == "error":
        return Comparison("error", _error_message(run, step_labels), shape)
    verdicts = []
    for answer in answers:
        verdict = _compare_output(run, run.output_named(answer.name), answer, input_labels or {})
        if verdict.verdict != "passed":
            return verdict
        verdicts.append(verdict)
    if not verdicts:
        return Comparison("passed", "", shape)
    # Passed: the largest error and the tightest bound over all outputs.
    first = verdicts[0]
    if len(verdicts) == 1:
        return first
    worst = max(verdicts, key=lambda v: v.max_abs_error or 0.0)
    return Comparison("passed", first.message, first.expected_shape, first.actual_shape, worst.max_abs_error,
                      worst.tolerance, values_match=True)


def _error_message(run: CaseRun, step_labels: tuple[str, ...]) -> str:
    step = run.error_step
    label = step_labels[step] if step is not None and step < len(step_labels) else ""
    prefix = f"{label}: " if label else ""
    if run.error is None:
        return prefix + (run.message or "raised an error")
    where = f" ({run.error.location})" if run.error.location else ""
    return f"{prefix}raised {run.error.message}{where}"


def _compare_output(run: CaseRun, output: OutputRun | None, answer: Answer,
                    input_labels: Mapping[str, str]) -> Comparison:
    case = run.case
    expected = answer.expected
    shape = tuple(expected.value.shape)
    prefix = f"{answer.label}: " if answer.label else ""
    name = answer.name if answer.label else None

    def result(verdict: str, message: str, *args, **kwargs) -> Comparison:
        return Comparison(verdict, prefix + message, shape, *args, output=name, **kwargs)

    if output is None:
        return result("failed", "returned nothing")
    if output.tensor is None:
        if output.returned_kind in ("tensor", "tensor_subclass") and output.message:
            return result("failed", output.message)   # a tensor the grader cannot read
        return result("failed", f"returned {output.returned_type}, expected a torch.Tensor")
    actual_shape = tuple(output.tensor.shape)
    values = _value_check(output.tensor, expected, case, prefix, name) if actual_shape == shape else None
    values_match = None if values is None else values.verdict == "passed"
    if output.returned_kind not in ("tensor", "tensor_subclass"):
        hint = " (its values are right)" if values_match else ""
        return result("failed", f"returned {output.returned_type}, expected a torch.Tensor{hint}",
                      actual_shape, values_match=values_match)
    if output.device is not None and output.device.split(":")[0] != case.device:
        hint = " (its values are right)" if values_match else ""
        return result("failed", f"returned a tensor on {output.device} for a {case.device} input"
                                f"{hint}; create tensors with device=input.device",
                      actual_shape, values_match=values_match)
    dtype_name = str(output.tensor.dtype).removeprefix("torch.")
    if dtype_name != expected.dtype:
        hint = " (its values are right)" if values_match else ""
        return result("failed", f"returned {dtype_name} for {expected.dtype} input{hint}",
                      actual_shape, values_match=values_match)
    if actual_shape != shape:
        return result("failed", f"output shape {list(actual_shape)}, expected {list(shape)}", actual_shape)
    if run.mutated:
        what = input_labels.get(run.mutated[0], run.mutated[0])
        return result("failed", f"modified its {what} in place", actual_shape,
                      values.max_abs_error, values.tolerance, values.mismatched, values.first_mismatch, values_match)
    if output.returned_kind == "tensor_subclass" and values.verdict == "passed":
        return result("passed", f"returned a {output.returned_type} (a Tensor subclass), graded as "
                                "its plain data", actual_shape, values.max_abs_error, values.tolerance,
                      values_match=True)
    return values


def _value_check(output: torch.Tensor, expected: Expected, case: Case, prefix: str, name: str | None) -> Comparison:
    answer = expected.value
    shape = tuple(answer.shape)
    actual = output.real if output.is_complex() else output
    actual = actual.to(torch.float64)
    bound = torch.broadcast_to(expected.bound, answer.shape)
    error = (actual - answer).abs()
    bad = ~(error <= bound)  # NaN compares false, so NaN outputs count as wrong
    count = int(bad.sum())
    finite = torch.where(torch.isfinite(error), error, torch.zeros_like(error))
    max_error = float(finite.max()) if error.numel() else 0.0
    if count == 0:
        return Comparison("passed", "", shape, shape, max_error, float(bound.max()) if bound.numel() else 0.0,
                          output=name)
    index = tuple(int(i) for i in bad.nonzero()[0])
    got, want = float(actual[index]), float(answer[index])
    message = (f"{prefix}{count} of {answer.numel()} values wrong; first at index {list(index)}: "
               f"got {got:.6g}, expected {want:.6g} (tolerance {float(bound[index]):.2g})")
    return Comparison("failed", message, shape, shape, max_error, float(bound[index]), count, index, output=name)
