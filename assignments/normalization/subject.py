"""The normalization lesson's side of the seam (grader/subject.py): seven graded steps.

Six steps are functions (batch norm over a batch of features, then with an affine weight and
bias, batch norm over images, layer norm, instance norm, group norm) and one is a class (batch
norm with running statistics: trained on some batches, then switched to eval()). Steps 1 and 2
share one Python name and differ by their parameter count; each is graded on the definition
that has its form (a notes file may define both, or the course's step 3 check may rebind the
name to an instance). The answers come from torch's own layers in float64, in this process;
the tolerance per element is tolerance.py's; the likely causes are causes.py's.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from grader.params import Parameter, Params
from grader.plan import ITEM, TENSOR_LAYOUTS, Call, New, Plan, Signature, Tensor
from grader.subject import Expected, Subject, Task

from . import answers, causes, tolerance

COMMON = ("eps", "std", "mean_ratio", "dtype", "layout")

PARAMETERS = (
    Parameter("batch", "int", minimum=1, cycled=True),
    Parameter("features", "int", minimum=1, cycled=True),
    Parameter("channels", "int", minimum=1, cycled=True),
    Parameter("height", "int", minimum=1, cycled=True),
    Parameter("width", "int", minimum=1, cycled=True),
    Parameter("length", "int", minimum=1, cycled=True),
    Parameter("groups", "int", minimum=1, specials=("all",), cycled=True),
    Parameter("per_group", "int", minimum=1, cycled=True),
    Parameter("rank", "int", minimum=2, maximum=8, cycled=True),
    Parameter("size", "int", minimum=1, specials=("course",), cycled=True,
              description="the layer norm input's largest dim after the batch (course: the check's 4x5x...)"),
    Parameter("min_size", "int", minimum=1, cycled=True, description="the layer norm input's smallest dim"),
    Parameter("shape", "shape", derived=True, description="the layer norm input's shape, from rank and size"),
    Parameter("momentum", "float", minimum=0.0, maximum=1.0, cycled=True),
    Parameter("train_calls", "int", minimum=0, cycled=True),
    Parameter("train_batch", "int", minimum=1, cycled=True),
    Parameter("eval_calls", "int", minimum=1, cycled=True),
    Parameter("eval_batch", "int", minimum=1, cycled=True),
    Parameter("row_sizes", "choice", choices=("varied", "equal"), cycled=True,
              description="varied: each call's batch has its own number of rows, up to train_batch / eval_batch"),
    Parameter("first_eval_batch", "int", minimum=0, cycled=True,
              description="the first eval batch's rows (0: as eval_batch draws)"),
    Parameter("train_sizes", "shape", derived=True, description="the rows of each training batch"),
    Parameter("eval_sizes", "shape", derived=True, description="the rows of each eval batch"),
    Parameter("eps", "float", minimum=1e-30, maximum=10.0, cycled=True),
    Parameter("std", "float", minimum=1e-30, specials=("matched",), cycled=True,
              description="each reduction's spread; matched: about sqrt(eps), where eps's placement shows"),
    Parameter("mean_ratio", "float", minimum=0.0, cycled=True, description="|mean| / spread of each reduction"),
    Parameter("dtype", "choice", choices=("float32", "float64"), cycled=True),
    Parameter("layout", "choice", choices=TENSOR_LAYOUTS, cycled=True,
              description="the input's memory layout (same values): transposed makes .view fail"),
)


class Step(Task):
    """A functional step: f(input, [weight, bias | groups,] eps) -> a tensor of the input's shape."""

    kind = "function"
    input_labels = {"input": "input tensor", "weight": "weight", "bias": "bias"}

    def __init__(self, task: str, python_name: str, shape: tuple[str, ...], signature: Signature,
                 draws: tuple[str, ...] | None = None):
        self.task = task
        self.python_name = python_name
        self.signature = signature
        self.parameters = shape + COMMON
        # Layer norm's case has a shape, drawn from a batch, a rank and a size.
        self.draws = draws + COMMON if draws else None
        self.features = causes.features(task)

    def inputs(self, case) -> dict[str, torch.Tensor]:
        return answers.inputs(self.task, case)

    def plan(self, case, options: Mapping[str, Any]) -> Plan:
        p = case.params
        data = Tensor("input", p.layout)
        if self.task == "batch_norm1d_affine":
            args = (data, Tensor("weight"), Tensor("bias"), p.eps)
        elif self.task == "group_norm":
            args = (data, p.groups, p.eps)
        else:
            args = (data, p.eps)
        return Plan((Call(ITEM, args=args, output="output"),))

    def expected(self, case, inputs, tolerance_settings, options) -> dict[str, Expected]:
        answer, bound = answers.function_answer(self.task, case, tolerance_settings["multiplier"])
        return {"output": Expected(value=answer, bound=bound, dtype=case.params.dtype)}

    def likely_causes(self, results, options):
        return causes.likely_causes(self.task, results, options)


class BatchNormModule(Task):
    """Step 3: CustomBatchNorm1d(weight, bias, eps, momentum); training calls, eval(), eval calls."""

    kind = "class"
    python_name = "CustomBatchNorm1d"
    signature = Signature()
    parameters = ("features", "momentum", "train_sizes", "eval_sizes") + COMMON
    draws = ("features", "momentum", "train_calls", "train_batch", "eval_calls", "eval_batch", "row_sizes",
             "first_eval_batch") + COMMON
    option_defaults = {"momentum_convention": "torch"}
    option_choices = {"momentum_convention": ("torch", "either")}
    input_labels = {"weight": "weight", "bias": "bias"}

    def __init__(self):
        self.task = "batch_norm1d_module"
        self.features = causes.features(self.task)

    def inputs(self, case) -> dict[str, torch.Tensor]:
        return answers.inputs(self.task, case)

    def plan(self, case, options: Mapping[str, Any]) -> Plan:
        p = case.params
        steps = [New(args=(Tensor("weight"), Tensor("bias"), p.eps, p.momentum), bind="bn",
                     label="the constructor")]
        steps += [Call("bn", args=(Tensor(f"train{k}", p.layout),), output=f"train{k}",
                       label=f"training call {k + 1}") for k in range(len(p.train_sizes))]
        steps.append(Call("bn", method="eval", label="eval()"))
        steps += [Call("bn", args=(Tensor(f"eval{k}", p.layout),), output=f"eval{k}",
                       label=f"eval call {k + 1}") for k in range(len(p.eval_sizes))]
        return Plan(tuple(steps))

    def expected(self, case, inputs, tolerance_settings, options) -> dict[str, Expected]:
        return answers.module_answers(case, case.params.momentum, tolerance_settings["multiplier"])

    def alternatives(self, case, inputs, tolerance_settings, options) -> dict[str, dict[str, Expected]]:
        """With the instructor's `momentum_convention: either`, the reversed convention too:
        running = momentum * running + (1 - momentum) * batch, torch's at 1 - momentum."""
        if options.get("momentum_convention") != "either":
            return {}
        return {"the reversed momentum convention": answers.module_answers(case, 1.0 - case.params.momentum,
                                                                    tolerance_settings["multiplier"])}

    def likely_causes(self, results, options):
        return causes.likely_causes(self.task, results, options)


class NormalizationSubject(Subject):
    parameters = PARAMETERS
    settings = (Parameter("max_elements", "int", minimum=1, description="values in all of a case's inputs at most"),
                Parameter("tolerance_mode", "choice", choices=("normal", "stable"),
                          description="stable: no allowance for the one-pass variance (a stability test)"))
    constraints = {
        # groups * groups == C makes "groups taken as the group size" the right blocks.
        "distinct_group_size": lambda p: p.per_group == 1 or p.groups == 1 or p.per_group != p.groups,
    }
    input_kinds = ("random", "course")
    tolerance_defaults = {"multiplier": tolerance.K}
    tasks = {
        "batch_norm1d": Step("batch_norm1d", "custom_batch_norm1d", ("batch", "features"),
                             Signature(2, ("input_tensor", "eps"))),
        "batch_norm1d_affine": Step("batch_norm1d_affine", "custom_batch_norm1d", ("batch", "features"),
                                    Signature(4, ("input_tensor", "weight", "bias", "eps"))),
        "batch_norm1d_module": BatchNormModule(),
        "batch_norm2d": Step("batch_norm2d", "custom_batch_norm2d", ("batch", "channels", "height", "width"),
                             Signature(2, ("input_tensor", "eps"))),
        "layer_norm": Step("layer_norm", "custom_layer_norm", ("shape",), Signature(2, ("input_tensor", "eps")),
                           draws=("batch", "rank", "size", "min_size")),
        "instance_norm1d": Step("instance_norm1d", "custom_instance_norm1d", ("batch", "channels", "length"),
                                Signature(2, ("input_tensor", "eps"))),
        "group_norm": Step("group_norm", "custom_group_norm", ("batch", "groups", "per_group", "length"),
                           Signature(3, ("input_tensor", "groups", "eps"))),
    }
    causes = causes.CAUSES

    def draw(self, values: dict[str, Any], require: tuple[str, ...], rng) -> dict[str, Any]:
        if values.get("std") == "matched":
            # eps and the variance of one size: where eps's placement changes the answer most.
            values["std"] = math.sqrt(values["eps"]) * 10 ** rng.uniform(-0.5, 0.5)
        if values.get("groups") == "all":
            values["groups"], values["per_group"] = values["per_group"], 1      # one channel a group
        if "rank" in values:
            if values.get("size") == "course":
                # The course's check: 3 x 4 x 5 x ... for ranks 2 to 7.
                values["shape"] = (values["batch"], *range(4, 4 + values["rank"] - 1))
            else:
                low = min(values["min_size"], values["size"])
                values["shape"] = (values["batch"], *(rng.randint(low, values["size"]) for _ in range(values["rank"] - 1)))
        if "train_calls" in values:
            varied = values["row_sizes"] == "varied"
            values["train_sizes"] = tuple(_rows(values["train_batch"], 2, varied, rng)
                                          for _ in range(values["train_calls"]))
            sizes = [_rows(values["eval_batch"], 2, varied, rng) for _ in range(values["eval_calls"])]
            if values.get("first_eval_batch"):
                sizes[0] = values["first_eval_batch"]
            values["eval_sizes"] = tuple(sizes)
        return values

    def accept(self, params: Params, settings: Mapping[str, Any]) -> bool:
        """Never a case torch's own layer raises on (a statistic of one value in training: there is
        no answer to grade against), and within the size cap."""
        limit = settings.get("max_elements")
        if "train_sizes" in params:
            if any(rows < 2 for rows in params.train_sizes):
                return False
            elements = params.features * (sum(params.train_sizes) + sum(params.eval_sizes))
        else:
            shape = _case_shape(params)
            if shape is None or len(shape) < 2:
                return False
            elements = math.prod(shape)
            if "features" in params and params.batch < 2:
                return False
            if "height" in params and params.batch * params.height * params.width < 2:
                return False
            if "length" in params and "groups" not in params and params.length < 2:
                return False
            if "groups" in params and params.batch * params.per_group * params.length < 2:
                return False
        return limit is None or elements <= limit

    def describe(self, p: Params) -> str:
        if "train_sizes" in p:
            text = (f"{p.features} feature{'s' if p.features != 1 else ''}, training batches of {_rows_text(p.train_sizes)}, "
                    f"eval batches of {_rows_text(p.eval_sizes)}, momentum {p.momentum:.3g}")
        else:
            shape = _case_shape(p)
            text = f"input {'x'.join(map(str, shape))}"
            if "groups" in p:
                text += f", {p.groups} groups"
        text += f", eps {p.eps:.3g}, spread {p.std:.3g}"
        if p.mean_ratio > 2:
            text += f", mean {p.mean_ratio:.3g} spreads"
        if p.dtype != "float32":
            text += f", {p.dtype}"
        if p.layout != "contiguous":
            text += f", {p.layout}"
        return text

    def size(self, params: Params) -> float:
        if "train_sizes" in params:
            return params.features * (sum(params.train_sizes) + sum(params.eval_sizes))
        shape = _case_shape(params)
        return math.prod(shape) if shape else 0

    def smaller(self, params: Params) -> list[Params]:
        """One step smaller in one dimension, or one call fewer; and eps and the spread moved to
        the baseline's middle (where a cause's effect is plainest)."""
        steps = []

        def lower(name: str, floor: int):
            if name in params and isinstance(params[name], int) and params[name] > floor:
                steps.append(params.replace(**{name: floor}))
                if params[name] > floor + 1:
                    steps.append(params.replace(**{name: params[name] - 1}))

        for name, floor in (("batch", 1), ("features", 1), ("channels", 1), ("height", 1), ("width", 1),
                            ("length", 2), ("per_group", 1), ("groups", 1)):
            lower(name, floor)
        if "shape" in params:
            shape = params.shape
            if len(shape) > 2:
                steps.append(params.replace(shape=shape[:-1]))
            for position in range(len(shape)):
                if shape[position] > 1:
                    steps.append(params.replace(shape=shape[:position] + (shape[position] - 1,) + shape[position + 1:]))
                    if shape[position] > 2:
                        steps.append(params.replace(shape=shape[:position] + (1,) + shape[position + 1:]))
        for name in ("train_sizes", "eval_sizes"):
            if name in params:
                sizes = params[name]
                if len(sizes) > 1:
                    steps.append(params.replace(**{name: sizes[:-1]}))
                for position, rows in enumerate(sizes):
                    if rows > 2:
                        steps.append(params.replace(**{name: sizes[:position] + (2,) + sizes[position + 1:]}))
        if "train_sizes" in params and params.train_sizes:
            steps.append(params.replace(train_sizes=()))
        if params.eps != 0.01:
            steps.append(params.replace(eps=0.01))
        if params.std != 1.0:
            steps.append(params.replace(std=1.0))
        if params.mean_ratio > 1.0:
            steps.append(params.replace(mean_ratio=1.0))
        return [p for p in steps if self.accept(p, {})]


def _rows(largest: int, fewest: int, varied: bool, rng) -> int:
    """One call's rows: `largest`, or (varied) between half of it and all of it, so that a class
    that keeps the first batch's size (or a global's) fails."""
    return rng.randint(max(fewest, largest // 2), largest) if varied and largest > fewest else largest


def _rows_text(sizes: tuple[int, ...]) -> str:
    if not sizes:
        return "none"
    return ", ".join(map(str, sizes)) + " rows"


def _case_shape(p: Params) -> tuple[int, ...] | None:
    try:
        if "shape" in p:
            return tuple(p.shape)
        if "groups" in p:
            return (p.batch, p.groups * p.per_group, p.length)
        if "height" in p:
            return (p.batch, p.channels, p.height, p.width)
        if "length" in p:
            return (p.batch, p.channels, p.length)
        return (p.batch, p.features)
    except AttributeError:
        return None


SUBJECT = NormalizationSubject()
