"""`grade batch` and `grade merge` through the real CLI."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jsonschema
import pytest

from conftest import FIXTURES, ROOT, SUBMISSIONS

SCHEMA = json.loads((ROOT / "grader" / "schema" / "report.schema.json").read_text())
SMALL = FIXTURES / "hostile" / "assignment.yaml"   # three cases a class, low limits
BATCH = FIXTURES / "batch"


def batch(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "grader", "batch", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("correct_module.py", "missing_class.py", "template_bug.ipynb", "returns_numpy.ipynb"):
        shutil.copy(SUBMISSIONS / name, folder / name)
    (folder / "nested").mkdir()
    shutil.copy(SUBMISSIONS / "correct_module.py", folder / "nested" / "correct_module.py")  # same stem
    return folder


def reports_in(folder):
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != "summary.json"}


def test_batch_writes_a_report_per_submission_a_gradebook_and_a_summary(inputs, tmp_path):
    out = tmp_path / "out"
    result = batch(inputs, "-o", out, "--assignment", SMALL, "--jobs", "2")
    assert result.returncode == 0, result.stderr
    reports = reports_in(out)
    assert len(reports) == 5
    assert {"missing_class", "template_bug", "returns_numpy"} <= set(reports)
    assert sum(1 for name in reports if name.startswith("correct_module-")) == 2   # colliding stems
    for report in reports.values():
        jsonschema.validate(report, SCHEMA)
    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    assert {r["submission_id"] for r in rows} == set(reports)
    assert all(float(r["total"]) == reports[r["submission_id"]]["score"] for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["graded"] == summary["submissions"] == 5 and summary["missing"] == 0
    assert "5 to grade" in result.stderr and "[5/5" in result.stderr    # plain progress lines off a terminal


def test_rerun_skips_complete_reports_and_regrades_changed_files(inputs, tmp_path):
    out = tmp_path / "out"
    assert batch(inputs, "-o", out, "--assignment", SMALL).returncode == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    again = batch(inputs, "-o", out, "--assignment", SMALL)
    assert "5 already graded, 0 to grade" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json") if p.name != "summary.json"} == \
        {k: v for k, v in stamps.items() if k != "summary.json"}
    (inputs / "missing_class.py").write_text((SUBMISSIONS / "correct_module.py").read_text())
    changed = batch(inputs, "-o", out, "--assignment", SMALL)
    assert "4 already graded, 1 to grade" in changed.stderr
    assert reports_in(out)["missing_class"]["items"]["Conv2dMatrixV2"]["status"] == "graded"


def test_shards_split_the_inputs_and_merge_joins_them(inputs, tmp_path):
    outs = [tmp_path / f"shard{k}" for k in (1, 2, 3)]
    for k, out in enumerate(outs, start=1):
        assert batch(inputs, "-o", out, "--assignment", SMALL, "--shard", f"{k}/3").returncode == 0
    names = [set(reports_in(out)) for out in outs]
    assert sum(len(n) for n in names) == 5 and len(set().union(*names)) == 5
    merged = tmp_path / "merged"
    result = subprocess.run([sys.executable, "-m", "grader", "merge", *map(str, outs), "-o", str(merged)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((merged / "gradebook.csv").open()))
    assert {r["submission_id"] for r in rows} == set().union(*names)
    assert batch(inputs, "-o", tmp_path / "x", "--shard", "4/3").returncode == 2


def _descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _direct_children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


@pytest.mark.slow
def test_a_killed_worker_and_a_hanging_submission_cost_only_themselves(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    # One job, in name order: the first worker is the slow submission's, so that is the one killed.
    shutil.copy(BATCH / "slow_correct.py", folder / "a_slow.py")
    shutil.copy(FIXTURES / "hostile" / "loop_in_call.py", folder / "b_hangs.py")
    shutil.copy(SUBMISSIONS / "correct_module.py", folder / "c_fine.py")
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "grader", "batch", str(folder), "-o", str(out),
                                "--assignment", str(SMALL), "--jobs", "1"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline:
        time.sleep(0.2)
        for server in [p for p in _direct_children(process.pid) if b"forkserver" in _cmdline(p)]:
            workers = _direct_children(server)
            if workers:
                time.sleep(1.5)  # well inside a_slow's 4.5 s of cases
                try:
                    os.kill(workers[0], signal.SIGKILL)
                    killed = workers[0]
                except ProcessLookupError:
                    pass
    _, stderr = process.communicate(timeout=240)
    assert killed is not None and process.returncode == 0, stderr
    reports = reports_in(out)
    assert set(reports) == {"a_slow", "b_hangs", "c_fine"}
    assert reports["c_fine"]["score"] == 100
    hung = [c["status"] for cls in reports["b_hangs"]["items"].values() for c in cls["cases"]]
    assert "timeout" in hung
    slow = reports["a_slow"]
    messages = [c["message"] for cls in slow["items"].values() for c in cls["cases"]]
    messages += [e["message"] for e in slow["load"]["errors"]]   # killed while loading
    assert any("SIGKILL" in m for m in messages), "the killed worker's case (or statement) says so"
    assert slow["environment"]["worker_restarts"] >= 1


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_a_rerun_grades_only_what_is_missing(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(4):
        shutil.copy(BATCH / "slow_correct.py", folder / f"student{n}.py")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "grader", "batch", str(folder), "-o", str(out), "--assignment", str(SMALL),
               "--jobs", "1"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("student*.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    done = set(reports_in(out))
    assert 1 <= len(done) < 4 and "run the same command again" in stderr
    for report in reports_in(out).values():
        jsonschema.validate(report, SCHEMA)
    assert not _descendants(process.pid)
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0
    assert f"{len(done)} already graded, {4 - len(done)} to grade" in rerun.stderr
    assert len(reports_in(out)) == 4
