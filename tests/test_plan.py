"""Call plans as data (grader/plan.py) and the tensor layouts the worker hands over."""
import pytest
import torch

from grader.plan import ITEM, TENSOR_LAYOUTS, Call, New, Plan, Tensor
from grader.worker import _in_layout


def test_every_layout_has_the_same_values_and_the_memory_it_promises():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    laid = {layout: _in_layout(x, layout) for layout in TENSOR_LAYOUTS}
    for layout, tensor in laid.items():
        assert torch.equal(tensor, x) and tensor.shape == x.shape, layout
    assert laid["contiguous"].is_contiguous()
    assert not laid["sliced"].is_contiguous() and laid["sliced"].stride()[-1] == 2
    assert not laid["transposed"].is_contiguous()
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        laid["transposed"].view(2, -1)
    assert laid["channels_last"].is_contiguous(memory_format=torch.channels_last)
    # Each call gets a tensor of its own: writing into one never reaches the case's original.
    laid["sliced"].add_(1)
    laid["transposed"].add_(1)
    assert torch.equal(x, torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5))


def test_a_layout_the_worker_does_not_know_is_refused_where_the_plan_is_made():
    with pytest.raises(ValueError, match="tensor layout must be one of"):
        Tensor("input", "diagonal")


def test_a_plan_goes_over_the_wire_as_tagged_data():
    plan = Plan((New(args=(Tensor("weight"), 0.1), bind="bn", label="the constructor"),
                 Call("bn", args=(Tensor("train0", "transposed"),), output="train0", label="training call 1"),
                 Call("bn", method="eval", label="eval()"),
                 Call(ITEM, args=([1, 2], "x"), output="out")))
    wire = plan.to_wire()
    assert wire[1]["args"][0] == ["tensor", "train0", "transposed"]
    assert wire[3]["args"][0] == ["list", [["value", 1], ["value", 2]], False]
    with pytest.raises(TypeError, match="a plan argument must be a literal"):
        Plan((Call(ITEM, args=({"a": 1},)),)).to_wire()
    assert plan.outputs == ("train0", "out") and plan.label_of("train0") == "training call 1"
