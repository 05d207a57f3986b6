"""Turn case runs into verdicts and points.

An item's points are split between its case groups by weight; within a group,
the share earned is the fraction of its counted cases that passed. Skipped
cases (CUDA on a machine without it) count neither for nor against; an
unsupported case (a keyword beyond the course's signature refused) earns nothing
but is reported apart from a wrong answer. Checks with points (checks.py) take
their share out of the item's points first.
"""
from __future__ import annotations

from dataclasses import dataclass

from .cases import Case
from .checks import CheckResult, results_of
from .compare import Comparison, judge_run
from .config import Assignment, ItemSpec
from .runner import CaseRun, LoadOutcome, WorkerRun, resolve_item
from .shortcuts import ScanRules, scan_class
from .submission import Submission

CASE_STATUSES = ("passed", "failed", "error", "timeout", "unsupported", "skipped")
ITEM_STATUSES = ("graded", "missing", "load_error", "wrong_form")


@dataclass(frozen=True)
class CaseResult:
    case: Case
    item: str
    status: str
    message: str
    comparison: Comparison
    run: CaseRun


@dataclass(frozen=True)
class GroupSummary:
    name: str
    description: str
    hidden: bool
    weight: float
    counts: tuple[tuple[str, int], ...]    # (status, count) for every CASE_STATUSES entry

    def count(self, status: str) -> int:
        return dict(self.counts)[status]

    @property
    def counted(self) -> int:
        return sum(n for status, n in self.counts if status != "skipped")


@dataclass(frozen=True)
class Violation:
    operator: str          # aten operator (dispatch) or the name in the source (static)
    source: str            # dispatch or static
    kind: str              # shortcut or tampering
    location: str | None   # "cell 5, line 12: code"
    case: str | None       # the first case that reached it (dispatch only)

    @property
    def penalized(self) -> bool:
        """A shortcut costs points when it ran; the source merely naming one (an unused helper,
        a comment-like string) is reported without a penalty. Tampering always costs."""
        return self.source == "dispatch" or self.kind == "tampering"

    def describe(self) -> str:
        # Recorded names: aten operators bare, other namespaces qualified, markers in <...>.
        bare = self.source == "dispatch" and "::" not in self.operator and not self.operator.startswith("<")
        what = f"aten.{self.operator}" if bare else self.operator
        verb = "works around the operator check with" if self.kind == "tampering" else "uses"
        where = f" at {self.location}" if self.location else ""
        when = f" (case {self.case})" if self.case else (
            " (found in the source)" if self.penalized else " (found in the source, never reached while grading: not penalized)")
        return f"{verb} {what}{where}{when}"


@dataclass(frozen=True)
class ItemReport:
    name: str
    kind: str                   # class or function
    python_name: str
    status: str                 # one of ITEM_STATUSES
    score: float
    max_score: float
    message: str
    violations: tuple[Violation, ...]
    groups: tuple[GroupSummary, ...]
    cases: tuple[CaseResult, ...]
    likely_causes: tuple = ()          # subject.LikelyCause entries, costliest first (the pipeline's)
    smallest_failure: object = None    # shrink.SmallestFailure, added by the pipeline
    cause_failures: tuple = ()         # a shrink.SmallestFailure (or None) per likely cause
    checks: tuple[CheckResult, ...] = ()
    # What the static scan found that costs nothing: forbidden names the code mentions but that
    # no case reached (static Violations with kind shortcut; never in `violations`).
    static_notes: tuple[Violation, ...] = ()

    def first_failure(self, include_hidden: bool = True) -> CaseResult | None:
        for result in self.cases:
            if result.status not in ("passed", "skipped") and (include_hidden or not result.case.hidden):
                return result
        return None


def judge(run: CaseRun, assignment: Assignment) -> CaseResult:
    comparison = judge_run(assignment, assignment.item(run.item), run)
    return CaseResult(case=run.case, item=run.item, status=comparison.verdict,
                      message=comparison.message, comparison=comparison, run=run)


def item_reports(assignment: Assignment, submission: Submission, worker_run: WorkerRun,
                 judged: dict[tuple[str, str], CaseResult] | None = None) -> tuple[ItemReport, ...]:
    """`judged`: results already computed as the runs arrived (keyed by item and case key)."""
    reports = []
    judged = judged or {}
    for spec in assignment.items:
        status, message = _item_status(assignment, spec, worker_run.load, submission)
        results = tuple(judged.get((spec.name, run.case.key)) or judge(run, assignment)
                        for run in worker_run.runs if run.item == spec.name)
        groups = _group_summaries(assignment, spec.name, results) if status == "graded" else ()
        checks = _credit_methods(results_of(worker_run.extras, spec.name), results) if status == "graded" else ()
        score = _item_points(spec.points, groups, checks) if status == "graded" else 0.0
        violations, notes = _violations(assignment, spec, results, submission, checks,
                                        _graded_unit(assignment, spec, worker_run.load)) \
            if status == "graded" else ((), ())
        penalized = [v for v in violations if v.penalized]
        if penalized and assignment.violation_penalty == "zero":
            score = 0.0
            message = "scored 0: " + penalized[0].describe()
        reports.append(ItemReport(name=spec.name, kind=spec.kind, python_name=spec.python_name, status=status,
                                  score=score, max_score=spec.points, message=message, violations=violations,
                                  groups=groups, cases=results, checks=checks, static_notes=notes))
    return tuple(reports)


def _credit_methods(checks: tuple[CheckResult, ...], results: tuple[CaseResult, ...]) -> tuple[CheckResult, ...]:
    """An item that passes every case it is graded on never loses method points: its helpers
    are, by its own __call__'s evidence, arranged as it consumes them, whatever layout a check
    expected. (Method checks exist to credit right helpers behind a wrong call, never to
    second-guess right answers.)"""
    from dataclasses import replace

    counted = [r for r in results if r.status not in ("skipped", "unsupported")]
    if not counted or any(r.status != "passed" for r in counted):
        return checks
    credited = []
    for check in checks:
        # A helper that reached a forbidden operator keeps its verdict: crediting covers layouts.
        if check.kind == "method" and check.status != "not_run" and not check.violations \
                and check.score < check.points:
            note = "credited: the item passes every case it is graded on"
            check = replace(check, status="passed", score=check.points,
                            message=f"{note} ({check.message})" if check.message else note)
        credited.append(check)
    return tuple(credited)


def scan_rules(assignment: Assignment, forbidden: tuple[str, ...]) -> ScanRules:
    """The static scan's names: the assignment's, and every forbidden operator's own name."""
    names = set(assignment.forbidden_names) | {op.rpartition("::")[2] for op in forbidden}
    return ScanRules(forbidden_names=frozenset(names), module_names=assignment.module_only_names)


def _violations(assignment: Assignment, spec: ItemSpec, results: tuple[CaseResult, ...], submission: Submission,
                checks: tuple[CheckResult, ...] = (), unit: int | None = None
                ) -> tuple[tuple[Violation, ...], tuple[Violation, ...]]:
    """(violations, notes): every violation costs points (under violation_penalty: zero); a note
    is a forbidden name that the source mentions and no case reached."""
    forbidden = spec.forbidden_operators
    found: dict[str, Violation] = {}
    for result in results:
        hits = dict(result.run.forbidden_hits)
        for operator, count in result.run.operators:
            if operator in forbidden and count and operator not in found:
                found[operator] = Violation(operator, "dispatch", "shortcut", hits.get(operator), result.case.id)
        for operator, location in hits.items():
            # A hit the recorder reports for an operator that is not forbidden is one it could not
            # vouch for (registered by the submission, a subclass's __torch_dispatch__, a changed
            # dispatch stack): that works around the check.
            if operator not in found:
                kind = "shortcut" if operator in forbidden else "tampering"
                found[operator] = Violation(operator, "dispatch", kind, location, result.case.id)
    for check in checks:          # a helper that the item's call never reaches is still checked
        for operator, location, case_id in check.violations:
            if operator not in found:
                kind = "shortcut" if operator in forbidden else "tampering"
                found[operator] = Violation(operator, "dispatch", kind, location, case_id)
    violations, notes = list(found.values()), []
    for finding in scan_class(submission, spec.python_name, scan_rules(assignment, forbidden), unit):
        violation = Violation(finding.name, "static", finding.kind, finding.location, None)
        if finding.penalized:
            violations.append(violation)
        elif not found:        # a mention the recorder also saw adds nothing but noise
            notes.append(violation)
    return tuple(violations), tuple(notes)


def _graded_unit(assignment: Assignment, spec: ItemSpec, load: LoadOutcome) -> int | None:
    """The kept statement that bound what the item is graded on, when the name has several
    bindings (steps 1 and 2 of a lesson under one name, a course check's rebinding)."""
    found = resolve_item(load, spec, assignment.task_of(spec).signature)
    return found.definition.unit if found.definition is not None else None


def _shadowed_note(spec: ItemSpec, load: LoadOutcome, submission: Submission, index: int | None) -> str:
    """When the graded definition is not the name's last binding (a notes file's step 1 before
    its step 2, a course check's rebinding), which one was graded and what came after."""
    bindings = load.found(spec.python_name)
    if index is None or index >= len(bindings) - 1:
        return ""
    units = {u.index: u for u in submission.units}

    def where(definition) -> str:
        unit = units.get(definition.unit)
        if unit is None:
            return "the scaffold"
        return f"cell {unit.cell}, line {unit.line}" if unit.cell is not None else f"line {unit.line}"

    graded = bindings[index]
    later = "; ".join(dict.fromkeys(
        f"{b.describe(spec.python_name)}{' (an object)' if b.instance else ''} at {where(b)}"
        for b in bindings[index + 1:]))
    return f"graded {graded.describe(spec.python_name)} at {where(graded)}; the name is bound again later: {later}"


def _item_status(assignment: Assignment, spec: ItemSpec, load: LoadOutcome, submission: Submission) -> tuple[str, str]:
    if load.fatal is not None:
        return "load_error", load.fatal
    found = resolve_item(load, spec, assignment.task_of(spec).signature)
    if found.state == "found":
        return "graded", _shadowed_note(spec, load, submission, found.index)
    name = spec.python_name
    if found.state == "wrong_form":
        return "wrong_form", found.message
    defining = {u.index for u in submission.units if name in u.defines}
    for failure in load.failures:
        if failure.index in defining:
            where = f"{failure.filename}, line {failure.line}"
            return "load_error", f"its definition failed ({where}): {failure.error.message}"
    if found.state == "missing" and found.message:
        return "missing", found.message
    if found.state == "missing":
        skipped_hint = ""
        if any(name in note.message for note in submission.notes):
            skipped_hint = " (a statement mentioning it was skipped while loading)"
        return "missing", f"no {name} defined in the submission{skipped_hint}"
    return "load_error", f"{name} is {found.message}"


def _group_summaries(assignment: Assignment, item_name: str,
                     results: tuple[CaseResult, ...]) -> tuple[GroupSummary, ...]:
    groups = [(g.name, g.description, g.hidden, g.weight) for g in assignment.groups_for(item_name)]
    if any(r.case.group == "custom" for r in results):   # a replay with --params
        groups.append(("custom", "cases given with --params", False, 1.0))
    summaries = []
    for name, description, hidden, weight in groups:
        in_group = [r for r in results if r.case.group == name]
        counts = tuple((status, sum(1 for r in in_group if r.status == status)) for status in CASE_STATUSES)
        summaries.append(GroupSummary(name=name, description=description, hidden=hidden, weight=weight,
                                      counts=counts))
    return tuple(summaries)


def _item_points(points: float, groups: tuple[GroupSummary, ...], checks: tuple[CheckResult, ...]) -> float:
    """The case groups share what the checks do not take: a method check's points are earned
    by the fraction of its cases it passed, the speed check's when the item is vectorized.
    Points of a check that did not run (no reference) go to the groups."""
    carved = sum(c.points for c in checks if c.status != "not_run")
    earned = sum(c.score for c in checks)
    return round(_points(max(points - carved, 0.0), groups) + earned, 4)


def case_values(assignment: Assignment, spec: ItemSpec, results, carved: float | None = None) -> dict[str, float]:
    """What each counted case is worth (its group's share of the points the cases share, over
    the group's counted cases), by case key: what failing it costs. `carved`: the points checks
    take (default: what the item's config gives them)."""
    carved = sum(p for _, p in spec.checks) if carved is None else carved
    groups = _group_summaries(assignment, spec.name, tuple(results))
    weights = sum(g.weight for g in groups if g.counted)
    shared = max(spec.points - carved, 0.0)
    share = {g.name: shared * g.weight / weights / g.counted for g in groups if g.counted and weights}
    return {r.case.key: share.get(r.case.group, 0.0) for r in results if r.status != "skipped"}


def _points(points: float, groups: tuple[GroupSummary, ...]) -> float:
    weights = sum(g.weight for g in groups if g.counted)
    if weights == 0:
        return 0.0
    earned = sum(g.weight * g.count("passed") / g.counted for g in groups if g.counted)
    return round(points * earned / weights, 4)
