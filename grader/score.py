"""Turn case runs into verdicts and points.

A class's points are split between its case groups by weight; within a group,
the share earned is the fraction of its counted cases that passed. Skipped
cases (CUDA on a machine without it) count neither for nor against; an
unsupported case (padding= or dilation= refused) earns nothing but is reported
apart from a wrong answer.
"""
from __future__ import annotations

from dataclasses import dataclass

from .cases import Case
from .compare import Comparison, compare
from .config import Assignment
from .methods import MethodCheck, SpeedCheck, lookup
from .runner import CaseRun, LoadOutcome, WorkerRun
from .shortcuts import ScanRules, scan_class
from .submission import Submission

CASE_STATUSES = ("passed", "failed", "error", "timeout", "unsupported", "skipped")


@dataclass(frozen=True)
class CaseResult:
    case: Case
    class_name: str
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
class ClassReport:
    name: str
    status: str                 # graded, missing, load_error
    score: float
    max_score: float
    message: str
    violations: tuple[Violation, ...]
    groups: tuple[GroupSummary, ...]
    cases: tuple[CaseResult, ...]
    likely_causes: tuple = ()          # diagnose.LikelyCause entries, added by the pipeline
    smallest_failure: object = None    # shrink.SmallestFailure, added by the pipeline
    # What the static scan found that costs nothing: forbidden names the code mentions but that
    # no case reached (static Violations with kind shortcut; never in `violations`).
    static_notes: tuple[Violation, ...] = ()
    methods: tuple[MethodCheck, ...] = ()      # the helper methods checked one at a time
    speed: SpeedCheck | None = None            # timed against torch (classes with speed: true)

    def first_failure(self, include_hidden: bool = True) -> CaseResult | None:
        for result in self.cases:
            if result.status not in ("passed", "skipped") and (include_hidden or not result.case.hidden):
                return result
        return None


def judge(run: CaseRun, assignment: Assignment) -> CaseResult:
    comparison = compare(run, assignment.tolerance)
    return CaseResult(case=run.case, class_name=run.class_name, status=comparison.verdict,
                      message=comparison.message, comparison=comparison, run=run)


def class_reports(assignment: Assignment, submission: Submission, worker_run: WorkerRun,
                  cases: tuple[Case, ...]) -> tuple[ClassReport, ...]:
    reports = []
    for spec in assignment.classes:
        status, message = _class_status(spec.name, worker_run.load, submission)
        results = tuple(judge(run, assignment) for run in worker_run.runs if run.class_name == spec.name)
        groups = _group_summaries(assignment, spec.name, results) if status == "graded" else ()
        found, speed = lookup(worker_run.extras, spec.name) if status == "graded" else (None, None)
        methods = found.checks if found is not None else ()
        score = _class_points(spec.points, groups, methods, speed) if status == "graded" else 0.0
        violations, notes = _violations(spec.forbidden_operators, results, submission, spec.name, methods,
                                        scan_rules(assignment, spec.forbidden_operators)) \
            if status == "graded" else ((), ())
        penalized = [v for v in violations if v.penalized]
        if penalized and assignment.violation_penalty == "zero":
            score = 0.0
            message = "scored 0: " + penalized[0].describe()
        reports.append(ClassReport(name=spec.name, status=status, score=score, max_score=spec.points,
                                   message=message, violations=violations, groups=groups, cases=results,
                                   methods=methods, speed=speed, static_notes=notes))
    return tuple(reports)


def scan_rules(assignment: Assignment, forbidden: tuple[str, ...]) -> ScanRules:
    """The static scan's names: the assignment's, and every forbidden operator's own name."""
    names = set(assignment.forbidden_names) | {op.rpartition("::")[2] for op in forbidden}
    return ScanRules(forbidden_names=frozenset(names), module_names=assignment.module_only_names)


def _violations(forbidden: tuple[str, ...], results: tuple[CaseResult, ...], submission: Submission,
                class_name: str, methods: tuple[MethodCheck, ...] = (), rules: ScanRules = ScanRules()
                ) -> tuple[tuple[Violation, ...], tuple[Violation, ...]]:
    """(violations, notes): every violation costs points (under violation_penalty: zero); a note
    is a forbidden name that the source mentions and no case reached."""
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
    for check in methods:          # a helper that __call__ never reaches is still checked
        for operator, location, case_id in check.violations:
            if operator not in found:
                kind = "shortcut" if operator in forbidden else "tampering"
                found[operator] = Violation(operator, "dispatch", kind, location, case_id)
    violations, notes = list(found.values()), []
    for finding in scan_class(submission, class_name, rules):
        violation = Violation(finding.name, "static", finding.kind, finding.location, None)
        if finding.penalized:
            violations.append(violation)
        elif not found:        # a mention the recorder also saw adds nothing but noise
            notes.append(violation)
    return tuple(violations), tuple(notes)


def _class_status(name: str, load: LoadOutcome, submission: Submission) -> tuple[str, str]:
    if load.fatal is not None:
        return "load_error", load.fatal
    state = load.state(name)
    if state == "class":
        return "graded", ""
    defining = {u.index for u in submission.units if name in u.defines}
    for failure in load.failures:
        if failure.index in defining:
            where = f"{failure.filename}, line {failure.line}"
            return "load_error", f"its definition failed ({where}): {failure.error.message}"
    if state == "missing":
        skipped_hint = ""
        if any(name in note.message for note in submission.notes):
            skipped_hint = " (a statement mentioning it was skipped while loading)"
        return "missing", f"no {name} defined in the submission{skipped_hint}"
    return "load_error", f"{name} is {state}"


def _group_summaries(assignment: Assignment, class_name: str,
                     results: tuple[CaseResult, ...]) -> tuple[GroupSummary, ...]:
    groups = [(g.name, g.description, g.hidden, g.weight) for g in assignment.groups_for(class_name)]
    if any(r.case.group == "custom" for r in results):   # a replay with --params
        groups.append(("custom", "cases given with --params", False, 1.0))
    summaries = []
    for name, description, hidden, weight in groups:
        in_group = [r for r in results if r.case.group == name]
        counts = tuple((status, sum(1 for r in in_group if r.status == status)) for status in CASE_STATUSES)
        summaries.append(GroupSummary(name=name, description=description, hidden=hidden, weight=weight,
                                      counts=counts))
    return tuple(summaries)


def _class_points(points: float, groups: tuple[GroupSummary, ...], methods: tuple[MethodCheck, ...],
                  speed: SpeedCheck | None) -> float:
    """The case groups share what the checked methods and the speed check do not take: a
    method's points are earned by the fraction of its cases it passed, speed points when the
    class is vectorized. Points of a check that did not run (no reference) go to the groups."""
    carved = sum(m.points for m in methods if m.status != "not_run")
    earned = sum(m.score for m in methods)
    if speed is not None and speed.status != "not_run":
        carved += speed.points
        earned += speed.score
    return round(_points(max(points - carved, 0.0), groups) + earned, 4)


def _points(points: float, groups: tuple[GroupSummary, ...]) -> float:
    weights = sum(g.weight for g in groups if g.counted)
    if weights == 0:
        return 0.0
    earned = sum(g.weight * g.count("passed") / g.counted for g in groups if g.counted)
    return round(points * earned / weights, 4)
