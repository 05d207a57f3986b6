"""Run a submission's code in a worker process and collect what it did.

The grader's side of the trust boundary: it starts the worker, sends it the
definitions and each case's inputs, enforces the time limit per case (killing
and restarting the worker), and turns everything that happened into frozen
CaseRun records. Expected outputs never leave this process.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import forkserver, reaper
from .cases import Case, make_tensors
from .config import Assignment, ClassSpec
from .protocol import Channel, ChannelClosed, ChannelTimeout, ProtocolError, tensor_digest
from .submission import Submission

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
STDOUT_TAIL_BYTES = 2000
POLL_S = 0.05


@dataclass(frozen=True)
class ErrorInfo:
    type: str
    message: str
    location: str | None      # "cell 7, line 3"
    traceback: str

    @classmethod
    def from_wire(cls, raw: dict | None) -> "ErrorInfo | None":
        # Submission code can write on the reply pipe too: take only the fields' plain values
        # (str() of a list nested 900 deep is a RecursionError in the grader).
        if not isinstance(raw, dict):
            return None
        where = raw.get("location")
        location = None
        if isinstance(where, dict):
            line = where.get("line")
            location = f"{_text(where.get('filename'), 200)}, line {line if isinstance(line, int) else '?'}"
            if _text(where.get("code"), 120):
                location += f": {_text(where.get('code'), 120)}"
        return cls(type=_text(raw.get("type"), 100) or "Error", message=_text(raw.get("message"), 500),
                   location=location, traceback=_text(raw.get("traceback"), 2000, tail=True))


@dataclass(frozen=True)
class CaseRun:
    """What the worker did with one case. `status` is the run's fate, not the verdict:
    returned, error, unsupported, timeout, crashed, skipped or not_run."""
    case: Case
    class_name: str
    status: str
    message: str = ""
    output: torch.Tensor | None = field(default=None, compare=False)
    returned_type: str | None = None
    returned_kind: str | None = None          # tensor, tensor_subclass, ndarray, sequence, other
    output_device: str | None = None
    input_mutated: bool = False
    kernel_mutated: bool = False
    error: ErrorInfo | None = None
    duration_s: float = 0.0
    stdout_tail: str = ""
    operators: tuple[tuple[str, int], ...] = ()          # aten operator -> times dispatched
    forbidden_hits: tuple[tuple[str, str | None], ...] = ()  # forbidden operator -> student line


@dataclass(frozen=True)
class UnitFailure:
    index: int
    filename: str
    line: int
    error: ErrorInfo


@dataclass(frozen=True)
class LoadOutcome:
    classes: tuple[tuple[str, str], ...]      # (name, "class" | "missing" | "not a class ..." | "load_error")
    failures: tuple[UnitFailure, ...]
    stdout_tail: str
    fatal: str | None                         # the worker could not load at all

    def state(self, name: str) -> str:
        return dict(self.classes).get(name, "missing")


@dataclass(frozen=True)
class WorkerRun:
    load: LoadOutcome
    runs: tuple[CaseRun, ...]
    protections: tuple[tuple[str, str], ...]
    restarts: int
    # What the after-class checks (smallest failing case, per-method checks, speed) found,
    # by class name; each check's own frozen dataclass.
    extras: tuple[tuple[str, object], ...] = ()


class WorkerDied(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class WorkerProcess:
    """One sandboxed worker: start, talk, kill. Knows nothing of grading."""

    def __init__(self, assignment: Assignment, needs_cuda: bool, hide_paths: list[str],
                 cpu_s: float | None = None):
        self.limits = assignment.limits
        self.needs_cuda = needs_cuda
        self.hide_paths = hide_paths
        self.cpu_s = cpu_s
        self.process: subprocess.Popen | None = None
        self.channel: Channel | None = None
        self.protections: dict = {}
        self.private_dir = Path(tempfile.mkdtemp(prefix="grader-"))
        self.capture_path = self.private_dir / "output.txt"
        self.capture = None
        self.workdir: Path | None = None
        self.uid: int | None = None

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="grader-worker-"))
        spec = self._sandbox_spec()
        request_read, request_write = os.pipe()
        response_read, response_write = os.pipe()
        self.capture = open(self.capture_path, "ab")
        env = forkserver.worker_environment(str(self.workdir))
        server = forkserver.get()
        try:
            if server is not None:
                try:
                    self.process = server.spawn(spec, env, str(self.workdir),
                                                (request_read, response_write, self.capture.fileno()))
                except (forkserver.ForkServerError, OSError, ValueError):
                    # A dead fork server must not fail the rest of a batch: the next worker
                    # gets a new one, this one starts the slow way.
                    forkserver.discard(server)
                    self.process = None
            if self.process is None:
                import json

                spec["request_fd"], spec["response_fd"] = request_read, response_write
                self.process = subprocess.Popen(
                    [sys.executable, "-c", forkserver.bootstrap("worker", "main"), json.dumps(spec)],
                    stdin=subprocess.DEVNULL, stdout=self.capture, stderr=self.capture,
                    env=env, cwd=str(self.workdir), start_new_session=True,
                    pass_fds=(request_read, response_write), close_fds=True)
        finally:
            os.close(request_read)
            os.close(response_write)
        reaper.register_worker(self.process.pid)
        self.channel = Channel(response_read, request_write)
        try:
            header = self.receive(time.monotonic() + self.limits.startup_s, "starting")
        except WorkerDied as exc:
            raise WorkerDied(f"{exc.reason}: {self.output_since(0).strip()[-600:]}") from None
        if header.get("event") != "ready":
            raise WorkerDied("the worker did not start")
        self.protections = header.get("protections", {}) if isinstance(header.get("protections"), dict) else {}

    def _sandbox_spec(self) -> dict:
        limits = self.limits
        # RLIMIT_CPU counts the worker's whole life, and one worker may grade every case, so
        # the budget is what all its work may take: a fixed one would kill a long, honest run
        # partway (SIGKILL at the hard limit, blamed on whichever case was running). The soft
        # limit comes first so that the death is reported as SIGXCPU, the CPU time limit.
        cpu = int(self.cpu_s if self.cpu_s is not None else limits.startup_s + limits.load_s + 3600)
        rlimits = {"cpu": [cpu, cpu + 5], "fsize": limits.file_mb << 20, "nofile": 256, "core": 0}
        # CUDA reserves far more address space than it uses, so on GPU runs the
        # memory cap is on the data segment instead of the address space.
        rlimits["data" if self.needs_cuda else "as"] = limits.memory_mb << 20
        spec = {"rlimits": rlimits, "workdir": str(self.workdir), "hide_paths": self.hide_paths,
                "cuda": self.needs_cuda, "expose_paths": _python_paths(),
                "temp_mb": 2 * limits.file_mb}
        # The process cap counts what the user already runs; report the submission's share,
        # which is the same on every run.
        spec["rlimit_labels"] = {"nproc": f"{limits.processes} more than already running"}
        uid = _unprivileged_uid()
        if uid is not None:
            self.uid = WORKER_UIDS.acquire()
            os.chown(self.workdir, self.uid, uid[1])
            spec["uid"], spec["gid"] = self.uid, uid[1]
            spec["uid_label"] = "a uid of its own, shared with no other worker"
            rlimits["nproc"] = reaper.count_tasks(self.uid) + limits.processes
        elif hasattr(os, "getuid") and os.getuid() != 0:
            rlimits["nproc"] = reaper.count_tasks(os.getuid()) + limits.processes
        return spec

    def send(self, header: dict, tensors: dict | None = None, deadline: float | None = None) -> None:
        try:
            self.channel.send(header, tensors, deadline)
        except (ChannelClosed, OSError):
            raise WorkerDied(self._death_reason("receiving a request")) from None

    def receive(self, deadline: float, doing: str) -> dict:
        """The next message; raises ChannelTimeout, WorkerDied or ProtocolError.
        Polls so that a flood of printed output is cut off while it happens."""
        while True:
            step = min(deadline, time.monotonic() + POLL_S)
            try:
                header, tensors = self.channel.receive(step)
            except ChannelTimeout:
                self._check_output()
                if time.monotonic() >= deadline:
                    raise
                continue
            except ChannelClosed:
                raise WorkerDied(self._death_reason(doing)) from None
            # Also after every message: a flood printed between two polls (a fast case that
            # prints megabytes and returns) would otherwise never be seen.
            self._check_output()
            header["_tensors"] = tensors
            return header

    def _check_output(self) -> None:
        if self.output_size() > self.limits.output_kb * 1024:
            self.kill()
            raise WorkerDied(f"printed more than {self.limits.output_kb} KB of output (the limit)")

    def output_size(self) -> int:
        try:
            return self.capture_path.stat().st_size
        except OSError:
            return 0

    def output_since(self, offset: int) -> str:
        size = self.output_size()
        start = max(offset, size - STDOUT_TAIL_BYTES)
        if size <= start:
            return ""
        with open(self.capture_path, "rb") as handle:
            handle.seek(start)
            text = handle.read(size - start).decode("utf-8", errors="replace")
        return ("..." if start > offset else "") + text

    def _death_reason(self, doing: str) -> str:
        code = None
        if self.process is not None:
            try:
                code = self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        if code is None:
            return f"the worker stopped answering while {doing}"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = {"SIGKILL": " (killed: memory or process limit?)", "SIGXCPU": " (CPU time limit)",
                    "SIGXFSZ": " (file size limit)", "SIGSEGV": " (crashed)"}.get(name, "")
            return f"the worker died from {name}{hint} while {doing}"
        return f"the worker exited with code {code} while {doing} (sys.exit/os._exit in submission code?)"

    def kill(self) -> None:
        if self.process is not None:
            reaper.kill_and_wait(self.process)
        if self.channel is not None:
            for fd in (self.channel.read_fd, self.channel.write_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.channel = None
        self.process = None
        WORKER_UIDS.release(self.uid)
        self.uid = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def close(self) -> None:
        if self.process is not None and self.channel is not None:
            try:
                self.channel.send({"op": "exit"})
                self.process.wait(timeout=2)
            except (ChannelClosed, OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        if self.capture is not None:
            self.capture.close()
        shutil.rmtree(self.private_dir, ignore_errors=True)


def _python_paths() -> list[str]:
    """What the worker must be able to read after it drops privileges."""
    import site
    import sysconfig

    paths = {sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent),
             str(PACKAGE_ROOT / "grader"), str(Path(torch.__file__).resolve().parent.parent)}
    paths.update(sysconfig.get_paths().values())
    try:
        paths.update(site.getsitepackages())
    except AttributeError:
        pass
    return sorted(p for p in paths if p and os.path.exists(p))


class UidPool:
    """Each live worker runs under a uid no other worker has, far above real accounts: with
    one shared uid (nobody), two workers of a batch could signal each other, and they would
    share one process budget."""

    BASE = 2_000_000_000

    def __init__(self):
        self.lock = threading.Lock()
        self.in_use: set[int] = set()

    def acquire(self) -> int:
        with self.lock:
            uid = self.BASE
            while uid in self.in_use:
                uid += 1
            self.in_use.add(uid)
            return uid

    def release(self, uid: int | None) -> None:
        with self.lock:
            self.in_use.discard(uid)


WORKER_UIDS = UidPool()


def _unprivileged_uid() -> tuple[int, int] | None:
    """When the grader runs as root, the worker drops to an unprivileged uid, in nobody's
    group (`nobody` must exist; its uid is not used)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    try:
        import pwd
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except (ImportError, KeyError):
        return None


def hidden_paths(submission: Submission, extra: list[Path]) -> list[str]:
    """Folders the worker must not see: the reference, configs, tests, other submissions."""
    keep = [PACKAGE_ROOT / "grader", Path(sys.prefix), Path(torch.__file__).parent, Path(sys.executable),
            Path(tempfile.gettempdir())]  # the worker's private directory lives there
    candidates = [PACKAGE_ROOT / "reference", PACKAGE_ROOT / "assignments", PACKAGE_ROOT / "tests",
                  *_git_dirs(PACKAGE_ROOT), *_installed_copies(),
                  submission.path.resolve().parent, *[p.resolve() for p in extra]]
    chosen = []
    for path in candidates:
        resolved = path.resolve()
        if any(_is_within(k.resolve(), resolved) for k in keep) or str(resolved) in chosen:
            continue
        if resolved.is_dir():
            chosen.append(str(resolved))
    return chosen


def _git_dirs(root: Path) -> list[Path]:
    """The checkout's git store: its objects hold the reference solution, readable by anyone
    who can read the checkout (a `.git` file points at a worktree's store elsewhere)."""
    dot_git = root / ".git"
    if dot_git.is_dir():
        return [dot_git]
    try:
        pointer = dot_git.read_text().strip()
    except OSError:
        return []
    if not pointer.startswith("gitdir:"):
        return []
    gitdir = (root / pointer.removeprefix("gitdir:").strip()).resolve()
    found = [gitdir]
    try:
        found.append((gitdir / (gitdir / "commondir").read_text().strip()).resolve())
    except OSError:
        pass
    return found


def _installed_copies() -> list[Path]:
    """`reference` and `assignments` wherever the worker could import them from: a
    non-editable install puts copies in site-packages, beside torch."""
    found = []
    for entry in sys.path:
        for name in ("reference", "assignments"):
            candidate = Path(entry or ".") / name
            if (candidate / "__init__.py").is_file():
                found.append(candidate)
    for name in ("reference", "assignments"):
        # Every finder, not just the first that answers: an editable install's finder maps
        # the name to its checkout even when another copy comes first on sys.path.
        for finder in sys.meta_path:
            try:
                spec = finder.find_spec(name, None)
            except Exception:
                continue
            if spec is not None and spec.origin:
                found.append(Path(spec.origin).parent)
    return found


def _is_within(path: Path, ancestor: Path) -> bool:
    return path == ancestor or ancestor in path.parents


class WorkerSession:
    """A submission's worker across restarts: every restart reloads the same definitions,
    minus the statements that killed or hung an earlier worker."""

    MAX_LOAD_RESTARTS = 5

    def __init__(self, assignment: Assignment, submission: Submission, needs_cuda: bool,
                 hide: list[str], cpu_s: float | None = None):
        self.assignment = assignment
        self.submission = submission
        self.needs_cuda = needs_cuda
        self.hide = hide
        self.cpu_s = cpu_s
        self.worker: WorkerProcess | None = None
        self.fatal_units: dict[int, ErrorInfo] = {}
        self.first_load: LoadOutcome | None = None
        self.restarts = 0
        self.protections: dict = {}

    def load(self) -> LoadOutcome:
        for _ in range(self.MAX_LOAD_RESTARTS + 1):
            outcome = self._try_load()
            if outcome is not None:
                if self.first_load is None:
                    self.first_load = outcome
                return outcome
        reason = "every attempt to load the submission killed or hung the worker"
        self.first_load = self.first_load or LoadOutcome(
            classes=tuple((c.name, "load_error") for c in self.assignment.classes),
            failures=self._fatal_failures(), stdout_tail="", fatal=reason)
        return self.first_load

    def _try_load(self) -> LoadOutcome | None:
        self._discard_worker()
        worker = WorkerProcess(self.assignment, self.needs_cuda, self.hide, self.cpu_s)
        self.worker = worker
        limits = self.assignment.limits
        offset = 0
        current: int | None = None
        failures: list[UnitFailure] = []
        units = {u.index: u for u in self.submission.units}
        try:
            worker.start()
            self.protections = worker.protections
            offset = worker.output_size()
            worker.send({
                "op": "load", "scaffold": self.assignment.scaffold_source,
                "scaffold_name": self.assignment.scaffold_name,
                "units": [{"index": u.index, "source": u.source, "filename": u.filename, "line": u.line}
                          for u in self.submission.units],
                "skip_units": sorted(self.fatal_units), "statement_s": limits.statement_s,
                "classes": [c.name for c in self.assignment.classes]}, None, time.monotonic() + limits.load_s)
            deadline = time.monotonic() + limits.load_s
            while True:
                message = worker.receive(deadline, "loading the submission")
                event = message.get("event")
                index = message.get("index")
                if event in ("unit_start", "unit_done") and (not isinstance(index, int) or index not in units):
                    raise ProtocolError(f"malformed {event} message")
                if event == "unit_start":
                    current = index
                elif event == "unit_done":
                    error = ErrorInfo.from_wire(message.get("error"))
                    unit = units.get(index)
                    if error is not None and unit is not None:
                        failures.append(UnitFailure(unit.index, unit.filename, unit.line, error))
                    current = None
                elif event == "loaded":
                    classes = message.get("classes")
                    if not isinstance(classes, dict):
                        raise ProtocolError("malformed load reply")
                    states = tuple((c.name, str(classes.get(c.name, "missing"))) for c in self.assignment.classes)
                    return LoadOutcome(classes=states, failures=self._fatal_failures() + tuple(failures),
                                       stdout_tail=worker.output_since(offset), fatal=None)
                else:
                    raise ProtocolError(f"unexpected message {event!r} while loading")
        except (ChannelTimeout, WorkerDied, ProtocolError) as exc:
            if isinstance(exc, ChannelTimeout):
                reason = f"loading took longer than {limits.load_s:g} s"
            else:
                reason = getattr(exc, "reason", str(exc))
            self.restarts += 1
            self._discard_worker()
            if current is None or current in self.fatal_units:
                if current is None and not self.fatal_units and isinstance(exc, WorkerDied) \
                        and "starting" in reason:
                    raise RuntimeError(f"the worker cannot start: {reason}") from None
                # Nothing to blame: give up on loading.
                self.first_load = LoadOutcome(
                    classes=tuple((c.name, "load_error") for c in self.assignment.classes),
                    failures=self._fatal_failures() + tuple(failures), stdout_tail="", fatal=reason)
                return self.first_load
            self.fatal_units[current] = ErrorInfo(type="Fatal", message=f"{reason}; statement skipped",
                                                  location=None, traceback="")
            if isinstance(exc, ChannelTimeout):
                # The load budget is spent: a reload that ran the same slow assignments again
                # would time out again, one statement later. Skip every later statement that
                # is costly (submission.CodeUnit.cheap: definitions, imports and assignments of
                # constants still run), so the classes and what they use still load.
                for unit in self.submission.units:
                    if unit.index > current and unit.index not in self.fatal_units and not unit.cheap:
                        self.fatal_units[unit.index] = ErrorInfo(
                            type="Skipped", message="not run: the load time budget was spent before it",
                            location=None, traceback="")
            return None

    def _fatal_failures(self) -> tuple[UnitFailure, ...]:
        units = {u.index: u for u in self.submission.units}
        return tuple(UnitFailure(i, units[i].filename, units[i].line, e) for i, e in sorted(self.fatal_units.items()))

    def run_case(self, case: Case, class_name: str, time_limit: float,
                 forbidden: tuple[str, ...] = ()) -> CaseRun:
        if self.worker is None or self.worker.process is None:
            outcome = self.load()
            if outcome.fatal is not None or outcome.state(class_name) != "class":
                return CaseRun(case=case, class_name=class_name, status="crashed",
                               message="the worker could not be restarted with the class loaded")
        worker = self.worker
        data, kernel = make_tensors(case)
        p = case.params
        request = {"op": "run", "case": case.key, "class": class_name, "device": case.device,
                   "seed": case.seed, "keywords": p.extra_keywords, "forbidden": list(forbidden),
                   "params": {"in_channels": p.in_channels, "out_channels": p.out_channels,
                              "kernel_size": p.kernel_size, "stride": p.stride}}
        offset = worker.output_size()
        started = time.monotonic()
        try:
            worker.send(request, {"input": data, "kernel": kernel}, started + time_limit)
            while True:
                message = worker.receive(started + time_limit, "running a case")
                if message.get("event") == "result" and message.get("case") == case.key:
                    break
        except ChannelTimeout:
            tail = worker.output_since(offset)
            self._restart_later()
            return CaseRun(case=case, class_name=class_name, status="timeout",
                           message=f"did not finish within {time_limit:g} s",
                           duration_s=time.monotonic() - started, stdout_tail=tail)
        except (WorkerDied, ProtocolError) as exc:
            tail = worker.output_since(offset)
            self._restart_later()
            return CaseRun(case=case, class_name=class_name, status="crashed",
                           message=getattr(exc, "reason", f"protocol error: {exc}"),
                           duration_s=time.monotonic() - started, stdout_tail=tail)
        run = self._case_run(case, class_name, message, data, kernel,
                             time.monotonic() - started, worker.output_since(offset))
        if message.get("restart") is True:
            self._restart_later()  # the CUDA context is lost: the next case gets a new worker
        return run

    def call(self, op: str, request: dict, tensors: dict, time_limit: float, class_name: str) -> dict:
        """One request of another kind than `run` (a method check, a timing) with the same
        limits: returns the worker's reply, or {"status": "timeout"|"crashed", "message": ...}."""
        if self.worker is None or self.worker.process is None:
            outcome = self.load()
            if outcome.fatal is not None or outcome.state(class_name) != "class":
                return {"status": "crashed", "message": "the worker could not be restarted with the class loaded"}
        worker = self.worker
        token = f"{op}-{time.monotonic_ns()}"
        started = time.monotonic()
        try:
            worker.send(dict(request, op=op, token=token, **{"class": class_name}), tensors, started + time_limit)
            while True:
                message = worker.receive(started + time_limit, f"running {op}")
                if message.get("event") == "reply" and message.get("token") == token:
                    break
        except ChannelTimeout:
            self._restart_later()
            return {"status": "timeout", "message": f"did not finish within {time_limit:g} s"}
        except (WorkerDied, ProtocolError) as exc:
            self._restart_later()
            return {"status": "crashed", "message": getattr(exc, "reason", f"protocol error: {exc}")}
        if message.get("restart") is True:
            self._restart_later()
        return message

    @staticmethod
    def _case_run(case: Case, class_name: str, message: dict, data, kernel, elapsed: float,
                  tail: str) -> CaseRun:
        status = message.get("status")
        if status not in ("returned", "error", "unsupported"):
            status, text = "crashed", f"malformed result status {status!r}"
        else:
            text = _text(message.get("message"), 500)
        output = message["_tensors"].get("output")
        duration = message.get("duration_s")
        return CaseRun(
            case=case, class_name=class_name, status=status, message=text, output=output,
            returned_type=_short(message.get("returned_type")),
            returned_kind=_short(message.get("returned_kind")),
            output_device=_short(message.get("output_device")),
            input_mutated=status == "returned" and message.get("input_sha256") != tensor_digest(data),
            kernel_mutated=status == "returned" and message.get("kernel_sha256") != tensor_digest(kernel),
            error=ErrorInfo.from_wire(message.get("error")),
            duration_s=_seconds(duration, elapsed),
            stdout_tail=tail, operators=_operator_counts(message.get("operators")),
            forbidden_hits=_forbidden_hits(message.get("forbidden_hits")))

    def _restart_later(self) -> None:
        self.restarts += 1
        self._discard_worker()

    def _discard_worker(self) -> None:
        if self.worker is not None:
            # A discarded worker may be hung: kill it first, or close() would wait on its exit.
            self.worker.kill()
            self.worker.close()
            self.worker = None

    def close(self) -> None:
        self._discard_worker()
        reaper.sweep_orphans()


def _operator_counts(raw) -> tuple[tuple[str, int], ...]:
    if not isinstance(raw, dict):
        return ()
    return tuple(sorted((str(k)[:80], v) for k, v in list(raw.items())[:200]
                        if isinstance(v, int) and not isinstance(v, bool)))


def _forbidden_hits(raw) -> tuple[tuple[str, str | None], ...]:
    if not isinstance(raw, dict):
        return ()
    return tuple(sorted((str(k)[:80], _text(v, 200) or None) for k, v in list(raw.items())[:50]))


def _short(value) -> str | None:
    return value[:200] if isinstance(value, str) else None


def _text(value, limit: int, tail: bool = False) -> str:
    """A string field from the worker, cut to `limit`; anything that is not a string is ''."""
    if not isinstance(value, str):
        return ""
    value = value[-limit:] if tail else value[:limit]
    # Lone surrogates ("\ud800") are valid in a Python str but not in UTF-8: a terminal or a
    # JSON reader would fail on them, so they become U+FFFD here.
    return value.encode("utf-8", "replace").decode("utf-8")


def _seconds(value, fallback: float) -> float:
    """A duration the worker reports, when it is a sane one (10**400 overflows a float)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            return fallback
        if 0 <= seconds < 1e9:
            return seconds
    return fallback


def cpu_budget(assignment: Assignment, cases: tuple[Case, ...]) -> float:
    """CPU seconds one worker may need to start, load and run every case to its time limit
    (torch runs one thread in the worker, so CPU time cannot honestly outrun the clock)."""
    limits = assignment.limits
    total = limits.startup_s + limits.load_s
    for spec in assignment.classes:
        time_limit = spec.case_s or limits.case_s
        total += time_limit * sum(1 for case in cases if spec.name in case.classes)
    return total


AfterClass = Callable[["WorkerSession", ClassSpec, tuple[CaseRun, ...]], object]


def run_submission(assignment: Assignment, submission: Submission, cases: tuple[Case, ...],
                   cuda_available: bool, extra_hidden: list[Path],
                   after_class: tuple[AfterClass, ...] = ()) -> WorkerRun:
    """Every case of every loaded class, then each `after_class` check with the worker still
    up (they run more requests: shrinking a failure, checking methods, timing)."""
    needs_cuda = cuda_available and any(c.device == "cuda" for c in cases)
    session = WorkerSession(assignment, submission, needs_cuda, hidden_paths(submission, extra_hidden),
                            cpu_budget(assignment, cases))
    runs: list[CaseRun] = []
    extras: list[tuple[str, object]] = []
    try:
        load = session.load()
        for spec in assignment.classes:
            class_cases = [c for c in cases if spec.name in c.classes]
            state = load.state(spec.name)
            if load.fatal is not None or state != "class":
                continue
            time_limit = spec.case_s or assignment.limits.case_s
            timeouts_in_a_row = 0
            for case in class_cases:
                if case.device == "cuda" and not cuda_available:
                    runs.append(CaseRun(case=case, class_name=spec.name, status="skipped",
                                        message="CUDA is not available on this machine"))
                    continue
                if timeouts_in_a_row >= assignment.limits.consecutive_timeouts:
                    runs.append(CaseRun(case=case, class_name=spec.name, status="not_run",
                                        message=f"not run: the class timed out on {timeouts_in_a_row} "
                                                "cases in a row"))
                    continue
                run = session.run_case(case, spec.name, time_limit, spec.forbidden_operators)
                timeouts_in_a_row = timeouts_in_a_row + 1 if run.status == "timeout" else 0
                runs.append(run)
            for check in after_class:
                found = check(session, spec, tuple(r for r in runs if r.class_name == spec.name))
                if found is not None:
                    extras.append((spec.name, found))
    finally:
        session.close()
    return WorkerRun(load=load, runs=tuple(runs), protections=tuple(sorted(session.protections.items())),
                     restarts=session.restarts, extras=tuple(extras))
