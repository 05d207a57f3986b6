"""What students may see of an assignment: its public cases, under a public seed.

The instructor's config holds hidden groups and the seed the course is graded with.
A student's copy (`grade bundle --student`) and every self-check (`grade check`,
`grader.check`) use a view of it without the hidden groups and with another seed,
so neither the hidden cases nor the exact cases the instructor grades can be drawn.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import yaml

from .config import Assignment

# First line of a config written for students: its seed already is the public one.
PUBLIC_MARKER = "# grader public config"


def is_public_config(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().startswith(PUBLIC_MARKER)
    except OSError:
        return False


def public_seed(assignment: Assignment) -> int:
    """A seed derived one way from the whole instructor config (its hidden groups included),
    so the public seed cannot be turned back into the instructor's; never equal to it."""
    digest = hashlib.sha256(f"public-seed/{assignment.sha256}".encode()).digest()
    seed = int.from_bytes(digest[:4], "big") % 1_000_000_000
    return seed if seed != assignment.seed else seed + 1


def public_assignment(assignment: Assignment) -> Assignment:
    """The assignment without hidden groups; the seed becomes the public one unless the
    config already is a student's copy (whose seed is the public one)."""
    groups = tuple(g for g in assignment.groups if not g.hidden)
    seed = assignment.seed if is_public_config(assignment.path) else public_seed(assignment)
    return replace(assignment, groups=groups, seed=seed)


def only_items(assignment: Assignment, names: list[str] | tuple[str, ...]) -> Assignment:
    """The assignment restricted to some of its items (in the config's order)."""
    wanted = set(names)
    items = tuple(spec for spec in assignment.items if spec.name in wanted)
    groups = []
    for group in assignment.groups:
        if group.items is None:
            groups.append(group)
        elif wanted & set(group.items):
            groups.append(replace(group, items=tuple(c for c in group.items if c in wanted)))
    return replace(assignment, items=items, groups=tuple(groups), configured_items=assignment.all_items)


def public_config_text(assignment: Assignment, seed: int) -> str:
    """The instructor's YAML without hidden groups and with `seed`, marked as public."""
    raw = yaml.safe_load(assignment.path.read_text(encoding="utf-8"))
    raw["seed"] = seed
    raw["groups"] = _public_groups(raw.get("groups") or {})
    for body in (raw.get("items") or {}).values():
        if isinstance(body, dict) and isinstance(body.get("groups"), dict):
            body["groups"] = _public_groups(body["groups"])
    header = (f"{PUBLIC_MARKER} for {assignment.id!r}: public cases only, under a public seed.\n"
              "# Hidden groups and the instructor's seed are not part of this copy.\n")
    return header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=100)


def _public_groups(groups: dict) -> dict:
    return {name: body for name, body in groups.items() if not (isinstance(body, dict) and body.get("hidden") is True)}
