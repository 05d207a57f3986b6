"""The normalization lesson beyond its manifest (tests/test_fixtures.py checks that): the mistake
each likely cause was matched to, steps 1 and 2 told apart, the instructor's momentum option,
smallest failing cases, causes without the reference, and the forbidden family."""
import json
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ASSIGNMENTS, ROOT
from grader.config import load_assignment
from reference import normalization as reference

FOLDER = ASSIGNMENTS / "normalization"
FIXTURES = FOLDER / "fixtures"
MANIFEST = yaml.safe_load((FIXTURES / "manifest.yaml").read_text())


@pytest.fixture(scope="module")
def reports(fixture_reports):
    return fixture_reports("normalization")


@pytest.mark.slow
def test_each_named_mistake_is_the_reference_variant_the_manifest_says(reports):
    checked = 0
    for name, entry in MANIFEST["fixtures"].items():
        for step, expected in entry["items"].items():
            if "mistake" not in expected:
                continue
            summary = {m.name: m.summary for m in reference.mistakes(step)}[expected["mistake"]]
            first = reports[name]["items"][step]["likely_causes"][0]
            assert first["cause"] == expected["cause"] and first["evidence"].endswith(summary), (name, step, first)
            checked += 1
    assert checked >= 20


@pytest.mark.slow
def test_steps_1_and_2_are_told_apart_by_their_parameters(reports):
    four = reports["correct_four_param_only.py"]["items"]
    assert four["batch_norm1d"]["status"] == "wrong_form"
    message = four["batch_norm1d"]["message"]
    assert "custom_batch_norm1d(input_tensor, weight, bias, eps)" in message
    assert "this item is custom_batch_norm1d(input_tensor, eps)" in message
    assert four["batch_norm1d_affine"]["score"] == 10
    # A notes file defines step 1, then step 2 under the same name: each is graded, and the
    # report says which definition step 1 was graded on.
    notes = reports["correct_notes.py"]["items"]
    assert notes["batch_norm1d"]["score"] == notes["batch_norm1d_affine"]["score"] == 10
    assert re.match(r"graded custom_batch_norm1d\(input_tensor, eps\) at line \d+; the name is bound again later: "
                    r"custom_batch_norm1d\(input_tensor, weight, bias, eps\)", notes["batch_norm1d"]["message"])
    # The course's step 3 check rebinds the name to an instance: with no def, the steps are missing.
    only_class = reports["reversed_momentum.ipynb"]["items"]["batch_norm1d"]
    assert only_class["status"] == "missing" and "CustomBatchNorm1d object" in only_class["message"]


@pytest.mark.slow
def test_smallest_failing_cases_keep_the_bug_and_replay(reports):
    def smallest(name, step):
        return reports[name]["items"][step]["likely_causes"][0]["smallest_failing_case"]

    one_row = smallest("eval_batch1_broken.py", "batch_norm1d_module")
    assert 1 in one_row["params"]["eval_sizes"] and "--item batch_norm1d_module" in one_row["replay"]
    unbiased = smallest("unbiased_variance.ipynb", "batch_norm1d")
    assert unbiased["params"]["batch"] * unbiased["params"]["features"] <= 4
    swapped = smallest("layer_norm_last_dim.ipynb", "layer_norm")
    assert len(swapped["params"]["shape"]) >= 3 and "--params shape=" in swapped["replay"]
    # The replay line runs that case again and fails it the same way.
    result = subprocess.run([sys.executable, "-m", "grader", *shlex.split(swapped["replay"])[1:], "--json"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    again = json.loads(result.stdout)["items"]["layer_norm"]["cases"]
    assert [c["status"] for c in again if c["device"] == "cpu"] == ["failed"]


def _config_copy(tmp_path, edit) -> str:
    target = tmp_path / "normalization"
    shutil.copytree(FOLDER, target, ignore=shutil.ignore_patterns("__pycache__", "fixtures", "example", "study"))
    raw = yaml.safe_load((target / "assignment.yaml").read_text())
    edit(raw)
    (target / "assignment.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(target / "assignment.yaml")


def _grade(path, config, *extra) -> dict:
    result = subprocess.run([sys.executable, "-m", "grader", str(path), "--assignment", config, "--device", "cpu",
                             "--json", *extra], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_the_reversed_momentum_passes_where_the_instructor_accepts_either(tmp_path):
    def either(raw):
        raw["items"]["batch_norm1d_module"]["options"] = {"momentum_convention": "either"}

    config = _config_copy(tmp_path, either)
    for name in ("reversed_momentum.ipynb", "correct_class_floats.py"):
        item = _grade(FIXTURES / name, config, "--item", "batch_norm1d_module")["items"]["batch_norm1d_module"]
        assert item["score"] == item["max_score"] == 25, (name, item["likely_causes"])
        accepted = [c["message"] for c in item["cases"] if "reversed momentum" in c["message"]]
        assert bool(accepted) == (name == "reversed_momentum.ipynb"), name


def test_an_unknown_option_value_is_a_config_error(tmp_path):
    from grader.errors import ConfigError

    def wrong(raw):
        raw["items"]["batch_norm1d_module"]["options"] = {"momentum_convention": "reversed"}

    with pytest.raises(ConfigError, match="momentum_convention: one of torch, either"):
        load_assignment(_config_copy(tmp_path, wrong))


@pytest.mark.slow
def test_causes_are_named_without_the_reference_and_never_change_a_score(tmp_path):
    """A student's copy of the grader has no reference: the mistakes are not matched there, the
    features still speak, and the verdicts and scores are the same."""
    out = tmp_path / "without.json"
    code = ("import sys; sys.modules['reference'] = None\n"
            "from grader.cli import main\n"
            f"sys.exit(main([{str(FIXTURES / 'correct_one_pass.py')!r}, '--device', 'cpu', '--quiet', "
            f"'--item', 'batch_norm2d', '--item', 'group_norm', '-o', {str(out)!r}]))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=600).returncode == 0
    without = json.loads(out.read_text())
    with_reference = _grade(FIXTURES / "correct_one_pass.py", str(FOLDER / "assignment.yaml"),
                            "--item", "batch_norm2d", "--item", "group_norm")
    for step in ("batch_norm2d", "group_norm"):
        assert without["items"][step]["score"] == with_reference["items"][step]["score"] < 20
        assert [c["cause"] for c in without["items"][step]["likely_causes"]] == ["one_pass_variance"]
    unbiased = tmp_path / "unbiased.json"
    code = code.replace("correct_one_pass.py", "unbiased_variance.ipynb").replace(str(out), str(unbiased))
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=600).returncode == 0
    for step, item in json.loads(unbiased.read_text())["items"].items():
        assert all("match this mistake" not in c["evidence"] for c in item["likely_causes"]), step


def test_the_forbidden_family_is_every_normalization_operator_of_this_torch():
    assignment = load_assignment(str(FOLDER / "assignment.yaml"))
    [(family, matched)] = assignment.family_matches
    names = {n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names() if n.startswith("aten::")}
    lesson = {n for n in names if re.search(r"(batch|layer|group|instance|rms)_norm", n)}
    assert family == "normalization" and lesson <= set(matched), sorted(lesson - set(matched))
    assert all(re.search(r"(batch|layer|group|instance|rms)_norm", name) for name in matched)
    # Norms that are not normalization layers stay allowed (a student may use torch.norm).
    assert not {"norm", "linalg_vector_norm", "renorm", "_weight_norm"} & set(matched)
    for item in assignment.items:
        assert {"native_batch_norm", "native_layer_norm", "native_group_norm", "layer_norm"} <= \
            set(item.forbidden_operators), item.name


def test_every_case_is_one_torch_can_answer_and_within_the_size_cap():
    from grader.cases import build_cases

    assignment = load_assignment(str(FOLDER / "assignment.yaml"))
    subject = assignment.subject
    for seed in (2026, 1, 2):
        cases = build_cases(assignment, seed, ("cpu",))
        assert len(cases) > 250
        for case in cases:
            [item] = case.items
            task = assignment.task_of(item)
            expected = task.expected(case, task.inputs(case), dict(assignment.tolerance), {})
            for answer in expected.values():
                assert answer.value.dtype == answer.bound.dtype == torch.float64
                assert bool(answer.value.isfinite().all()) and bool((answer.bound > 0).all()), case.id
            limit = 200000 if case.group == "course" else 70000
            assert subject.size(case.params) <= limit, case.id
    by_group = {}
    for case in build_cases(assignment, 2026, ("cpu",)):
        by_group.setdefault((case.items[0], case.group), []).append(case.params)
    # What the groups promise: an eval batch of one row, no training, 1..8 ranks, a transposed input.
    assert all(p.eval_sizes[0] == 1 for p in by_group[("batch_norm1d_module", "eval_batch1")])
    assert all(p.train_sizes == () for p in by_group[("batch_norm1d_module", "no_training")])
    assert {len(p.shape) for p in by_group[("layer_norm", "rank")]} == set(range(2, 9))
    assert [p.layout for p in by_group[("batch_norm2d", "noncontiguous")]] == ["transposed", "channels_last", "sliced"]
    assert any(len(set(p.train_sizes)) > 1 for p in by_group[("batch_norm1d_module", "basic")])
