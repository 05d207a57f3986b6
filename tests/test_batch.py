"""`grade batch` and `grade merge` through the real CLI."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from conftest import FIXTURES, ROOT, SUBMISSIONS

SCHEMA = json.loads((ROOT / "grader" / "schema" / "report.schema.json").read_text())
SMALL = FIXTURES / "hostile" / "assignment.yaml"   # three cases a class, low limits
BATCH = FIXTURES / "batch"
OUTPUTS = ("summary.json", "manifest.json")   # rewritten by every run


def grader(command, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "grader", command, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def batch(*args, timeout=300):
    return grader("batch", *args, timeout=timeout)


def folder_of(folder, files):
    """`folder` holding a copy of each source under its name: {name: source}."""
    folder.mkdir()
    for name, source in files.items():
        shutil.copy(source, folder / name)
    return folder


@pytest.fixture
def inputs(tmp_path):
    folder = folder_of(tmp_path / "in", {name: SUBMISSIONS / name for name in (
        "correct_module.py", "missing_class.py", "template_bug.ipynb", "returns_numpy.ipynb")})
    (folder / "nested").mkdir()
    shutil.copy(SUBMISSIONS / "correct_module.py", folder / "nested" / "correct_module.py")  # same stem
    return folder


def reports_in(folder):
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")
            if p.name not in ("summary.json", "manifest.json", "roster.json")}


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
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json") if p.name not in OUTPUTS} == \
        {k: v for k, v in stamps.items() if k not in OUTPUTS}
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


# ---------------------------------------------------------------------------------------------
# The instructor's view: manifests, merges that cannot lose work, regrading, outputs
# ---------------------------------------------------------------------------------------------

def merge(*args, timeout=300):
    return grader("merge", *args, timeout=timeout)


@pytest.fixture
def twelve(tmp_path):
    """Twelve quick submissions; by the hash of their ids, four shards own 3, 1, 5 and 3 of them."""
    return folder_of(tmp_path / "twelve", {f"student{i:02d}.py": BATCH / "instant.py" for i in range(12)})


def test_each_shard_writes_a_manifest_and_zero_based_indices_pick_the_same_share(inputs, tmp_path):
    one, zero = tmp_path / "one", tmp_path / "zero"
    assert batch(inputs, "-o", one, "--assignment", SMALL, "--shard", "2/3").returncode == 0
    result = batch(inputs, "-o", zero, "--assignment", SMALL, "--shard-index", "1", "--shard-count", "3")
    assert result.returncode == 0, result.stderr
    assert set(reports_in(one)) == set(reports_in(zero))
    manifest = json.loads((zero / "manifest.json").read_text())
    assert manifest["shard"] == {"index": 1, "count": 3, "label": "2/3",
                                 "source": "--shard-index 1 --shard-count 3"}
    assert manifest["status"] == "finished" and len(manifest["inputs"]) == 5
    assert {e["id"] for e in manifest["owned"]} == set(reports_in(zero))
    [graded] = manifest["assignments"]
    assert graded["seed"] == 2026 and manifest["grader"]["fingerprint"] and graded["sha256"]
    assert {e["assignment"] for e in manifest["owned"]} == {graded["id"]}
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_COUNT="3")
    slurm = subprocess.run([sys.executable, "-m", "grader", "batch", str(inputs), "-o", str(tmp_path / "slurm"),
                            "--assignment", str(SMALL), "--shard", "env"], capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=300)
    assert slurm.returncode == 0 and set(reports_in(tmp_path / "slurm")) == set(reports_in(one))


def test_a_merge_of_four_shards_with_one_removed_names_the_missing_submissions(twelve, tmp_path):
    from grader.shards import owner

    shards = [tmp_path / f"shard{k}" for k in range(1, 5)]
    for k, out in enumerate(shards, start=1):
        assert batch(twelve, "-o", out, "--assignment", SMALL, "--shard", f"{k}/4").returncode == 0
    whole = merge(*shards, "-o", tmp_path / "all")
    assert whole.returncode == 0, whole.stderr
    assert len(reports_in(tmp_path / "all")) == 12
    shutil.rmtree(shards[2])
    partial = merge(shards[0], shards[1], shards[3], "-o", tmp_path / "partial")
    lost = sorted(f"student{i:02d}" for i in range(12) if owner(f"student{i:02d}", 4) == 2)
    assert partial.returncode == 1, partial.stderr
    assert "missing shards: 3/4" in partial.stderr
    assert f"{len(lost)} of 12 submissions have no report" in partial.stderr
    for identity in lost:
        assert f"  {identity}: shard 3/4 is missing" in partial.stderr
    summary = json.loads((tmp_path / "partial" / "summary.json").read_text())
    assert summary["missing_shards"] == ["3/4"] and [m["id"] for m in summary["missing_submissions"]] == lost
    assert summary["submissions"] == 12 and summary["graded"] == 12 - len(lost)
    # A shard that stopped early: its manifest owns a submission it has no report for.
    (shards[0] / f"{sorted(reports_in(shards[0]))[0]}.json").unlink()
    stopped = merge(shards[0], shards[1], shards[3], "-o", tmp_path / "again")
    assert stopped.returncode == 1 and "no report in shard 1/4" in stopped.stderr
    # Folders of an older grader have no manifest: merged as before, and never mixed with shards.
    (shards[0] / "manifest.json").unlink()
    assert merge(shards[0], shards[1], "-o", tmp_path / "mixed").returncode == 2
    (shards[1] / "manifest.json").unlink()
    legacy = merge(shards[0], shards[1], "-o", tmp_path / "legacy")
    assert legacy.returncode == 0 and len(reports_in(tmp_path / "legacy")) == len(reports_in(shards[0])) + \
        len(reports_in(shards[1]))


def test_a_merge_refuses_to_mix_seeds_and_reads_only_valid_reports(twelve, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert batch(twelve, "-o", a, "--assignment", SMALL, "--shard", "1/2").returncode == 0
    assert batch(twelve, "-o", b, "--assignment", SMALL, "--shard", "2/2", "--seed", "7").returncode == 0
    mixed = merge(a, b, "-o", tmp_path / "m")
    assert mixed.returncode == 2 and "different seeds" in mixed.stderr
    assert batch(twelve, "-o", b, "--assignment", SMALL, "--shard", "2/2").returncode == 0
    victim = sorted(reports_in(b))[0]
    data = json.loads((b / f"{victim}.json").read_text())
    data["score"] = -3
    (b / f"{victim}.json").write_text(json.dumps(data))
    result = merge(a, b, "-o", tmp_path / "m")
    assert result.returncode == 1 and f"{victim}: invalid report" in result.stderr and "$.score" in result.stderr


def test_a_rerun_regrades_reports_of_another_grader_and_invalid_ones(inputs, tmp_path):
    out = tmp_path / "out"
    assert batch(inputs, "-o", out, "--assignment", SMALL).returncode == 0
    old = json.loads((out / "template_bug.json").read_text())
    old["environment"]["grader_fingerprint"] = "0" * 16            # graded by another version
    (out / "template_bug.json").write_text(json.dumps(old))
    broken = json.loads((out / "missing_class.json").read_text())
    broken["items"]["Conv2dLoop"]["status"] = "exploded"          # not a report the schema allows
    (out / "missing_class.json").write_text(json.dumps(broken))
    again = batch(inputs, "-o", out, "--assignment", SMALL)
    assert "3 already graded, 2 to grade" in again.stderr
    assert json.loads((out / "template_bug.json").read_text())["environment"]["grader_fingerprint"] != "0" * 16


def test_merged_shards_write_the_same_class_report_and_gradebook_as_one_batch(inputs, tmp_path):
    shards = [tmp_path / f"s{k}" for k in (1, 2)]
    for k, out in enumerate(shards, start=1):
        assert batch(inputs, "-o", out, "--assignment", SMALL, "--shard", f"{k}/2").returncode == 0
    merged = tmp_path / "merged"
    assert merge(*shards, "-o", merged).returncode == 0
    # One batch over the same reports: every report is complete, so it only writes its outputs.
    single = tmp_path / "single"
    single.mkdir()
    for out in shards:
        for report in out.glob("*.json"):
            if report.name not in ("manifest.json", "summary.json"):
                shutil.copy(report, single / report.name)
    assert "0 to grade" in batch(inputs, "-o", single, "--assignment", SMALL).stderr
    for name in ("class_report.html", "gradebook.csv"):
        assert (merged / name).read_bytes() == (single / name).read_bytes(), name
    assert set(reports_in(merged)) == set(reports_in(single))


def test_a_roster_gives_lms_files_and_lists_what_it_could_not_match(inputs, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id,name,email,submission\ns1,Ann,ann@x.org,template_bug.ipynb\n"
                      "s2,Bob,bob@x.org,missing_class\ns3,Cy,cy@x.org,\n")
    out, pages = tmp_path / "out", tmp_path / "feedback"
    result = batch(inputs, "-o", out, "--assignment", SMALL, "--roster", roster, "--feedback", pages,
                   "--lms-column", "HW 3 (42)")
    assert result.returncode == 0, result.stderr
    canvas = list(csv.reader((out / "canvas_grades.csv").open()))
    assert canvas[0][-1] == "HW 3 (42)" and canvas[1][0] == "Points Possible"
    assert sorted(row[2] for row in canvas[2:]) == ["s1", "s2"]
    moodle = list(csv.DictReader((out / "moodle_grades.csv").open()))
    assert {r["ID number"]: float(r["HW 3 (42)"]) for r in moodle} == {
        "s1": reports_in(out)["template_bug"]["score"], "s2": reports_in(out)["missing_class"]["score"]}
    roster_data = json.loads((out / "roster.json").read_text())
    assert len(roster_data["unmatched_submissions"]) == 3 and \
        [s["student_id"] for s in roster_data["students_without_submission"]] == ["s3"]
    assert "3 submissions match no student" in result.stderr and "1 students have no submission: s3" in result.stderr
    assert sorted(p.stem for p in pages.glob("*.html")) == sorted(reports_in(out))
    stamps = {p.name: p.stat().st_mtime_ns for p in pages.glob("*.html")}
    (pages / "template_bug.html").unlink()
    assert batch(inputs, "-o", out, "--assignment", SMALL, "--feedback", pages).returncode == 0
    assert (pages / "template_bug.html").exists()
    assert {p.name: p.stat().st_mtime_ns for p in pages.glob("*.html") if p.name != "template_bug.html"} == \
        {k: v for k, v in stamps.items() if k != "template_bug.html"}   # existing pages are kept


def test_a_folder_of_two_assignments_grades_each_with_its_own_and_writes_a_gradebook_each(tmp_path):
    """Issue 12: a batch that mixes assignments picks each file's from its names."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(SUBMISSIONS / "correct_module.py", folder / "alice.py")
    shutil.copy(ROOT / "assignments" / "normalization" / "fixtures" / "correct_four_param_only.py", folder / "bob.py")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "grader", "batch", str(folder), "-o", str(out), "--device", "cpu",
                             "--jobs", "2"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    reports = reports_in(out)
    assert reports["alice"]["assignment"]["id"] == "conv2d" and reports["alice"]["score"] == 100
    assert reports["bob"]["assignment"]["id"] == "normalization" and reports["bob"]["score"] == 10
    for assignment_id, student, total in (("conv2d", "alice", 100), ("normalization", "bob", 10)):
        with open(out / f"gradebook-{assignment_id}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [(r["submission_id"], float(r["total"])) for r in rows] == [(student, total)], assignment_id
        assert (out / f"class_report-{assignment_id}.html").is_file()
    assert not (out / "gradebook.csv").exists()


# ---------------------------------------------------------------------------------------------
# Issue 11: student-chosen names in the gradebook, and the batch's own setup errors
# ---------------------------------------------------------------------------------------------

FORMULAS = ("=HYPERLINK(\"evil.example\",\"open me\")", "+1+cmd", "-A1", "@SUM(1)", "\tTAB", "\rCR")


def test_file_names_a_spreadsheet_would_run_stay_text(tmp_path):
    """A batch run inside the submissions folder (`grade batch .`) writes the names as found: a
    file named like a formula must not become one in gradebook.csv; the numbers stay numbers."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in FORMULAS:
        shutil.copy(BATCH / "instant.py", folder / f"{name}.py")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "grader", "batch", ".", "-o", str(out), "--assignment",
                             str(SMALL)], capture_output=True, text=True, timeout=300, cwd=folder,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    with (out / "gradebook.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(r["path"] for r in rows) == sorted(f"'{name}.py" for name in FORMULAS)
    for row in rows:
        for column, cell in row.items():
            assert not cell or cell[0] not in "=+-@\t\r", (column, cell)
        float(row["total"]), float(row["max_total"]), float(row["Conv2dLoop"])


def test_the_same_file_given_twice_is_graded_once(tmp_path):
    folder = folder_of(tmp_path / "in", {"alice.py": BATCH / "instant.py"})
    os.link(folder / "alice.py", folder / "alice_again.py")
    out = tmp_path / "out"
    result = batch(folder, folder / "alice.py", tmp_path / "in" / ".." / "in" / "alice.py", "-o", out,
                   "--assignment", SMALL)
    assert result.returncode == 0, result.stderr
    assert set(reports_in(out)) == {"alice"}
    assert "same file as" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["submissions"] == 1
    assert sorted(Path(d["path"]).name for d in summary["duplicates"]) == ["alice.py", "alice_again.py"]
    assert all(Path(d["same_as"]) == folder / "alice.py" for d in summary["duplicates"])


def test_a_submission_deleted_while_the_batch_runs_gets_a_report_saying_so(tmp_path):
    """Deleted after the batch listed it: not a grader failure (nothing to retry), a report."""
    import threading

    from grader.batch import GRADER_FAILURE, Item, grade_one
    from grader.config import load_assignment

    out = tmp_path / "out"
    out.mkdir()
    gone = Item(path=tmp_path / "gone.py", id="gone", sha256="0" * 64)
    assignment = load_assignment(str(SMALL))
    label, outcome = grade_one(gone, assignment, assignment.seed, "cpu", out, threading.Event())
    report = json.loads((out / "gone.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert not report["load"]["fatal"].startswith(GRADER_FAILURE) and "disappeared" in report["load"]["fatal"]
    assert "GRADER FAILURE" not in outcome and report["score"] == 0


@pytest.mark.parametrize("option", ["-o", "--feedback"])
def test_a_batch_output_that_cannot_be_a_folder_is_refused_before_grading(tmp_path, option):
    folder = folder_of(tmp_path / "in", {"alice.py": BATCH / "instant.py"})
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    others = ["-o", tmp_path / "out"] if option == "--feedback" else []
    for target, words in ((a_file, "is a file"), (a_file / "sub", "is a file, not a folder")):
        result = batch(folder, *others, option, target, "--assignment", SMALL)
        assert result.returncode == 73, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and option in result.stderr and words in result.stderr
        assert not (tmp_path / "out").exists(), "it graded before checking its outputs"
