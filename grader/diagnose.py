"""Likely causes: every independent reason an item fails, the way a TA would write them.

Two kinds of evidence, in this order:

1. the assignment's own rules (its task's `likely_causes`): mechanisms recognised in a
   failure itself (a wrong dtype, a shape that is the answer's with one parameter ignored,
   an input changed in place); each names the failing cases it explains;
2. patterns over the parameters of what is left: the assignment declares features of a case
   (`Task.features`: "height != width", "more than one output channel", ...) and the engine
   finds the simplest description of where the rest fails: one feature ("fails 10 of 14 cases
   with height != width, 0 of 26 without"), or two together ("passes only when there is one
   filter and the output is 1x1"). The failures a pattern explains are set aside and the search
   repeats, so a second, independent pattern is named too.

Each cause is ranked by the points its failing cases cost, costliest first; a minor cause
(one group's dtype) never hides a major one. Rules only ever add explanations: they never
change a verdict or a score, and a rule that trips over a strange output names no cause
instead of failing the grading.
"""
from __future__ import annotations

import os
from dataclasses import replace

from .config import Assignment, ItemSpec
from .subject import Feature, LikelyCause, Pattern

# The harness's own cause: a pattern over the parameters that no assignment cause names.
FAILURE_PATTERN = "failure_pattern"
MIN_SEPARATION = 0.6        # fail rate where the pattern holds minus where it does not
PAIR_GAIN = 0.15            # a two-feature pattern must rank this much better than one
COVERAGE_WEIGHT = 0.2       # what covering all of the failures adds to a pattern's rank
MIN_FAILURES = 2            # a pattern needs at least this many failures to stand on
MAX_PATTERNS = 3
COUNTED = ("passed", "failed", "error", "timeout")


def likely_causes(assignment: Assignment, item: ItemSpec, results: tuple,
                  values: dict[str, float] | None = None) -> tuple[LikelyCause, ...]:
    """The item's causes, costliest first. `values`: each case key's points (what failing it
    costs); without them every failure costs the same."""
    ran = [r for r in results if r.status in COUNTED]
    failing = [r for r in ran if r.status != "passed"]
    if not failing:
        return ()
    task = assignment.task_of(item)
    try:
        specific = list(task.likely_causes(tuple(results), item.option_map))
        patterns = _patterns(ran, failing, specific, {f.name: f for f in task.features})
    except Exception:
        # Whatever a submission returned, one rule tripping on it must not cost the report.
        if os.environ.get("GRADER_DEBUG"):
            raise
        return ()
    unknown = [c.cause for c in specific if c.cause not in set(assignment.subject.causes)]
    if unknown:
        raise ValueError(f"assignment {assignment.id}: likely cause {unknown[0]!r} is not in its causes")
    causes = specific + patterns
    worth = values or {}
    priced = [replace(c, points=round(sum(worth.get(key, 1.0) for key in c.cases), 4)) for c in causes]
    return tuple(sorted(priced, key=lambda c: -c.points))


def explains(assignment: Assignment, item: ItemSpec, cause: LikelyCause, result) -> bool:
    """Whether one more failing case (a smaller one, while shrinking) shows the same cause."""
    if result.status not in ("failed", "error", "timeout"):
        return False
    if cause.pattern is not None:
        features = {f.name: f for f in assignment.task_of(item).features}
        return cause.pattern.failing_region(result.case.params, features)
    try:
        found = assignment.task_of(item).likely_causes((result,), item.option_map)
    except Exception:
        return False
    return any(c.cause == cause.cause and result.case.key in c.cases for c in found)


def _patterns(ran: list, failing: list, specific: list[LikelyCause], features: dict[str, Feature]) -> list[LikelyCause]:
    explained = {key for cause in specific for key in cause.cases}
    found = []
    population = [r for r in ran if r.case.key not in explained]
    for _ in range(MAX_PATTERNS):
        left = [r for r in population if r.status != "passed"]
        if len(left) < MIN_FAILURES:
            break
        best = _best_pattern(population, features)
        if best is None:
            break
        pattern, separation, main = best
        hits = [r for r in left if pattern.failing_region(r.case.params, features)]
        if len(hits) < MIN_FAILURES:
            break
        found.append(_describe(pattern, main, population, hits, features))
        keys = {r.case.key for r in hits}
        population = [r for r in population if r.case.key not in keys]
    return found


class _Masks:
    """The population's failures and each feature's truth as bit masks (bit i: population[i]),
    computed once, so that ranking hundreds of candidate patterns is integer arithmetic."""

    def __init__(self, population: list, features: dict[str, Feature]):
        self.all = (1 << len(population)) - 1
        self.failing = sum(1 << i for i, r in enumerate(population) if r.status != "passed")
        self.holds = {name: sum(1 << i for i, r in enumerate(population) if feature.holds(r.case.params))
                      for name, feature in features.items()}

    def region(self, pattern: Pattern) -> int:
        inside = self.all
        for name, value in pattern.literals:
            inside &= self.holds[name] if value else self.all & ~self.holds[name]
        return inside if pattern.fails_when else self.all & ~inside


def _best_pattern(population: list, features: dict[str, Feature]):
    """(pattern, its separation, the single literal that separates best) or None. Patterns are
    ranked by separation plus a little for the share of the failures they cover (a pattern
    around one stray failure is no explanation); two features together are chosen only when
    they rank clearly better than one."""
    masks = _Masks(population, features)
    literals = []
    for name in features:
        if masks.holds[name] not in (0, masks.all):      # the feature varies over the population
            literals.extend([(name, True), (name, False)])
    failures = masks.failing.bit_count()
    singles = [_rank(Pattern((literal,)), masks, failures) for literal in literals]
    best = max(singles, key=lambda s: s[2], default=None)
    if best is None:
        return None
    main = best[0].literals[0]
    pairs = []
    for i, first in enumerate(literals):
        for second in literals[i + 1:]:
            if first[0] != second[0]:
                pairs.extend(_rank(Pattern((first, second), fails_when), masks, failures)
                             for fails_when in (True, False))
    pair = max(pairs, key=lambda s: s[2], default=None)
    if pair is not None and pair[2] >= best[2] + PAIR_GAIN:
        best = pair
    if best[1] < MIN_SEPARATION:
        return None
    return best[0], best[1], main


def _rank(pattern: Pattern, masks: _Masks, failures: int):
    """(pattern, separation, rank): separation is 0 where it covers fewer than MIN_FAILURES."""
    inside = masks.region(pattern)
    outside = masks.all & ~inside
    covered = (inside & masks.failing).bit_count()
    if not inside or not outside or covered < MIN_FAILURES:
        return pattern, 0.0, 0.0
    separation = covered / inside.bit_count() - (outside & masks.failing).bit_count() / outside.bit_count()
    return pattern, separation, separation + COVERAGE_WEIGHT * covered / max(failures, 1)


def _describe(pattern: Pattern, main: tuple[str, bool], population: list, hits: list,
              features: dict[str, Feature]) -> LikelyCause:
    inside = [r for r in population if pattern.failing_region(r.case.params, features)]
    outside = [r for r in population if not pattern.failing_region(r.case.params, features)]
    bad_in = sum(1 for r in inside if r.status != "passed")
    bad_out = sum(1 for r in outside if r.status != "passed")
    example = next((r for r in hits if not r.case.hidden), hits[0])
    words = [features[name].when if value else features[name].unless for name, value in pattern.literals]
    if pattern.fails_when:
        evidence = (f"fails {bad_in} of {len(inside)} cases with {' and '.join(words)}, "
                    f"{bad_out} of {len(outside)} without; e.g. {example.case.id}")
    else:
        evidence = (f"passes only when {' and '.join(words)}: fails {bad_in} of {len(inside)} other cases, "
                    f"{bad_out} of {len(outside)} such cases; e.g. {example.case.id}")
    hint = _permuted(example)
    if hint:
        evidence += f"; {hint}"
    # The cause is that of the feature that separates best on its own, when the pattern's
    # failing side is where that feature holds ("and the output is larger than 1x1" refines
    # a height/width swap; it does not make it another bug).
    failing_side = pattern.literals if pattern.fails_when else tuple((n, not v) for n, v in pattern.literals)
    name, holds = main
    cause = features[name].cause if holds and main in failing_side else None
    return LikelyCause(cause or FAILURE_PATTERN, evidence, cases=tuple(r.case.key for r in hits), pattern=pattern)


def _permuted(result) -> str | None:
    actual, expected = result.comparison.actual_shape, result.comparison.expected_shape
    if actual is None or tuple(actual) == tuple(expected) or sorted(actual) != sorted(expected):
        return None
    return (f"its output {list(actual)} has the right sizes in the wrong order (expected {list(expected)}): "
            "a view/transpose mixes up its dimensions")
