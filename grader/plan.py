"""Call plans: what the worker does with a graded item, as plain data.

An assignment says how its items are exercised (construct with these arguments, set
this state, call, switch mode, call again; or call a function) as a plan; the worker
runs any plan the same way and knows no assignment. A plan is a tuple of steps that
JSON carries, and its arguments are literals, the case's tensors by name, or what an
earlier step bound:

    (New(args=(3, 1, 3, 2), optional_kwargs={"groups": 1}, bind="layer"),
     Call("layer", method="set_kernel", args=(Tensor("kernel"),)),
     Call("layer", args=(Tensor("input"),), output="output"))

`New` constructs the item (a class); `Call` calls the item itself (a function,
target ITEM), a bound object, one of its methods, or a trusted library callable
resolved before any submission code ran (target `Trusted("torch.xyz")`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ITEM = "@item"   # the graded definition itself


TENSOR_LAYOUTS = ("contiguous", "sliced", "transposed", "channels_last")


@dataclass(frozen=True)
class Tensor:
    """One of the request's tensors, handed over in a memory layout with the same values:
    contiguous; sliced (every other element of a buffer twice the size: what slicing gives,
    .view still works); transposed (first and last dims swapped in memory: .view fails);
    channels_last (4-D only)."""
    name: str
    layout: str = "contiguous"

    def __post_init__(self):
        if self.layout not in TENSOR_LAYOUTS:
            raise ValueError(f"tensor layout must be one of {', '.join(TENSOR_LAYOUTS)}")


@dataclass(frozen=True)
class Ref:
    """What an earlier step bound with `bind=`."""
    name: str


@dataclass(frozen=True)
class Trusted:
    """A library callable by dotted name, resolved in the worker before submission code runs
    (a baseline to time against), so that a submission replacing it changes nothing."""
    path: str


@dataclass(frozen=True)
class New:
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    # Keywords beyond the course's signature: a constructor that does not accept them makes
    # the case `unsupported` (no points), which the report keeps apart from a wrong answer.
    optional_kwargs: tuple[tuple[str, Any], ...] = ()
    bind: str = "obj"
    label: str = ""                # how messages name this step ("" for none)


@dataclass(frozen=True)
class Call:
    target: str | Trusted = ITEM
    method: str | None = None
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    bind: str | None = None
    output: str | None = None      # the result goes back to the grader under this name
    label: str = ""                # how the report names this call ("training call 2")


Step = New | Call


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(s.output for s in self.steps if isinstance(s, Call) and s.output)

    def label_of(self, output: str) -> str:
        for step in self.steps:
            if isinstance(step, Call) and step.output == output:
                return step.label or output
        return output

    def to_wire(self) -> list[dict]:
        return [_step_to_wire(step) for step in self.steps]


def _step_to_wire(step: Step) -> dict:
    if isinstance(step, New):
        return {"op": "new", "args": [_arg(a) for a in step.args],
                "kwargs": {k: _arg(v) for k, v in step.kwargs},
                "optional_kwargs": {k: _arg(v) for k, v in step.optional_kwargs},
                "bind": step.bind}
    target = {"trusted": step.target.path} if isinstance(step.target, Trusted) else step.target
    return {"op": "call", "target": target, "method": step.method, "args": [_arg(a) for a in step.args],
            "kwargs": {k: _arg(v) for k, v in step.kwargs}, "bind": step.bind, "output": step.output}


def _arg(value: Any) -> list:
    """Tagged so that a literal list or dict is never mistaken for a reference."""
    if isinstance(value, Tensor):
        return ["tensor", value.name, value.layout]
    if isinstance(value, Ref):
        return ["ref", value.name]
    if isinstance(value, (list, tuple)):
        return ["list", [_arg(v) for v in value], isinstance(value, tuple)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return ["value", value]
    raise TypeError(f"a plan argument must be a literal, Tensor or Ref, not {type(value).__name__}")


def trusted_paths(plan: Plan) -> tuple[str, ...]:
    return tuple(s.target.path for s in plan.steps if isinstance(s, Call) and isinstance(s.target, Trusted))


@dataclass(frozen=True)
class Signature:
    """What an item must accept to be graded as that item: the number of positional
    arguments its plan passes (None: anything). Two items may share one Python name and
    differ by it (a step's function with 2 parameters, the next step's with 4)."""
    positional: int | None = None
    names: tuple[str, ...] = field(default=())   # for messages: (input_tensor, eps)

    def describe(self, python_name: str) -> str:
        return f"{python_name}({', '.join(self.names)})" if self.names else python_name
