import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SUBMISSIONS = FIXTURES / "submissions"


@pytest.fixture
def assignment_copy(tmp_path):
    """A writable copy of the bundled assignment folder, for config tests to break."""
    target = tmp_path / "conv2d"
    shutil.copytree(ROOT / "assignments" / "conv2d", target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.ipynb", "example", "fixtures"))
    return target
