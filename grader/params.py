"""An assignment's parameter space: what a case's parameters are, as data.

The harness knows no parameter by name. An assignment declares its parameters (their
kind, bounds and drawing order) and the harness parses config values, draws cases,
writes `--params` replay lines and reads them back with these declarations alone.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

PARAM_KINDS = ("int", "float", "choice", "shape")


@dataclass(frozen=True)
class Range:
    """An entry of a parameter's choices that is itself drawn: an integer or a number between
    `low` and `high` (inclusive), uniformly or, with `log`, uniformly in its logarithm."""
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def draw(self, rng: random.Random):
        if self.integer:
            if self.log:
                return int(round(math.exp(rng.uniform(math.log(self.low), math.log(self.high)))))
            return rng.randint(int(self.low), int(self.high))
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class Parameter:
    """One parameter: `int` (at least `minimum`), `float` (within [minimum, maximum]),
    `choice` (one of `choices`) or `shape` (a tuple of positive ints, written 2x3x4, or `none` for the empty one).
    `specials`: words allowed besides values, which the subject resolves when it draws
    (e.g. "all" for "as many as there are"). `cycled`: a group's list of values is taken
    in case order instead of at random, so that a group of two cases has both of two kinds.
    `derived`: computed by the subject's draw, not configured."""
    name: str
    kind: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    description: str = ""
    specials: tuple[str, ...] = ()
    cycled: bool = False
    # Set by the subject's draw from other parameters (a shape from a rank and a size), never
    # given in a config; a case carries it, and --params names it like any other.
    derived: bool = False

    def __post_init__(self):
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"parameter {self.name}: kind must be one of {', '.join(PARAM_KINDS)}")

    def config_values(self, value: Any) -> tuple[Any, ...] | str:
        """A config value as the tuple of choices it allows, or a one-line reason why it is not
        valid. One value; a list of values (a case draws one entry); "LOW..HIGH" for integers,
        all of them (one is drawn uniformly); "LOW..HIGH" or "LOW..HIGH log" for numbers, and as
        an entry of a list for either, a range drawn from when that entry is picked."""
        if self.kind == "int" and isinstance(value, str) and _is_range(value) and not value.endswith(" log"):
            parsed = self._range(value)
            if isinstance(parsed, str):
                return parsed
            if self.cycled:
                # One entry drawn from, not a list of values to take in turn.
                return (parsed,)
            return tuple(range(int(parsed.low), int(parsed.high) + 1))
        values = value if isinstance(value, list) else [value]
        if not values:
            return "at least one value"
        parsed = []
        for item in values:
            if self.kind == "float" and isinstance(item, str) and not _is_range(item) and item not in self.specials:
                # YAML reads 1e-3 (no dot) as a string: a number all the same.
                try:
                    item = float(item)
                except ValueError:
                    pass
            checked = self._range(item) if isinstance(item, str) and _is_range(item) else self.check(item)
            if isinstance(checked, str):
                return checked
            parsed.append(checked if isinstance(checked, Range) else checked[0])
        return tuple(parsed)

    def _range(self, text: str) -> Range | str:
        if self.kind not in ("int", "float"):
            return f"{self.name} takes no ranges"
        body, log = (text[:-4], True) if text.endswith(" log") else (text, False)
        low, _, high = body.partition("..")
        try:
            bounds = (int(low), int(high)) if self.kind == "int" else (float(low), float(high))
        except ValueError:
            kind = "integers" if self.kind == "int" else "numbers"
            return f"a range is written 'LOW..HIGH' with {kind}"
        if bounds[0] > bounds[1] or (log and bounds[0] <= 0):
            return "a range needs LOW <= HIGH (and LOW > 0 with log)"
        for bound in bounds:
            checked = self.check(bound)
            if isinstance(checked, str):
                return checked
        return Range(bounds[0], bounds[1], log=log, integer=self.kind == "int")

    def check(self, value: Any) -> tuple[Any] | str:
        """(the value, normalised) when it is valid, else the reason."""
        if isinstance(value, str) and value in self.specials:
            return (value,)
        if self.kind == "choice":
            return (value,) if value in self.choices else f"one of {', '.join(self.choices)} or a list of them"
        if self.kind == "shape":
            dims = parse_shape(value) if isinstance(value, str) else value
            if isinstance(dims, (list, tuple)) and all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
                return (tuple(dims),)
            return "a shape such as 2x3x4 (positive integers, or none)"
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
            return "x".join(str(d) for d in value) if value else EMPTY_SHAPE
        if self.kind == "float":
            return repr(float(value))
        return str(value)


def _is_range(text: str) -> bool:
    return ".." in text


def draw(parameter: Parameter, choices: tuple, rng: random.Random, index: int):
    """One value of a parameter for the case with this index (1-based) in its group."""
    entry = choices[(index - 1) % len(choices)] if parameter.cycled else rng.choice(choices)
    return entry.draw(rng) if isinstance(entry, Range) else entry


# How an empty tuple of sizes is written (no training batches, say).
EMPTY_SHAPE = "none"


def parse_shape(text: str) -> tuple[int, ...] | None:
    if text.strip() == EMPTY_SHAPE:
        return ()
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
