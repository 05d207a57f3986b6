"""An assignment's parameter space: what a case's parameters are, as data.

The harness knows no parameter by name. An assignment declares its parameters (their
kind, bounds and drawing order) and the harness parses config values, draws cases,
writes `--params` replay lines and reads them back with these declarations alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

PARAM_KINDS = ("int", "float", "choice", "shape")


@dataclass(frozen=True)
class Parameter:
    """One parameter: `int` (at least `minimum`), `float` (within [minimum, maximum]),
    `choice` (one of `choices`) or `shape` (a tuple of positive ints, written 2x3x4)."""
    name: str
    kind: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self):
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"parameter {self.name}: kind must be one of {', '.join(PARAM_KINDS)}")

    def config_values(self, value: Any) -> tuple[Any, ...] | str:
        """A config value (one value, a list, or "LOW..HIGH" for ints) as the tuple of values it
        allows, or a one-line reason why it is not valid."""
        if self.kind == "int" and isinstance(value, str) and ".." in value:
            low, _, high = value.partition("..")
            try:
                values: list = list(range(int(low), int(high) + 1))
            except ValueError:
                return "a range is written 'LOW..HIGH' with integers"
        else:
            values = value if isinstance(value, list) else [value]
        if not values:
            return "at least one value"
        parsed = []
        for item in values:
            checked = self.check(item)
            if isinstance(checked, str):
                return checked
            parsed.append(checked[0])
        return tuple(parsed)

    def check(self, value: Any) -> tuple[Any] | str:
        """(the value, normalised) when it is valid, else the reason."""
        if self.kind == "choice":
            return (value,) if value in self.choices else f"one of {', '.join(self.choices)} or a list of them"
        if self.kind == "shape":
            dims = parse_shape(value) if isinstance(value, str) else value
            if isinstance(dims, (list, tuple)) and dims and all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
                return (tuple(dims),)
            return "a shape such as 2x3x4 (positive integers)"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{'an integer, a list of integers' if self.kind == 'int' else 'a number, a list of numbers'}" + \
                (" or 'LOW..HIGH'" if self.kind == "int" else "")
        if self.kind == "int" and not isinstance(value, int):
            return "an integer, a list of integers or 'LOW..HIGH'"
        if self.kind == "float":
            value = float(value)
            if not math.isfinite(value):
                return "a finite number"
        if self.minimum is not None and value < self.minimum:
            return f"values must be at least {self.minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"values must be at most {self.maximum:g}"
        return (value,)

    def parse_text(self, text: str) -> Any:
        """A value as written on the command line (`--params name=value`); raises ValueError."""
        if self.kind == "int":
            value: Any = int(text)
        elif self.kind == "float":
            value = float(text)
        elif self.kind == "shape":
            value = parse_shape(text)
        else:
            value = text
        checked = self.check(value)
        if isinstance(checked, str):
            raise ValueError(checked)
        return checked[0]

    def format(self, value: Any) -> str:
        if self.kind == "shape":
            return "x".join(str(d) for d in value)
        if self.kind == "float":
            return repr(float(value))
        return str(value)


def parse_shape(text: str) -> tuple[int, ...] | None:
    try:
        dims = tuple(int(part) for part in text.split("x"))
    except ValueError:
        return None
    return dims


@dataclass(frozen=True)
class Params(Mapping):
    """A case's parameters, in the assignment's order; hashable, and readable as attributes
    (`params.height`) by the assignment's own code."""
    values: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def of(cls, mapping: Mapping[str, Any], order: tuple[str, ...] | None = None) -> "Params":
        names = order if order is not None else tuple(mapping)
        return cls(tuple((name, mapping[name]) for name in names if name in mapping))

    def __getitem__(self, name: str) -> Any:
        for key, value in self.values:
            if key == name:
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}") from None

    def replace(self, **changes: Any) -> "Params":
        unknown = set(changes) - set(self)
        if unknown:
            raise KeyError(f"no parameter {sorted(unknown)[0]!r}")
        return Params(tuple((key, changes.get(key, value)) for key, value in self.values))

    def as_dict(self) -> dict[str, Any]:
        return {key: (list(value) if isinstance(value, tuple) else value) for key, value in self.values}


def format_params(params: Params, space: Mapping[str, Parameter]) -> str:
    """`name=value,...` in the params' order: what `--params` reads back."""
    return ",".join(f"{name}={space[name].format(value)}" for name, value in params.values)
