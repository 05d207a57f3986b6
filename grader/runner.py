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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import forkserver, reaper
from .capture import OutputTail
from .cases import Case
from .config import Assignment, ItemSpec
from .plan import Plan, Signature
from .protocol import Channel, ChannelClosed, ChannelTimeout, ProtocolError, tensor_digest
from .submission import Submission
from .uids import UidPool

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
STDOUT_TAIL_BYTES = 2000


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
class OutputRun:
    """One value a plan returned (a step with `output=`), as the worker described it."""
    name: str
    tensor: torch.Tensor | None = field(default=None, compare=False)
    returned_type: str | None = None
    returned_kind: str | None = None          # tensor, tensor_subclass, ndarray, sequence, other
    device: str | None = None
    message: str = ""                         # why its data was not sent, when it was not


@dataclass(frozen=True)
class CaseRun:
    """What the worker did with one case's plan. `status` is the run's fate, not the verdict:
    returned, error, unsupported, timeout, crashed, skipped or not_run."""
    case: Case
    item: str
    status: str
    message: str = ""
    outputs: tuple[OutputRun, ...] = ()
    mutated: tuple[str, ...] = ()             # input tensors the plan changed in place
    error: ErrorInfo | None = None
    error_step: int | None = None             # the plan step that raised
    missing_method: str | None = None         # a method the plan called that the item lacks
    duration_s: float = 0.0
    stdout_tail: str = ""
    operators: tuple[tuple[str, int], ...] = ()          # aten operator -> times dispatched
    forbidden_hits: tuple[tuple[str, str | None], ...] = ()  # forbidden operator -> student line

    def output_named(self, name: str) -> OutputRun | None:
        return next((o for o in self.outputs if o.name == name), None)

    # The first output, for plans with one (most): what it returned and how.
    @property
    def output(self) -> torch.Tensor | None:
        return self.outputs[0].tensor if self.outputs else None

    @property
    def returned_type(self) -> str | None:
        return self.outputs[0].returned_type if self.outputs else None

    @property
    def returned_kind(self) -> str | None:
        return self.outputs[0].returned_kind if self.outputs else None

    def without_tensors(self) -> "CaseRun":
        from dataclasses import replace

        return replace(self, outputs=tuple(replace(o, tensor=None) for o in self.outputs))


@dataclass(frozen=True)
class UnitFailure:
    index: int
    filename: str
    line: int
    error: ErrorInfo


@dataclass(frozen=True)
class Definition:
    """One object a tracked name was bound to while loading (the last one is what Python keeps)."""
    unit: int | None           # the kept statement that bound it (None: the scaffold)
    kind: str                  # class, function or other
    type: str
    names: tuple[str, ...] | None   # its parameters, when it has a signature
    required: int = 0          # positional parameters without a default
    positional: int | None = 0      # positional parameters in all (None: *args)
    instance: bool = False          # a callable object rather than a def or a class

    def accepts(self, count: int) -> bool:
        return self.names is not None and self.required <= count and (
            self.positional is None or count <= self.positional)

    def describe(self, python_name: str) -> str:
        if self.names is None:
            return python_name
        return f"{python_name}({', '.join(self.names)})"

    @classmethod
    def from_wire(cls, raw) -> "Definition | None":
        if not isinstance(raw, dict) or raw.get("kind") not in ("class", "function", "other"):
            return None
        unit = raw.get("unit")
        signature = raw.get("signature")
        names, required, positional = None, 0, 0
        if isinstance(signature, dict):
            listed = signature.get("names")
            if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
                names = tuple(_text(n, 60) for n in listed[:20])
                required = signature.get("required") if _small_int(signature.get("required")) else 0
                positional = signature.get("positional") if _small_int(signature.get("positional")) else None
        return cls(unit=unit if _small_int(unit) else None, kind=raw["kind"], type=_text(raw.get("type"), 120),
                   names=names, required=required, positional=positional, instance=raw.get("instance") is True)


def _small_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 6


@dataclass(frozen=True)
class Resolution:
    """Which loaded definition an item is graded on. state: found, missing, wrong_kind (not a
    class / not a function) or wrong_form (the name exists, but with another signature)."""
    state: str
    index: int | None = None
    message: str = ""
    definition: Definition | None = None


@dataclass(frozen=True)
class LoadOutcome:
    definitions: tuple[tuple[str, tuple[Definition, ...]], ...]   # per tracked Python name
    failures: tuple[UnitFailure, ...]
    stdout_tail: str
    fatal: str | None                         # the worker could not load at all

    def found(self, python_name: str) -> tuple[Definition, ...]:
        return dict(self.definitions).get(python_name, ())


def resolve_item(load: LoadOutcome, item: ItemSpec, signature: Signature) -> Resolution:
    """The item's definition: the last one bound to its name, or, when its task says how many
    positional arguments it is given, the last one that accepts them (a file may define a
    step's function and then the next step's under the same name)."""
    found = load.found(item.python_name)
    if not found:
        return Resolution("missing")
    if signature.positional is None:
        index = len(found) - 1
        definition = found[index]
        if definition.kind != item.kind:
            return Resolution("wrong_kind", index, f"not a {item.kind} ({definition.type})", definition)
        return Resolution("found", index, definition=definition)
    # A definition with exactly that many positional parameters first: (x, w=None, b=None, eps=1)
    # accepts two arguments, yet it is the four-parameter form.
    exact = [i for i, d in enumerate(found) if d.kind == item.kind and d.names is not None
             and d.positional == signature.positional]
    fitting = exact or [i for i, d in enumerate(found) if d.kind == item.kind and d.accepts(signature.positional)]
    if fitting:
        return Resolution("found", fitting[-1], definition=found[fitting[-1]])
    last = found[-1]
    if last.kind != item.kind:
        return Resolution("wrong_kind", len(found) - 1, f"not a {item.kind} ({last.type})", last)
    if all(d.instance for d in found if d.kind == item.kind):
        # No def of the name at all: only an object bound to it (the course's step 3 check
        # ends with `custom_batch_norm1d = CustomBatchNorm1d(...)`).
        return Resolution("missing", None, f"no {item.kind} {item.python_name} defined: the name holds a "
                                           f"{last.type} object ({last.describe(item.python_name)})")
    forms = "; ".join(dict.fromkeys(d.describe(item.python_name) for d in found if d.kind == item.kind))
    return Resolution("wrong_form", len(found) - 1,
                      f"{item.python_name} here takes {_count(last)}: {forms}; this item is "
                      f"{signature.describe(item.python_name)}", last)


def _count(definition: Definition) -> str:
    if definition.names is None:
        return "an unknown number of parameters"
    if definition.positional is None:
        return "any number of arguments"
    if definition.required == definition.positional:
        n = definition.positional
        return f"{n} parameter{'s' if n != 1 else ''}"
    return f"{definition.required} to {definition.positional} parameters"


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
        # What it prints goes through a pipe, never to a file: only the last output_kb stay.
        self.output: OutputTail | None = None
        self.workdir: Path | None = None
        self.uid: int | None = None

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="grader-worker-"))
        spec = self._sandbox_spec()
        request_read, request_write = os.pipe()
        response_read, response_write = os.pipe()
        output_read, output_write = os.pipe()
        self.output = OutputTail(output_read, self.limits.output_kb << 10)
        env = forkserver.worker_environment(str(self.workdir))
        server = forkserver.get()
        try:
            if server is not None:
                try:
                    self.process = server.spawn(spec, env, str(self.workdir),
                                                (request_read, response_write, output_write))
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
                    stdin=subprocess.DEVNULL, stdout=output_write, stderr=output_write,
                    env=env, cwd=str(self.workdir), start_new_session=True,
                    pass_fds=(request_read, response_write), close_fds=True)
        finally:
            os.close(request_read)
            os.close(response_write)
            os.close(output_write)
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
                "temp_mb": 2 * limits.file_mb,
                # GRADER_USERNS=0 makes a machine without unprivileged user namespaces (tests).
                "user_namespaces": os.environ.get("GRADER_USERNS", "1") != "0"}
        # The process cap counts what the user already runs; report the submission's share,
        # which is the same on every run.
        spec["rlimit_labels"] = {"nproc": f"{limits.processes} more than already running"}
        uid = _unprivileged_uid()
        if uid is not None:
            self.uid = WORKER_UIDS.acquire()
            os.chown(self.workdir, self.uid, uid[1])
            spec["uid"], spec["gid"] = self.uid, uid[1]
            spec["uid_label"] = "a uid of its own, shared with no other worker on this host"
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
        Printed output never ends a case: only the deadline does."""
        try:
            header, tensors = self.channel.receive(deadline)
        except ChannelClosed:
            raise WorkerDied(self._death_reason(doing)) from None
        header["_tensors"] = tensors
        return header

    def output_size(self) -> int:
        """Bytes printed so far (an offset for output_since)."""
        return self.output.size() if self.output is not None else 0

    def output_since(self, offset: int) -> str:
        return self.output.since(offset, STDOUT_TAIL_BYTES) if self.output is not None else ""

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
        if self.output is not None:
            self.output.close()


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
    minus the statements that killed or hung an earlier worker. Everything it runs shares one
    wall-clock budget (limits.submission_s), loading included."""

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
        self.last_load: LoadOutcome | None = None
        self.restarts = 0
        self.protections: dict = {}
        self.deadline = time.monotonic() + assignment.limits.submission_s
        self.tracked = sorted({item.python_name for item in assignment.items})
        self.trusted = list(assignment.subject.trusted_callables)

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def budget_spent_message(self) -> str:
        return f"not run: the submission's time budget ({self.assignment.limits.submission_s:g} s) was spent"

    def load(self) -> LoadOutcome:
        for _ in range(self.MAX_LOAD_RESTARTS + 1):
            outcome = self._try_load()
            if outcome is not None:
                if self.first_load is None:
                    self.first_load = outcome
                self.last_load = outcome
                return outcome
        reason = "every attempt to load the submission killed or hung the worker"
        self.first_load = self.first_load or LoadOutcome(
            definitions=(), failures=self._fatal_failures(), stdout_tail="", fatal=reason)
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
                "track": self.tracked, "trusted": self.trusted}, None, time.monotonic() + limits.load_s)
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
                    definitions = message.get("definitions")
                    if not isinstance(definitions, dict):
                        raise ProtocolError("malformed load reply")
                    found = []
                    for name in self.tracked:
                        raw = definitions.get(name)
                        entries = raw[:100] if isinstance(raw, list) else []
                        found.append((name, tuple(d for d in map(Definition.from_wire, entries) if d is not None)))
                    return LoadOutcome(definitions=tuple(found), failures=self._fatal_failures() + tuple(failures),
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
                self.first_load = LoadOutcome(definitions=(), failures=self._fatal_failures() + tuple(failures),
                                              stdout_tail="", fatal=reason)
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

    def _ready_for(self, item: ItemSpec) -> Resolution | None:
        """The item's definition in a live worker (reloading after a restart), or None."""
        if self.worker is None or self.worker.process is None:
            outcome = self.load()
            if outcome.fatal is not None:
                return None
        else:
            outcome = self.last_load
        found = resolve_item(outcome, item, self.assignment.task_of(item).signature)
        return found if found.state == "found" else None

    def run_case(self, case: Case, item: ItemSpec, time_limit: float) -> CaseRun:
        """The case's own plan for the item, with its inputs."""
        task = self.assignment.task_of(item)
        return self.run_plan(case, item, task.plan(case, item.option_map), task.inputs(case), time_limit)

    def run_plan(self, case: Case, item: ItemSpec, plan: Plan, inputs: dict[str, torch.Tensor],
                 time_limit: float) -> CaseRun:
        """Any plan against the item on the case's device and seed (a case's, or a check's)."""
        remaining = self.remaining_s()
        if remaining <= 0:
            return CaseRun(case=case, item=item.name, status="not_run", message=self.budget_spent_message())
        time_limit = min(time_limit, remaining)
        found = self._ready_for(item)
        if found is None:
            return CaseRun(case=case, item=item.name, status="crashed",
                           message="the worker could not be restarted with the item loaded")
        worker = self.worker
        request = {"op": "run", "case": case.key, "item": item.python_name, "definition": found.index,
                   "device": case.device, "seed": case.seed, "plan": plan.to_wire(),
                   "forbidden": list(item.forbidden_operators)}
        offset = worker.output_size()
        started = time.monotonic()
        try:
            worker.send(request, inputs, started + time_limit)
            while True:
                message = worker.receive(started + time_limit, "running a case")
                if message.get("event") == "result" and message.get("case") == case.key:
                    break
        except ChannelTimeout:
            tail = worker.output_since(offset)
            self._restart_later()
            return CaseRun(case=case, item=item.name, status="timeout",
                           message=f"did not finish within {time_limit:g} s",
                           duration_s=time.monotonic() - started, stdout_tail=tail)
        except (WorkerDied, ProtocolError) as exc:
            tail = worker.output_since(offset)
            self._restart_later()
            return CaseRun(case=case, item=item.name, status="crashed",
                           message=getattr(exc, "reason", f"protocol error: {exc}"),
                           duration_s=time.monotonic() - started, stdout_tail=tail)
        run = _case_run(case, item.name, plan, message, inputs, time.monotonic() - started,
                        worker.output_since(offset))
        if message.get("restart") is True:
            self._restart_later()  # the CUDA context is lost: the next case gets a new worker
        return run

    def call(self, op: str, request: dict, tensors: dict, time_limit: float, item: ItemSpec) -> dict:
        """One request of another kind than `run` (a timing) with the same limits: returns the
        worker's reply, or {"status": "timeout"|"crashed"|"not_run", "message": ...}."""
        remaining = self.remaining_s()
        if remaining <= 0:
            return {"status": "not_run", "message": self.budget_spent_message()}
        time_limit = min(time_limit, remaining)
        found = self._ready_for(item)
        if found is None:
            return {"status": "crashed", "message": "the worker could not be restarted with the item loaded"}
        worker = self.worker
        token = f"{op}-{time.monotonic_ns()}"
        started = time.monotonic()
        try:
            worker.send(dict(request, op=op, token=token, item=item.python_name, definition=found.index),
                        tensors, started + time_limit)
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


def _case_run(case: Case, item: str, plan: Plan, message: dict, inputs: dict, elapsed: float,
              tail: str) -> CaseRun:
    status = message.get("status")
    if status not in ("returned", "error", "unsupported"):
        status, text = "crashed", f"malformed result status {status!r}"
    else:
        text = _text(message.get("message"), 500)
    tensors = message["_tensors"]
    described = message.get("outputs") if isinstance(message.get("outputs"), dict) else {}
    outputs = []
    if status == "returned":
        for name in plan.outputs:
            entry = described.get(name) if isinstance(described.get(name), dict) else {}
            outputs.append(OutputRun(name=name, tensor=tensors.get(name), returned_type=_short(entry.get("returned_type")),
                                     returned_kind=_short(entry.get("returned_kind")),
                                     device=_short(entry.get("device")), message=_text(entry.get("message"), 500)))
    digests = message.get("digests") if isinstance(message.get("digests"), dict) else {}
    mutated = ()
    if status == "returned":
        mutated = tuple(name for name, tensor in inputs.items()
                        if name in digests and _digests_differ(digests[name], tensor_digest(tensor)))
    step = message.get("step")
    return CaseRun(
        case=case, item=item, status=status, message=text, outputs=tuple(outputs), mutated=mutated,
        error=ErrorInfo.from_wire(message.get("error")),
        error_step=step if _small_int(step) else None,
        missing_method=_short(message.get("missing_method")),
        duration_s=_seconds(message.get("duration_s"), elapsed),
        stdout_tail=tail, operators=_operator_counts(message.get("operators")),
        forbidden_hits=_forbidden_hits(message.get("forbidden_hits")))


def _digests_differ(reported, expected: str) -> bool:
    """Every copy of the tensor the plan handed out must still hold what the grader sent;
    anything else the worker says (not a list of digests) counts as a change."""
    if not isinstance(reported, list) or not reported:
        return True
    return any(digest != expected for digest in reported[:50])


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
    for spec in assignment.items:
        time_limit = spec.case_s or limits.case_s
        total += time_limit * sum(1 for case in cases if spec.name in case.items)
    return min(total, limits.startup_s + limits.submission_s)


AfterItem = Callable[["WorkerSession", ItemSpec, tuple[CaseRun, ...]], object]


def run_submission(assignment: Assignment, submission: Submission, cases: tuple[Case, ...],
                   cuda_available: bool, extra_hidden: list[Path],
                   after_public: tuple[AfterItem, ...] = (), after_hidden: tuple[AfterItem, ...] = (),
                   on_run: Callable[[CaseRun], CaseRun] | None = None) -> WorkerRun:
    """Every case of every loaded item: first the public cases of all items, then each
    `after_public` check per item with the worker still up (shrinking a failure, checking
    methods, timing), then the hidden cases, then `after_hidden`. Nothing a student sees
    (public cases' output, checks' messages) can carry what the code saw on a hidden case,
    because no hidden case has run yet. `on_run` sees each run as it arrives and returns what
    to keep of it (the grader need not hold every output at once)."""
    needs_cuda = cuda_available and any(c.device == "cuda" for c in cases)
    session = WorkerSession(assignment, submission, needs_cuda, hidden_paths(submission, extra_hidden),
                            cpu_budget(assignment, cases))
    runs: list[CaseRun] = []
    extras: list[tuple[str, object]] = []
    timeouts_in_a_row: dict[str, int] = {}

    def run_cases(spec: ItemSpec, hidden: bool) -> None:
        time_limit = spec.case_s or assignment.limits.case_s
        for case in cases:
            if spec.name not in case.items or case.hidden != hidden:
                continue
            if case.device == "cuda" and not cuda_available:
                run = CaseRun(case=case, item=spec.name, status="skipped",
                              message="CUDA is not available on this machine")
            elif timeouts_in_a_row.get(spec.name, 0) >= assignment.limits.consecutive_timeouts:
                run = CaseRun(case=case, item=spec.name, status="not_run",
                              message=f"not run: the item timed out on {timeouts_in_a_row[spec.name]} "
                                      "cases in a row")
            else:
                run = session.run_case(case, spec, time_limit)
                timeouts_in_a_row[spec.name] = timeouts_in_a_row.get(spec.name, 0) + 1 \
                    if run.status == "timeout" else 0
            runs.append(on_run(run) if on_run is not None else run)

    def checks(items: list[ItemSpec], which: tuple[AfterItem, ...]) -> None:
        for spec in items:
            for check in which:
                found = check(session, spec, tuple(r for r in runs if r.item == spec.name))
                if found is not None:
                    extras.append((spec.name, found))

    try:
        load = session.load()
        graded = [] if load.fatal is not None else [
            spec for spec in assignment.items
            if resolve_item(load, spec, assignment.task_of(spec).signature).state == "found"]
        for spec in graded:
            run_cases(spec, hidden=False)
        checks(graded, after_public)
        for spec in graded:
            run_cases(spec, hidden=True)
        checks(graded, after_hidden)
    finally:
        session.close()
    return WorkerRun(load=load, runs=tuple(runs), protections=tuple(sorted(session.protections.items())),
                     restarts=session.restarts, extras=tuple(extras))
