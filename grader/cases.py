"""Build the graded cases from an assignment and a seed.

A case's parameters and tensors depend only on (seed, case id), never on the
order of groups or on other cases, so `--case GROUP-003` replays exactly the
case the full run graded. What the parameters are and which draws make a case
is the assignment's (its subject); the drawing is the harness's.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import torch

from .config import Assignment, GroupSpec, ItemSpec, setting_value
from .errors import ConfigError, UsageError
from .params import Params, draw

MAX_SAMPLING_TRIES = 20_000


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    params: Params
    device: str
    seed: int
    hidden: bool
    inputs: str
    items: tuple[str, ...]
    # The group's settings (what bounds a draw, or how a case is judged), not drawn.
    settings: Params = Params()

    @property
    def key(self) -> str:
        """Unique within a run: the same case id is graded once per device."""
        return f"{self.id}@{self.device}"


def case_seed(seed: int, case_id: str) -> int:
    digest = hashlib.sha256(f"{seed}/{case_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def build_cases(assignment: Assignment, seed: int, devices: tuple[str, ...],
                only_case: str | None = None) -> tuple[Case, ...]:
    item_names = tuple(spec.name for spec in assignment.items)
    cases = []
    for group in assignment.groups:
        items = group.items or item_names
        settings = Params(tuple((name, setting_value(values)) for name, values in group.settings))
        for index in range(1, group.count + 1):
            case_id = f"{group.name}-{index:03d}"
            if only_case is not None and case_id != only_case:
                continue
            params = sample_params(assignment, group, case_id, seed, index)
            for device in devices:
                if device in group.devices:
                    cases.append(Case(id=case_id, group=group.name, params=params, device=device,
                                      seed=case_seed(seed, case_id), hidden=group.hidden,
                                      inputs=group.inputs, items=items, settings=settings))
    if only_case is not None and not cases:
        known = ", ".join(dict.fromkeys(f"{g.name}-001..{g.count:03d}" for g in assignment.groups))
        raise UsageError(f"no case {only_case!r} for the selected devices (cases: {known})")
    return tuple(cases)


def sample_params(assignment: Assignment, group: GroupSpec, case_id: str, seed: int, index: int = 1) -> Params:
    subject = assignment.subject
    rng = random.Random(f"{seed}/{case_id}/params")
    settings = {name: setting_value(values) for name, values in group.settings}
    drawn = used_parameters(assignment, group, drawn=True)
    kept = used_parameters(assignment, group)
    space = subject.space
    for _ in range(MAX_SAMPLING_TRIES):
        values = {name: draw(space[name], choices, rng, index) for name, choices in group.params if name in drawn}
        values = subject.draw(values, group.require, rng)
        params = Params.of(values, kept)
        if subject.accept(params, settings) and all(subject.constraints[rule](params) for rule in group.require):
            return params
    raise ConfigError(f"groups.{group.name}: no parameters satisfy its ranges and 'require' "
                      f"(tried {MAX_SAMPLING_TRIES} samples)")


def used_parameters(assignment: Assignment, group: GroupSpec, drawn: bool = False) -> tuple[str, ...]:
    """The parameters a case of the group's items has (or, `drawn`, draws from the config), in
    the subject's order."""
    items = [assignment.item(name) for name in (group.items or [i.name for i in assignment.items])]
    wanted = set()
    for item in items:
        task = assignment.subject.tasks[item.task]
        names = task.draws if drawn and task.draws is not None else task.parameters
        wanted.update(names if names is not None else (p.name for p in assignment.subject.parameters))
    return tuple(p.name for p in assignment.subject.parameters if p.name in wanted)


def case_inputs(assignment: Assignment, item: ItemSpec, case: Case) -> dict[str, torch.Tensor]:
    """The case's input tensors for the item (CPU, built from the case's seed)."""
    return assignment.task_of(item).inputs(case)
