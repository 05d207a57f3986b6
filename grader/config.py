"""Load and validate an assignment's config into frozen dataclasses.

Every problem is a ConfigError whose one-line message names the offending key,
e.g. `groups.stride.params.strid: unknown key`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

ASSIGNMENTS_DIR = Path(__file__).resolve().parent.parent / "assignments"

PARAM_NAMES = ("batch", "in_channels", "out_channels", "height", "width",
               "kernel_size", "stride", "padding", "dilation", "dtype", "max_macs")
INT_PARAM_MINIMUM = {"batch": 1, "in_channels": 1, "out_channels": 1, "height": 1, "width": 1,
                     "kernel_size": 1, "stride": 1, "padding": 0, "dilation": 1, "max_macs": 1}
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")
CONSTRAINTS = ("square", "non_square", "output_1x1", "output_larger_than_1x1",
               "output_at_least_2x2", "distinct_kernel_size")
INPUT_KINDS = ("random", "course")


@dataclass(frozen=True)
class Limits:
    startup_s: float = 120.0
    load_s: float = 30.0
    statement_s: float = 5.0
    case_s: float = 10.0
    memory_mb: int = 4096
    output_kb: int = 4096
    file_mb: int = 64
    processes: int = 64
    consecutive_timeouts: int = 2


@dataclass(frozen=True)
class Tolerance:
    eps_multiplier: float = 4.0
    abs_floor: float = 16.0


# aten operators that compute a convolution or an im2col for the student, by
# overload-packet name (what a dispatch mode sees, whichever Python name reached it).
DEFAULT_FORBIDDEN_OPERATORS = (
    "convolution", "_convolution", "conv2d", "cudnn_convolution", "mkldnn_convolution",
    "miopen_convolution", "_slow_conv2d_forward", "thnn_conv2d", "slow_conv_dilated2d",
    "_nnpack_spatial_convolution", "conv_depthwise2d", "_conv_depthwise2d", "im2col", "col2im",
)
VIOLATION_PENALTIES = ("zero", "none")
# The helper methods the course asks for, checked one at a time (grader/methods.py).
CHECKED_METHODS = ("_unsqueeze_kernel", "_convert_kernel", "_convert_input")
# The class whose speed the course compares with torch's when a class does not say.
SPEED_BY_DEFAULT = ("Conv2dMatrixV2",)


@dataclass(frozen=True)
class ClassSpec:
    name: str
    points: float
    case_s: float | None = None
    forbidden_operators: tuple[str, ...] = DEFAULT_FORBIDDEN_OPERATORS
    # (method, points) checked against the reference; the points are carved out of `points`
    # (0: reported only).
    methods: tuple[tuple[str, float], ...] = ()
    speed: bool = False            # time the class against torch.nn.functional.conv2d
    speed_points: float = 0.0      # carved out of `points`, earned when the class is vectorized


@dataclass(frozen=True)
class GroupSpec:
    name: str
    description: str
    count: int
    weight: float
    hidden: bool
    inputs: str
    # Each parameter's allowed values, in a fixed order so sampling is reproducible.
    params: tuple[tuple[str, tuple[Any, ...]], ...]
    require: tuple[str, ...]
    classes: tuple[str, ...] | None
    devices: tuple[str, ...]

    def choices(self, name: str) -> tuple[Any, ...]:
        return dict(self.params)[name]


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
    tolerance: Tolerance
    classes: tuple[ClassSpec, ...]
    groups: tuple[GroupSpec, ...]
    sha256: str
    violation_penalty: str = "zero"
    # (family, patterns) as configured, and (family, the operators it matched in this torch);
    # the matches are part of every class's forbidden_operators.
    forbidden_families: tuple[tuple[str, tuple[str, ...]], ...] = ()
    family_matches: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # For the static scan: Python names that are a forbidden operator by themselves, and
    # (name, modules) for names forbidden only when they come from one of those modules.
    forbidden_names: tuple[str, ...] = ()
    module_only_names: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def class_spec(self, name: str) -> ClassSpec:
        return next(spec for spec in self.classes if spec.name == name)

    def groups_for(self, class_name: str) -> tuple[GroupSpec, ...]:
        return tuple(g for g in self.groups if g.classes is None or class_name in g.classes)


def resolve_assignment_path(id_or_path: str) -> Path:
    candidate = Path(id_or_path)
    if candidate.is_dir():
        candidate = candidate / "assignment.yaml"
    if candidate.is_file():
        return candidate
    bundled = ASSIGNMENTS_DIR / id_or_path / "assignment.yaml"
    if "/" not in id_or_path and bundled.is_file():
        return bundled
    known = sorted(p.parent.name for p in ASSIGNMENTS_DIR.glob("*/assignment.yaml"))
    raise ConfigError(f"no assignment {id_or_path!r} (not a file, folder or one of: {', '.join(known)})")


def load_assignment(id_or_path: str = "conv2d") -> Assignment:
    import hashlib

    path = resolve_assignment_path(id_or_path)
    raw_text = path.read_bytes()
    try:
        raw = yaml.safe_load(raw_text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path.name}: not valid YAML{where}") from None
    top = _mapping(raw, "")
    _only_keys(top, "", {"id", "title", "scaffold", "seed", "devices", "limits", "tolerance",
                         "classes", "defaults", "groups", "forbidden_operators", "forbidden_families",
                         "forbidden_names", "violation_penalty"})
    scaffold_name = _typed(top, "scaffold", str, "", required=True)
    scaffold_path = path.parent / scaffold_name
    if not scaffold_path.is_file():
        raise ConfigError(f"scaffold: file {scaffold_name!r} not found beside {path.name}")
    devices = _devices(top.get("devices", ["cpu"]), "devices")
    defaults = _params(top.get("defaults", {}), "defaults", base={})
    forbidden = _operator_list(top.get("forbidden_operators", list(DEFAULT_FORBIDDEN_OPERATORS)),
                               "forbidden_operators")
    families = _families(top.get("forbidden_families", {}), "forbidden_families")
    names, module_only = _forbidden_names(top.get("forbidden_names", {}), "forbidden_names")
    penalty = _typed(top, "violation_penalty", str, "", default="zero")
    if penalty not in VIOLATION_PENALTIES:
        raise ConfigError(f"violation_penalty: one of {', '.join(VIOLATION_PENALTIES)}")
    classes = tuple(_class_spec(name, body, forbidden, families) for name, body in
                    _mapping(top.get("classes"), "classes", required=True).items())
    if not classes:
        raise ConfigError("classes: at least one class is needed")
    class_names = {c.name for c in classes}
    groups = tuple(_group_spec(name, body, defaults, devices, class_names) for name, body in
                   _mapping(top.get("groups"), "groups", required=True).items())
    if not groups:
        raise ConfigError("groups: at least one group is needed")
    return Assignment(
        id=_typed(top, "id", str, "", required=True),
        title=_typed(top, "title", str, "", default=""),
        path=path,
        scaffold_source=scaffold_path.read_text(),
        scaffold_name=scaffold_name,
        seed=_typed(top, "seed", int, "", default=0),
        devices=devices,
        limits=_dataclass_from(Limits, top.get("limits", {}), "limits"),
        tolerance=_dataclass_from(Tolerance, top.get("tolerance", {}), "tolerance"),
        classes=classes,
        groups=groups,
        sha256=hashlib.sha256(raw_text + scaffold_path.read_bytes()).hexdigest(),
        violation_penalty=penalty,
        forbidden_families=tuple((name, patterns) for name, patterns, _ in families),
        family_matches=tuple((name, matched) for name, _, matched in families),
        forbidden_names=names,
        module_only_names=module_only,
    )


def _class_spec(name: Any, body: Any, forbidden: tuple[str, ...], families: tuple = ()) -> ClassSpec:
    where = f"classes.{name}"
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{where}: class names must be Python identifiers")
    body = _mapping(body, where)
    _only_keys(body, where, {"points", "case_s", "forbidden_operators", "forbidden_families", "methods", "speed",
                             "speed_points"})
    points = _number(body, "points", where, required=True)
    if points < 0:
        raise ConfigError(f"{where}.points: must not be negative")
    case_s = _number(body, "case_s", where)
    if case_s is not None and case_s <= 0:
        raise ConfigError(f"{where}.case_s: must be positive")
    # A class's own list or families replace the top-level ones (to allow an operator there).
    if "forbidden_operators" in body:
        forbidden = _operator_list(body["forbidden_operators"], f"{where}.forbidden_operators")
    if "forbidden_families" in body:
        families = _families(body["forbidden_families"], f"{where}.forbidden_families")
    forbidden = _with_families(forbidden, families)
    methods = _methods(body.get("methods", {}), f"{where}.methods")
    speed = _typed(body, "speed", bool, where, default=name in SPEED_BY_DEFAULT)
    speed_points = _number(body, "speed_points", where, default=0)
    if speed_points < 0:
        raise ConfigError(f"{where}.speed_points: must not be negative")
    if speed_points and not speed:
        raise ConfigError(f"{where}.speed_points: needs speed: true")
    carved = sum(p for _, p in methods) + speed_points
    if carved > points:
        raise ConfigError(f"{where}.methods: method and speed points ({carved:g}) exceed the class's "
                          f"points ({points:g})")
    return ClassSpec(name=name, points=float(points), case_s=None if case_s is None else float(case_s),
                     forbidden_operators=forbidden, methods=methods, speed=speed,
                     speed_points=float(speed_points))


def _methods(raw: Any, where: str) -> tuple[tuple[str, float], ...]:
    """`{_convert_kernel: 3, ...}`: the course's helper methods to check, with their points."""
    raw = _mapping(raw, where)
    methods = []
    for method, points in raw.items():
        if method not in CHECKED_METHODS:
            raise ConfigError(f"{where}.{method}: unknown method (checked: {', '.join(CHECKED_METHODS)})")
        points = _number(raw, method, where)
        if points < 0:
            raise ConfigError(f"{where}.{method}: must not be negative")
        methods.append((method, float(points)))
    return tuple(methods)


def _operator_list(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or any(not isinstance(op, str) or not op for op in raw):
        raise ConfigError(f"{where}: a list of aten operator names (e.g. convolution, im2col)")
    return tuple(op.removeprefix("aten.") for op in raw)


def _families(raw: Any, where: str) -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """`{family: [regular expression, ...]}` over qualified operator names (`aten::convolution`),
    each resolved against this torch's operator registry: (family, patterns, operators matched).
    A family that matches nothing is an error: a renamed operator must not forbid nothing."""
    import re

    from .operators import resolve_families

    raw = _mapping(raw, where)
    families = []
    for family, patterns in raw.items():
        here = f"{where}.{family}"
        if not isinstance(patterns, list) or not patterns or any(not isinstance(p, str) or not p for p in patterns):
            raise ConfigError(f"{here}: a list of regular expressions over operator names (e.g. 'aten::conv.*')")
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


def _group_spec(name: Any, body: Any, defaults: dict, devices: tuple[str, ...],
                class_names: set[str]) -> GroupSpec:
    where = f"groups.{name}"
    if not isinstance(name, str) or not name.replace("_", "a").isalnum():
        raise ConfigError(f"{where}: group names are letters, digits and underscores")
    body = _mapping(body, where)
    _only_keys(body, where, {"description", "count", "weight", "hidden", "inputs", "params",
                             "require", "classes", "devices"})
    count = _typed(body, "count", int, where, required=True)
    if count < 1:
        raise ConfigError(f"{where}.count: must be at least 1")
    weight = _number(body, "weight", where, default=1.0)
    if weight < 0:
        raise ConfigError(f"{where}.weight: must not be negative")
    inputs = _typed(body, "inputs", str, where, default="random")
    if inputs not in INPUT_KINDS:
        raise ConfigError(f"{where}.inputs: must be one of {', '.join(INPUT_KINDS)}")
    require = body.get("require", [])
    if not isinstance(require, list) or any(r not in CONSTRAINTS for r in require):
        raise ConfigError(f"{where}.require: a list of {', '.join(CONSTRAINTS)}")
    classes = body.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or any(c not in class_names for c in classes):
            raise ConfigError(f"{where}.classes: a list of configured classes ({', '.join(sorted(class_names))})")
        classes = tuple(classes)
    params = _params(body.get("params", {}), f"{where}.params", base=defaults)
    return GroupSpec(
        name=name,
        description=_typed(body, "description", str, where, default=""),
        count=count,
        weight=float(weight),
        hidden=_typed(body, "hidden", bool, where, default=False),
        inputs=inputs,
        params=tuple((p, params[p]) for p in PARAM_NAMES),
        require=tuple(require),
        classes=classes,
        devices=_devices(body["devices"], f"{where}.devices") if "devices" in body else devices,
    )


def _params(raw: Any, where: str, base: dict) -> dict:
    raw = _mapping(raw, where)
    _only_keys(raw, where, set(PARAM_NAMES))
    params = dict(base)
    for name, value in raw.items():
        params[name] = _choices(name, value, f"{where}.{name}")
    if not base:  # the defaults block must define every parameter
        missing = [p for p in PARAM_NAMES if p not in params]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
    return params


def _choices(name: str, value: Any, where: str) -> tuple[Any, ...]:
    """`3` is one value, `[1, 3]` a list of values, `"1..3"` an inclusive range."""
    if name == "dtype":
        values = value if isinstance(value, list) else [value]
        if not values or any(v not in DTYPES for v in values):
            raise ConfigError(f"{where}: one of {', '.join(DTYPES)} or a list of them")
        return tuple(values)
    if isinstance(value, str) and ".." in value:
        low, _, high = value.partition("..")
        try:
            values = list(range(int(low), int(high) + 1))
        except ValueError:
            raise ConfigError(f"{where}: a range is written 'LOW..HIGH' with integers") from None
    elif isinstance(value, list):
        values = value
    else:
        values = [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ConfigError(f"{where}: an integer, a list of integers or 'LOW..HIGH'")
    if min(values) < INT_PARAM_MINIMUM[name]:
        raise ConfigError(f"{where}: values must be at least {INT_PARAM_MINIMUM[name]}")
    return tuple(values)


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
