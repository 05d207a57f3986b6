"""The seam: what an assignment brings to the harness, and nothing the harness assumes.

The harness (grader/) is the pipeline, the sandbox, the report, the CLI. An assignment
is a folder, `assignments/<id>/`, with its config (`assignment.yaml`) and a module
(`subject.py`, or the file the config's `subject:` names) whose `SUBJECT` is an instance
of a `Subject` subclass. It says, for its own subject only:

- its parameter space (`parameters`, drawn in that order; `settings` that bound a draw
  without being drawn), the `constraints` a group may `require`, the input kinds a group
  may ask for (`input_kinds`), and how a draw is adjusted and accepted (`draw`, `accept`);
- its tasks: what a graded item computes (`Task`): whether it is a class or a function
  and what signature it must have, which parameters it uses, the case's input tensors
  (`inputs`), the call plan the worker runs (`plan`, grader/plan.py), the float64 answer
  with a tolerance per element (`expected`), its likely-cause rules (`likely_causes`) and
  its extra checks (`checks`, e.g. helper methods one at a time, speed);
- its tolerance settings' defaults, its forbidden operators and forbidden Python names,
  how a case reads in a report (`describe`) and how to shrink a failing one (`smaller`).

Everything here runs in the grader's own process, never in the worker. An assignment's
reference solution (reference/<id>.py) is imported by its subject only where needed and
is absent from a student's copy of the grader: checks that need it say `not_run` there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from .params import Parameter, Params
from .plan import Plan, Signature

if TYPE_CHECKING:
    from .cases import Case


@dataclass(frozen=True)
class Expected:
    """The answer for one output of a plan: float64 values on the CPU, the largest error each
    element may have (broadcastable to `value`), and the dtype the output must have."""
    value: torch.Tensor
    bound: torch.Tensor
    dtype: str


@dataclass(frozen=True)
class Feature:
    """A property of a case's parameters, in words for when it holds and when it does not,
    from which the harness describes where an item fails (grader/diagnose.py). `cause`: the
    assignment's cause for failing exactly where it holds, if it has one."""
    name: str
    holds: Callable[[Params], bool]
    when: str
    unless: str
    cause: str | None = None


@dataclass(frozen=True)
class Pattern:
    """Where a set of failures lies: `literals` (feature, holds?) joined by "and"; `fails_when`
    (the failures are where it holds) or else "passes only when" it holds."""
    literals: tuple[tuple[str, bool], ...]
    fails_when: bool = True

    def failing_region(self, params: Params, features: Mapping[str, Feature]) -> bool:
        inside = all(features[name].holds(params) == value for name, value in self.literals)
        return inside if self.fails_when else not inside


@dataclass(frozen=True)
class LikelyCause:
    """A named cause (one of the assignment's `causes`, or the harness's failure_pattern) with
    the evidence for it. `cases`: the keys (id@device) of the failing cases it explains, so the
    report can show a smallest failing case per cause; `points`: what those failures cost;
    `pattern`: where it fails, for a cause found from the parameters."""
    cause: str
    evidence: str
    cases: tuple[str, ...] = ()
    points: float = 0.0
    pattern: Pattern | None = None


class Task:
    """What one kind of graded item computes. Subclass per task; one instance per subject."""

    kind: str = "class"                  # class or function
    python_name: str | None = None       # the name to look up when an item does not give one
    signature: Signature = Signature()   # what the plan passes to construct or call the item
    parameters: tuple[str, ...] | None = None   # the subject's parameters a case of it has (None: all)
    # The parameters it draws from a group's config, when they differ from `parameters` (a
    # count and a size that the subject's draw turns into a derived shape).
    draws: tuple[str, ...] | None = None
    check_names: tuple[str, ...] = ()    # extra checks an item of this task may configure
    option_defaults: Mapping[str, Any] = {}     # per-item options an instructor may set
    option_choices: Mapping[str, tuple] = {}    # the values an option may take, where listed
    input_labels: Mapping[str, str] = {}        # how messages name the input tensors
    features: tuple[Feature, ...] = ()          # what likely-cause patterns are described with

    def inputs(self, case: "Case") -> dict[str, torch.Tensor]:
        """The case's input tensors, on the CPU, depending only on (seed, case id)."""
        raise NotImplementedError

    def plan(self, case: "Case", options: Mapping[str, Any]) -> Plan:
        raise NotImplementedError

    def expected(self, case: "Case", inputs: Mapping[str, torch.Tensor], tolerance: Mapping[str, float],
                 options: Mapping[str, Any]) -> dict[str, Expected]:
        """Per output the plan names: the float64 answer and its tolerance."""
        raise NotImplementedError

    def alternatives(self, case: "Case", inputs: Mapping[str, torch.Tensor], tolerance: Mapping[str, float],
                     options: Mapping[str, Any]) -> dict[str, dict[str, Expected]]:
        """Other answers this item accepts (an instructor's option, say), by a label the report
        shows: a case passes when every output matches the answer or one alternative."""
        return {}

    def likely_causes(self, results: tuple, options: Mapping[str, Any]) -> tuple[LikelyCause, ...]:
        """Causes for one item's case results (score.CaseResult), most costly first."""
        return ()

    def checks(self, context) -> tuple:
        """Results of the item's configured checks (grader.checks.CheckResult), run with the
        worker still up after the item's cases (context: grader.checks.CheckContext)."""
        return ()


class Subject:
    """An assignment's parent-side code; see the module docstring."""

    parameters: tuple[Parameter, ...] = ()
    settings: tuple[Parameter, ...] = ()
    constraints: Mapping[str, Callable[[Params], bool]] = {}
    input_kinds: tuple[str, ...] = ("random",)
    tolerance_defaults: Mapping[str, float] = {}
    tasks: Mapping[str, Task] = {}
    default_task: str | None = None
    causes: tuple[str, ...] = ()
    # aten operators (overload-packet names) that do the assignment's work for the student, by
    # default (the config's forbidden_operators replaces them; its forbidden_families add to them).
    forbidden_operators: tuple[str, ...] = ()
    # Library callables the worker resolves before any submission code runs (plan.Trusted).
    trusted_callables: tuple[str, ...] = ()

    def draw(self, values: dict[str, Any], require: tuple[str, ...], rng) -> dict[str, Any]:
        """A draw adjusted before it is checked (e.g. a `square` rule sets width = height),
        special words resolved and derived parameters set; `rng` (random.Random, the case's own)
        for what it draws."""
        return values

    def accept(self, params: Params, settings: Mapping[str, Any]) -> bool:
        """Whether drawn parameters make a case at all (e.g. a non-empty output, a size cap)."""
        return True

    def describe(self, params: Params) -> str:
        """A case's parameters in a few words, for tables and exports."""
        return ", ".join(f"{name} {value}" for name, value in params.values)

    def size(self, params: Params) -> float:
        """How big a case is, to start shrinking from the smallest failing one."""
        return 0.0

    def smaller(self, params: Params) -> list[Params]:
        """Neighbours one step smaller, most promising first, for the smallest failing case."""
        return []

    @property
    def space(self) -> dict[str, Parameter]:
        return {p.name: p for p in self.parameters}
