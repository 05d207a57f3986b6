import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SUBMISSIONS = ROOT / "assignments" / "conv2d" / "fixtures"


@pytest.fixture
def assignment_copy(tmp_path):
    """A writable copy of the bundled assignment folder, for config tests to break."""
    target = tmp_path / "conv2d"
    shutil.copytree(ROOT / "assignments" / "conv2d", target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.ipynb", "example", "fixtures"))
    return target


# --- the fixture kit: every assignment's fixtures, graded once per test session ------------------

ASSIGNMENTS = ROOT / "assignments"


def fixture_manifests() -> dict[str, tuple[Path, dict]]:
    """assignment id -> (its fixtures folder, its manifest), for every assignment that has one."""
    import yaml

    found = {}
    for manifest in sorted(ASSIGNMENTS.glob("*/fixtures/manifest.yaml")):
        found[manifest.parent.parent.name] = (manifest.parent, yaml.safe_load(manifest.read_text()))
    return found


@pytest.fixture(scope="session")
def fixture_reports(tmp_path_factory):
    """`fixture_reports(assignment_id)` -> {fixture name: report dict}: each assignment's
    fixtures graded through the CLI on the CPU (two at a time, one per core), the first time
    they are asked for."""
    import json
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    manifests = fixture_manifests()
    cache: dict[str, dict] = {}

    def grade_all(assignment_id: str) -> dict:
        if assignment_id in cache:
            return cache[assignment_id]
        folder, manifest = manifests[assignment_id]
        out = tmp_path_factory.mktemp(f"reports-{assignment_id}")
        config = ASSIGNMENTS / assignment_id / "assignment.yaml"

        def grade(name):
            report = out / f"{name}.json"
            result = subprocess.run([sys.executable, "-m", "grader", str(folder / name), "--assignment", str(config),
                                     "--device", "cpu", "-o", str(report), "--quiet"],
                                    capture_output=True, text=True, timeout=900, cwd=ROOT)
            assert result.returncode == 0, f"{assignment_id}/{name}: {result.stderr}"
            return name, json.loads(report.read_text())

        with ThreadPoolExecutor(max_workers=2) as pool:
            cache[assignment_id] = dict(pool.map(grade, sorted(manifest["fixtures"])))
        return cache[assignment_id]

    return grade_all
