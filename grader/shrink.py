"""The smallest failing case: shrink a failure until no smaller input still fails.

A student learns more from "fails on a 1x1x4x3 input" than from the first of forty
failures. Starting from the smallest failing case (public ones first), each step tries
the assignment's one-step-smaller neighbours of the parameters (its subject's
`smaller`), keeping a step whenever the item still fails, until no step does or the try
budget is spent. The search knows no parameter: it sees parameters, a way to make them
smaller, and a "still fails?" run. The result is a case with explicit parameters that
`grade SUBMISSION --params ...` replays exactly.
"""
from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from typing import Callable

from .cases import Case, case_seed
from .compare import Comparison, judge_run
from .config import Assignment, ItemSpec
from .errors import UsageError
from .params import Params, format_params
from .runner import CaseRun, WorkerSession

MAX_TRIES = 30
FAILING = ("failed", "error")


@dataclass(frozen=True)
class SmallestFailure:
    case: Case
    run: CaseRun
    comparison: Comparison
    started_from: str      # the graded case the search began with
    tries: int
    replay: str


def parse_params(text: str, assignment: Assignment, item_names: tuple[str, ...] | None = None) -> Params:
    """`name=value,...` (every parameter the items use) -> Params, for --params."""
    space = assignment.subject.space
    wanted = params_of_items(assignment, item_names)
    values = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in wanted:
            raise UsageError(f"--params: unknown parameter {name!r} (expected {', '.join(wanted)})")
        try:
            values[name] = space[name].parse_text(value.strip())
        except ValueError as exc:
            raise UsageError(f"--params: {name}: {exc}") from None
    missing = [name for name in wanted if name not in values]
    if missing:
        raise UsageError(f"--params: missing {', '.join(missing)}")
    params = Params.of(values, wanted)
    if not assignment.subject.accept(params, {}):
        raise UsageError("--params: these parameters make no case")
    return params


def params_of_items(assignment: Assignment, item_names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The parameters the items' tasks use (all items when none are named), in the subject's order."""
    configured = {spec.name: spec for spec in assignment.all_items}
    items = [configured[n] for n in item_names] if item_names else list(assignment.items)
    wanted = set()
    for item in items:
        task = assignment.task_of(item)
        wanted.update(task.parameters if task.parameters is not None else assignment.subject.space)
    return tuple(name for name in assignment.subject.space if name in wanted)


def items_for_params(assignment: Assignment, params: Params) -> tuple[str, ...]:
    """The items whose task takes exactly these parameters."""
    return tuple(item.name for item in assignment.items if params_of_items(assignment, (item.name,)) == tuple(params))


def custom_case(assignment: Assignment, params: Params, device: str, seed: int, items: tuple[str, ...]) -> Case:
    """A case outside the config's groups, named and seeded by its parameters alone."""
    text = format_params(params, assignment.subject.space)
    case_id = "custom-" + hashlib.sha256(text.encode()).hexdigest()[:6]
    return Case(id=case_id, group="custom", params=params, device=device, seed=case_seed(seed, case_id),
                hidden=False, inputs=assignment.subject.input_kinds[0], items=items,
                settings=Params(assignment.settings))


@dataclass(frozen=True)
class SmallestFailures:
    """What shrinking found for one item (a WorkerRun extra): the smallest failing case of each
    likely cause found so far (keyed by cause and pattern), and one for the item as a whole."""
    overall: SmallestFailure | None
    by_cause: tuple[tuple[tuple, SmallestFailure], ...] = ()


def cause_key(cause) -> tuple:
    return (cause.cause, cause.pattern)


CAUSES_SHRUNK = 3          # the costliest causes get a smallest case each
LATER_CAUSE_TRIES = 12     # the first gets MAX_TRIES, the others fewer


def smallest_failure_check(assignment: Assignment, seed: int, submission_path: str,
                           judged: Callable[[CaseRun], Comparison] | None = None):
    """The after-item check for runner.run_submission. It is given to both phases: after the
    public cases it shrinks a public failure of each of the costliest likely causes (and of the
    item); after the hidden ones only what is still without one. `judged`: a graded case's
    comparison as it was judged when it arrived (the stored run may no longer hold its output)."""
    from .diagnose import explains, likely_causes
    from .score import CaseResult, case_values

    found: dict[str, dict] = {}
    subject = assignment.subject
    # A replay's --params must be one item's: name the item unless every configured item takes
    # the same ones (then the replay runs them all, as the full grading did).
    needs_item = len({params_of_items(assignment, (i.name,)) for i in assignment.all_items}) > 1
    if judged is None:
        def judged(run: CaseRun) -> Comparison:
            return judge_run(assignment, assignment.item(run.item), run)

    def result_of(run: CaseRun) -> CaseResult:
        comparison = judged(run)
        return CaseResult(run.case, run.item, comparison.verdict, comparison.message, comparison, run)

    def check(session: WorkerSession, spec: ItemSpec, runs: tuple[CaseRun, ...]) -> SmallestFailures | None:
        results = [result_of(r) for r in runs if r.case.group != "custom"]
        failing = [r for r in results if r.status in FAILING]
        if not failing:
            return None
        mine = found.setdefault(spec.name, {"overall": None, "causes": {}})
        causes = likely_causes(assignment, spec, tuple(results), case_values(assignment, spec, results))
        tries_left = MAX_TRIES + LATER_CAUSE_TRIES * (CAUSES_SHRUNK - 1)
        for number, cause in enumerate(causes[:CAUSES_SHRUNK]):
            if cause_key(cause) in mine["causes"]:
                continue
            keys = set(cause.cases)
            starts = [r for r in failing if r.case.key in keys]
            if not starts:          # it explains only time-outs: nothing to shrink
                continue
            start = _smallest(starts)
            budget = min(MAX_TRIES if number == 0 else LATER_CAUSE_TRIES, tries_left)
            shrunk = _shrink(session, spec, start, budget,
                             lambda result, cause=cause: explains(assignment, spec, cause, result))
            tries_left -= shrunk.tries
            mine["causes"][cause_key(cause)] = shrunk
        if mine["overall"] is None:
            first = mine["causes"].get(cause_key(causes[0])) if causes else None
            mine["overall"] = first or _shrink(session, spec, _smallest(failing), MAX_TRIES,
                                               lambda result: result.status in FAILING)
        return SmallestFailures(mine["overall"], tuple(mine["causes"].items()))

    def _smallest(results: list) -> CaseResult:
        return min(results, key=lambda r: (r.case.hidden, subject.size(r.case.params), r.case.id, r.case.device))

    def _shrink(session: WorkerSession, spec: ItemSpec, start: CaseResult, budget: int, keeps) -> SmallestFailure:
        """Step to smaller neighbours while the item still fails in a way `keeps` accepts."""
        params, best, best_comparison, tries = start.case.params, start.run, start.comparison, 0
        time_limit = spec.case_s or assignment.limits.case_s
        improved = True
        while improved and tries < budget:
            improved = False
            for candidate in subject.smaller(params):
                if tries >= budget:
                    break
                case = custom_case(assignment, candidate, start.case.device, seed, (spec.name,))
                run = session.run_case(case, spec, time_limit)
                tries += 1
                if run.status in ("timeout", "not_run"):
                    improved = False
                    break
                comparison = judge_run(assignment, spec, run)
                result = CaseResult(run.case, run.item, comparison.verdict, comparison.message, comparison, run)
                if comparison.verdict in FAILING and keeps(result):
                    params, best, best_comparison, improved = candidate, run, comparison, True
                    break
        item_flag = f" --item {spec.name}" if needs_item else ""
        device = start.case.device
        if best.case.group == "custom":
            replay = (f"grade {shlex.quote(submission_path)}{item_flag} --params "
                      f"{format_params(params, subject.space)} --device {device} --seed {seed}")
        else:  # nothing smaller fails: the graded case itself is the smallest
            replay = (f"grade {shlex.quote(submission_path)}{item_flag} --case {best.case.id} "
                      f"--device {device} --seed {seed}")
        return SmallestFailure(case=best.case, run=best.without_tensors(), comparison=best_comparison,
                               started_from=start.case.id, tries=tries, replay=replay)

    return check
