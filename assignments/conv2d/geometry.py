"""Shapes, tensors and answers of a Conv2d case: what the subject, its causes and its
checks share."""
from __future__ import annotations

from functools import lru_cache

import torch

from grader.params import Params
from grader.plan import Call, New, Tensor

# The course's own check (test_conv2d_layer): one 3-channel filter over arange input.
COURSE_KERNEL = [[[[0., 1, 0], [1, 2, 1], [0, 1, 0]],
                  [[1, 2, 1], [0, 3, 3], [0, 1, 10]],
                  [[10, 11, 12], [13, 14, 15], [16, 17, 18]]]]


def output_size(length: int, kernel_size: int, stride: int, padding: int, dilation: int) -> int:
    return (length + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def output_height(p: Params) -> int:
    return output_size(p.height, p.kernel_size, p.stride, p.padding, p.dilation)


def output_width(p: Params) -> int:
    return output_size(p.width, p.kernel_size, p.stride, p.padding, p.dilation)


def output_shape(p: Params) -> tuple[int, int, int, int]:
    return (p.batch, p.out_channels, output_height(p), output_width(p))


def input_shape(p: Params) -> tuple[int, int, int, int]:
    return (p.batch, p.in_channels, p.height, p.width)


def kernel_shape(p: Params) -> tuple[int, int, int, int]:
    return (p.out_channels, p.in_channels, p.kernel_size, p.kernel_size)


def reduction(p: Params) -> int:
    return p.in_channels * p.kernel_size * p.kernel_size


def macs(p: Params) -> int:
    return p.batch * p.out_channels * output_height(p) * output_width(p) * reduction(p)


def elements(p: Params) -> int:
    return p.batch * p.in_channels * p.height * p.width


def extra_keywords(p: Params) -> dict[str, int]:
    """Constructor keywords beyond the course's signature, only when the case needs them."""
    keywords = {}
    if p.padding != 0:
        keywords["padding"] = p.padding
    if p.dilation != 1:
        keywords["dilation"] = p.dilation
    return keywords


def course_arguments(p: Params) -> tuple[int, int, int, int]:
    return (p.in_channels, p.out_channels, p.kernel_size, p.stride)


def make_tensors(case) -> tuple[torch.Tensor, torch.Tensor]:
    """The case's input and kernel, on the CPU, in the case's dtype."""
    from grader.errors import ConfigError

    p = case.params
    dtype = getattr(torch, p.dtype)
    if case.inputs == "course":
        kernel = torch.tensor(COURSE_KERNEL, dtype=dtype)
        if tuple(kernel.shape) != kernel_shape(p):
            raise ConfigError(f"groups.{case.group}: inputs 'course' needs the course's kernel shape "
                              f"{tuple(kernel.shape)}")
        data = torch.arange(0, elements(p), dtype=dtype).reshape(input_shape(p))
        return data, kernel
    generator = torch.Generator().manual_seed(case.seed)
    data = torch.randn(input_shape(p), generator=generator, dtype=torch.float64).to(dtype)
    kernel = torch.randn(kernel_shape(p), generator=generator, dtype=torch.float64).to(dtype)
    return data, kernel


@lru_cache(maxsize=512)
def expected_output(case) -> tuple[torch.Tensor, torch.Tensor]:
    """(answer, magnitude) in float64: magnitude[i] = sum |x| * |w| over output i's window."""
    data, kernel = make_tensors(case)
    p = case.params
    data64, kernel64 = data.double(), kernel.double()

    def conv(x, w):
        return torch.nn.functional.conv2d(x, w, stride=p.stride, padding=p.padding, dilation=p.dilation)

    return conv(data64, kernel64), conv(data64.abs(), kernel64.abs())


def layer_steps(p: Params, kernel: str = "kernel", extra: bool = True) -> tuple:
    """Construct with the course's signature (and padding=/dilation= where needed), set_kernel."""
    optional = tuple(extra_keywords(p).items()) if extra else ()
    return (New(args=course_arguments(p), optional_kwargs=optional, bind="layer"),
            Call("layer", method="set_kernel", args=(Tensor(kernel),)))
