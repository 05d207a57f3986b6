"""The Conv2d assignment's side of the seam (grader/subject.py): what a 2D convolution is.

Its parameters (batch, channels, input size, kernel, stride, padding, dilation, dtype),
how a case's input and kernel are made, the call plan of the course's interface
(`cls(in_channels, out_channels, kernel_size, stride)`, `set_kernel(kernel)`,
`layer(input)`; `padding=`/`dilation=` only where a case needs them), the float64
answer and its tolerance, its likely causes (causes.py) and its checks (methods.py:
the course's helper methods one at a time, and the speed check).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from grader.params import Parameter, Params
from grader.plan import Call, Plan, Tensor
from grader.subject import Expected, Subject, Task

from . import causes, methods
from .geometry import (elements, expected_output, layer_steps, macs, make_tensors, output_height,
                       output_width, reduction)

CONV_PARAMETERS = (
    Parameter("batch", "int", minimum=1),
    Parameter("in_channels", "int", minimum=1),
    Parameter("out_channels", "int", minimum=1),
    Parameter("height", "int", minimum=1),
    Parameter("width", "int", minimum=1),
    Parameter("kernel_size", "int", minimum=1),
    Parameter("stride", "int", minimum=1),
    Parameter("padding", "int", minimum=0),
    Parameter("dilation", "int", minimum=1),
    Parameter("dtype", "choice", choices=("float32", "float64")),
)

class ConvLayer(Task):
    """A Conv2d layer class of the course's interface."""

    kind = "class"
    check_names = ("_unsqueeze_kernel", "_convert_kernel", "_convert_input", "speed")
    input_labels = {"input": "input tensor", "kernel": "kernel"}
    features = causes.FEATURES

    def inputs(self, case) -> dict[str, torch.Tensor]:
        data, kernel = make_tensors(case)
        return {"input": data, "kernel": kernel}

    def plan(self, case, options: Mapping[str, Any]) -> Plan:
        return Plan(layer_steps(case.params) + (Call("layer", args=(Tensor("input"),), output="output"),))

    def expected(self, case, inputs, tolerance: Mapping[str, float], options) -> dict[str, Expected]:
        answer, magnitude = expected_output(case)
        eps = torch.finfo(getattr(torch, case.params.dtype)).eps
        bound = eps * (tolerance["eps_multiplier"] * reduction(case.params) * magnitude + tolerance["abs_floor"])
        return {"output": Expected(value=answer, bound=bound, dtype=case.params.dtype)}

    def likely_causes(self, results, options):
        return causes.likely_causes(results)

    def checks(self, context):
        return methods.run_checks(context)


class Conv2dSubject(Subject):
    parameters = CONV_PARAMETERS
    settings = (Parameter("max_macs", "int", minimum=1,
                          description="batch*out*OH*OW*in*k*k at most, so a per-element loop stays fast"),)
    constraints = {
        "square": lambda p: p.height == p.width,
        "non_square": lambda p: p.height != p.width,
        "output_1x1": lambda p: output_height(p) == 1 and output_width(p) == 1,
        "output_larger_than_1x1": lambda p: output_height(p) * output_width(p) > 1,
        "output_at_least_2x2": lambda p: output_height(p) >= 2 and output_width(p) >= 2,
        # A kernel as large as the input hides which axis a bug uses.
        "distinct_kernel_size": lambda p: p.kernel_size < min(p.height, p.width),
    }
    input_kinds = ("random", "course")
    tolerance_defaults = {"eps_multiplier": 4.0, "abs_floor": 16.0}
    tasks = {"conv2d": ConvLayer()}
    default_task = "conv2d"
    causes = causes.CAUSES
    # aten operators that compute a convolution or an im2col for the student, by
    # overload-packet name (what a dispatch mode sees, whichever Python name reached it).
    forbidden_operators = (
        "convolution", "_convolution", "conv2d", "cudnn_convolution", "mkldnn_convolution",
        "miopen_convolution", "_slow_conv2d_forward", "thnn_conv2d", "slow_conv_dilated2d",
        "_nnpack_spatial_convolution", "conv_depthwise2d", "_conv_depthwise2d", "im2col", "col2im",
    )
    trusted_callables = (methods.BASELINE,)

    def draw(self, values: dict[str, Any], require: tuple[str, ...], rng) -> dict[str, Any]:
        if "square" in require:
            values["width"] = values["height"]
        return values

    def accept(self, params: Params, settings: Mapping[str, Any]) -> bool:
        limit = settings.get("max_macs")
        return output_height(params) >= 1 and output_width(params) >= 1 and (limit is None or macs(params) <= limit)

    def describe(self, p: Params) -> str:
        extras = [f"kernel {p.kernel_size}", f"{p.out_channels} filters", f"stride {p.stride}"]
        if p.padding:
            extras.append(f"padding {p.padding}")
        if p.dilation != 1:
            extras.append(f"dilation {p.dilation}")
        if p.dtype != "float32":
            extras.append(p.dtype)
        return f"input {p.batch}x{p.in_channels}x{p.height}x{p.width}, {', '.join(extras)}"

    def size(self, params: Params) -> float:
        return elements(params)

    def smaller(self, params: Params) -> list[Params]:
        steps = []
        for name, target in (("batch", 1), ("out_channels", 1), ("in_channels", 1)):
            if params[name] > target:
                steps.append(params.replace(**{name: target}))
                if params[name] > target + 1:
                    steps.append(params.replace(**{name: params[name] - 1}))
        for name, floor in (("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1)):
            if params[name] > floor:
                steps.append(params.replace(**{name: params[name] - 1}))
        for name in ("height", "width"):
            value = params[name]
            for smaller in sorted({value // 2, value - 1}, reverse=True):
                if 1 <= smaller < value:
                    steps.append(params.replace(**{name: smaller}))
        return [p for p in steps if output_height(p) >= 1 and output_width(p) >= 1]


SUBJECT = Conv2dSubject()
