"""Build the graded cases from an assignment and a seed.

A case's parameters and tensors depend only on (seed, case id), never on the
order of groups or on other cases, so `--case stride-003` replays exactly the
case the full run graded.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import torch

from .config import Assignment, GroupSpec
from .errors import ConfigError, UsageError

MAX_SAMPLING_TRIES = 20_000

# The course's own check (test_conv2d_layer): one 3-channel filter over arange input.
COURSE_KERNEL = [[[[0., 1, 0], [1, 2, 1], [0, 1, 0]],
                  [[1, 2, 1], [0, 3, 3], [0, 1, 10]],
                  [[10, 11, 12], [13, 14, 15], [16, 17, 18]]]]


@dataclass(frozen=True)
class CaseParams:
    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel_size: int
    stride: int
    padding: int
    dilation: int
    dtype: str

    @property
    def output_height(self) -> int:
        return output_size(self.height, self.kernel_size, self.stride, self.padding, self.dilation)

    @property
    def output_width(self) -> int:
        return output_size(self.width, self.kernel_size, self.stride, self.padding, self.dilation)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_channels, self.output_height, self.output_width)

    @property
    def reduction(self) -> int:
        return self.in_channels * self.kernel_size * self.kernel_size

    @property
    def macs(self) -> int:
        return self.batch * self.out_channels * self.output_height * self.output_width * self.reduction

    @property
    def extra_keywords(self) -> dict[str, int]:
        """Constructor keywords beyond the course's signature, only when the case needs them."""
        keywords = {}
        if self.padding != 0:
            keywords["padding"] = self.padding
        if self.dilation != 1:
            keywords["dilation"] = self.dilation
        return keywords

    @property
    def elements(self) -> int:
        return self.batch * self.in_channels * self.height * self.width


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    params: CaseParams
    device: str
    seed: int
    hidden: bool
    inputs: str
    classes: tuple[str, ...]

    @property
    def key(self) -> str:
        """Unique within a run: the same case id is graded once per device."""
        return f"{self.id}@{self.device}"


def output_size(length: int, kernel_size: int, stride: int, padding: int, dilation: int) -> int:
    return (length + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def case_seed(seed: int, case_id: str) -> int:
    digest = hashlib.sha256(f"{seed}/{case_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def build_cases(assignment: Assignment, seed: int, devices: tuple[str, ...],
                only_case: str | None = None) -> tuple[Case, ...]:
    class_names = tuple(spec.name for spec in assignment.classes)
    cases = []
    for group in assignment.groups:
        for index in range(1, group.count + 1):
            case_id = f"{group.name}-{index:03d}"
            if only_case is not None and case_id != only_case:
                continue
            params = sample_params(group, case_id, seed)
            for device in devices:
                if device in group.devices:
                    cases.append(Case(id=case_id, group=group.name, params=params, device=device,
                                      seed=case_seed(seed, case_id), hidden=group.hidden,
                                      inputs=group.inputs, classes=group.classes or class_names))
    if only_case is not None and not cases:
        known = ", ".join(f"{g.name}-001..{g.count:03d}" for g in assignment.groups)
        raise UsageError(f"no case {only_case!r} for the selected devices (cases: {known})")
    return tuple(cases)


def sample_params(group: GroupSpec, case_id: str, seed: int) -> CaseParams:
    rng = random.Random(f"{seed}/{case_id}/params")
    names = ("batch", "in_channels", "out_channels", "height", "width",
             "kernel_size", "stride", "padding", "dilation", "dtype")
    max_macs = max(group.choices("max_macs"))
    for _ in range(MAX_SAMPLING_TRIES):
        values = {name: rng.choice(group.choices(name)) for name in names}
        if "square" in group.require:
            values["width"] = values["height"]
        params = CaseParams(**values)
        if params.output_height >= 1 and params.output_width >= 1 and params.macs <= max_macs \
                and all(_satisfies(params, rule) for rule in group.require):
            return params
    raise ConfigError(f"groups.{group.name}: no parameters satisfy its ranges and 'require' "
                      f"(tried {MAX_SAMPLING_TRIES} samples)")


def _satisfies(params: CaseParams, rule: str) -> bool:
    out_h, out_w = params.output_height, params.output_width
    return {
        "square": params.height == params.width,
        "non_square": params.height != params.width,
        "output_1x1": out_h == 1 and out_w == 1,
        "output_larger_than_1x1": out_h * out_w > 1,
        "output_at_least_2x2": out_h >= 2 and out_w >= 2,
        # A kernel as large as the input hides which axis a bug uses.
        "distinct_kernel_size": params.kernel_size < min(params.height, params.width),
    }[rule]


def make_tensors(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """The case's input and kernel, on the CPU, in the case's dtype."""
    p = case.params
    dtype = getattr(torch, p.dtype)
    if case.inputs == "course":
        kernel = torch.tensor(COURSE_KERNEL, dtype=dtype)
        if tuple(kernel.shape) != p.kernel_shape:
            raise ConfigError(f"groups.{case.group}: inputs 'course' needs the course's kernel shape "
                              f"{tuple(kernel.shape)}")
        data = torch.arange(0, p.elements, dtype=dtype).reshape(p.input_shape)
        return data, kernel
    generator = torch.Generator().manual_seed(case.seed)
    data = torch.randn(p.input_shape, generator=generator, dtype=torch.float64).to(dtype)
    kernel = torch.randn(p.kernel_shape, generator=generator, dtype=torch.float64).to(dtype)
    return data, kernel
