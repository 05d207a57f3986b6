"""The reference Conv2d solutions against torch.nn.functional.conv2d.

Cases are random but seeded, so a failure names a reproducible case id.
"""
import random

import pytest
import torch
import torch.nn.functional as F

from assignments.conv2d.scaffold import calc_out_shape, get_padding2d
from reference.conv2d import (Conv2dLoop, Conv2dMatrix, Conv2dMatrixV2,
                              convert_input, convert_kernel, unsqueeze_kernel)

CLASSES = [Conv2dLoop, Conv2dMatrix, Conv2dMatrixV2]
CASE_COUNT = 1000  # each case checks all three classes and both helper layouts
CUDA_CASE_COUNT = 100


def _random_cases(count, seed):
    """(batch, in, out, H, W, k, stride, padding, dilation) tuples whose output
    is non-empty; empty ones are redrawn so exactly `count` are checked."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        case = (rng.randint(1, 3), rng.randint(1, 5), rng.randint(1, 5),
                rng.randint(1, 12), rng.randint(1, 12), rng.randint(1, 5),
                rng.randint(1, 3), rng.randint(0, 2), rng.randint(1, 3))
        batch, cin, cout, h, w, k, stride, padding, dilation = case
        _, _, oh, ow = calc_out_shape((batch, cin, h, w), cout, k, stride,
                                      padding, dilation)
        if oh > 0 and ow > 0:
            cases.append(case)
    return cases


CASES = _random_cases(CASE_COUNT, seed=20240601)
CUDA_CASES = _random_cases(CUDA_CASE_COUNT, seed=20240602)


def _case_id(case):
    return "b{}-c{}-o{}-{}x{}-k{}-s{}-p{}-d{}".format(*case)


def _tensors(case, device, seed):
    batch, cin, cout, h, w, k = case[:6]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, h, w, generator=gen, dtype=torch.float64)
    kernel = torch.randn(cout, cin, k, k, generator=gen, dtype=torch.float64)
    return x.to(device), kernel.to(device)


def _check_case(case, device, seed):
    batch, cin, cout, h, w, k, stride, padding, dilation = case
    x, kernel = _tensors(case, device, seed)
    expected = F.conv2d(x, kernel, stride=stride, padding=padding,
                        dilation=dilation)
    _, _, oh, ow = expected.shape

    for cls in CLASSES:
        conv = cls(cin, cout, k, stride, padding, dilation)
        conv.set_kernel(kernel)
        got = conv(x)
        assert got.shape == expected.shape, cls.__name__
        assert got.dtype == x.dtype and got.device == x.device, cls.__name__
        torch.testing.assert_close(got, expected, msg=cls.__name__)

    padded = get_padding2d(x, padding)

    # Conv2dMatrix: the course's own __call__ formula around the helper.
    matrix = unsqueeze_kernel(kernel, x.shape, stride, padding, dilation, oh, ow)
    assert matrix.shape == (cout * oh * ow, cin * padded.shape[2] * padded.shape[3])
    result = matrix @ padded.view((batch, -1)).permute(1, 0)
    torch.testing.assert_close(
        result.permute(1, 0).view((batch, cout, oh, ow)), expected)
    # An already padded shape with padding=0 means the same thing.
    torch.testing.assert_close(
        unsqueeze_kernel(kernel, padded.shape, stride, 0, dilation, oh, ow), matrix)

    # Conv2dMatrixV2: kernel rows times im2col columns, batch-major columns.
    converted_kernel = convert_kernel(kernel)
    converted_input = convert_input(padded, k, stride, dilation, oh, ow)
    assert converted_kernel.shape == (cout, cin * k * k)
    assert converted_input.shape == (cin * k * k, batch * oh * ow)
    torch.testing.assert_close(converted_kernel, kernel.reshape(cout, -1))
    product = converted_kernel @ converted_input
    torch.testing.assert_close(
        product.view(cout, batch, oh, ow).transpose(0, 1), expected)


@pytest.mark.parametrize("index", range(CASE_COUNT),
                         ids=[_case_id(c) for c in CASES])
def test_matches_conv2d_cpu(index):
    _check_case(CASES[index], "cpu", seed=index)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("index", range(CUDA_CASE_COUNT),
                         ids=[_case_id(c) for c in CUDA_CASES])
def test_matches_conv2d_cuda(index):
    _check_case(CUDA_CASES[index], "cuda", seed=index)


def test_helper_layout_by_hand():
    # One tiny case spelled out, so a layout change is caught even if it were
    # somehow self-consistent with F.conv2d through the formulas above.
    kernel = torch.arange(1.0, 5.0, dtype=torch.float64).view(1, 1, 2, 2)
    matrix = unsqueeze_kernel(kernel, (1, 1, 2, 3), 1, 0, 1, 1, 2)
    torch.testing.assert_close(matrix, torch.tensor(
        [[1.0, 2.0, 0.0, 3.0, 4.0, 0.0],
         [0.0, 1.0, 2.0, 0.0, 3.0, 4.0]], dtype=torch.float64))

    image = torch.arange(12.0, dtype=torch.float64).view(2, 1, 2, 3)
    columns = convert_input(image, 2, 1, 1, 1, 2)
    torch.testing.assert_close(columns, torch.tensor(
        [[0.0, 1.0, 6.0, 7.0],
         [1.0, 2.0, 7.0, 8.0],
         [3.0, 4.0, 9.0, 10.0],
         [4.0, 5.0, 10.0, 11.0]], dtype=torch.float64))


@pytest.mark.parametrize("cls", CLASSES)
def test_keeps_float32(cls):
    x = torch.randn(2, 3, 7, 5)
    kernel = torch.randn(4, 3, 3, 3)
    conv = cls(3, 4, 3, 2, 1, 2)
    conv.set_kernel(kernel)
    got = conv(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(
        got, F.conv2d(x, kernel, stride=2, padding=1, dilation=2))


@pytest.mark.parametrize("cls", CLASSES)
def test_uses_no_convolution_operator(cls, monkeypatch):
    x, kernel = _tensors((2, 3, 4, 9, 7, 3), "cpu", seed=0)
    expected = F.conv2d(x, kernel, stride=2, padding=2, dilation=2)

    def forbidden(*args, **kwargs):
        raise AssertionError("reference must not call a convolution/im2col op")

    for module, name in [(F, "conv2d"), (torch, "conv2d"), (F, "unfold"),
                         (F, "fold"), (torch.nn, "Conv2d"),
                         (torch, "convolution")]:
        monkeypatch.setattr(module, name, forbidden)
    conv = cls(3, 4, 3, 2, 2, 2)
    conv.set_kernel(kernel)
    torch.testing.assert_close(conv(x), expected)
