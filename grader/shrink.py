"""The smallest failing case: shrink a failure until no smaller input still fails.

A student learns more from "fails on a 1x1x4x3 input with a 3x3 kernel" than from the
first of forty failures. Starting from the smallest failing case (public ones first),
each parameter is reduced one step at a time (batch, channels, kernel, stride, padding,
dilation, height, width), keeping a step whenever the class still fails, until no step
does or the try budget is spent. The result is a case with explicit parameters that
`grade SUBMISSION --params ...` replays exactly.
"""
from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, replace

from .cases import Case, CaseParams, case_seed
from .compare import Comparison, compare
from .config import Assignment, ClassSpec
from .errors import UsageError
from .runner import CaseRun, WorkerSession

MAX_TRIES = 30
PARAM_ORDER = ("batch", "in_channels", "out_channels", "height", "width", "kernel_size", "stride",
               "padding", "dilation", "dtype")


@dataclass(frozen=True)
class SmallestFailure:
    case: Case
    run: CaseRun
    comparison: Comparison
    started_from: str      # the graded case the search began with
    tries: int
    replay: str


def format_params(params: CaseParams) -> str:
    return ",".join(f"{name}={getattr(params, name)}" for name in PARAM_ORDER)


def parse_params(text: str) -> CaseParams:
    """`batch=1,in_channels=2,...` (every parameter) -> CaseParams, for --params."""
    values = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in PARAM_ORDER:
            raise UsageError(f"--params: unknown parameter {name!r} (expected {', '.join(PARAM_ORDER)})")
        if name == "dtype":
            if value not in ("float32", "float64"):
                raise UsageError("--params: dtype is float32 or float64")
            values[name] = value
        else:
            try:
                values[name] = int(value)
            except ValueError:
                raise UsageError(f"--params: {name} must be an integer") from None
    missing = [name for name in PARAM_ORDER if name not in values]
    if missing:
        raise UsageError(f"--params: missing {', '.join(missing)}")
    params = CaseParams(**values)
    if min(values[n] for n in PARAM_ORDER if n not in ("dtype", "padding")) < 1 or params.padding < 0 \
            or params.output_height < 1 or params.output_width < 1:
        raise UsageError("--params: these parameters give no output")
    return params


def custom_case(params: CaseParams, device: str, seed: int, classes: tuple[str, ...]) -> Case:
    """A case outside the config's groups, named and seeded by its parameters alone."""
    case_id = "custom-" + hashlib.sha256(format_params(params).encode()).hexdigest()[:6]
    return Case(id=case_id, group="custom", params=params, device=device, seed=case_seed(seed, case_id),
                hidden=False, inputs="random", classes=classes)


def smaller_neighbours(params: CaseParams) -> list[CaseParams]:
    steps = []
    for name, target in (("batch", 1), ("out_channels", 1), ("in_channels", 1)):
        if getattr(params, name) > target:
            steps.append(replace(params, **{name: target}))
            if getattr(params, name) > target + 1:
                steps.append(replace(params, **{name: getattr(params, name) - 1}))
    for name, floor in (("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1)):
        if getattr(params, name) > floor:
            steps.append(replace(params, **{name: getattr(params, name) - 1}))
    for name in ("height", "width"):
        value = getattr(params, name)
        for smaller in sorted({value // 2, value - 1}, reverse=True):
            if 1 <= smaller < value:
                steps.append(replace(params, **{name: smaller}))
    return [p for p in steps if p.output_height >= 1 and p.output_width >= 1]


def smallest_failure_check(assignment: Assignment, seed: int, submission_path: str):
    """The after-class check for runner.run_submission."""
    def is_failure(run: CaseRun) -> bool:
        return compare(run, assignment.tolerance).verdict in ("failed", "error")

    def check(session: WorkerSession, spec: ClassSpec, runs: tuple[CaseRun, ...]) -> SmallestFailure | None:
        failing = [r for r in runs if r.case.group != "custom" and is_failure(r)]
        if not failing:
            return None
        start = min(failing, key=lambda r: (r.case.hidden, r.case.params.elements, r.case.id, r.case.device))
        params, best, tries = start.case.params, start, 0
        time_limit = spec.case_s or assignment.limits.case_s
        improved = True
        while improved and tries < MAX_TRIES:
            improved = False
            for candidate in smaller_neighbours(params):
                if tries >= MAX_TRIES:
                    break
                case = custom_case(candidate, start.case.device, seed, (spec.name,))
                run = session.run_case(case, spec.name, time_limit, spec.forbidden_operators)
                tries += 1
                if run.status == "timeout":
                    improved = False
                    break
                if is_failure(run):
                    params, best, improved = candidate, run, True
                    break
        if best.case.group == "custom":
            replay = (f"grade {shlex.quote(submission_path)} --params {format_params(params)} "
                      f"--device {start.case.device} --seed {seed}")
        else:  # nothing smaller fails: the graded case itself is the smallest
            replay = f"grade {shlex.quote(submission_path)} --case {best.case.id} --device {start.case.device} --seed {seed}"
        return SmallestFailure(case=best.case, run=best, comparison=compare(best, assignment.tolerance),
                               started_from=start.case.id, tries=tries, replay=replay)

    return check
