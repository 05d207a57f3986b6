"""Forbidden operator families: patterns resolved against this torch's operator registry.

An assignment forbids what a student must write by hand as families of operators (regular
expressions over qualified names such as `aten::convolution_backward`), not as a list of names:
a list misses the operators nobody thought of, and every torch release adds some. The patterns
are matched against every operator the dispatcher knows in the running torch, so a newer torch is
covered the day it is installed, and a test prints what each family matched.

Names are given the way the worker's operator recorder reports them: an `aten` operator by its
overload-packet name alone (`convolution`), any other namespace qualified (`mkldnn::_x`).
"""
from __future__ import annotations

import functools
import re
from typing import Iterable, Mapping

import torch


@functools.lru_cache(maxsize=1)
def registered_operators() -> frozenset[str]:
    """Every operator (overload packet) the dispatcher knows, as "namespace::name"."""
    return frozenset(name.split(".", 1)[0] for name in torch._C._dispatch_get_all_op_names())


def recorded_name(qualified: str) -> str:
    """The name the operator recorder reports for "namespace::name"."""
    namespace, _, name = qualified.partition("::")
    return name if namespace == "aten" else qualified


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern, ...]:
    """Raises re.error for a pattern that is not a regular expression."""
    return tuple(re.compile(pattern) for pattern in patterns)


def resolve_families(families: Mapping[str, Iterable[str]],
                     registry: Iterable[str] | None = None) -> dict[str, tuple[str, ...]]:
    """For each family, the recorded names of the registry's operators whose qualified name
    one of its patterns matches in full, sorted."""
    names = sorted(registered_operators() if registry is None else set(registry))
    resolved = {}
    for family, patterns in families.items():
        compiled = compile_patterns(patterns)
        resolved[family] = tuple(sorted({recorded_name(name) for name in names
                                         if any(p.fullmatch(name) for p in compiled)}))
    return resolved
