import torch

from assignments.conv2d.geometry import expected_output, make_tensors
from grader.cases import build_cases
from grader.compare import judge_run
from grader.config import load_assignment
from grader.runner import CaseRun, OutputRun
from grader.protocol import tensor_digest

ASSIGNMENT = load_assignment("conv2d")
LOOP = ASSIGNMENT.item("Conv2dLoop")
CASES = {c.id: c for c in build_cases(ASSIGNMENT, 2026, ("cpu",))}


def _run(case, output, mutated=(), **overrides):
    fields = dict(name="output", tensor=output, returned_type="torch.Tensor", returned_kind="tensor", device="cpu")
    fields.update(overrides)
    return CaseRun(case=case, item="Conv2dLoop", status="returned", outputs=(OutputRun(**fields),),
                   mutated=tuple(mutated))


def compare(run):
    return judge_run(ASSIGNMENT, LOOP, run)


def _float32_answer(case):
    data, kernel = make_tensors(case)
    p = case.params
    return torch.nn.functional.conv2d(data, kernel, stride=p.stride, padding=p.padding, dilation=p.dilation)


def test_a_correct_float32_answer_passes_even_at_64_channels():
    case = CASES["wide_channels-001"]
    assert compare(_run(case, _float32_answer(case))).verdict == "passed"


def test_an_answer_with_tf32_sized_error_fails_a_naive_check_but_a_wrong_term_fails_ours():
    case = CASES["wide_channels-001"]
    answer = _float32_answer(case)
    wrong = answer.clone()
    wrong[0, 5, 1, 2] += 0.5   # one window term off: far smaller than the output's scale
    result = compare(_run(case, wrong))
    assert result.verdict == "failed" and result.first_mismatch == (0, 5, 1, 2)
    assert "1 of 1024 values wrong" in result.message


def test_wrong_shape_type_dtype_device_and_mutation_each_say_what_is_wrong():
    case = CASES["stride-001"]
    answer = _float32_answer(case)
    assert "output shape [2, 1, 4, 5]" in compare(_run(case, torch.zeros(2, 1, 4, 5))).message
    numpy_like = compare(_run(case, answer, returned_type="numpy.ndarray", returned_kind="ndarray"))
    assert numpy_like.verdict == "failed" and "numpy.ndarray" in numpy_like.message
    assert "values are right" in numpy_like.message
    wrong_dtype = compare(_run(case, answer.double()))
    assert wrong_dtype.verdict == "failed" and "float64 for float32" in wrong_dtype.message
    cuda_case = build_cases(ASSIGNMENT, 2026, ("cuda",), only_case="stride-001")[0]
    on_cpu = compare(_run(cuda_case, answer, device="cpu"))
    assert on_cpu.verdict == "failed" and "on cpu for a cuda input" in on_cpu.message
    mutated = compare(_run(case, answer, mutated=("input",)))
    assert mutated.verdict == "failed" and "modified its input" in mutated.message


def test_nan_is_never_close():
    case = CASES["basic-001"]
    answer = _float32_answer(case)
    answer[0, 0, 0, 0] = float("nan")
    assert compare(_run(case, answer)).verdict == "failed"


def test_expected_outputs_are_float64_and_match_the_reference():
    from reference.conv2d import Conv2dMatrixV2

    case = CASES["padding-002"]
    expected, magnitude = expected_output(case)
    assert expected.dtype == torch.float64 and (magnitude >= expected.abs()).all()
    data, kernel = make_tensors(case)
    p = case.params
    layer = Conv2dMatrixV2(p.in_channels, p.out_channels, p.kernel_size, p.stride, padding=p.padding)
    layer.set_kernel(kernel.double())
    assert torch.allclose(layer(data.double()), expected)


def test_digest_sees_in_place_changes():
    tensor = torch.randn(3)
    before = tensor_digest(tensor)
    tensor[0] += 1
    assert tensor_digest(tensor) != before
