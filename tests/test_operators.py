"""Forbidden operator families (issue 11): what the Conv2d assignment's families match in the
installed torch, that they match every convolution route a red-team pass found and no innocent
operator, and that a family the registry does not know is a config error.

Run with -s to read the list each family matched (the test prints it)."""
from __future__ import annotations

import pytest
import torch

from grader.config import load_assignment
from grader.errors import ConfigError
from grader.operators import recorded_name, registered_operators, resolve_families

# Operators that compute a convolution (forward, transposed, backward) or an im2col/col2im and
# that a submission can reach on a CPU build, by the routes tests/fixtures/hostile/conv_routes*.py
# take, plus the ones the old list named.
MUST_MATCH = {
    "convolution": ["convolution", "_convolution", "conv2d", "conv_tbc", "convolution_backward",
                    "slow_conv3d_forward", "slow_conv_dilated3d", "slow_conv_transpose2d",
                    "slow_conv_dilated2d", "_slow_conv2d_forward", "thnn_conv2d", "mkldnn_convolution",
                    "conv_transpose2d", "conv1d", "conv3d", "_conv_depthwise2d", "mkldnn::_convolution_pointwise"],
    "im2col": ["im2col", "col2im"],
}
# Innocent operators whose names look alike: none may be forbidden.
MUST_NOT_MATCH = ["_convert_indices_from_coo_to_csr", "_convert_weight_to_int4pack", "prims::convert_element_type",
                  "corrcoef", "unfold", "unfold_backward", "unfold_copy", "mm", "matmul", "einsum", "as_strided",
                  "_philox_key_fold_in", "add", "sum"]


@pytest.fixture(scope="module")
def families():
    assignment = load_assignment("conv2d")
    return dict(assignment.forbidden_families), dict(assignment.family_matches), assignment


def test_each_family_lists_what_it_matched_in_this_torch(families):
    patterns, matched, _ = families
    assert set(matched) == {"convolution", "im2col"}
    for family, operators in matched.items():
        print(f"\n{family} ({len(operators)} operators in torch {torch.__version__}, patterns {patterns[family]}):")
        print("  " + " ".join(operators))
    for family, names in MUST_MATCH.items():
        missing = [name for name in names if name in _registry_names() and name not in matched[family]]
        assert not missing, f"{family} misses {missing}"
    every = {op for operators in matched.values() for op in operators}
    assert not every & set(MUST_NOT_MATCH), sorted(every & set(MUST_NOT_MATCH))


def test_every_match_is_a_convolution_or_im2col_by_name(families):
    _, matched, _ = families
    for operator in matched["convolution"]:
        tokens = operator.rpartition("::")[2].split("_")
        assert any(t.lstrip("q").startswith("conv") and not t.startswith("conve") for t in tokens), operator
    assert set(matched["im2col"]) <= {"im2col", "col2im"}


def test_every_class_forbids_the_families(families):
    _, matched, assignment = families
    every = {op for operators in matched.values() for op in operators}
    for spec in assignment.items:
        assert every <= set(spec.forbidden_operators), spec.name


def test_families_resolve_against_the_registry_given():
    registry = {"aten::convolution", "aten::conv_future3d_backward", "aten::convert_thing", "myns::conv2d"}
    resolved = resolve_families({"c": [r"[^:]+::(.*_)?q?conv(olution)?(\d+d)?(_.*)?"]}, registry)
    assert resolved["c"] == ("conv_future3d_backward", "convolution", "myns::conv2d")


def test_recorded_names_are_bare_for_aten_and_qualified_otherwise():
    assert recorded_name("aten::convolution") == "convolution"
    assert recorded_name("mkldnn::_convolution_pointwise") == "mkldnn::_convolution_pointwise"
    assert "aten::convolution" in registered_operators()


def test_a_family_that_matches_nothing_or_is_no_pattern_is_a_config_error(assignment_copy):
    config = assignment_copy / "assignment.yaml"
    text = config.read_text()
    config.write_text(text.replace("forbidden_families:\n", "forbidden_families:\n  gone: ['aten::no_such_op']\n", 1))
    with pytest.raises(ConfigError, match="forbidden_families.gone: matches no operator"):
        load_assignment(str(assignment_copy))
    config.write_text(text.replace("forbidden_families:\n", "forbidden_families:\n  bad: ['aten::(']\n", 1))
    with pytest.raises(ConfigError, match="forbidden_families.bad: not a regular expression"):
        load_assignment(str(assignment_copy))


def _registry_names() -> set[str]:
    return {recorded_name(name) for name in registered_operators()}
