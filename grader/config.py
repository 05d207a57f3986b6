"""Load and validate an assignment's config into frozen dataclasses.

An assignment is a folder: `assignment.yaml`, the course scaffold it names, and the
parent-side module of its subject (grader/subject.py says what that brings). The
harness validates the config against the subject's own declarations (its parameters,
constraints, tasks, checks and options), so every problem is a ConfigError whose
one-line message names the offending key, e.g. `groups.basic.params.heigth: unknown key`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError
from .subject import Subject, Task

ASSIGNMENTS_DIR = Path(__file__).resolve().parent.parent / "assignments"
DEVICES = ("cpu", "cuda")
ITEM_KINDS = ("class", "function")
VIOLATION_PENALTIES = ("zero", "none")
DEFAULT_SUBJECT = "subject.py"


@dataclass(frozen=True)
class Limits:
    startup_s: float = 120.0
    load_s: float = 30.0
    statement_s: float = 5.0
    case_s: float = 10.0
    # Wall-clock budget for everything one submission's worker does; once spent, its remaining
    # cases are not run (they count as timed out), so no submission holds a batch slot for long.
    submission_s: float = 300.0
    memory_mb: int = 4096
    output_kb: int = 4096
    file_mb: int = 64
    processes: int = 64
    consecutive_timeouts: int = 2


@dataclass(frozen=True)
class ItemSpec:
    """One graded class or function. `name` is its key in the config and the report;
    `python_name` what the submission defines (several items may share one, told apart by
    their task's signature)."""
    name: str
    python_name: str
    task: str
    kind: str
    points: float
    case_s: float | None
    forbidden_operators: tuple[str, ...]
    # (check, points) run after the item's cases; the points are carved out of `points`
    # (0: reported only).
    checks: tuple[tuple[str, float], ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def option_map(self) -> dict[str, Any]:
        return dict(self.options)

    def check_points(self, name: str) -> float | None:
        return dict(self.checks).get(name)


@dataclass(frozen=True)
class GroupSpec:
    name: str
    description: str
    count: int
    weight: float
    hidden: bool
    inputs: str
    # Each parameter's allowed values, in the subject's order so sampling is reproducible.
    params: tuple[tuple[str, tuple[Any, ...]], ...]
    settings: tuple[tuple[str, tuple[Any, ...]], ...]
    require: tuple[str, ...]
    items: tuple[str, ...] | None
    devices: tuple[str, ...]

    def choices(self, name: str) -> tuple[Any, ...]:
        return dict(self.params + self.settings)[name]


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    path: Path
    scaffold_source: str
    scaffold_name: str
    seed: int
    devices: tuple[str, ...]
    limits: Limits
    tolerance: tuple[tuple[str, float], ...]
    items: tuple[ItemSpec, ...]
    groups: tuple[GroupSpec, ...]
    sha256: str
    violation_penalty: str = "zero"
    subject: Subject = field(default=None, compare=False, repr=False)
    subject_files: tuple[Path, ...] = field(default=(), compare=False, repr=False)
    settings: tuple[tuple[str, Any], ...] = ()
    # (family, patterns) as configured, and (family, the operators it matched in this torch);
    # the matches are part of every item's forbidden_operators.
    forbidden_families: tuple[tuple[str, tuple[str, ...]], ...] = ()
    family_matches: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # For the static scan: Python names that are a forbidden operator by themselves, and
    # (name, modules) for names forbidden only when they come from one of those modules.
    forbidden_names: tuple[str, ...] = ()
    module_only_names: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Every configured item, when `items` is a selection of them (--item): replay lines are
    # read back against the whole config.
    configured_items: tuple[ItemSpec, ...] = ()

    @property
    def all_items(self) -> tuple[ItemSpec, ...]:
        return self.configured_items or self.items

    def item(self, name: str) -> ItemSpec:
        return next(spec for spec in self.items if spec.name == name)

    def task_of(self, item: ItemSpec | str) -> Task:
        spec = self.item(item) if isinstance(item, str) else item
        return self.subject.tasks[spec.task]

    def groups_for(self, item_name: str) -> tuple[GroupSpec, ...]:
        return tuple(g for g in self.groups if g.items is None or item_name in g.items)

    @property
    def default_settings(self) -> dict[str, Any]:
        """Settings for a case outside the groups (--params): the top-level defaults'."""
        return dict(self.settings)

    @property
    def tolerance_map(self) -> dict[str, float]:
        return dict(self.tolerance)


def bundled_assignment_ids() -> list[str]:
    return sorted(p.parent.name for p in ASSIGNMENTS_DIR.glob("*/assignment.yaml"))


def resolve_assignment_path(id_or_path: str) -> Path:
    candidate = Path(id_or_path)
    if candidate.is_dir():
        candidate = candidate / "assignment.yaml"
    if candidate.is_file():
        return candidate
    bundled = ASSIGNMENTS_DIR / id_or_path / "assignment.yaml"
    if "/" not in id_or_path and bundled.is_file():
        return bundled
    raise ConfigError(f"no assignment {id_or_path!r} (not a file, folder or one of: "
                      f"{', '.join(bundled_assignment_ids())})")


# libyaml's safe loader where PyYAML has it: the same documents, read ten times faster (a
# lesson's config is long, and `grade` reads every bundled one to pick the assignment).
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_assignment(id_or_path: str) -> Assignment:
    path = resolve_assignment_path(id_or_path)
    raw_text = path.read_bytes()
    try:
        raw = yaml.load(raw_text, Loader=YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path.name}: not valid YAML{where}") from None
    top = _mapping(raw, "")
    _only_keys(top, "", {"id", "title", "scaffold", "subject", "seed", "devices", "limits", "tolerance",
                         "items", "defaults", "groups", "forbidden_operators", "forbidden_families",
                         "forbidden_names", "violation_penalty"})
    scaffold_name = _typed(top, "scaffold", str, "", required=True)
    scaffold_path = path.parent / scaffold_name
    if not scaffold_path.is_file():
        raise ConfigError(f"scaffold: file {scaffold_name!r} not found beside {path.name}")
    subject_name = _typed(top, "subject", str, "", default=DEFAULT_SUBJECT)
    subject_path = (path.parent / subject_name).resolve()
    subject = load_subject(subject_path, "subject")
    devices = _devices(top.get("devices", ["cpu"]), "devices")
    defaults = _params(subject, top.get("defaults", {}), "defaults", base={})
    forbidden = _operator_list(top.get("forbidden_operators", list(subject.forbidden_operators)),
                               "forbidden_operators")
    families = _families(top.get("forbidden_families", {}), "forbidden_families")
    names, module_only = _forbidden_names(top.get("forbidden_names", {}), "forbidden_names")
    penalty = _typed(top, "violation_penalty", str, "", default="zero")
    if penalty not in VIOLATION_PENALTIES:
        raise ConfigError(f"violation_penalty: one of {', '.join(VIOLATION_PENALTIES)}")
    raw_items = _mapping(top.get("items"), "items", required=True)
    items = tuple(_item_spec(subject, name, body, forbidden, families) for name, body in raw_items.items())
    if not items:
        raise ConfigError("items: at least one item is needed")
    item_names = {item.name for item in items}
    groups = [_group_spec(subject, name, body, defaults, devices, item_names, items) for name, body in
              _mapping(top.get("groups"), "groups").items()]
    # An item's own groups: the same names may recur in other items (each item's basic-001).
    for item in items:
        where = f"items.{item.name}"
        body = _mapping(raw_items[item.name], where)
        own_defaults = _params(subject, body.get("defaults", {}), f"{where}.defaults", base=defaults)
        for name, group_body in _mapping(body.get("groups"), f"{where}.groups").items():
            group = _group_spec(subject, name, group_body, own_defaults, devices, item_names, items,
                                where=f"{where}.groups.{name}", only_item=item.name)
            if any(g.name == group.name and (g.items is None or item.name in g.items) for g in groups):
                raise ConfigError(f"{where}.groups.{name}: the item already has a group {name!r}")
            groups.append(group)
    groups = tuple(groups)
    if not groups:
        raise ConfigError("groups: at least one group is needed")
    tolerance = _tolerance(subject, top.get("tolerance", {}))
    modules = subject_modules(subject_path)
    digest = hashlib.sha256(raw_text + scaffold_path.read_bytes()
                            + b"".join(m.read_bytes() for m in modules)).hexdigest()
    return Assignment(
        id=_typed(top, "id", str, "", required=True),
        title=_typed(top, "title", str, "", default=""),
        path=path,
        scaffold_source=scaffold_path.read_text(),
        scaffold_name=scaffold_name,
        seed=_typed(top, "seed", int, "", default=0),
        devices=devices,
        limits=_dataclass_from(Limits, top.get("limits", {}), "limits"),
        tolerance=tolerance,
        items=items,
        groups=groups,
        sha256=digest,
        violation_penalty=penalty,
        subject=subject,
        subject_files=modules,
        settings=tuple((s.name, setting_value(defaults[s.name])) for s in subject.settings if s.name in defaults),
        forbidden_families=tuple((name, patterns) for name, patterns, _ in families),
        family_matches=tuple((name, matched) for name, _, matched in families),
        forbidden_names=names,
        module_only_names=module_only,
    )


def setting_value(values: tuple) -> Any:
    """What a group's setting is: the largest of its numbers (a cap), or its first word."""
    return max(values) if all(isinstance(v, (int, float)) for v in values) else values[0]


def subject_modules(path: Path) -> tuple[Path, ...]:
    """The subject's module and the sibling modules it imports (`from . import x`, `from .x
    import y`), followed transitively: what grading depends on (the assignment's hash covers
    them) and what a student's copy needs, never another file of the folder (a solution kept
    beside it, say)."""
    import ast

    folder = path.parent
    todo, found = [path], []
    while todo:
        current = todo.pop()
        if current in found or not current.is_file():
            continue
        found.append(current)
        try:
            tree = ast.parse(current.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in _statements(tree.body):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [alias.name for alias in node.names]
                todo.extend(folder / f"{name.split('.')[0]}.py" for name in names)
    return tuple(sorted(found))


def _statements(body: list):
    """Every statement, nested ones included (an import inside a function), without walking
    the expressions: `grade` reads each bundled assignment to pick one, so this is on its path."""
    todo = list(body)
    while todo:
        statement = todo.pop()
        yield statement
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            todo.extend(getattr(statement, field, ()))


def load_subject(path: Path, where: str) -> Subject:
    """The module's SUBJECT. A bundled assignment's module is imported as part of the
    `assignments` package; any other as a module of a package made for its folder, so that
    it may import its siblings (`from . import causes`) wherever the folder lives."""
    if not path.is_file() or path.suffix != ".py":
        raise ConfigError(f"{where}: file {path.name!r} not found")
    folder = path.parent
    try:
        if folder.parent == ASSIGNMENTS_DIR.resolve():
            package = f"assignments.{folder.name}"
        else:
            package = "grader_assignment_" + hashlib.sha256(str(folder).encode()).hexdigest()[:12]
            if package not in sys.modules:
                module = types.ModuleType(package)
                module.__path__ = [str(folder)]
                sys.modules[package] = module
        module = importlib.import_module(f"{package}.{path.stem}")
    except Exception as exc:
        raise ConfigError(f"{where}: {path.name} does not import ({type(exc).__name__}: {exc})") from None
    subject = getattr(module, "SUBJECT", None)
    if not isinstance(subject, Subject):
        raise ConfigError(f"{where}: {path.name} defines no SUBJECT (an instance of grader.subject.Subject)")
    return subject


def _item_spec(subject: Subject, name: Any, body: Any, forbidden: tuple[str, ...], families: tuple = ()) -> ItemSpec:
    where = f"items.{name}"
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{where}: item names must be Python identifiers")
    body = _mapping(body, where)
    _only_keys(body, where, {"points", "case_s", "forbidden_operators", "forbidden_families", "checks", "task",
                             "name", "options", "defaults", "groups"})
    task_name = _typed(body, "task", str, where, default=subject.default_task or name)
    task = subject.tasks.get(task_name)
    if task is None:
        raise ConfigError(f"{where}{'.task' if 'task' in body else ''}: unknown task {task_name!r} "
                          f"(tasks: {', '.join(subject.tasks)})")
    python_name = _typed(body, "name", str, where, default=task.python_name or name)
    if not python_name.isidentifier():
        raise ConfigError(f"{where}.name: a Python identifier")
    points = _number(body, "points", where, required=True)
    if points < 0:
        raise ConfigError(f"{where}.points: must not be negative")
    case_s = _number(body, "case_s", where)
    if case_s is not None and case_s <= 0:
        raise ConfigError(f"{where}.case_s: must be positive")
    # An item's own list or families replace the top-level ones (to allow an operator there).
    if "forbidden_operators" in body:
        forbidden = _operator_list(body["forbidden_operators"], f"{where}.forbidden_operators")
    if "forbidden_families" in body:
        families = _families(body["forbidden_families"], f"{where}.forbidden_families")
    forbidden = _with_families(forbidden, families)
    checks = _checks(task, body.get("checks", {}), f"{where}.checks")
    carved = sum(p for _, p in checks)
    if carved > points:
        raise ConfigError(f"{where}.checks: check points ({carved:g}) exceed the item's points ({points:g})")
    options = _options(task, body.get("options", {}), f"{where}.options")
    return ItemSpec(name=name, python_name=python_name, task=task_name, kind=task.kind, points=float(points),
                    case_s=None if case_s is None else float(case_s), forbidden_operators=forbidden,
                    checks=checks, options=options)


def _checks(task: Task, raw: Any, where: str) -> tuple[tuple[str, float], ...]:
    """`{_to_columns: 3, speed: 0}`: the task's extra checks to run, with their points."""
    raw = _mapping(raw, where)
    checks = []
    for check in raw:
        if check not in task.check_names:
            known = ", ".join(task.check_names) or "none for this task"
            raise ConfigError(f"{where}.{check}: unknown check (checks: {known})")
        points = _number(raw, check, where)
        if points < 0:
            raise ConfigError(f"{where}.{check}: must not be negative")
        checks.append((check, float(points)))
    return tuple(checks)


def _options(task: Task, raw: Any, where: str) -> tuple[tuple[str, Any], ...]:
    raw = _mapping(raw, where)
    _only_keys(raw, where, set(task.option_defaults))
    values = dict(task.option_defaults)
    for key, value in raw.items():
        default = task.option_defaults[key]
        if type(value) is not type(default) and not (isinstance(default, float) and isinstance(value, int)
                                                     and not isinstance(value, bool)):
            raise ConfigError(f"{where}.{key}: expected {type(default).__name__}, got {type(value).__name__}")
        allowed = task.option_choices.get(key)
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{where}.{key}: one of {', '.join(map(str, allowed))}")
        values[key] = value
    return tuple(sorted(values.items()))


def _tolerance(subject: Subject, raw: Any) -> tuple[tuple[str, float], ...]:
    raw = _mapping(raw, "tolerance")
    _only_keys(raw, "tolerance", set(subject.tolerance_defaults))
    values = dict(subject.tolerance_defaults)
    for key in raw:
        number = _number(raw, key, "tolerance")
        if number <= 0:
            raise ConfigError(f"tolerance.{key}: must be positive")
        values[key] = float(number)
    return tuple(values.items())


def _operator_list(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or any(not isinstance(op, str) or not op for op in raw):
        raise ConfigError(f"{where}: a list of aten operator names")
    return tuple(op.removeprefix("aten.") for op in raw)


def _families(raw: Any, where: str) -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """`{family: [regular expression, ...]}` over qualified operator names (`aten::name`),
    each resolved against this torch's operator registry: (family, patterns, operators matched).
    A family that matches nothing is an error: a renamed operator must not forbid nothing."""
    import re

    from .operators import resolve_families

    raw = _mapping(raw, where)
    families = []
    for family, patterns in raw.items():
        here = f"{where}.{family}"
        if not isinstance(patterns, list) or not patterns or any(not isinstance(p, str) or not p for p in patterns):
            raise ConfigError(f"{here}: a list of regular expressions over operator names (e.g. 'aten::name.*')")
        try:
            matched = resolve_families({family: patterns})[family]
        except re.error as exc:
            raise ConfigError(f"{here}: not a regular expression ({exc})") from None
        if not matched:
            raise ConfigError(f"{here}: matches no operator of this torch ({_torch_version()})")
        families.append((str(family), tuple(patterns), matched))
    return tuple(families)


def _forbidden_names(raw: Any, where: str) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    """`{anywhere: [name, ...], from_modules: {name: [module, ...]}}` for the static scan."""
    raw = _mapping(raw, where)
    _only_keys(raw, where, {"anywhere", "from_modules"})
    anywhere = raw.get("anywhere", [])
    if not isinstance(anywhere, list) or any(not isinstance(n, str) or not n.isidentifier() for n in anywhere):
        raise ConfigError(f"{where}.anywhere: a list of Python names")
    module_only = []
    for name, modules in _mapping(raw.get("from_modules", {}), f"{where}.from_modules").items():
        if not isinstance(name, str) or not name.isidentifier() or not isinstance(modules, list) \
                or not modules or any(not isinstance(m, str) or not m for m in modules):
            raise ConfigError(f"{where}.from_modules.{name}: a list of module paths (e.g. a.b.c)")
        module_only.append((name, tuple(modules)))
    return tuple(anywhere), tuple(module_only)


def _with_families(forbidden: tuple[str, ...], families: tuple) -> tuple[str, ...]:
    extra = [op for _, _, matched in families for op in matched if op not in forbidden]
    return tuple(forbidden) + tuple(sorted(set(extra)))


def _torch_version() -> str:
    import torch

    return f"torch {torch.__version__}"


def _group_spec(subject: Subject, name: Any, body: Any, defaults: dict, devices: tuple[str, ...],
                item_names: set[str], items: tuple[ItemSpec, ...], where: str | None = None,
                only_item: str | None = None) -> GroupSpec:
    where = where or f"groups.{name}"
    if not isinstance(name, str) or not name.replace("_", "a").isalnum():
        raise ConfigError(f"{where}: group names are letters, digits and underscores")
    body = _mapping(body, where)
    allowed = {"description", "count", "weight", "hidden", "inputs", "params", "require", "devices"}
    _only_keys(body, where, allowed if only_item else allowed | {"items"})
    count = _typed(body, "count", int, where, required=True)
    if count < 1:
        raise ConfigError(f"{where}.count: must be at least 1")
    weight = _number(body, "weight", where, default=1.0)
    if weight < 0:
        raise ConfigError(f"{where}.weight: must not be negative")
    inputs = _typed(body, "inputs", str, where, default=subject.input_kinds[0])
    if inputs not in subject.input_kinds:
        raise ConfigError(f"{where}.inputs: must be one of {', '.join(subject.input_kinds)}")
    require = body.get("require", [])
    if not isinstance(require, list) or any(r not in subject.constraints for r in require):
        raise ConfigError(f"{where}.require: a list of {', '.join(subject.constraints)}")
    members = (only_item,) if only_item else body.get("items")
    if members is not None:
        if not isinstance(members, list | tuple) or any(i not in item_names for i in members):
            raise ConfigError(f"{where}.items: a list of configured items ({', '.join(sorted(item_names))})")
        members = tuple(members)
    params = _params(subject, body.get("params", {}), f"{where}.params", base=defaults)
    for needed in _used(subject, [i for i in items if members is None or i.name in members]):
        if needed not in params:
            raise ConfigError(f"defaults: missing {needed} (needed by {where})" if not only_item else
                              f"{where}.params: no value for {needed} (in defaults, the item's defaults or here)")
    drawn = {p.name for p in subject.parameters}
    return GroupSpec(
        name=name,
        description=_typed(body, "description", str, where, default=""),
        count=count,
        weight=float(weight),
        hidden=_typed(body, "hidden", bool, where, default=False),
        inputs=inputs,
        params=tuple((p.name, params[p.name]) for p in subject.parameters if p.name in params),
        settings=tuple((s.name, params[s.name]) for s in subject.settings if s.name not in drawn and s.name in params),
        require=tuple(require),
        items=members,
        devices=_devices(body["devices"], f"{where}.devices") if "devices" in body else devices,
    )


def _params(subject: Subject, raw: Any, where: str, base: dict) -> dict:
    raw = _mapping(raw, where)
    declared = {p.name: p for p in subject.parameters + subject.settings if not p.derived}
    _only_keys(raw, where, set(declared))
    params = dict(base)
    for name, value in raw.items():
        values = declared[name].config_values(value)
        if isinstance(values, str):
            raise ConfigError(f"{where}.{name}: {values}")
        params[name] = values
    return params


def _used(subject: Subject, items: list[ItemSpec]) -> list[str]:
    """The parameters and settings these items' tasks draw from, in the subject's order."""
    wanted = set()
    for item in items:
        task = subject.tasks[item.task]
        names = task.draws if task.draws is not None else task.parameters
        wanted.update(names if names is not None else (p.name for p in subject.parameters))
    return [p.name for p in subject.parameters if p.name in wanted and not p.derived] + \
        [s.name for s in subject.settings]


def _devices(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or any(d not in DEVICES for d in raw):
        raise ConfigError(f"{where}: a list of {', '.join(DEVICES)}")
    return tuple(raw)


def _dataclass_from(cls: type, raw: Any, where: str):
    raw = _mapping(raw, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _only_keys(raw, where, set(fields))
    values = {}
    for key, value in raw.items():
        number = _number(raw, key, where)
        if number <= 0:
            raise ConfigError(f"{where}.{key}: must be positive")
        values[key] = int(number) if fields[key].type == "int" else float(number)
    return cls(**values)


def _mapping(raw: Any, where: str, required: bool = False) -> dict:
    if raw is None and not required:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'top level'}: expected a mapping")
    return raw


def _only_keys(raw: Mapping, where: str, allowed: set[str]) -> None:
    for key in raw:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"{prefix}{key}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _typed(raw: Mapping, key: str, kind: type, where: str, required: bool = False, default: Any = None):
    prefix = f"{where}." if where else ""
    if key not in raw:
        if required:
            raise ConfigError(f"{prefix}{key}: missing")
        return default
    value = raw[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{prefix}{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _number(raw: Mapping, key: str, where: str, required: bool = False, default: Any = None):
    if key not in raw:
        if required:
            raise ConfigError(f"{where}.{key}: missing")
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}.{key}: expected a number, got {type(value).__name__}")
    return value
