"""Hostile submissions cannot crash, hang, fool or outlive the grader (issue 3).

Each fixture in tests/fixtures/hostile/ attacks the grader one way (its docstring says how).
Every test runs the real CLI on one, with tests/fixtures/hostile/assignment.yaml (three cases
per class, low limits), and asserts the per-class verdicts, that the report is the grader's
own and schema-valid, the wall time, and that no process the submission started is alive.

Survivors are found two ways: this test process is a child subreaper while the module runs,
so anything that outlived the CLI is re-parented to it and shows up as a child of ours; and
/proc is scanned for the marker "hostilefixture" that the fixtures put in their processes'
names or environments. Survivors are killed after being recorded, so a failed defence costs
a test, not the machine. Each fixture is graded once per session (results are cached), and
test_every_fixture_gets_a_valid_report goes over all of them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "tests" / "fixtures" / "hostile"
ASSIGNMENT = HOSTILE / "assignment.yaml"
SCHEMA = ROOT / "grader" / "schema" / "report.schema.json"
MARKER = "hostilefixture"
REDUCE_MARKER = Path("/tmp/grader-hostile-reduce-marker")   # malicious_reduce.py's payload writes it
CLASSES = ("Conv2dLoop", "Conv2dMatrix", "Conv2dMatrixV2")

# Seconds the CLI may take per fixture: one worker start is ~1.5 s and every kill costs a
# restart; runaways add their limits (statement 1.5 s, load 6 s, case 2 s in the YAML).
WALL_LIMIT_S = 25.0
SLOW_WALL_LIMIT_S = 45.0
SLOW_FIXTURES = {"loop_at_import.py", "loop_in_call.py", "forge_protocol.py", "load_budget_cheap.py"}
# Fixtures whose threat does not need every case: one case keeps restarts few.
ONE_CASE = {"answer_hunt.py", "exit_in_call.py", "loop_at_import.py", "loop_in_call.py",
            "memory_hog.py", "output_flood.py", "file_bomb.py", "fork_bomb.py", "detach_daemons.py",
            "squat_report_path.py", "outlive_the_grader.py", "whoami.py", "leftover_state.py"}
# Where the machine's folders anyone may write to are (what a submission could leave files in).
SHARED_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the sandbox's defences are Linux-only")
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="namespaces and the unprivileged user need the grader to run as root")


@dataclass(frozen=True)
class Graded:
    name: str
    report: dict
    report_text: str
    stdout: str
    stderr: str
    returncode: int
    wall_s: float
    output: Path
    survivors: tuple[str, ...]
    peak_rss_mb: float        # the grader process's own, sampled while it ran

    def cls(self, name: str) -> dict:
        return self.report["items"][name]

    def cases(self, name: str) -> list[dict]:
        return self.cls(name)["cases"]


# --- survivors ----------------------------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


@pytest.fixture(scope="module", autouse=True)
def adopt_orphans():
    """Make this process a child subreaper for the module, so whatever outlives a CLI run
    becomes our child (restored afterwards: other tests' orphans are not ours to collect)."""
    libc = ctypes.CDLL(None, use_errno=True)
    before = ctypes.c_int(0)
    libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(before), 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, before.value, 0, 0, 0)


def _our_children() -> set[int]:
    found = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            found.update(int(pid) for pid in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _is_zombie(pid: int) -> bool:
    """Dead and waiting to be reaped (by us, if it was re-parented to us): not a survivor."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _describe(pid: int) -> str:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        uid = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]
    except (OSError, IndexError):
        return f"{pid} (gone)"
    return f"{pid} uid={uid} {comm!r} {cmdline.strip()[:80]!r}"


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _marked_processes() -> set[int]:
    """Orphans (re-parented to init or to us) carrying the fixtures' marker in their name,
    command line or environment. Marked processes with another parent belong to a grading
    still in progress (another session's, say), not to one that has finished."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if _parent(int(entry.name)) not in (1, os.getpid()):
            continue
        for part in ("comm", "cmdline", "environ"):
            try:
                if MARKER.encode() in (entry / part).read_bytes():
                    found.add(int(entry.name))
                    break
            except OSError:
                continue
    return found


def _kill(pids: set[int]) -> None:
    for pid in pids:
        for send in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                send()
            except (ProcessLookupError, PermissionError):
                pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


# Graders that _run_cli started and that are still running: when two run at once (shards on
# one node), each one's sweep for survivors must leave the other grader alone.
_IN_FLIGHT: set[int] = set()


def _survivors(children_before: set[int]) -> tuple[str, ...]:
    """What the submission left alive, recorded and then killed (until none are left)."""
    seen: list[str] = []
    for _ in range(50):
        found = (_our_children() - children_before - _IN_FLIGHT) | _marked_processes()
        alive = {pid for pid in found if not _is_zombie(pid)}
        seen.extend(_describe(pid) for pid in sorted(alive))
        _kill(found)           # reaps the dead ones that are ours too
        if not alive:
            break
    return tuple(seen)


# --- running the CLI ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace():
    """A folder the worker's user could write to if nothing hid it (the report goes there)."""
    folder = Path(tempfile.mkdtemp(prefix="grader-hostile-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
    squatted = squat_output(folder)
    shutil.rmtree(squatted, ignore_errors=True)
    for path in (squatted, Path(f"{squatted}.forged")):
        path.unlink(missing_ok=True)


_graded: dict[tuple, Graded] = {}
SQUAT = "squat_report_path.py"


def squat_output(workspace: Path) -> Path:
    """squat_report_path.py's report goes straight into /tmp, which the worker's user can write
    to and which is never hidden (the worker's own folder lives there)."""
    return Path(tempfile.gettempdir()) / f"{workspace.name}-squat.json"


def _run_cli(name: str, workspace: Path, *extra: str, output: Path | None = None,
             run: int = 1, prefix: tuple[str, ...] = ()) -> Graded:
    """Grade `name` with the real CLI (`prefix`, e.g. one that runs it as nobody, goes first)."""
    key = (name, extra, str(output), run, prefix)
    if key in _graded:
        return _graded[key]
    if output is None and name == SQUAT:
        output = squat_output(workspace)
    if output is None:
        output = workspace / f"{Path(name).stem}-{run}" / "report.json"
        output.parent.mkdir(mode=0o777, exist_ok=True)
        output.parent.chmod(0o777)
    cwd = workspace / f"{Path(name).stem}-{run}-cwd"
    cwd.mkdir(mode=0o777, exist_ok=True)
    cwd.chmod(0o777)
    if name in ONE_CASE:
        extra = ("--case", "course-001", *extra)
    command = [sys.executable, "-m", "grader", str(HOSTILE / name), "--assignment", str(ASSIGNMENT),
               "--device", "cpu", "-o", str(output), "--json", *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if prefix:
        env["HOME"] = str(workspace)  # the user the prefix runs it as has no home of its own
    children_before = _our_children()
    started = time.monotonic()
    try:
        process = subprocess.Popen([*prefix, *command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        _IN_FLIGHT.add(process.pid)
        sampler = _RssSampler(process.pid)
        try:
            stdout, stderr = process.communicate(timeout=150)
        finally:
            sampler.stop()
            if process.poll() is None:
                process.kill()
                process.wait()
            _IN_FLIGHT.discard(process.pid)
    finally:
        survivors = _survivors(children_before)
    wall_s = time.monotonic() - started
    assert process.returncode == 0, f"{name}: exit {process.returncode}\n{stderr[-3000:]}"
    report_text = output.read_text()
    graded = Graded(name=name, report=json.loads(report_text), report_text=report_text, stdout=stdout,
                    stderr=stderr, returncode=process.returncode, wall_s=wall_s, output=output,
                    survivors=survivors, peak_rss_mb=sampler.peak_kb / 1024)
    _graded[key] = graded
    return graded


class _RssSampler:
    """The largest resident size of the process `pid` with the grader in it: the grader is the
    CLI's Python, or the last process a prefix (setpriv, unshare) exec'd into."""

    def __init__(self, pid: int):
        import threading

        self.pid = pid
        self.peak_kb = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(0.05):
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


@pytest.fixture(scope="module")
def grade(workspace):
    def run(name: str, *extra: str, output: Path | None = None, run: int = 1) -> Graded:
        return _run_cli(name, workspace, *extra, output=output, run=run)
    return run


def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def assert_grader_report(graded: Graded) -> None:
    """The report at -o is the grader's own: schema-valid, about this fixture, the same as the
    one printed on stdout, nothing the submission forged; and nothing the submission started is
    still alive; and it came in time."""
    errors = sorted(_validator().iter_errors(graded.report), key=lambda e: list(e.path))
    assert not errors, f"{graded.name}: schema errors: {[e.message for e in errors[:5]]}"
    assert graded.report["assignment"]["id"] == "conv2d-hostile"
    expected_sha = hashlib.sha256((HOSTILE / graded.name).read_bytes()).hexdigest()
    assert graded.report["submission"]["sha256"] == expected_sha
    assert "forged" not in graded.report
    assert json.loads(graded.stdout) == graded.report, "stdout and the -o file disagree"
    assert set(graded.report["items"]) == set(CLASSES)
    limit = SLOW_WALL_LIMIT_S if graded.name in SLOW_FIXTURES else WALL_LIMIT_S
    assert graded.wall_s < limit, f"{graded.name} took {graded.wall_s:.1f} s"
    assert not graded.survivors, f"{graded.name} left processes alive: {graded.survivors}"


def statuses(graded: Graded, name: str) -> set[str]:
    return {case["status"] for case in graded.cases(name)}


def messages(graded: Graded, name: str) -> str:
    return "\n".join(case["message"] for case in graded.cases(name))


def stdout_tails(graded: Graded, name: str) -> str:
    return "\n".join(case["stdout_tail"] for case in graded.cases(name))


# --- 1. patching what a grader might compare with ---------------------------------------

def test_patched_comparisons_have_no_effect(grade):
    graded = grade("patch_comparisons.ipynb")
    assert_grader_report(graded)
    assert graded.report["load"]["errors"] == []
    for name in CLASSES:
        assert graded.cls(name)["status"] == "graded"
        assert graded.cls(name)["score"] == 0
        assert statuses(graded, name) == {"failed"}
        assert "values wrong" in messages(graded, name)


# --- 2. returning something that is not a plain tensor ----------------------------------

def test_tensor_subclass_is_graded_as_plain_data(grade):
    graded = grade("tensor_subclass.py")
    assert_grader_report(graded)
    honest = graded.cls("Conv2dLoop")
    assert honest["score"] == honest["max_score"]
    assert all("graded as its plain data" in c["message"] for c in honest["cases"])
    liar = graded.cls("Conv2dMatrix")        # wrong values, __torch_function__ claims equality
    assert liar["score"] == 0 and statuses(graded, "Conv2dMatrix") == {"failed"}
    assert "values wrong" in messages(graded, "Conv2dMatrix")
    saboteur = graded.cls("Conv2dMatrixV2")  # raises from any torch function touching it
    assert saboteur["score"] == saboteur["max_score"]
    assert all("Saboteur" in c["returned_type"] for c in saboteur["cases"])


def test_objects_are_never_unpickled(grade):
    REDUCE_MARKER.unlink(missing_ok=True)
    graded = grade("malicious_reduce.py")
    assert_grader_report(graded)
    assert not REDUCE_MARKER.exists(), "something unpickled the submission's object"
    assert statuses(graded, "Conv2dLoop") == {"failed"}
    assert "returned submission.Payload, expected a torch.Tensor" in messages(graded, "Conv2dLoop")
    for name, kind in (("Conv2dMatrix", "numpy.ndarray"), ("Conv2dMatrixV2", "list")):
        assert graded.cls(name)["score"] == 0
        for case in graded.cases(name):
            assert case["status"] == "failed"
            assert f"returned {kind}, expected a torch.Tensor (its values are right)" in case["message"]


# --- 3. looking for the answer -----------------------------------------------------------

@needs_root
def test_the_answer_is_nowhere_to_be_found(grade):
    graded = grade("answer_hunt.py")
    assert_grader_report(graded)
    for name in CLASSES:
        assert graded.cls(name)["score"] == 0
        assert statuses(graded, name) == {"failed"}
    assert "0 of the output's shape" in stdout_tails(graded, "Conv2dLoop")
    assert "No module named 'reference.conv2d'" in stdout_tails(graded, "Conv2dMatrix")
    assert "disk search found: None" in stdout_tails(graded, "Conv2dMatrixV2")
    hidden = graded.report["environment"]["protections"]["hidden_paths"]
    assert str(ROOT / "reference") in hidden and str(ROOT / ".git") in hidden


# --- 4. forging the result ---------------------------------------------------------------

@needs_root
def test_forged_reports_do_not_stick(grade):
    graded = grade("forge_report.py")
    assert_grader_report(graded)
    for name in ("Conv2dLoop", "Conv2dMatrix"):
        assert graded.cls(name)["score"] == 0 and statuses(graded, name) == {"failed"}
    assert statuses(graded, "Conv2dMatrixV2") == {"error"}
    # The fake report only ever appears as the submission's captured output.
    assert '"forged": true' in stdout_tails(graded, "Conv2dLoop")
    time.sleep(1.0)  # a daemon that survived would rewrite the file by now
    assert graded.output.read_text() == graded.report_text
    cwd = graded.output.parent.parent / "forge_report-1-cwd"
    assert not list(cwd.iterdir()), "the submission wrote into the grader's working directory"
    assert sorted(p.name for p in graded.output.parent.iterdir()) == ["report.json"]


@needs_root
def test_squatting_on_the_report_path_does_not_stop_the_report(grade):
    graded = grade(SQUAT)       # tries to make a directory where the report file goes
    assert_grader_report(graded)
    assert graded.output.is_file() and graded.output.parent == Path(tempfile.gettempdir())
    assert not Path(f"{graded.output}.forged").exists()
    assert "squatting:" in graded.report["load"]["stdout_tail"]
    for name in CLASSES:
        assert graded.cls(name)["status"] == "missing"


@pytest.mark.slow
def test_messages_forged_on_the_reply_pipe_are_protocol_errors(grade):
    graded = grade("forge_protocol.py")
    assert_grader_report(graded)
    errors = {e["line"]: e for e in graded.report["load"]["errors"]}
    source = (HOSTILE / "forge_protocol.py").read_text().splitlines()
    deep = next(i for i, line in enumerate(source, 1) if line.startswith("_deep ="))
    unhashable = next(i for i, line in enumerate(source, 1) if line.startswith("_unhashable ="))
    assert errors[deep]["type"] == "Fatal" and "header is not JSON" in errors[deep]["message"]
    assert errors[unhashable]["type"] == "Fatal" and "malformed unit_done message" in errors[unhashable]["message"]
    for case in graded.cases("Conv2dLoop"):     # a forged result, duration 10**400
        assert case["status"] == "failed" and case["duration_s"] < 10
    assert graded.cases("Conv2dMatrix")[0]["status"] == "timeout"   # noise, never a result
    v2 = {c["id"]: c for c in graded.cases("Conv2dMatrixV2")}
    assert v2["basic-002"]["status"] == "error"
    assert v2["basic-002"]["message"].startswith("protocol error: malformed tensor spec")
    assert v2["course-001"]["status"] == v2["basic-001"]["status"] == "passed"


# --- 5. leaving early ----------------------------------------------------------------------

def test_exiting_inside_call_is_an_error_for_that_class_only(grade):
    graded = grade("exit_in_call.py")
    assert_grader_report(graded)
    assert statuses(graded, "Conv2dLoop") == {"error"}
    assert "SystemExit: leaving" in messages(graded, "Conv2dLoop")
    assert statuses(graded, "Conv2dMatrix") == {"error"}
    assert "exited with code 3" in messages(graded, "Conv2dMatrix")
    assert graded.cls("Conv2dMatrixV2")["score"] == 35
    assert graded.report["environment"]["worker_restarts"] >= 1


def test_interrupts_inside_call_are_errors(grade):
    graded = grade("interrupt_in_call.py")
    assert_grader_report(graded)
    assert statuses(graded, "Conv2dLoop") == {"error"}
    assert "KeyboardInterrupt" in messages(graded, "Conv2dLoop")
    assert statuses(graded, "Conv2dMatrix") == {"error"}
    assert "SystemExit" in messages(graded, "Conv2dMatrix")
    assert graded.cls("Conv2dMatrixV2")["score"] == 35


def test_exiting_at_import_is_blamed_on_its_statement(grade):
    graded = grade("exit_at_import.ipynb")
    assert_grader_report(graded)
    errors = {(e["cell"], e["line"]): e for e in graded.report["load"]["errors"]}
    assert errors[(2, 6)]["type"] == "SystemExit"
    assert errors[(3, 5)]["type"] == "KeyboardInterrupt"
    assert errors[(4, 1)]["type"] == "Fatal" and "exited with code 4" in errors[(4, 1)]["message"]
    assert len(errors) == 3
    assert graded.report["score"] == graded.report["max_score"] == 100


# --- 6. runaways ---------------------------------------------------------------------------

@pytest.mark.slow
def test_runaway_statements_at_import_are_skipped(grade):
    graded = grade("loop_at_import.py")
    assert_grader_report(graded)
    errors = {e["line"]: e for e in graded.report["load"]["errors"]}
    assert errors[23]["type"] == "Timeout"     # busy loop: the statement alarm
    assert errors[24]["type"] == "Timeout"     # endless sleep
    assert errors[25]["type"] == "Fatal"       # swallows the alarm: the grader's load deadline
    assert "loading took longer than 6 s" in errors[25]["message"]
    assert graded.report["score"] == 100


@pytest.mark.slow
def test_runaway_calls_time_out(grade):
    graded = grade("loop_in_call.py")
    assert_grader_report(graded)
    for name in CLASSES:
        (case,) = graded.cases(name)
        assert case["status"] == "timeout"
        assert case["message"] == "did not finish within 2 s"
        assert case["duration_s"] < 4


def test_memory_growth_hits_the_memory_limit(grade):
    graded = grade("memory_hog.py")
    assert_grader_report(graded)
    for name in ("Conv2dLoop", "Conv2dMatrix"):
        (case,) = graded.cases(name)
        assert case["status"] == "error"
        assert "the memory limit is 1024 MB" in case["message"]
    (case,) = graded.cases("Conv2dMatrixV2")  # swallowed every MemoryError and returned junk
    assert case["status"] == "failed"


def test_output_floods_are_bounded_by_time_alone(grade):
    quiet = grade("legit_indexing.py")
    graded = grade("output_flood.py")
    assert_grader_report(graded)
    (case,) = graded.cases("Conv2dLoop")           # prints without end: the case's time limit
    assert case["status"] == "timeout" and case["message"] == "did not finish within 2 s"
    assert case["stdout_tail"].startswith("...xxxx") and len(case["stdout_tail"]) < 4096
    (case,) = graded.cases("Conv2dMatrix")         # 2 MB at once, then the right answer
    assert case["status"] == "passed" and len(case["stdout_tail"]) < 4096
    assert graded.cls("Conv2dMatrixV2")["score"] == 35
    assert len(graded.report_text) < 200_000
    # Gigabytes went through the grader, which kept none of it: no more memory than grading
    # a quiet submission takes.
    assert graded.peak_rss_mb < quiet.peak_rss_mb + 150, (graded.peak_rss_mb, quiet.peak_rss_mb)


def test_printing_a_lot_is_not_a_failure(grade):
    graded = grade("chatty_correct.py")            # about 100 MB over the run
    assert_grader_report(graded)
    assert graded.report["score"] == graded.report["max_score"] == 100
    for name in CLASSES:
        for case in graded.cases(name):
            assert case["stdout_tail"].startswith("...") and "almost done" in case["stdout_tail"]
            assert len(case["stdout_tail"]) < 4096
    assert len(graded.report_text) < 200_000


def assert_file_limits_held(graded: Graded, leftovers: list[Path]) -> None:
    assert_grader_report(graded)
    (case,) = graded.cases("Conv2dLoop")
    assert case["status"] == "error" and "the file size limit is 16 MB" in case["message"]
    (case,) = graded.cases("Conv2dMatrix")        # SIGXFSZ restored to its default: it kills
    assert case["status"] == "error" and "SIGXFSZ (file size limit)" in case["message"]
    (case,) = graded.cases("Conv2dMatrixV2")      # many files in every folder anyone may write to
    assert case["status"] == "failed"
    written = int(case["stdout_tail"].split("wrote ")[1].split(" MB")[0])
    # One private tmpfs of 2 * file_mb behind all of them: the total is bounded, not each folder.
    assert 8 <= written <= 2 * 16, f"wrote {written} MB"
    assert _shared_files(MARKER) == leftovers, "the submission's files reached the machine's shared folders"


def _shared_files(prefix: str) -> list[Path]:
    return sorted(p for folder in SHARED_FOLDERS for p in Path(folder).glob(f"{prefix}-*"))


@needs_root
def test_growing_files_hit_the_file_limits(grade):
    leftovers = _shared_files(MARKER)
    assert_file_limits_held(grade("file_bomb.py"), leftovers)


def test_fork_bombs_hit_the_process_limit_and_die(grade):
    graded = grade("fork_bomb.py")
    assert_grader_report(graded)
    (case,) = graded.cases("Conv2dLoop")
    assert case["status"] == "error" and "the process limit was reached" in case["message"]
    assert graded.cls("Conv2dMatrixV2")["score"] == 35


def test_detached_processes_do_not_outlive_grading(grade):
    graded = grade("detach_daemons.py")
    assert_grader_report(graded)    # asserts no survivors, by re-parenting and by marker
    assert graded.report["load"]["errors"] == []
    # The daemon at import does not stop grading: V2's cases all pass. Since issue 11 a process
    # started while loading costs every class (it can compute outside the recorder's sight).
    v2 = graded.cls("Conv2dMatrixV2")
    assert statuses(graded, "Conv2dMatrixV2") == {"passed"}
    assert v2["score"] == 0 and any(v["kind"] == "tampering" and "os.fork" in v["operator"]
                                    for v in v2["violations"]), v2["violations"]


# --- state and processes that outlive the worker or the grader ----------------------------------

LEFTOVER = "hostilefixture-leftover"
LEFTOVER_SHM_KEY = 0x486F5374     # leftover_state.py's System V segment and message queue
LEFTOVER_QUEUE = b"/hostilefixture-leftover"


def _leftovers() -> list[str]:
    """What leftover_state.py left on this machine, outside any worker; removed once listed, so
    that a failed defence costs one test, not the next run."""
    found = [str(p) for p in _shared_files(LEFTOVER)]
    for path in found:
        Path(path).unlink(missing_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    segment = libc.shmget(LEFTOVER_SHM_KEY, 0, 0)
    if segment >= 0:
        found.append("shm segment")
        libc.shmctl(segment, 0, None)                       # IPC_RMID
    try:
        rt = libc if hasattr(libc, "mq_open") else ctypes.CDLL(ctypes.util.find_library("rt") or "librt.so.1")
        rt.mq_open.restype = ctypes.c_int
        queue = rt.mq_open(LEFTOVER_QUEUE, 0)
        if queue >= 0:
            found.append("message queue")
            os.close(queue)
            rt.mq_unlink(LEFTOVER_QUEUE)
    except (OSError, AttributeError):
        pass
    return found


def assert_nothing_left(first: Graded, second: Graded, stale: list[str]) -> None:
    for graded in (first, second):
        assert_grader_report(graded)
        # The classes are right (the fixture's ctypes at load time costs its points: a process
        # of its own could compute unrecorded; that is not what this test is about).
        assert all(statuses(graded, name) == {"passed"} for name in CLASSES)
        assert "found: nothing" in graded.report["load"]["stdout_tail"], graded.report["load"]["stdout_tail"]
    left = first.report["load"]["stdout_tail"].split("left: ")[1].split("\n")[0].split(", ")
    assert {"/tmp", "/run/lock", "shm segment", "message queue"} <= set(left)   # the attack ran
    assert _leftovers() == [], f"left on the machine (before this test: {stale})"


def test_nothing_written_outlives_the_worker(grade):
    """Files in /run/lock (on the root disk, in no temporary folder), a System V segment and a
    message queue: the second run of the same file must find nothing of the first's."""
    stale = _leftovers()
    assert_nothing_left(grade("leftover_state.py", run=1), grade("leftover_state.py", run=2), stale)


def _process_table() -> dict[int, tuple[int, str]]:
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                table[int(entry.name)] = (_parent(int(entry.name)) or 0, (entry / "comm").read_text().strip())
            except OSError:
                continue
    return table


def _marked_descendants(root: int, table: dict[int, tuple[int, str]]) -> set[int]:
    """Processes named with the marker below `root` (they are re-parented within its tree)."""
    found = set()
    for pid, (_, comm) in table.items():
        ancestor, hops = pid, 0
        while ancestor > 1 and hops < 64:
            ancestor, hops = table.get(ancestor, (0, ""))[0], hops + 1
            if ancestor == root and comm == MARKER:
                found.add(pid)
                break
    return found


def test_nothing_survives_a_killed_grader(workspace):
    """kill -9 of `grade batch` while a submission's setsid daemon lives: no grader is left to
    kill it, so the kernel must (the worker's PID namespace dies with its init)."""
    command = [sys.executable, "-m", "grader", "batch", str(HOSTILE / "outlive_the_grader.py"),
               "--assignment", str(ASSIGNMENT), "--device", "cpu", "-o", str(workspace / "killed-batch")]
    children_before = _our_children()
    process = subprocess.Popen(command, cwd=workspace, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        daemons: set[int] = set()
        while not daemons and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
            daemons = _marked_descendants(process.pid, _process_table())
        assert daemons, "the fixture's daemon never started"
        process.kill()
        process.wait()
        # The kernel's kills take milliseconds, and a dying process that held torch takes a
        # while to tear down on a loaded machine: wait until the grader's processes that were
        # re-parented to us are dead too, for 10 s at most.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(not _is_zombie(pid) for pid in
                                                  daemons | (_our_children() - children_before)):
            time.sleep(0.05)
        alive = [_describe(pid) for pid in sorted(daemons) if not _is_zombie(pid)]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        survivors = _survivors(children_before)
    assert not alive and not survivors, f"outlived the grader: {alive or survivors}"


def _uid_printed(graded: Graded) -> int:
    (case,) = graded.cases("Conv2dLoop")
    return int(case["stdout_tail"].split("uid=")[1].split()[0])


@needs_root
def test_graders_running_at_once_never_share_a_worker_uid(workspace):
    """Two graders started together (shards on one node): their workers' uids must differ."""
    import threading

    results: dict[int, Graded] = {}

    def run(index: int) -> None:
        results[index] = _run_cli("whoami.py", workspace, run=10 + index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2, "a grader failed (see above)"
    uids = [_uid_printed(results[i]) for i in range(2)]
    for graded in results.values():
        assert graded.report["score"] == 100
    assert uids[0] != uids[1] and min(uids) > 65534, uids


@needs_root
def test_processes_left_under_a_worker_uid_are_killed_at_start(grade):
    """A process still running under a worker uid that no live grader holds (left by a grader
    killed where the kernel could not kill it) is killed before that uid is handed out again."""
    from grader import uids

    stale_uid = uids.BASE + uids.BLOCK * (uids.BLOCKS - 1) + 7   # a block nobody holds
    sleeper = subprocess.Popen(["sleep", "60"], user=stale_uid, group=65534, extra_groups=[],
                               env={"HOSTILE": MARKER, "PATH": "/usr/bin:/bin"})
    try:
        graded = grade("whoami.py", run=20)
        assert graded.report["score"] == 100
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


# --- without root ---------------------------------------------------------------------------------

# Isolation a grader without root must still get where the kernel allows user namespaces.
WITHOUT_ROOT = {"no_network", "hidden_paths", "read_only_system", "private_temp", "private_ipc",
                "private_processes", "private_workdir", "dies_with_grader", "no_new_privileges"}


def _without_root() -> tuple[str, ...] | str:
    """A command prefix that runs the CLI as an ordinary user (the module's own user when that is
    not root; else `nobody`, with any folder only root may enter above this Python or checkout,
    like pyenv in /root, opened in a mount namespace of the command's own), or why not."""
    import pwd
    import shlex

    if os.geteuid() != 0:
        prefix: tuple[str, ...] = ()
    else:
        missing = [tool for tool in ("setpriv", "unshare", "mount") if shutil.which(tool) is None]
        if missing:
            return f"running as nobody needs {', '.join(missing)} (util-linux)"
        from grader.sandbox import _blocked_ancestors

        nobody = pwd.getpwnam("nobody")
        steps = ["set -e", 'stage="$(mktemp -d)"']
        blocked = _blocked_ancestors([os.path.realpath(sys.executable), sys.prefix, sys.base_prefix, str(ROOT)])
        for index, (ancestor, below) in enumerate(sorted(blocked.items())):
            where = shlex.quote(ancestor)
            steps += [f'mkdir "$stage/{index}"', f'mount --bind {where} "$stage/{index}"',
                      f"mount -t tmpfs -o mode=0711,size=64k tmpfs {where}"]
            for first in sorted({os.path.relpath(p, ancestor).split(os.sep)[0] for p in below}):
                target = shlex.quote(os.path.join(ancestor, first))
                make = "mkdir" if os.path.isdir(os.path.join(ancestor, first)) else "touch"
                steps += [f"{make} {target}", f'mount --rbind "$stage/{index}/{shlex.quote(first)}" {target}']
            steps += [f'umount -l "$stage/{index}"', f'rmdir "$stage/{index}"']
        steps += ['rmdir "$stage"', f'exec setpriv --reuid={nobody.pw_uid} --regid={nobody.pw_gid} '
                                    '--clear-groups -- "$@"']
        prefix = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(steps), "sh")
    probe = subprocess.run([*prefix, "unshare", "--user", "--map-root-user", "--mount", "--net", "--pid",
                            "--fork", "true"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return ("this kernel does not let an ordinary user create user namespaces "
                f"(user.max_user_namespaces, kernel.unprivileged_userns_clone, or a seccomp filter): "
                f"{probe.stderr.strip()[-200:]}")
    probe = subprocess.run([*prefix, sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                            "import torch, grader"], capture_output=True, text=True, timeout=120, cwd="/")
    if probe.returncode != 0:
        return f"an ordinary user cannot run this Python and checkout: {probe.stderr.strip()[-300:]}"
    return prefix


@pytest.mark.slow
def test_the_sandbox_holds_without_root(workspace):
    """The same attacks, graded by an ordinary user (a laptop, a CI runner, a Slurm job): the
    worker isolates itself in a user namespace, and the verdicts are the same as with root."""
    prefix = _without_root()
    if isinstance(prefix, str):
        pytest.skip(prefix)

    def graded(name: str, run: int = 30) -> Graded:
        result = _run_cli(name, workspace, run=run, prefix=prefix)
        active = result.report["environment"]["protections"]
        assert WITHOUT_ROOT <= set(active), f"{name}: off without root: {sorted(WITHOUT_ROOT - set(active))}"
        assert "unprivileged_user" not in active and "without root" in active["no_network"]
        assert "sees no other process" in active["private_processes"]
        return result

    stale = _leftovers()
    assert_nothing_left(graded("leftover_state.py"), graded("leftover_state.py", run=31), stale)
    assert_file_limits_held(graded("file_bomb.py"), _shared_files(MARKER))
    hunt = graded("answer_hunt.py")
    assert_grader_report(hunt)
    assert "No module named 'reference.conv2d'" in stdout_tails(hunt, "Conv2dMatrix")
    assert str(ROOT) not in stdout_tails(hunt, "Conv2dMatrixV2")   # its own checkout stays hidden
    assert str(ROOT / "reference") in hunt.report["environment"]["protections"]["hidden_paths"]
    forged = graded("forge_report.py")
    assert_grader_report(forged)
    time.sleep(1.0)  # a daemon that survived would rewrite the file by now
    assert forged.output.read_text() == forged.report_text
    assert sorted(p.name for p in forged.output.parent.iterdir()) == ["report.json"]
    assert not list((forged.output.parent.parent / "forge_report-30-cwd").iterdir())
    daemons = graded("detach_daemons.py")
    assert_grader_report(daemons)          # no survivors, by re-parenting and by marker
    assert statuses(daemons, "Conv2dMatrixV2") == {"passed"}


# --- 7. shortcuts ----------------------------------------------------------------------------

def test_convolution_shortcuts_are_violations(grade):
    graded = grade("shortcuts.py")
    assert_grader_report(graded)
    for name in CLASSES:
        report = graded.cls(name)
        assert report["score"] == 0
        assert any(v["operator"] == "convolution" and v["source"] == "dispatch" for v in report["violations"])
        assert report["message"].startswith("scored 0: uses aten.convolution")


def test_im2col_is_a_violation_but_tensor_unfold_is_not(grade):
    graded = grade("unfold_shortcut.py")
    assert_grader_report(graded)
    for name in ("Conv2dLoop", "Conv2dMatrix"):
        report = graded.cls(name)
        assert report["score"] == 0
        assert any(v["operator"] == "im2col" for v in report["violations"])
    legit = graded.cls("Conv2dMatrixV2")
    assert legit["score"] == 35 and legit["violations"] == []


def test_indexing_and_tensor_unfold_get_full_marks(grade):
    graded = grade("legit_indexing.py")
    assert_grader_report(graded)
    assert graded.report["score"] == 100
    assert all(graded.cls(name)["violations"] == [] for name in CLASSES)


def test_switching_off_the_recorder_is_reported_as_tampering(grade):
    graded = grade("tamper_recorder.py")
    assert_grader_report(graded)
    for name in CLASSES:
        report = graded.cls(name)
        assert report["score"] == 0
        assert report["violations"], name
    for name in ("Conv2dLoop", "Conv2dMatrix"):
        assert any(v["kind"] == "tampering" for v in graded.cls(name)["violations"])
    # getattr(_python_dispatch, "_pop" + "_mode"): the static scan folds the constant string.
    assert any("_pop_mode" in v["operator"] for v in graded.cls("Conv2dMatrixV2")["violations"])


# --- 8. mutating the caller's data -------------------------------------------------------

def test_in_place_changes_to_input_or_kernel_fail(grade):
    graded = grade("mutates_inputs.py")
    assert_grader_report(graded)
    assert statuses(graded, "Conv2dLoop") == {"failed"}
    assert all(c["message"] == "modified its input tensor in place" for c in graded.cases("Conv2dLoop"))
    assert statuses(graded, "Conv2dMatrix") == {"failed"}
    assert all(c["message"] == "modified its kernel in place" for c in graded.cases("Conv2dMatrix"))
    assert graded.cls("Conv2dMatrixV2")["score"] == 35


# --- 9. non-determinism ----------------------------------------------------------------------

def test_random_submissions_get_the_same_report_twice(grade):
    first, second = grade("nondeterministic.py", run=1), grade("nondeterministic.py", run=2)
    for graded in (first, second):
        assert_grader_report(graded)

    def verdicts(graded):
        return {name: [(c["id"], c["status"], c["message"], c["max_abs_error"]) for c in graded.cases(name)]
                for name in CLASSES}

    assert verdicts(first) == verdicts(second)
    assert [first.cls(n)["score"] for n in CLASSES] == [second.cls(n)["score"] for n in CLASSES]
    # The randomness is real: within a run, the coin lands both ways.
    outcomes = {c["status"] for name in CLASSES for c in first.cases(name)}
    assert outcomes == {"passed", "failed"}


# --- all of them -------------------------------------------------------------------------------

ALL_FIXTURES = sorted(p.name for p in HOSTILE.iterdir() if p.suffix in (".py", ".ipynb"))


@pytest.mark.slow
def test_every_fixture_gets_a_valid_report(grade):
    """Every hostile fixture, one after another in one process: no crash, no hang, a
    schema-valid report of the grader's own for each, and no survivors."""
    assert len(ALL_FIXTURES) >= 20
    for name in ALL_FIXTURES:
        if name == SQUAT and os.geteuid() != 0:
            continue
        assert_grader_report(grade(name))


# --- 10. bounds on a whole submission, and what a student sees ----------------------------------

def _config_with(tmp_path: Path, change) -> Path:
    """The hostile config with paths made absolute, changed by `change(data)`, in tmp_path."""
    import yaml

    data = yaml.safe_load(ASSIGNMENT.read_text())
    for key in ("scaffold", "subject"):
        data[key] = str((HOSTILE / data[key]).resolve())
    change(data)
    path = tmp_path / "assignment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run_grader(command: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float, int]:
    """(result, wall seconds, the grader process's peak resident memory in KB, read from
    /proc while it runs: VmHWM only grows, so the last reading is its peak)."""
    import threading

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def watch():
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
                peak[0] = max(peak[0], int(status.split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError, ValueError):
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = process.communicate(timeout=300)
    watcher.join()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), time.monotonic() - started, peak[0]


def test_a_submission_that_sleeps_under_each_limit_is_bounded_as_a_whole(tmp_path):
    config = _config_with(tmp_path, lambda d: d["limits"].update(submission_s=6))
    out = tmp_path / "report.json"
    result, wall_s, _ = _run_grader([sys.executable, "-m", "grader", str(HOSTILE / "slow_but_correct.py"),
                                     "--assignment", str(config), "--device", "cpu", "-o", str(out),
                                     "--quiet"], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    statuses = [c["status"] for item in report["items"].values() for c in item["cases"]]
    # 9 cases of 1.5 s each would take 13.5 s; the budget stops them at 6.
    assert "passed" in statuses and "timeout" in statuses
    budget = [c for item in report["items"].values() for c in item["cases"]
              if "time budget (6 s) was spent" in c["message"]]
    assert budget and all(c["status"] == "timeout" for c in budget)
    assert wall_s < 6 + WALL_LIMIT_S / 2, wall_s
    assert report["score"] < 100


def test_huge_outputs_are_judged_and_let_go(tmp_path):
    def peak_kb(name: str) -> int:
        out = tmp_path / f"{name}.json"
        result, _, peak = _run_grader([sys.executable, "-m", "grader", str(HOSTILE / name), "--assignment",
                                       str(ASSIGNMENT), "--device", "cpu", "-o", str(out), "--quiet"], tmp_path)
        assert result.returncode == 0, result.stderr
        return peak, json.loads(out.read_text())

    baseline, _ = peak_kb("legit_indexing.py")
    peak, report = peak_kb("huge_outputs.py")
    cases = [c for item in report["items"].values() for c in item["cases"]]
    assert len(cases) == 9 and all(c["status"] == "failed" and "output shape" in c["message"] for c in cases)
    # Holding every output would add 9 x 24 MB = 216 MB; one at a time, a few copies of one.
    assert peak - baseline < 120 * 1024, (peak, baseline)


def test_hidden_cases_leave_no_trace_in_what_a_student_sees(tmp_path):
    def add_hidden(data):
        data["groups"]["secret"] = {"description": "hidden cases, larger than any public one", "hidden": True,
                                    "count": 2, "weight": 1, "params": {"height": "8..9", "width": "8..9"}}
    config = _config_with(tmp_path, add_hidden)
    out = tmp_path / "student.json"
    result, _, _ = _run_grader([sys.executable, "-m", "grader", str(HOSTILE / "hidden_leak.py"), "--assignment",
                                str(config), "--device", "cpu", "--audience", "student", "-o", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr
    text = out.read_text() + result.stdout
    report = json.loads(out.read_text())
    # The instructor's view has hidden cases, and the fixture saw them ...
    seen = [c["stdout_tail"] for item in report["items"].values() for c in item["cases"]]
    assert any("SEEN" in tail for tail in seen) and report["score"] == 100
    # ... but nothing a student gets mentions an input only hidden cases have.
    import re
    leaked = [m for m in re.findall(r"SEEN(\d+)x(\d+)", text) if int(m[0]) >= 8 or int(m[1]) >= 8]
    assert leaked == []


# --- issue 11: library convolutions that scored full marks -------------------------------------

ROUTES = {"conv_routes.py": {"Conv2dLoop": "conv_tbc", "Conv2dMatrix": "convolution_backward",
                             "Conv2dMatrixV2": "slow_conv3d_forward"},
          "conv_routes_more.py": {"Conv2dLoop": "slow_conv_dilated3d", "Conv2dMatrix": "slow_conv_transpose2d",
                                  "Conv2dMatrixV2": "mkldnn::_convolution_pointwise"}}


@pytest.mark.parametrize("fixture", sorted(ROUTES))
def test_every_convolution_operator_is_a_violation(grade, fixture):
    graded = grade(fixture)
    assert_grader_report(graded)
    for name, operator in ROUTES[fixture].items():
        report = graded.cls(name)
        assert statuses(graded, name) == {"passed"}, name      # right answers: only the operator costs
        assert report["score"] == 0, name
        assert any(v["operator"] == operator and v["source"] == "dispatch" for v in report["violations"]), \
            (name, report["violations"])


def test_patching_libraries_does_not_blind_the_recorder(grade):
    graded = grade("blind_recorder.py")
    assert_grader_report(graded)
    for name in CLASSES:
        report = graded.cls(name)
        assert report["score"] == 0
        assert any(v["operator"] == "convolution" and v["source"] == "dispatch" for v in report["violations"]), name


def test_work_done_after_the_call_is_recorded_or_never_graded(grade):
    graded = grade("late_del.py")
    assert_grader_report(graded)
    for name in ("Conv2dLoop", "Conv2dMatrix"):      # __del__ fills the returned tensor with F.conv2d
        report = graded.cls(name)
        assert report["score"] == 0
        assert statuses(graded, name) == {"failed"}, name     # the grader's copy was taken before
        assert any(v["operator"] == "convolution" and v["source"] == "dispatch" for v in report["violations"])
    honest = graded.cls("Conv2dMatrixV2")
    assert honest["score"] == 35 and honest["violations"] == []


def test_tampering_hidden_in_top_level_code_and_exec_strings_is_found(grade):
    graded = grade("hidden_tampering.py")
    assert_grader_report(graded)
    for name in CLASSES:
        report = graded.cls(name)
        assert report["score"] == 0, name
        assert report["message"].startswith("scored 0: works around the operator check"), report["message"]
    source = (HOSTILE / "hidden_tampering.py").read_text().splitlines()
    alias = next(i for i, line in enumerate(source, 1) if line.startswith("pm = "))
    loop = graded.cls("Conv2dLoop")["violations"]
    assert any(v["kind"] == "tampering" and f"line {alias}:" in v["location"] for v in loop)
    matrix = graded.cls("Conv2dMatrix")["violations"]          # the class exists only in a string
    assert any(v["kind"] == "tampering" and "in code given to exec" in v["location"] for v in matrix)
    v2 = graded.cls("Conv2dMatrixV2")["violations"]            # getattr(torch._C, <built at run time>)
    assert any(v["operator"] == "getattr(..., <a computed name>)" for v in v2)


def test_lines_that_used_to_crash_the_grader_get_a_report_and_full_marks(grade):
    graded = grade("ungradable_lines.ipynb")
    assert_grader_report(graded)
    assert graded.report["score"] == 100
    notes = graded.report["load"]["skipped"]
    assert any(n["cell"] == 3 and "lone surrogates" in n["message"] for n in notes), notes
    v2 = graded.cls("Conv2dMatrixV2")
    assert v2["violations"] == []
    assert any(n["name"].endswith(".functional.conv2d") for n in v2["static_notes"]), v2["static_notes"]


@pytest.mark.slow
def test_cheap_definitions_still_load_once_the_load_budget_is_spent(grade):
    graded = grade("load_budget_cheap.py")
    assert_grader_report(graded)
    assert graded.report["score"] == 100, {n: graded.cls(n)["message"] for n in CLASSES}
    errors = graded.report["load"]["errors"]
    assert any(e["type"] == "Fatal" and "loading took longer than 6 s" in e["message"] for e in errors), errors
    source = (HOSTILE / "load_budget_cheap.py").read_text().splitlines()
    device = next(i for i, line in enumerate(source, 1) if line.startswith("device = "))
    assert all(e["line"] != device for e in errors)


# --- issue 11: untrusted text and files reach the instructor -----------------------------------

def _unsafe(text: str, keep: str = "") -> list[str]:
    """The characters of `text` (but those in `keep`) that a terminal acts on or a page shows
    other than as they are: controls (C0, DEL, C1), format characters (bidi overrides and
    isolates, zero-width characters), line and paragraph separators, lone surrogates."""
    import unicodedata

    return sorted({f"U+{ord(ch):04X}" for ch in text
                   if ch not in keep and unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")})


def test_text_from_a_submission_reaches_no_terminal_page_or_export_raw(tmp_path):
    """Clear screen, window title, OSC 52, a forged total line, concealed text, bidi overrides:
    in exception messages, a returned type's name, the source and the file's own name. All of it
    is data in the JSON, and shown escaped (visible, never acted on) everywhere else."""
    out, results, junit, page = (tmp_path / name for name in ("r.json", "results.json", "junit.xml", "f.html"))
    named = tmp_path / "\x1b]0;pwned\x07\u202eyp.terminal_escapes.py"      # a file name is the student's text too
    shutil.copy(HOSTILE / "terminal_escapes.py", named)
    result, _, _ = _run_grader([sys.executable, "-m", "grader", str(named),
                                "--assignment", str(ASSIGNMENT), "--device", "cpu", "--case", "course-001",
                                "-o", str(out), "--gradescope", str(results), "--junit", str(junit),
                                "--feedback", str(page)], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    payload = report["load"]["errors"][0]["message"]
    assert "\x1b]52;c;" in payload and "\ntotal 100/100\n" in payload   # the JSON keeps the data as it was
    # The terminal: nothing it would act on, and every line is the grader's own.
    assert _unsafe(result.stdout, keep="\n") == [] and _unsafe(result.stderr, keep="\n") == []
    assert [line for line in result.stdout.splitlines() if line.lstrip().startswith("total")] == ["total 0/100"]
    assert "\\r\\n\\ntotal 100/100\\n" in result.stdout and "\\x1b]52;c;" in result.stdout
    assert "\\u202e001/001 latot" in result.stdout and "returned submission.\\x1b[2J" in result.stdout
    assert "\\x1b]0;pwned\\x07\\u202eyp.terminal_escapes.py" in result.stdout.splitlines()[0]
    # Pages: the student's feedback, the notebook table, the class report with two copies side by side.
    from grader.class_report import render
    from grader.class_summary import summarize
    from grader.render_html import render_html

    pages = {"feedback": page.read_text(), "table": render_html(report),
             "class report": render(summarize([report, report], ["one", "two"]))}
    for name, html in pages.items():
        assert _unsafe(html, keep="\n\t") == [], name
        assert "\\u202e" in html, name                 # shown, not acted on
    assert "is_admin" in pages["class report"] and "is_admin" in pages["feedback"]   # the source is shown
    # Exports: Gradescope's text, JUnit's messages.
    gradescope = json.loads(results.read_text())
    texts = [gradescope["output"], *(t["output"] for t in gradescope["tests"]), *(t["name"] for t in gradescope["tests"])]
    assert all(_unsafe(text, keep="\n") == [] for text in texts), texts
    assert "\\x1b]52;c;" in "\n".join(texts)
    assert _unsafe(junit.read_text(), keep="\n") == []


def _batch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", "batch", *args, "--assignment", str(ASSIGNMENT),
                           "--device", "cpu"], cwd=cwd, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=300)


SECRET = "grader-hostile-SECRET-"
SUBMISSIONS = ROOT / "assignments" / "conv2d" / "fixtures"


def test_links_out_of_the_submissions_folder_are_refused_and_reported(tmp_path):
    """A student's upload unpacks with its symbolic links: one to the course's solution, one to a
    file only root may read, a folder linked from outside. None is read; each file gets a report
    saying why (0 points), and the batch's output and summary list them."""
    solution = SUBMISSIONS / "correct_module.py"
    secret = tmp_path / "secret.py"
    secret.write_text(f'print("{SECRET}{os.getpid()}: only root may read this line")\n')   # a skipped line is quoted
    secret.chmod(0o600)
    folder = tmp_path / "in"
    (folder / "bob").mkdir(parents=True)
    shutil.copy(HOSTILE / "legit_indexing.py", folder / "bob" / "mine.py")   # an honest one
    (folder / "alice.py").symlink_to(solution)
    (folder / "mallory.py").symlink_to(secret)
    (folder / "carol").symlink_to(SUBMISSIONS, target_is_directory=True)
    (folder / "dave.py").symlink_to(Path("bob") / "mine.py")                 # within the folder: bob's own file
    out = tmp_path / "out"
    result = _batch([str(folder), "-o", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")
               if p.name not in ("summary.json", "manifest.json")}
    text = "".join(p.read_text() for p in out.iterdir()) + result.stderr
    assert SECRET not in text
    for name in ("alice", "mallory"):
        refused = reports[name]
        assert refused["score"] == 0 and refused["submission"]["refused"], name
        assert "outside" in refused["load"]["fatal"] and refused["load"]["units_kept"] == 0
        assert all(item["status"] == "load_error" for item in refused["items"].values())
    assert set(reports) == {"alice", "mallory", "mine"}, sorted(reports)   # dave's link is bob's file: once
    assert reports["mine"]["score"] == 100
    summary = json.loads((out / "summary.json").read_text())
    refused = {Path(entry["path"]).name: entry for entry in summary["refused"]}
    assert set(refused) == {"alice.py", "mallory.py", "carol"}
    assert refused["carol"]["id"] is None and "folder" in refused["carol"]["reason"]
    assert [Path(d["path"]).name for d in summary["duplicates"]] == ["dave.py"]
    for name in ("alice.py", "mallory.py", "carol"):
        assert f"refused {folder / name}" in result.stderr
    assert "same file as" in result.stderr
    # A pattern through the linked folder reaches the solution too: refused the same way.
    pattern = _batch([str(folder / "*" / "correct_module.py"), "-o", str(tmp_path / "out2")], tmp_path)
    assert pattern.returncode == 0, pattern.stderr
    assert json.loads((tmp_path / "out2" / "correct_module.json").read_text())["score"] == 0


@needs_root
def test_as_root_a_submission_the_worker_could_not_read_is_not_read(tmp_path):
    """Within the folder too: a file only root may read, or one in a folder only root may enter,
    is refused when the grader runs as root (the worker could not have read it)."""
    folder = tmp_path / "in"
    (folder / "private").mkdir(parents=True)
    for path in (folder / "erin.py", folder / "private" / "frank.py"):
        path.write_text((HOSTILE / "legit_indexing.py").read_text() + f'\nprint("{SECRET}{os.getpid()}")\n')
    shutil.copy(HOSTILE / "legit_indexing.py", folder / "gina.py")
    (folder / "erin.py").chmod(0o600)
    (folder / "private").chmod(0o700)
    out = tmp_path / "out"
    result = _batch([str(folder), "-o", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr
    reports = {name: json.loads((out / f"{name}.json").read_text()) for name in ("erin", "frank", "gina")}
    assert reports["gina"]["score"] == 100
    for name in ("erin", "frank"):
        assert reports[name]["score"] == 0
        assert "could not read" in reports[name]["submission"]["refused"], reports[name]["submission"]
    assert SECRET not in "".join(p.read_text() for p in out.iterdir())


def test_grade_refuses_a_submission_that_links_out_of_its_folder(tmp_path):
    """`grade` on a student's upload (Gradescope's /autograder/submission): a link to the
    solution is not graded as theirs; the report and results.json say why, with 0 points."""
    upload = tmp_path / "submission"
    upload.mkdir()
    (upload / "hw.py").symlink_to(SUBMISSIONS / "correct_module.py")
    out, results = tmp_path / "r.json", tmp_path / "results.json"
    result, _, _ = _run_grader([sys.executable, "-m", "grader", str(upload / "hw.py"), "--assignment",
                                str(ASSIGNMENT), "--device", "cpu", "-o", str(out), "--gradescope", str(results)],
                               tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["score"] == 0 and "outside" in report["submission"]["refused"]
    gradescope = json.loads(results.read_text())
    assert gradescope["score"] == 0 and "outside" in gradescope["output"]
