"""The normalization reference against torch's own layers, and its mistakes against what they claim.

Cases are random but seeded (one seed per case index), so a failure names a reproducible case.
Everything is float64: the grader computes its expected values in float64, so that is the
precision the reference has to match torch in. The mistake variants are checked two ways: each
differs from the correct output on typical inputs, and where torch can compute the mistaken
quantity too (a wrong layout is often another layer; a reversed momentum m is torch's 1 - m) the
variant equals it, so a variant cannot silently compute something other than its name says.
"""
import contextlib
import math
import random
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from reference.normalization import (CORRECT, STEPS, CustomBatchNorm1d, Recipe, custom_batch_norm1d,
                                     custom_batch_norm1d_affine, custom_batch_norm2d,
                                     custom_group_norm, custom_instance_norm1d, custom_layer_norm,
                                     layouts, mistakes)

CASE_COUNT = 200         # per step; each case is a few small tensors
CUDA_CASE_COUNT = 40
F64 = torch.float64
# Two float64 computations of the same statistics differ by a few ulps times the reduction's
# condition; inputs here keep |mean| / std <= 3, so 1e-10 leaves four orders of magnitude.
CLOSE = {"rtol": 1e-10, "atol": 1e-10}
# A mistake "differs" when it moves some element by more than this: far above float64 rounding,
# far below what any of the lesson's mistakes does on the typical inputs below.
DIFFERS = 1e-6


# --- inputs --------------------------------------------------------------------------------------

def _eps(rng):
    return 10.0 ** rng.uniform(-10, 0)


def _values(shape, rng, gen, device="cpu"):
    """Random float64 values on a random scale (1e-3..1e2) around a mean up to 3 scales away, so
    eps is sometimes negligible and sometimes dominates the variance."""
    scale = 10.0 ** rng.uniform(-3, 2)
    shift = rng.uniform(-3, 3) * scale
    return (torch.randn(shape, generator=gen, dtype=F64) * scale + shift).to(device)


def _noncontiguous(x, rng):
    """The same values in a non-contiguous layout (a transposed copy or every other element of a
    wider tensor), or x itself; a student's .view() fails on the former."""
    kind = rng.choice(["contiguous", "transposed", "sliced"])
    if kind == "transposed" and x.dim() >= 2 and x.shape[0] > 1 and x.shape[-1] > 1:
        y = x.transpose(0, -1).contiguous().transpose(0, -1)
    elif kind == "sliced" and x.numel() > 1:
        y = torch.stack([x, torch.zeros_like(x)], dim=-1)[..., 0]
    else:
        return x
    assert not y.is_contiguous() and torch.equal(y, x)
    return y


def _case_rng(step, index):
    return random.Random(f"{step}-{index}"), torch.Generator().manual_seed(index)


def _checked(function, x, *args, **kwargs):
    """Calls a reference function and checks the contract every step shares: same shape, dtype
    and device, and the input left untouched."""
    before = x.clone()
    out = function(x, *args, **kwargs)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.equal(x, before), "the reference wrote into its input"
    return out


# --- steps 1, 2, 4-7 against torch -----------------------------------------------------------------

def _bn1d_case(index, device="cpu"):
    rng, gen = _case_rng("bn1d", index)
    shape = (rng.randint(2, 64), rng.randint(1, 16))    # N = 1 raises in torch (test below)
    return _noncontiguous(_values(shape, rng, gen, device), rng), _eps(rng), rng, gen


def _check_batch_norm1d(index, device):
    x, eps, rng, gen = _bn1d_case(index, device)
    features = x.shape[1]
    layer = nn.BatchNorm1d(features, eps=eps, affine=False).to(device, F64)
    torch.testing.assert_close(_checked(custom_batch_norm1d, x, eps), layer(x), **CLOSE)

    weight = torch.randn(features, generator=gen, dtype=F64).to(device)
    bias = torch.randn(features, generator=gen, dtype=F64).to(device)
    layer = nn.BatchNorm1d(features, eps=eps).to(device, F64)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    torch.testing.assert_close(_checked(custom_batch_norm1d_affine, x, weight, bias, eps),
                               layer(x), **CLOSE)


def _bn2d_case(index, device="cpu"):
    rng, gen = _case_rng("bn2d", index)
    while True:
        shape = (rng.randint(1, 8), rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 6))
        if shape[0] * shape[2] * shape[3] > 1:   # torch raises for one value per channel
            break
    return _noncontiguous(_values(shape, rng, gen, device), rng), _eps(rng)


def _check_batch_norm2d(index, device):
    x, eps = _bn2d_case(index, device)
    layer = nn.BatchNorm2d(x.shape[1], eps=eps, affine=False).to(device, F64)
    torch.testing.assert_close(_checked(custom_batch_norm2d, x, eps), layer(x), **CLOSE)


def _layer_norm_case(index, device="cpu"):
    rng, gen = _case_rng("layer", index)
    rank = 2 + index % 7                       # every rank from 2 to 8, evenly
    longest = max(1, int(4096 ** (1 / (rank - 1))))
    shape = [rng.randint(1, 64 if index % 5 == 0 else 6)]   # batches up to 64, 1 included
    shape += [rng.randint(1, min(longest, 12)) for _ in range(rank - 1)]
    return _noncontiguous(_values(tuple(shape), rng, gen, device), rng), _eps(rng)


def _check_layer_norm(index, device):
    x, eps = _layer_norm_case(index, device)
    layer = nn.LayerNorm(x.shape[1:], eps=eps, elementwise_affine=False)
    torch.testing.assert_close(_checked(custom_layer_norm, x, eps), layer(x), **CLOSE)


def _instance_case(index, device="cpu"):
    rng, gen = _case_rng("instance", index)
    shape = (rng.randint(1, 16), rng.randint(1, 8), rng.randint(2, 40))   # L = 1 raises in torch
    return _noncontiguous(_values(shape, rng, gen, device), rng), _eps(rng)


def _check_instance_norm1d(index, device):
    x, eps = _instance_case(index, device)
    layer = nn.InstanceNorm1d(x.shape[1], eps=eps)
    torch.testing.assert_close(_checked(custom_instance_norm1d, x, eps), layer(x), **CLOSE)


def _group_case(index, device="cpu"):
    rng, gen = _case_rng("group", index)
    while True:
        groups, per_group = rng.randint(1, 6), rng.randint(1, 4)
        shape = (rng.randint(1, 16), groups * per_group, rng.randint(1, 20))
        if shape[0] * per_group * shape[2] > 1:   # torch's own "more than 1 value" rule
            break
    return _noncontiguous(_values(shape, rng, gen, device), rng), groups, _eps(rng)


def _check_group_norm(index, device):
    x, groups, eps = _group_case(index, device)
    layer = nn.GroupNorm(groups, x.shape[1], eps=eps, affine=False).to(device, F64)
    torch.testing.assert_close(_checked(custom_group_norm, x, groups, eps), layer(x), **CLOSE)


# --- step 3: train, then eval, against nn.BatchNorm1d ------------------------------------------

def _momentum(rng):
    # Never 0.5: there the reversed convention gives torch's numbers (tested on its own below).
    while True:
        m = rng.choice([0.1, 0.01, 0.9, 1.0, rng.uniform(0.0, 1.0)])
        if abs(m - 0.5) > 1e-3:
            return m


def _sequence_case(index, device="cpu"):
    """A construction, training batches of varying size (2..64), then eval batches (1..64; the
    first eval batch has one row in a third of the cases)."""
    rng, gen = _case_rng("sequence", index)
    features = rng.randint(1, 12)
    weight = torch.randn(features, generator=gen, dtype=F64).to(device)
    bias = torch.randn(features, generator=gen, dtype=F64).to(device)
    train = [_noncontiguous(_values((rng.randint(2, 64), features), rng, gen, device), rng)
             for _ in range(rng.randint(1, 8))]
    sizes = [rng.randint(1, 64) for _ in range(rng.randint(2, 5))]
    if index % 3 == 0:
        sizes[0] = 1
    evals = [_noncontiguous(_values((size, features), rng, gen, device), rng) for size in sizes]
    return weight, bias, _eps(rng), _momentum(rng), train, evals


def _torch_layer(weight, bias, eps, momentum):
    layer = nn.BatchNorm1d(weight.shape[0], eps=eps, momentum=momentum).to(weight.device, F64)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def _run_sequence(module, train, evals):
    outputs = [module(x) for x in train]
    module.eval()
    return outputs + [module(x) for x in evals]


def _check_module(index, device):
    weight, bias, eps, momentum, train, evals = _sequence_case(index, device)
    ours = CustomBatchNorm1d(weight, bias, eps, momentum)
    expected = _run_sequence(_torch_layer(weight, bias, eps, momentum), train, evals)
    for got, want in zip(_run_sequence(ours, train, evals), expected):
        assert got.dtype == F64 and got.device == want.device
        torch.testing.assert_close(got, want, **CLOSE)
    layer = _torch_layer(weight, bias, eps, momentum)
    _run_sequence(layer, train, evals)
    torch.testing.assert_close(ours.running_mean, layer.running_mean, **CLOSE)
    torch.testing.assert_close(ours.running_var, layer.running_var, **CLOSE)


CHECKS = {
    "batch_norm1d": _check_batch_norm1d, "batch_norm2d": _check_batch_norm2d,
    "layer_norm": _check_layer_norm, "instance_norm1d": _check_instance_norm1d,
    "group_norm": _check_group_norm, "batch_norm1d_module": _check_module,
}


@pytest.mark.parametrize("index", range(CASE_COUNT))
@pytest.mark.parametrize("step", sorted(CHECKS))
def test_matches_torch_cpu(step, index):
    CHECKS[step](index, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("index", range(CUDA_CASE_COUNT))
@pytest.mark.parametrize("step", sorted(CHECKS))
def test_matches_torch_cuda(step, index):
    CHECKS[step](CASE_COUNT + index, "cuda")


def test_cases_cover_the_lessons_parameter_space():
    # The draws above are only worth something if they reach the corners the lesson names.
    layer_shapes = [_layer_norm_case(i)[0].shape for i in range(CASE_COUNT)]
    assert {len(s) for s in layer_shapes} == set(range(2, 9))
    assert min(s[0] for s in layer_shapes) == 1 and max(s[0] for s in layer_shapes) > 32
    batch1d = [_bn1d_case(i)[0].shape[0] for i in range(CASE_COUNT)]
    assert min(batch1d) == 2 and max(batch1d) > 60
    assert 1 in {_bn2d_case(i)[0].shape[0] for i in range(CASE_COUNT)}
    epsilons = [_bn1d_case(i)[1] for i in range(CASE_COUNT)]
    assert min(epsilons) < 1e-9 and max(epsilons) > 0.1
    contiguous = [_instance_case(i)[0].is_contiguous() for i in range(CASE_COUNT)]
    assert 0.2 < contiguous.count(False) / CASE_COUNT < 0.9
    sequences = [_sequence_case(i) for i in range(30)]
    assert any(evals[0].shape[0] == 1 for *_, evals in sequences)
    assert len({x.shape[0] for *_, train, _ in sequences for x in train}) > 10


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_keeps_dtype_and_matches_torch_in_float32_too(dtype):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(6, 4, 5, generator=gen).to(dtype)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else CLOSE
    torch.testing.assert_close(_checked(custom_layer_norm, x, 1e-5),
                               F.layer_norm(x, x.shape[1:], eps=1e-5), **tol)
    torch.testing.assert_close(_checked(custom_group_norm, x, 2, 1e-5),
                               F.group_norm(x, 2, eps=1e-5), **tol)
    weight, bias = torch.randn(4, generator=gen).to(dtype), torch.randn(4, generator=gen).to(dtype)
    ours, layer = CustomBatchNorm1d(weight, bias, 1e-3, 0.2), nn.BatchNorm1d(4, 1e-3, 0.2).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    for got, want in zip(_run_sequence(ours, [x[:, :, 0], x[:3, :, 1]], [x[:1, :, 2]]),
                         _run_sequence(layer, [x[:, :, 0], x[:3, :, 1]], [x[:1, :, 2]])):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, **tol)


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("context", [contextlib.nullcontext, torch.no_grad, torch.inference_mode])
def test_uses_no_normalization_operator(context):
    # inference_mode matters: there torch dispatches the composite aten::batch_norm /
    # layer_norm / group_norm themselves instead of their native_* decompositions.
    gen = torch.Generator().manual_seed(3)
    x2, x3, x4 = (torch.randn(s, generator=gen, dtype=F64) for s in [(5, 3), (4, 6, 5), (2, 3, 4, 4)])
    recorder = _Recorder()
    with context(), recorder:
        for recipe in [CORRECT] + [m.recipe for step in STEPS for m in mistakes(step)]:
            custom_batch_norm1d_affine(x2, x2[0], x2[1], 1e-5, recipe=_usable(recipe, "batch_norm1d"))
            custom_batch_norm2d(x4, 1e-5, recipe=_usable(recipe, "batch_norm2d"))
            custom_layer_norm(x3, 1e-5, recipe=_usable(recipe, "layer_norm"))
            custom_instance_norm1d(x3, 1e-5, recipe=_usable(recipe, "instance_norm1d"))
            custom_group_norm(x3, 3, 1e-5, recipe=_usable(recipe, "group_norm"))
            module = CustomBatchNorm1d(x2[0], x2[1], 1e-5, 0.1,
                                       recipe=_usable(recipe, "batch_norm1d_module"))
            _run_sequence(module, [x2, x2 * 2], [x2[:1], x2])
    assert recorder.names, "the recorder saw nothing: the test would pass vacuously"
    assert not {name for name in recorder.names if "norm" in name}, recorder.names


def _usable(recipe, step):
    """A recipe usable for `step`: layouts are per step, so one from another step is dropped."""
    if recipe.stats is not None and recipe.stats not in layouts(step):
        return replace(recipe, stats=None)
    return recipe


# --- torch at batch size 1, and the reference raising where torch does --------------------------

def _raises_like_torch(torch_call, reference_call):
    with pytest.raises(ValueError, match="Expected more than 1"):
        torch_call()
    with pytest.raises(ValueError, match="Expected more than 1"):
        reference_call()


def test_batch_of_one_where_torch_raises_and_where_it_does_not():
    x = torch.randn(1, 3, dtype=F64)
    # Training with one value per feature: torch raises (F.batch_norm's _verify_batch_size)...
    layer = nn.BatchNorm1d(3).double()
    _raises_like_torch(lambda: layer(x), lambda: custom_batch_norm1d(x, 1e-5))
    _raises_like_torch(lambda: layer(x), lambda: CustomBatchNorm1d(x[0], x[0], 1e-5, 0.1)(x))
    # ...after it has already counted the batch (num_batches_tracked is bumped before the check),
    # though the running statistics stay as they were.
    assert layer.num_batches_tracked.item() == 2 and torch.equal(layer.running_mean, torch.zeros(3, dtype=F64))
    # eval mode is fine with one row: it only reads the running statistics.
    layer.eval()
    ours = CustomBatchNorm1d(layer.weight.detach(), layer.bias.detach(), 1e-5, 0.1).eval()
    torch.testing.assert_close(ours(x), layer(x), **CLOSE)
    # The aten operator itself does not check: it normalizes by sqrt(eps) and its unbiased
    # running variance becomes nan (0 / 0).
    running_var = torch.ones(3, dtype=F64)
    torch.batch_norm(x, None, None, torch.zeros(3, dtype=F64), running_var, True, 0.1, 1e-5, False)
    assert running_var.isnan().all()

    # 2-D: one value per channel means N * H * W == 1, so N = 1 with H * W > 1 is allowed.
    _raises_like_torch(lambda: nn.BatchNorm2d(3)(torch.randn(1, 3, 1, 1)),
                       lambda: custom_batch_norm2d(torch.randn(1, 3, 1, 1), 1e-5))
    x4 = torch.randn(1, 3, 2, 1, dtype=F64)
    torch.testing.assert_close(custom_batch_norm2d(x4, 1e-5),
                               nn.BatchNorm2d(3, affine=False).double()(x4), **CLOSE)
    # Instance norm checks the length, not the batch, in train and eval mode alike.
    x3 = torch.randn(4, 3, 1, dtype=F64)
    _raises_like_torch(lambda: nn.InstanceNorm1d(3).eval()(x3), lambda: custom_instance_norm1d(x3, 1e-5))
    # Group norm checks N * C/groups * L == 1, so a group of one element is allowed when N > 1
    # (it normalizes to 0), and N = 1 is allowed whenever a group has more than one element.
    _raises_like_torch(lambda: nn.GroupNorm(3, 3)(torch.randn(1, 3, 1)),
                       lambda: custom_group_norm(torch.randn(1, 3, 1), 3, 1e-5))
    x3 = torch.randn(2, 3, 1, dtype=F64)
    assert torch.equal(nn.GroupNorm(3, 3, affine=False)(x3), torch.zeros_like(x3))
    assert torch.equal(custom_group_norm(x3, 3, 1e-5), torch.zeros_like(x3))
    # Layer norm never checks: one element per sample normalizes to 0.
    x2 = torch.randn(4, 1, dtype=F64)
    assert torch.equal(nn.LayerNorm([1], elementwise_affine=False)(x2), torch.zeros_like(x2))
    assert torch.equal(custom_layer_norm(x2, 1e-5), torch.zeros_like(x2))


# --- the mistakes -------------------------------------------------------------------------------

def _typical(shape, seed):
    """What a grader's ordinary case looks like: unit-ish scale, mean near 0."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=F64) * 1.5 + 0.3


# Typical shapes avoid the coincidences tested below (one feature, 1x1 images, rank 2, groups of
# 1 or C, groups * groups == C), so every variant must differ on every one of them.
FUNCTION_CASES = {
    "batch_norm1d": (lambda x, eps, recipe: custom_batch_norm1d(x, eps, recipe=recipe), [(8, 5), (2, 3), (64, 7)]),
    "batch_norm1d_affine": (lambda x, eps, recipe: custom_batch_norm1d_affine(
        x, torch.linspace(0.5, 2, x.shape[1], dtype=F64), torch.linspace(-1, 1, x.shape[1], dtype=F64),
        eps, recipe=recipe), [(8, 5), (3, 2)]),
    "batch_norm2d": (lambda x, eps, recipe: custom_batch_norm2d(x, eps, recipe=recipe), [(3, 4, 5, 6), (2, 2, 3, 3)]),
    "layer_norm": (lambda x, eps, recipe: custom_layer_norm(x, eps, recipe=recipe), [(3, 4, 5), (2, 3, 2, 2, 3), (5, 2, 3)]),
    "instance_norm1d": (lambda x, eps, recipe: custom_instance_norm1d(x, eps, recipe=recipe), [(3, 4, 7), (2, 2, 5)]),
    "group_norm": (lambda x, eps, recipe: custom_group_norm(x, 3, eps, recipe=recipe), [(4, 6, 5), (2, 12, 3)]),
}


@pytest.mark.parametrize("step", sorted(FUNCTION_CASES))
def test_every_mistake_differs_on_typical_inputs(step):
    run, shapes = FUNCTION_CASES[step]
    names = [m.name for m in mistakes(step)]
    assert len(names) == len(set(names)) and {"unbiased_variance", "eps_added_to_std"} <= set(names)
    for seed, shape in enumerate(shapes):
        x = _typical(shape, seed)
        for eps in (1e-1, 1e-3, 1e-5):
            correct = run(x, eps, CORRECT)
            for mistake in mistakes(step):
                wrong = run(x, eps, mistake.recipe)
                assert wrong.shape == x.shape
                assert not torch.allclose(wrong, correct, rtol=0, atol=DIFFERS), (mistake.name, shape, eps)


def _module_outputs(recipe, momentum=0.2, eval_sizes=(1, 6, 4)):
    gen = torch.Generator().manual_seed(11)
    weight = torch.randn(4, generator=gen, dtype=F64)
    bias = torch.randn(4, generator=gen, dtype=F64)
    train = [torch.randn(n, 4, generator=gen, dtype=F64) * 2 + 1 for n in (5, 3, 9)]
    evals = [torch.randn(n, 4, generator=gen, dtype=F64) - 1 for n in eval_sizes]
    return _run_sequence(CustomBatchNorm1d(weight, bias, 1e-2, momentum, recipe=recipe), train, evals)


def test_every_module_mistake_differs_on_a_typical_sequence():
    correct = _module_outputs(CORRECT)
    for mistake in mistakes("batch_norm1d_module"):
        wrong = _module_outputs(mistake.recipe)
        # allclose is False for nan: an update with an eval batch of one row makes the unbiased
        # running variance nan, which counts as differing.
        differs = [not torch.allclose(w, c, rtol=0, atol=DIFFERS) for w, c in zip(wrong, correct)]
        assert any(differs), mistake.name
        training, evaluation = differs[:3], differs[3:]
        # Where a mistake shows is part of its evidence: the running-statistics mistakes change
        # eval outputs only; updating in eval after the output leaves the first eval call right.
        if mistake.cause in ("biased_running_variance", "reversed_momentum",
                             "running_stats_not_updated", "running_stats_updated_in_eval",
                             "eval_uses_batch_stats"):
            assert not any(training) and any(evaluation), mistake.name
        if mistake.name == "running_stats_updated_in_eval":
            assert evaluation == [False, True, True]


def test_module_mistakes_equal_what_torch_computes_for_them():
    gen = torch.Generator().manual_seed(5)
    weight, bias = torch.randn(3, generator=gen, dtype=F64), torch.randn(3, generator=gen, dtype=F64)
    train = [torch.randn(n, 3, generator=gen, dtype=F64) + 2 for n in (4, 7, 2)]
    evals = [torch.randn(n, 3, generator=gen, dtype=F64) for n in (3, 5, 2)]
    m, eps = 0.3, 1e-3

    def ours(name):
        recipe = next(x.recipe for x in mistakes("batch_norm1d_module") if x.name == name)
        return _run_sequence(CustomBatchNorm1d(weight, bias, eps, m, recipe=recipe), train, evals)

    def close(got, want):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **CLOSE)

    # m * running + (1 - m) * batch is torch's convention with momentum 1 - m.
    close(ours("reversed_momentum"), _run_sequence(_torch_layer(weight, bias, eps, 1 - m), train, evals))
    # Never updating is torch with momentum 0.
    close(ours("running_stats_not_updated"), _run_sequence(_torch_layer(weight, bias, eps, 0.0), train, evals))
    # Batch statistics in eval mode: torch in training mode throughout.
    layer = _torch_layer(weight, bias, eps, m)
    close(ours("eval_uses_batch_stats"), [layer(x) for x in train + evals])

    # Updating in eval mode: torch's eval output, then a training call on the same batch (or
    # the other way round).
    def updating_in_eval(first):
        layer = _torch_layer(weight, bias, eps, m)
        outputs = [layer(x) for x in train]
        for x in evals:
            if first:
                layer.train()(x)
            outputs.append(layer.eval()(x))
            if not first:
                layer.train()(x)
        return outputs
    close(ours("running_stats_updated_in_eval"), updating_in_eval(first=False))
    close(ours("running_stats_updated_in_eval_first"), updating_in_eval(first=True))

    # Biased running variance: torch's running variance times (n-1)/n per update, by hand.
    got = ours("biased_running_variance")
    running_mean, running_var = torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)
    for x in train:
        running_mean = (1 - m) * running_mean + m * x.mean(0)
        running_var = (1 - m) * running_var + m * x.var(0, unbiased=False)
    for g, x in zip(got[len(train):], evals):
        torch.testing.assert_close(g, F.batch_norm(x, running_mean, running_var, weight, bias, eps=eps), **CLOSE)


def test_module_batch_stats_in_eval_with_one_row_return_the_bias():
    # x - mean(x) is exactly 0 for one row: the tell-tale output of eval_uses_batch_stats there.
    weight, bias = torch.tensor([2.0, -1.0], dtype=F64), torch.tensor([0.25, 3.0], dtype=F64)
    module = CustomBatchNorm1d(weight, bias, 1e-3, 0.1, recipe=Recipe(eval_stats="batch"))
    module(_typical((4, 2), 0))
    assert torch.equal(module.eval()(_typical((1, 2), 1)), bias[None])


def test_reversed_momentum_coincides_at_one_half():
    # The course's check uses momentum 0.5, which is why it cannot see this mistake.
    reversed_ = next(m.recipe for m in mistakes("batch_norm1d_module") if m.name == "reversed_momentum")
    for got, want in zip(_module_outputs(reversed_, momentum=0.5), _module_outputs(CORRECT, momentum=0.5)):
        assert torch.equal(got, want)


def test_common_mistakes_equal_their_formulas():
    x = _typical((6, 4), 1)
    eps, mean, std = 1e-2, x.mean(0), x.std(0, unbiased=False)
    by_name = {m.name: m.recipe for m in mistakes("batch_norm1d")}
    torch.testing.assert_close(custom_batch_norm1d(x, eps, recipe=by_name["unbiased_variance"]),
                               (x - mean) / torch.sqrt(x.var(0) + eps), **CLOSE)
    torch.testing.assert_close(custom_batch_norm1d(x, eps, recipe=by_name["eps_added_to_std"]),
                               (x - mean) / (std + eps), **CLOSE)
    torch.testing.assert_close(custom_batch_norm1d(x, eps, recipe=by_name["eps_added_to_output"]),
                               (x - mean) / std + eps, **CLOSE)


def _wrong(step, name):
    return next(m.recipe for m in mistakes(step) if m.name == name)


def test_wrong_layouts_equal_the_torch_layer_they_amount_to():
    eps = 1e-3
    x2, x3, x4 = _typical((6, 5), 2), _typical((3, 6, 4), 3), _typical((2, 3, 4, 5), 4)
    x5 = _typical((3, 2, 4, 5), 5)

    def close(got, want):
        torch.testing.assert_close(got, want, **CLOSE)

    step = "batch_norm1d"
    close(custom_batch_norm1d(x2, eps, recipe=_wrong(step, "stats_per_sample")), F.layer_norm(x2, [5], eps=eps))
    close(custom_batch_norm1d(x2, eps, recipe=_wrong(step, "stats_whole_batch")), F.layer_norm(x2[None], x2.shape, eps=eps)[0])
    step = "batch_norm2d"
    close(custom_batch_norm2d(x4, eps, recipe=_wrong(step, "stats_per_sample")), F.layer_norm(x4, x4.shape[1:], eps=eps))
    close(custom_batch_norm2d(x4, eps, recipe=_wrong(step, "stats_per_sample_channel")), F.instance_norm(x4, eps=eps))
    close(custom_batch_norm2d(x4, eps, recipe=_wrong(step, "stats_batch_only")),
          F.batch_norm(x4.reshape(2, -1), None, None, training=True, eps=eps).reshape(x4.shape))
    close(custom_batch_norm2d(x4, eps, recipe=_wrong(step, "stats_batch_and_height")),
          F.batch_norm(x4.transpose(2, 3).reshape(2, 15, 4), None, None, training=True, eps=eps)
          .reshape(2, 3, 5, 4).transpose(2, 3))
    step = "layer_norm"
    close(custom_layer_norm(x5, eps, recipe=_wrong(step, "stats_last_dim")), F.layer_norm(x5, [5], eps=eps))
    close(custom_layer_norm(x5, eps, recipe=_wrong(step, "stats_per_feature")),
          F.batch_norm(x5.reshape(3, -1), None, None, training=True, eps=eps).reshape(x5.shape))
    step = "instance_norm1d"
    close(custom_instance_norm1d(x3, eps, recipe=_wrong(step, "stats_per_sample")), F.group_norm(x3, 1, eps=eps))
    close(custom_instance_norm1d(x3, eps, recipe=_wrong(step, "stats_per_channel")),
          F.batch_norm(x3, None, None, training=True, eps=eps))
    step = "group_norm"
    close(custom_group_norm(x3, 3, eps, recipe=_wrong(step, "stats_per_sample")), F.group_norm(x3, 1, eps=eps))
    close(custom_group_norm(x3, 3, eps, recipe=_wrong(step, "stats_per_sample_channel")), F.instance_norm(x3, eps=eps))
    close(custom_group_norm(x3, 3, eps, recipe=_wrong(step, "stats_groups_as_size")), F.group_norm(x3, 2, eps=eps))
    # Interleaved: group norm of the input with its channels sorted by c % groups.
    order = torch.tensor([0, 3, 1, 4, 2, 5])
    close(custom_group_norm(x3, 3, eps, recipe=_wrong(step, "stats_interleaved")),
          F.group_norm(x3[:, order], 3, eps=eps)[:, torch.argsort(order)])


def test_where_mistakes_coincide_with_the_correct_output():
    # These are the parameters a grader must vary to see each mistake; a case with them is no
    # evidence for or against it. Equality is exact: the same sums in the same order.
    eps = 1e-3

    def same(run, x, *args, step, name):
        assert torch.equal(run(x, *args, eps, recipe=_wrong(step, name)), run(x, *args, eps)), name

    # Rank 2: "the last dim" and "dim 1" are "every dim but 0".
    for name in ("stats_last_dim", "stats_dim_1"):
        same(custom_layer_norm, _typical((4, 6), 0), step="layer_norm", name=name)
    # One feature: the whole batch is the feature's batch.
    same(custom_batch_norm1d, _typical((5, 1), 0), step="batch_norm1d", name="stats_whole_batch")
    # 1x1 images: per channel over the batch is all there is.
    for name in ("stats_batch_only", "stats_batch_and_height", "stats_batch_and_width"):
        same(custom_batch_norm2d, _typical((5, 3, 1, 1), 0), step="batch_norm2d", name=name)
    # Group norm with groups = C is instance norm; groups = 1 is layer norm; groups * groups = C
    # makes "groups as the group size" the same blocks; one channel per sample, instance = layer.
    x = _typical((3, 4, 5), 0)
    same(custom_group_norm, x, 4, step="group_norm", name="stats_per_sample_channel")
    same(custom_group_norm, x, 1, step="group_norm", name="stats_per_sample")
    same(custom_group_norm, x, 2, step="group_norm", name="stats_groups_as_size")
    same(custom_instance_norm1d, _typical((3, 1, 5), 0), step="instance_norm1d", name="stats_per_sample")


def test_unbiased_variance_shrinks_with_the_reduction_length():
    # (n-1)/n -> 1: the relative difference is about 1/(2n), so the longer the reduction, the
    # closer the mistake comes to float32's rounding (see assignments/normalization/TOLERANCE.md).
    recipe = _wrong("layer_norm", "unbiased_variance")
    for n in (4, 64, 4096):
        x = _typical((2, n), n)
        correct = custom_layer_norm(x, 1e-12)
        relative = ((custom_layer_norm(x, 1e-12, recipe=recipe) - correct).abs() / correct.abs()).median()
        assert math.isclose(relative.item(), 1 - math.sqrt((n - 1) / n), rel_tol=1e-6)
