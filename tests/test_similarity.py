"""Fingerprints of graded code: what survives cosmetic edits, and what groups a class."""
from pathlib import Path

import pytest

from conftest import FIXTURES, SUBMISSIONS
from grader.config import load_assignment
from grader.similarity import (NEAR_THRESHOLD, Member, fingerprint, near_pairs, similar_groups,
                               unit_hashes)
from grader.submission import load_submission

SIMILAR = FIXTURES / "similarity"
ITEMS = ("Conv2dLoop", "Conv2dMatrix", "Conv2dMatrixV2")
COMMON = unit_hashes(load_assignment("conv2d").scaffold_source)


def prints(path: Path) -> dict:
    submission = load_submission(path)
    return {name: fingerprint(submission, name, COMMON) for name in ITEMS}


def module(tmp_path, text: str, name: str = "sub.py"):
    path = tmp_path / name
    path.write_text(text)
    return load_submission(path)


BASE = '''
import torch

def helper(x, n):
    # pad it
    return x * n

class Conv2dLoop(ABCConv2d):
    def __call__(self, input_tensor):
        """Docstring."""
        total = helper(input_tensor, 2)
        for i in range(3):
            total = total + i
        return total

    def extra(self, value: int) -> int:
        return value + 1
'''

COSMETIC = '''
import torch

class Conv2dLoop(ABCConv2d):
    def extra(self, v):
        return v + 1      # reordered, renamed, no annotations

    def __call__(me, t):
        acc = scale_up(t, 2)
        for k in range(3):
            acc = acc + k
        return acc

def scale_up(a, b):
    return a * b
'''


def test_comments_whitespace_docstrings_locals_helpers_and_order_do_not_count(tmp_path):
    base = fingerprint(module(tmp_path, BASE, "a.py"), "Conv2dLoop")
    cosmetic = fingerprint(module(tmp_path, COSMETIC, "b.py"), "Conv2dLoop")
    assert base.exact == cosmetic.exact and base.signature == cosmetic.signature
    assert "# pad it" in base.source and "def helper" in base.source   # the original text, helpers too


def test_a_real_change_changes_the_hash(tmp_path):
    base = fingerprint(module(tmp_path, BASE, "a.py"), "Conv2dLoop")
    changed = fingerprint(module(tmp_path, BASE.replace("total + i", "total - i"), "b.py"), "Conv2dLoop")
    attribute = fingerprint(module(tmp_path, BASE.replace("return value + 1", "return value.size"), "c.py"),
                            "Conv2dLoop")
    assert len({base.exact, changed.exact, attribute.exact}) == 3


def test_a_missing_item_has_no_fingerprint_and_the_scaffold_is_left_out():
    missing = prints(SUBMISSIONS / "missing_class.py")
    assert missing["Conv2dMatrixV2"] is None and missing["Conv2dLoop"] is not None
    template = prints(SUBMISSIONS / "template_bug.ipynb")["Conv2dMatrixV2"]
    assert "class Conv2dMatrixV2" in template.source
    assert "class ABCConv2d" not in template.source   # the course scaffold, pasted: everyone has it
    assert "class ABCConv2d" in fingerprint(load_submission(SUBMISSIONS / "template_bug.ipynb"),
                                            "Conv2dMatrixV2").source   # without COMMON it counts


def test_the_source_is_bounded(tmp_path):
    body = "".join(f"        x{i} = {i}\n" for i in range(3000))
    found = fingerprint(module(tmp_path, f"class Conv2dLoop:\n    def __call__(self):\n{body}"), "Conv2dLoop")
    assert found.truncated and len(found.source) == 20_000


def members(paths: dict[str, Path], item: str) -> list[Member]:
    found = [(name, prints(path)[item]) for name, path in paths.items()]
    return [Member(name, f.exact, f.signature) for name, f in found if f is not None]


FIXTURE_SET = {"correct": SUBMISSIONS / "correct.ipynb", "correct_module": SUBMISSIONS / "correct_module.py",
               "independent": SIMILAR / "independent.py", "renamed_copy": SIMILAR / "renamed_copy.py",
               "near_copy": SIMILAR / "near_copy.py"}


@pytest.mark.parametrize("item", ITEMS)
def test_a_renamed_copy_is_an_exact_copy(item):
    original, copy = prints(SUBMISSIONS / "correct_module.py")[item], prints(SIMILAR / "renamed_copy.py")[item]
    assert original.exact == copy.exact
    assert original.source != copy.source      # the copy's text differs: renamed, reordered, recommented


def test_a_near_copy_joins_the_group_and_independent_solutions_do_not():
    for item in ITEMS:
        groups = similar_groups(item, members(FIXTURE_SET, item))
        assert [g.members for g in groups] == [("correct_module", "near_copy", "renamed_copy")], item
    loop = similar_groups("Conv2dLoop", members(FIXTURE_SET, "Conv2dLoop"))[0]
    assert not loop.exact and {p[:2] for p in loop.pairs} == {("correct_module", "near_copy"),
                                                              ("near_copy", "renamed_copy")}
    independent = {k: FIXTURE_SET[k] for k in ("correct", "correct_module", "independent")}
    for item in ITEMS:
        scores = near_pairs(members(independent, item), 0.0)
        assert len(scores) == 3 and all(s < NEAR_THRESHOLD for _, _, s in scores), (item, scores)


def test_groups_are_deterministic_and_exact_copies_share_one():
    ring = [Member(f"s{i}", "same", (1, 2, 3)) for i in (3, 1, 2)] + [Member("x", "other", (9,))]
    assert similar_groups("A", ring) == similar_groups("A", list(reversed(ring)))
    (group,) = similar_groups("A", ring)
    assert group.members == ("s1", "s2", "s3") and group.exact


def test_boilerplate_most_of_a_large_class_shares_is_not_evidence():
    boiler = tuple(range(100, 140))
    # 30 different submissions that share only boilerplate, and one pair that shares more.
    class_ = [Member(f"s{i:02d}", f"e{i}", boiler + tuple(range(1000 * i, 1000 * i + 40))) for i in range(30)]
    class_.append(Member("copy", "e-copy", boiler + tuple(range(5000, 5040))))   # copies s05's own part
    found = near_pairs(class_, NEAR_THRESHOLD)
    assert [(a, b) for a, b, _ in found] == [("copy", "s05")]
    small = [Member("a", "1", boiler), Member("b", "2", boiler)]   # in a small class nothing is set aside
    assert [(a, b) for a, b, _ in near_pairs(small, NEAR_THRESHOLD)] == [("a", "b")]


def test_the_source_is_in_the_same_order_in_every_run_and_for_reordered_copies():
    import os
    import subprocess
    import sys

    from conftest import ROOT

    code = ("from pathlib import Path; from grader.submission import load_submission; import sys; "
            "from grader.similarity import fingerprint, unit_hashes; from grader.config import load_assignment; "
            "common = unit_hashes(load_assignment('conv2d').scaffold_source); "
            "print(fingerprint(load_submission(Path(sys.argv[1])), 'Conv2dLoop', common).source)")
    runs = {subprocess.run([sys.executable, "-c", code, str(SUBMISSIONS / "correct_module.py")], cwd=ROOT,
                           capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED=str(seed))).stdout for seed in (1, 2, 3, 4)}
    assert len(runs) == 1       # the helpers are found through a set: string hashing must not order them
    heads = [line for line in runs.pop().splitlines() if line.startswith(("class ", "def "))]
    copy = [line for line in prints(SIMILAR / "renamed_copy.py")["Conv2dLoop"].source.splitlines()
            if line.startswith(("class ", "def "))]
    assert heads[0] == copy[0] == "class Conv2dLoop(PaddedConv2d):"
    assert [h.split("(")[0] for h in heads] == [c.split("(")[0] for c in copy]   # reordered copy lines up
