"""Likely causes: read the pattern of passes and failures, and the numbers, the way a TA would.

The rules are the assignment's (its task's `likely_causes`): what a swapped axis or a
wrong variance looks like is knowledge about the subject. This stage asks for them and
holds them to the harness's rules: a cause is one the assignment declares, rules only
ever add explanations (they never change a verdict or a score), and a rule that fails is
a cause not named, never a grading failure.
"""
from __future__ import annotations

import os

from .config import Assignment, ItemSpec
from .subject import LikelyCause


def likely_causes(assignment: Assignment, item: ItemSpec, results: tuple) -> tuple[LikelyCause, ...]:
    ran = [r for r in results if r.status not in ("skipped", "unsupported")]
    if not any(r.status != "passed" for r in ran):
        return ()
    try:
        found = assignment.task_of(item).likely_causes(tuple(results), item.option_map)
    except Exception:
        # Whatever a submission returned, one rule tripping on it must not cost the report.
        if os.environ.get("GRADER_DEBUG"):
            raise
        return ()
    declared = set(assignment.subject.causes)
    unknown = [c.cause for c in found if c.cause not in declared]
    if unknown:
        raise ValueError(f"assignment {assignment.id}: likely cause {unknown[0]!r} is not in its subject's causes")
    return tuple(found)
