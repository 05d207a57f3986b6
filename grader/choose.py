"""Which assignment a submission is for, from the names it defines.

`grade sub.ipynb` without `--assignment` reads the submission (parsing only, nothing
runs) and picks the bundled assignment whose items' names it defines most of; a file
that defines none of any assignment's names, or as many of two, is a usage error that
lists the candidates, so a wrong guess never grades a file against the wrong rules.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import Assignment
from .errors import UsageError
from .submission import Submission


@dataclass(frozen=True)
class Choice:
    assignment: Assignment
    names: tuple[str, ...]        # the assignment's names the submission defines


def defined_names(submission: Submission) -> set[str]:
    return {name for unit in submission.units for name in unit.defines}


def choose_for(submission: Submission, candidates: list[Assignment]) -> Choice:
    defined = defined_names(submission)
    scored = []
    for assignment in candidates:
        wanted = list(dict.fromkeys(item.python_name for item in assignment.items))
        found = tuple(name for name in wanted if name in defined)
        scored.append((len(found), len(found) / max(len(wanted), 1), assignment, found))
    listing = "; ".join(f"{a.id} ({', '.join(dict.fromkeys(i.python_name for i in a.items))})"
                        for a in candidates)
    if not scored or max(s[0] for s in scored) == 0:
        raise UsageError(f"{submission.path.name} defines none of the names an assignment grades "
                         f"(assignments: {listing}); pass --assignment")
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
    if len(scored) > 1 and scored[0][:2] == scored[1][:2]:
        tied = ", ".join(s[2].id for s in scored if s[:2] == scored[0][:2])
        raise UsageError(f"{submission.path.name} could be for {tied} (assignments: {listing}); "
                         "pass --assignment")
    return Choice(scored[0][2], scored[0][3])
