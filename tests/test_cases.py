import torch

from assignments.conv2d.geometry import extra_keywords, macs, make_tensors, output_height, output_size, output_width
from grader.cases import build_cases
from grader.config import load_assignment

ASSIGNMENT = load_assignment("conv2d")


def test_same_seed_same_cases_and_tensors():
    first = build_cases(ASSIGNMENT, 7, ("cpu", "cuda"))
    second = build_cases(ASSIGNMENT, 7, ("cpu", "cuda"))
    assert first == second
    for a, b in zip(first[:10], second[:10]):
        for x, y in zip(make_tensors(a), make_tensors(b)):
            assert torch.equal(x, y)


def test_different_seeds_give_different_random_cases():
    first = {c.id: c.params for c in build_cases(ASSIGNMENT, 1, ("cpu",))}
    second = {c.id: c.params for c in build_cases(ASSIGNMENT, 2, ("cpu",))}
    assert first["course-001"] == second["course-001"]   # the course's fixed case never changes
    differing = [i for i in first if first[i] != second[i]]
    assert len(differing) > len(first) // 2


def test_a_case_id_replays_the_same_case():
    everything = {c.key: c for c in build_cases(ASSIGNMENT, 2026, ("cpu",))}
    [only] = build_cases(ASSIGNMENT, 2026, ("cpu",), only_case="dilation-004")
    assert only == everything["dilation-004@cpu"]
    assert torch.equal(make_tensors(only)[0], make_tensors(everything["dilation-004@cpu"])[0])


def test_unknown_case_is_a_usage_error():
    import pytest

    from grader.errors import UsageError
    with pytest.raises(UsageError, match="no case"):
        build_cases(ASSIGNMENT, 1, ("cpu",), only_case="stride-099")


def test_groups_keep_their_promises_over_many_seeds():
    for seed in range(40):
        for case in build_cases(ASSIGNMENT, seed, ("cpu",)):
            p = case.params
            assert output_height(p) >= 1 and output_width(p) >= 1
            if case.group == "non_square":
                assert p.height != p.width
            if case.group in ("basic", "stride", "channels", "kernel_size", "batch"):
                assert p.height == p.width
            if case.group == "channels":
                assert p.out_channels >= 2
            if case.group == "output_1x1":
                assert (output_height(p), output_width(p)) == (1, 1)
            if case.group == "large_output":
                assert output_height(p) >= 2 and output_width(p) >= 2
            if case.group in ("basic", "stride", "non_square"):
                assert output_height(p) * output_width(p) > 1
            if case.group == "padding":
                assert p.padding >= 1 and extra_keywords(p) == {"padding": p.padding}
            elif case.group == "dilation":
                assert p.dilation >= 2 and extra_keywords(p) == {"dilation": p.dilation}
            else:
                assert extra_keywords(p) == {}
            if case.group != "wide_channels":
                assert macs(p) <= 20000   # an honest per-element Conv2dLoop stays fast


def test_course_case_is_the_courses_own_check():
    [case] = build_cases(ASSIGNMENT, 5, ("cpu",), only_case="course-001")
    data, kernel = make_tensors(case)
    assert torch.equal(data, torch.arange(96, dtype=torch.float32).reshape(2, 3, 4, 4))
    assert kernel.shape == (1, 3, 3, 3) and kernel[0, 2, 2, 2] == 18
    from assignments.conv2d.geometry import output_shape
    assert output_shape(case.params) == (2, 1, 1, 1)


def test_output_size_formula():
    assert output_size(7, 3, 2, 1, 1) == 4
    assert output_size(9, 3, 1, 0, 3) == 3
    assert output_size(4, 3, 2, 0, 1) == 1
