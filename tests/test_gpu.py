"""CUDA behaviour, checked on real hardware by scripts/gpu_check.sh; skipped without CUDA."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import FIXTURES, ROOT, SUBMISSIONS

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def grade(path, *args, tmp_path):
    out = tmp_path / f"{path.stem}.json"
    result = subprocess.run([sys.executable, "-m", "grader", str(path), "-o", str(out), "--quiet", *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


def cases(report, class_name, device="cuda"):
    return [c for c in report["items"][class_name]["cases"] if c["device"] == device]


def test_a_correct_submission_passes_every_cuda_case_even_at_64_channels(tmp_path):
    report = grade(SUBMISSIONS / "correct_module.py", "--device", "cuda", tmp_path=tmp_path)
    for name in report["items"]:
        assert {c["status"] for c in cases(report, name)} == {"passed"}, name
    assert any(c["group"] == "wide_channels" for c in cases(report, "Conv2dMatrixV2"))
    limits = report["environment"]["protections"]["resource_limits"]
    assert "data=" in limits and "as=" not in limits   # a memory cap that CUDA can start under


def test_tf32_convolution_misses_a_naive_allclose_and_float32_matmul_passes_ours():
    from assignments.conv2d.geometry import expected_output, make_tensors
    from grader.cases import build_cases
    from grader.compare import judge_run
    from grader.config import load_assignment
    from grader.runner import CaseRun, OutputRun
    from reference.conv2d import Conv2dMatrixV2

    assignment = load_assignment("conv2d")
    [case] = build_cases(assignment, 2026, ("cuda",), only_case="wide_channels-001")
    data, kernel = make_tensors(case)
    expected, _ = expected_output(case)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):
        tf32 = torch.nn.functional.conv2d(data.cuda(), kernel.cuda()).double().cpu()
    relative = float((tf32 - expected).abs().max() / expected.abs().max())
    print(f"nn.Conv2d float32 with TF32 vs float64 at 64 channels: {relative:.2e} relative")
    layer = Conv2dMatrixV2(64, 64, 3, 1)
    layer.set_kernel(kernel.cuda())
    output = layer(data.cuda())
    run = CaseRun(case=case, item="Conv2dMatrixV2", status="returned",
                  outputs=(OutputRun(name="output", tensor=output.cpu(), returned_type="torch.Tensor",
                                     returned_kind="tensor", device="cuda:0"),))
    assert judge_run(assignment, assignment.item("Conv2dMatrixV2"), run).verdict == "passed"
    if relative > 1e-4:  # what PyTorch's default TF32 convolutions do on Ampere and later
        assert not torch.allclose(tf32.float(), expected.float(), rtol=1e-4, atol=1e-4)


def test_cpu_tensors_for_cuda_inputs_fail_on_cuda_only_with_the_cause(tmp_path):
    report = grade(SUBMISSIONS / "cpu_only.ipynb", "--device", "auto", tmp_path=tmp_path)
    for name, cls in report["items"].items():
        assert {c["status"] for c in cases(report, name, "cpu")} == {"passed"}, name
        assert "passed" not in {c["status"] for c in cases(report, name)}, name
        assert [c["cause"] for c in cls["likely_causes"]] == ["cpu_tensor_for_cuda_input"], name


def test_a_poisoned_cuda_context_costs_one_case_and_a_new_worker(tmp_path):
    report = grade(FIXTURES / "gpu" / "device_assert.py", "--device", "auto", tmp_path=tmp_path)
    poisoned, others = [], []
    for case in cases(report, "Conv2dLoop"):   # the fixture asserts on every 2x3x4x4 input
        p = case["params"]
        shape = (p["batch"], p["in_channels"], p["height"], p["width"])
        (poisoned if shape == (2, 3, 4, 4) else others).append(case)
    assert poisoned and all(c["status"] == "error" and "CUDA error" in c["message"] for c in poisoned)
    assert others and {c["status"] for c in others} == {"passed"}   # each after a fresh worker
    assert report["environment"]["worker_restarts"] >= len(poisoned)
    assert [c["cause"] for c in report["items"]["Conv2dLoop"]["likely_causes"]] == ["fails_only_on_cuda"]


def test_cuda_out_of_memory_is_reported_as_such(tmp_path):
    report = grade(FIXTURES / "gpu" / "gpu_oom.py", "--device", "auto", "--case", "stride-001", tmp_path=tmp_path)
    [cpu] = cases(report, "Conv2dMatrix", "cpu")
    [cuda] = cases(report, "Conv2dMatrix")
    assert cpu["status"] == "passed"
    assert cuda["status"] == "error" and "out of GPU memory" in cuda["message"]
    assert [c["cause"] for c in report["items"]["Conv2dMatrix"]["likely_causes"]] == ["out_of_gpu_memory"]


NORMALIZATION = ROOT / "assignments" / "normalization"


def test_every_normalization_step_passes_on_cuda_in_the_worked_example(tmp_path):
    report = grade(NORMALIZATION / "example" / "submission.ipynb", "--device", "auto", tmp_path=tmp_path)
    assert report["score"] == report["max_score"] == 100
    for name in report["items"]:
        statuses = {c["status"] for c in cases(report, name)}
        assert statuses == {"passed"}, (name, statuses)
    # The layouts really reach CUDA: transposed, sliced and channels_last inputs among the cases.
    layouts = {c["params"]["layout"] for name in report["items"] for c in cases(report, name)}
    assert {"transposed", "sliced", "channels_last"} <= layouts


def test_float32_cpu_buffers_fail_on_cuda_with_their_cause(tmp_path):
    report = grade(NORMALIZATION / "fixtures" / "float32_buffers.py", "--device", "auto", tmp_path=tmp_path)
    for name in ("batch_norm1d_module", "batch_norm2d"):
        item = report["items"][name]
        assert all(c["status"] != "passed" for c in cases(report, name)), name
        causes = [c["cause"] for c in item["likely_causes"]]
        assert "cpu_tensor_for_cuda_input" in causes or "fails_only_on_cuda" in causes, (name, causes)
