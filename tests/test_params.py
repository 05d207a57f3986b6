"""A subject's parameters as a config writes them and a case draws them (grader/params.py)."""
import random

import pytest

from grader.params import EMPTY_SHAPE, Parameter, Params, Range, draw, format_params


def test_values_ranges_and_lists_as_a_config_writes_them():
    batch = Parameter("batch", "int", minimum=1)
    assert batch.config_values(3) == (3,)
    assert batch.config_values("2..4") == (2, 3, 4)          # an integer range is its values
    assert batch.config_values([1, "3..4"]) == (1, Range(3, 4, integer=True))
    assert batch.config_values(0) == "values must be at least 1"
    eps = Parameter("eps", "float", minimum=1e-30, maximum=10.0)
    assert eps.config_values("1e-3..1e-1 log") == (Range(1e-3, 1e-1, log=True),)
    # YAML reads 1e-3 (no dot) as a string: it is a number all the same.
    assert eps.config_values(["1e-3", 0.5]) == (1e-3, 0.5)
    assert eps.config_values("one") == "a number, a list of numbers"
    assert eps.config_values(20.0) == "values must be at most 10"


def test_a_cycled_parameter_takes_its_list_in_case_order_and_draws_within_a_range():
    layout = Parameter("layout", "choice", choices=("contiguous", "transposed", "sliced"), cycled=True)
    choices = layout.config_values(["transposed", "sliced"])
    rng = random.Random(0)
    assert [draw(layout, choices, rng, index) for index in (1, 2, 3, 4)] == \
        ["transposed", "sliced", "transposed", "sliced"]
    # A range of a cycled integer is one entry drawn from, not values to take in turn (which
    # would give every first case the range's low end).
    groups = Parameter("groups", "int", minimum=1, cycled=True)
    choices = groups.config_values("2..9")
    assert choices == (Range(2, 9, integer=True),)
    drawn = {draw(groups, choices, random.Random(seed), 1) for seed in range(40)}
    assert len(drawn) > 3 and drawn <= set(range(2, 10))


def test_shapes_read_and_write_back_including_the_empty_one():
    sizes = Parameter("train_sizes", "shape", derived=True)
    assert sizes.parse_text("5x3x2") == (5, 3, 2)
    assert sizes.parse_text(EMPTY_SHAPE) == ()
    assert sizes.format(()) == EMPTY_SHAPE and sizes.format((4,)) == "4"
    with pytest.raises(ValueError, match="a shape such as 2x3x4"):
        sizes.parse_text("2x0")
    space = {"features": Parameter("features", "int", minimum=1), "train_sizes": sizes}
    params = Params.of({"features": 3, "train_sizes": ()})
    assert format_params(params, space) == "features=3,train_sizes=none"
    assert params.replace(train_sizes=(2, 2)).train_sizes == (2, 2)
