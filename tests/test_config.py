import pytest
import yaml

from grader.config import load_assignment
from grader.errors import ConfigError


def test_bundled_assignment_loads_with_every_required_group():
    assignment = load_assignment("conv2d")
    names = {g.name for g in assignment.groups}
    assert {"course", "stride", "non_square", "batch", "channels", "kernel_size", "output_1x1",
            "large_output", "padding", "dilation"} <= names
    assert [c.name for c in assignment.items] == ["Conv2dLoop", "Conv2dMatrix", "Conv2dMatrixV2"]
    assert {c.kind for c in assignment.items} == {"class"} and {c.task for c in assignment.items} == {"conv2d"}
    assert sum(c.points for c in assignment.items) == 100
    # The listed operators, then what the assignment's families match in this torch.
    forbidden = assignment.item("Conv2dLoop").forbidden_operators
    assert forbidden[:len(assignment.subject.forbidden_operators)] == assignment.subject.forbidden_operators
    assert {"conv_tbc", "convolution_backward", "slow_conv3d_forward"} <= set(forbidden)
    assert "class ABCConv2d" in assignment.scaffold_source


def _edit(folder, change):
    path = folder / "assignment.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("change, key", [
    (lambda d: d["groups"]["stride"]["params"].update(strid=2), "groups.stride.params.strid"),
    (lambda d: d["groups"]["stride"].update(count=0), "groups.stride.count"),
    (lambda d: d["groups"]["stride"].update(count="four"), "groups.stride.count"),
    (lambda d: d["groups"]["stride"]["params"].update(stride="3..x"), "groups.stride.params.stride"),
    (lambda d: d["groups"]["stride"]["params"].update(stride=0), "groups.stride.params.stride"),
    (lambda d: d["groups"]["stride"].update(require=["round"]), "groups.stride.require"),
    (lambda d: d["groups"]["stride"].update(items=["Conv2dFast"]), "groups.stride.items"),
    (lambda d: d["groups"]["stride"].update(inputs="photos"), "groups.stride.inputs"),
    (lambda d: d["items"]["Conv2dLoop"].pop("points"), "items.Conv2dLoop.points"),
    (lambda d: d["items"]["Conv2dLoop"].update(points="ten"), "items.Conv2dLoop.points"),
    (lambda d: d["items"]["Conv2dLoop"].update(task="conv3d"), "items.Conv2dLoop.task"),
    (lambda d: d["items"]["Conv2dLoop"].update(name="not an identifier"), "items.Conv2dLoop.name"),
    (lambda d: d["items"]["Conv2dLoop"].update(options={"fast": True}), "items.Conv2dLoop.options.fast"),
    (lambda d: d["limits"].update(case_s=-1), "limits.case_s"),
    (lambda d: d["limits"].update(cases=3), "limits.cases"),
    (lambda d: d["tolerance"].update(rtol=1e-4), "tolerance.rtol"),
    (lambda d: d.update(devices=["tpu"]), "devices"),
    (lambda d: d.update(violation_penalty="half"), "violation_penalty"),
    (lambda d: d.update(scaffold="missing.py"), "scaffold"),
    (lambda d: d["defaults"].pop("stride"), "defaults"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d["items"]["Conv2dMatrix"].update(checks={"_unsqueeze": 5}), "items.Conv2dMatrix.checks._unsqueeze"),
    (lambda d: d["items"]["Conv2dMatrix"].update(checks={"_unsqueeze_kernel": "five"}),
     "items.Conv2dMatrix.checks._unsqueeze_kernel"),
    (lambda d: d["items"]["Conv2dMatrix"].update(checks={"_unsqueeze_kernel": -1}),
     "items.Conv2dMatrix.checks._unsqueeze_kernel"),
    (lambda d: d["items"]["Conv2dMatrix"].update(checks=["_unsqueeze_kernel"]), "items.Conv2dMatrix.checks"),
    (lambda d: d["items"]["Conv2dMatrix"].update(checks={"_unsqueeze_kernel": 36}), "items.Conv2dMatrix.checks"),
    (lambda d: d["items"]["Conv2dMatrixV2"].update(checks={"speed": "yes"}), "items.Conv2dMatrixV2.checks.speed"),
    (lambda d: d["items"]["Conv2dMatrixV2"].update(checks={"speed": -2}), "items.Conv2dMatrixV2.checks.speed"),
    (lambda d: d.update(subject="missing.py"), "subject"),
    (lambda d: d.update(classes=d["items"]), "classes"),
])
def test_a_bad_config_names_the_key(assignment_copy, change, key):
    path = _edit(assignment_copy, change)
    with pytest.raises(ConfigError) as error:
        load_assignment(str(path))
    message = str(error.value)
    assert message.startswith(key), message
    assert "\n" not in message


def test_check_points_come_from_the_item_config(assignment_copy):
    assignment = load_assignment("conv2d")
    assert assignment.item("Conv2dMatrix").checks == (("_unsqueeze_kernel", 5.0),)
    assert assignment.item("Conv2dMatrixV2").checks == (("_convert_kernel", 3.0), ("_convert_input", 5.0),
                                                        ("speed", 0.0))
    assert assignment.item("Conv2dLoop").checks == ()

    def change(d):
        d["items"]["Conv2dMatrixV2"] = {"points": 35}              # no checks unless configured
        d["items"]["Conv2dLoop"].update(checks={"_convert_input": 0, "speed": 4})
    edited = load_assignment(str(_edit(assignment_copy, change)))
    loop, v2 = edited.item("Conv2dLoop"), edited.item("Conv2dMatrixV2")
    assert loop.checks == (("_convert_input", 0.0), ("speed", 4.0)) and loop.check_points("speed") == 4.0
    assert v2.checks == () and v2.check_points("speed") is None


def test_unsatisfiable_group_is_a_config_error_when_cases_are_built(assignment_copy):
    from grader.cases import build_cases

    path = _edit(assignment_copy, lambda d: d["groups"]["stride"].update(
        params={"height": 3, "width": 3, "kernel_size": 5}))
    assignment = load_assignment(str(path))
    with pytest.raises(ConfigError, match="groups.stride"):
        build_cases(assignment, 1, ("cpu",))


def test_unknown_assignment_id_lists_the_bundled_ones():
    with pytest.raises(ConfigError, match="conv2d"):
        load_assignment("conv3d")


def test_invalid_yaml_is_a_one_line_error(assignment_copy):
    (assignment_copy / "assignment.yaml").write_text("groups: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_assignment(str(assignment_copy))
