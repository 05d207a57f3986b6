"""The only process that runs submission code.

Started by runner.py with a sandbox spec; it confines itself, imports torch,
then answers requests on two pipes: `load` (run the scaffold and the kept
definitions), `run` (one case: run its call plan, grader/plan.py, against the
graded item), `time` (the item against a trusted baseline) and `exit`. It knows
no assignment and never sees an expected output: it returns what the student's
code produced, as plain tensor data, and the grader decides.
"""
from __future__ import annotations

import builtins
import functools
import gc
import inspect
import json
import linecache
import os
import random
import signal
import sys
import time
import traceback

TRACEBACK_LIMIT = 1500
# Bound before any submission code runs, so the timing loop cannot be patched.
_perf_counter = time.perf_counter
# What each rlimit is, for messages ("memory limit: 4096 MB"); set from the spec at start-up.
_LIMITS: dict = {}


class StatementTimeout(BaseException):
    """Raised by the alarm in a top-level statement that runs too long (not an Exception,
    so a student's `except Exception` does not swallow it)."""


def main(spec_json: str) -> None:
    serve(json.loads(spec_json))


def serve(spec: dict) -> None:
    """Confine this process, then answer requests until told to exit. Runs in a fresh
    interpreter (main) or in a child forked from the fork server."""
    global _digest, _max_output_bytes, _wire_dtypes, _recorder_module
    from grader import sandbox

    protections = sandbox.confine(spec)
    _LIMITS.update(spec.get("rlimits", {}))
    import torch

    from grader import recorder
    from grader.protocol import DTYPE_NAMES, PAYLOAD_LIMIT, Channel, tensor_digest
    # Bound here, before any submission code runs: a submission that replaces
    # grader.protocol.tensor_digest (to hide that it mutated its input) changes nothing.
    _digest, _max_output_bytes = tensor_digest, PAYLOAD_LIMIT // 2
    _wire_dtypes = frozenset(DTYPE_NAMES)
    _recorder_module = recorder
    torch.set_num_threads(1)
    channel = Channel(spec["request_fd"], spec["response_fd"])
    if spec.get("cuda"):
        torch.zeros(1, device="cuda").sum().item()  # pay CUDA's start-up before any case's clock
    worker = Worker(channel)
    # Everything alive now is the grader's and torch's: frozen out of the collector's sight,
    # a full collection after each case (see PlanRun.release) costs microseconds, not 40 ms.
    gc.freeze()
    channel.send({"event": "ready", "pid": os.getpid(), "protections": protections})
    while True:
        header, tensors = channel.receive()
        op = header.get("op")
        if op == "load":
            worker.load(header)
        elif op == "run":
            worker.run(header, tensors)
        elif op in worker.extra_ops:
            worker.reply(header, tensors, worker.extra_ops[op])
        else:
            break
    _flush_output()
    os._exit(0)


class Worker:
    def __init__(self, channel):
        self.channel = channel
        self.namespace: dict = {}
        self.filenames: set[str] = set()
        # Every object each tracked name was bound to while loading, in order, so an item can
        # be graded on the definition that has its signature even when a later one of another
        # form (the same name, other parameters) won.
        self.definitions: dict[str, list] = {}
        self.trusted: dict[str, object] = {}
        self._in_use = None

    @property
    def extra_ops(self) -> dict:
        """Requests beyond load and run; each handler takes (request, tensors) and returns
        (reply fields, reply tensors)."""
        return {"time": self.time}

    def reply(self, request: dict, tensors: dict, handler) -> None:
        response, out = {"event": "reply", "token": request.get("token")}, None
        try:
            fields, out = handler(request, tensors)
            response.update(fields)
        except BaseException as exc:
            response.update(status="error", error=self._describe(exc))
        if request.get("device") == "cuda" and response.get("status") == "error":
            response["restart"] = _cuda_context_lost(response.get("error") or {})
        _flush_output()
        self.channel.send(response, out)

    def load(self, request: dict) -> None:
        # Trusted callables are looked up before any submission code runs, so a submission
        # that replaces one (to slow down the baseline it is timed against) changes nothing.
        self.trusted = {}
        for path in request.get("trusted", []):
            try:
                self.trusted[path] = _resolve_dotted(path)
            except Exception:
                pass
        self.namespace = {"__name__": "submission", "__builtins__": builtins}
        tracked = list(request.get("track", []))
        self.definitions = {name: [] for name in tracked}
        exec(compile(request["scaffold"], request["scaffold_name"], "exec"), self.namespace)
        self._note_definitions(None)
        skip = set(request.get("skip_units", []))
        for unit in request["units"]:
            if unit["index"] in skip:
                continue
            self._remember_source(unit)
            self.channel.send({"event": "unit_start", "index": unit["index"]})
            error = self._run_unit(unit, request["statement_s"])
            self._note_definitions(unit["index"])
            _flush_output()
            self.channel.send({"event": "unit_done", "index": unit["index"], "error": error})
        definitions = {name: [_definition_summary(value, unit) for value, unit in found]
                       for name, found in self.definitions.items()}
        gc.freeze()
        self.channel.send({"event": "loaded", "definitions": definitions})

    def _note_definitions(self, unit_index) -> None:
        for name, found in self.definitions.items():
            value = self.namespace.get(name, _ABSENT)
            if value is not _ABSENT and (not found or found[-1][0] is not value):
                found.append((value, unit_index))

    def _remember_source(self, unit: dict) -> None:
        # So tracebacks quote the student's line, as they would in Jupyter.
        filename = unit["filename"]
        self.filenames.add(filename)
        lines = list(linecache.cache.get(filename, (0, None, [], filename))[2])
        first = unit["line"] - 1
        body = unit["source"].splitlines(keepends=True)
        lines.extend([""] * max(0, first + len(body) - len(lines)))
        lines[first:first + len(body)] = [line if line.endswith("\n") else line + "\n" for line in body]
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)

    def _run_unit(self, unit: dict, time_limit: float):
        def on_alarm(signum, frame):
            raise StatementTimeout()

        code = "\n" * (unit["line"] - 1) + unit["source"]
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, time_limit)
        try:
            exec(compile(code, unit["filename"], "exec"), self.namespace)
            return None
        except StatementTimeout:
            return {"type": "Timeout", "message": f"took longer than {time_limit:g} s; skipped",
                    "location": None, "traceback": ""}
        except BaseException as exc:  # SystemExit and KeyboardInterrupt are the student's too
            return self._describe(exc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def run(self, request: dict, tensors: dict) -> None:
        response = {"event": "result", "case": request["case"], "item": request["item"]}
        out = {}
        try:
            fields, out = self._run_case(request, tensors)
            response.update(fields)
        except BaseException as exc:
            response.update(status="error", error=self._describe(exc))
        if request.get("device") == "cuda" and response.get("status") == "error":
            response["restart"] = _cuda_context_lost(response.get("error") or {})
        _flush_output()
        self.channel.send(response, out or None)
        self._in_use = None

    def _item(self, request: dict):
        found = self.definitions.get(request["item"]) or []
        index = request.get("definition", -1)
        if not isinstance(index, int) or not -len(found) <= index < len(found):
            raise LookupError(f"no definition {index} of {request['item']}")
        return found[index][0]

    def _run_case(self, request: dict, tensors: dict) -> tuple[dict, dict]:
        """Run the request's plan inside the operator recorder; copy what it returned, and
        digest the inputs it was handed, before anything of the student's runs unrecorded."""
        import torch

        item = self._item(request)
        device = request["device"]
        _seed_everything(request["seed"])
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        plan = request["plan"]
        refused = _refused_keywords(item, plan)
        if refused is not None:
            return {"status": "unsupported", "message": refused}, {}
        run = PlanRun(item, {name: t.to(device) for name, t in tensors.items()}, self.trusted)
        recorder = OperatorRecorder(request.get("forbidden", ()), self.filenames)
        started = time.perf_counter()
        outputs: dict = {}
        # Our input tensors live until the reply is sent: a finalizer the student hung on them
        # must not run between recording and sending.
        self._in_use = run.tensors
        try:
            with recorder:
                try:
                    run.execute(plan, outputs)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    duration = time.perf_counter() - started
                    fields, out = self._outputs(outputs, recorder)
                    recorder.paused = True          # the digests' operators are the grader's
                    try:
                        fields["digests"] = run.digests()
                    finally:
                        recorder.paused = False
                except _Unsupported as exc:
                    return {"status": "unsupported", "message": str(exc)}, {}
                finally:
                    # Whatever happened, the student's objects go while recorded (a __del__
                    # that computes runs where the recorder sees it).
                    outputs.clear()
                    run.release()
        except BaseException as exc:
            fields = {"status": "error", "error": self._describe(exc), "step": run.step,
                      **recorder.summary()}
            if run.missing_method is not None:
                fields["missing_method"] = run.missing_method
            return fields, {}
        return {"status": "returned", "duration_s": duration, **recorder.summary(), **fields}, out

    def _outputs(self, outputs: dict, recorder) -> tuple[dict, dict]:
        """Each output's type and plain data (copied while recording: the student's tensor may
        change later), within one size budget for the whole reply."""
        meta, out, budget = {}, {}, _max_output_bytes
        for name, result in outputs.items():
            captured = _captured(result, recorder)
            entry = {"returned_type": captured["type"], "returned_kind": captured["kind"]}
            if "error" in captured:
                entry.update(error=self._describe(captured["error"]),
                             message="the returned value's data could not be read")
                meta[name] = entry
                continue
            data, data_device = captured["output"], captured["device"]
            if data is not None and data.dtype not in _wire_dtypes:
                entry["message"] = f"returned a tensor of dtype {data.dtype}, which cannot be graded"
            elif data is not None:
                size = data.numel() * data.element_size()
                if size > budget:
                    entry["message"] = (f"output has {data.numel()} elements ({size >> 20} MB, more than "
                                        f"the {budget >> 20} MB the grader reads); not graded")
                else:
                    budget -= size
                    out[name] = data
                    entry["device"] = data_device
            meta[name] = entry
        return {"outputs": meta}, out

    def time(self, request: dict, tensors: dict) -> tuple[dict, None]:
        """Operators dispatched by each of request["count"] ((setup, counted) plan pairs: only the
        second is counted), then the
        student's call and the baseline's timed in turn (after one warm-up call each) until
        request["repeats"] pairs, or fewer once request["budget_s"] seconds have gone by since
        the request began (a slow item is timed once, by its warm-up call, or not at all)."""
        import torch

        started = _perf_counter()
        budget = request["budget_s"]
        item = self._item(request)
        device = request["device"]
        _seed_everything(request["seed"])
        on = {name: tensor.to(device) for name, tensor in tensors.items()}

        def sync():
            if device == "cuda":
                torch.cuda.synchronize()

        fields = {"status": "ok"}
        counts = []
        try:
            for setup, counted in request["count"]:
                run = PlanRun(item, {name: t.clone() for name, t in on.items()}, self.trusted)
                run.execute(setup, {})
                recorder = OperatorRecorder(request.get("forbidden", ()), self.filenames)
                with recorder:
                    run.execute(counted, {})
                    sync()
                counts.append(sum(recorder.counts.values()))
            fields["operators"] = counts
        except BaseException as exc:
            fields["count_error"] = self._describe(exc)
        student, baseline = [], []
        try:
            if _perf_counter() - started > budget:
                fields["time_skipped"] = True
                raise _Skip()
            run = PlanRun(item, {name: t.clone() for name, t in on.items()}, self.trusted)
            run.execute(request["setup"], {})
            call_student = run.prepare(request["student"])
            call_baseline = run.prepare(request["baseline"])
            first = _perf_counter()
            call_student()                     # warm-up: first-call costs are not the item's speed
            sync()
            second = _perf_counter()
            call_baseline()
            sync()
            warm_up = (second - first, _perf_counter() - second)
            repeats = min(int(request["repeats"]), MAX_TIMING_REPEATS)
            while len(student) < repeats and _perf_counter() - started < budget:
                first = _perf_counter()
                call_student()
                sync()
                second = _perf_counter()
                call_baseline()
                sync()
                third = _perf_counter()
                student.append(second - first)
                baseline.append(third - second)
            if not student:                     # out of time after the warm-up: it is the one sample
                student, baseline = [warm_up[0]], [warm_up[1]]
        except _Skip:
            pass
        except BaseException as exc:
            fields["time_error"] = self._describe(exc)
        fields.update(student_s=student, baseline_s=baseline)
        if device == "cuda":
            fields["restart"] = any(_cuda_context_lost(e) for e in (fields.get("count_error"),
                                                                    fields.get("time_error")) if e)
        return fields, None

    def _describe(self, exc: BaseException) -> dict:
        frames = traceback.extract_tb(exc.__traceback__)
        location = None
        for frame in reversed(frames):
            if frame.filename in self.filenames:
                location = {"filename": frame.filename, "line": frame.lineno, "code": (frame.line or "").strip()}
                break
        hint = _limit_hint(exc)
        # The hint goes in even when the message is long (CUDA's out-of-memory text is).
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:500 - len(hint)] + hint
        formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return {"type": type(exc).__name__, "message": text, "location": location,
                "traceback": formatted[-TRACEBACK_LIMIT:]}


MAX_TIMING_REPEATS = 15
_ABSENT = object()


class _Skip(Exception):
    pass


class _Unsupported(Exception):
    """The item refused a keyword beyond the course's signature."""


class PlanRun:
    """One execution of a call plan (grader/plan.py) against one item: the tensors it was
    handed, what its steps bound, and where it stopped."""

    def __init__(self, item, tensors: dict, trusted: dict):
        self.item = item
        self.tensors = tensors
        self.trusted = trusted
        self.bound: dict = {}
        self.handed: list = []          # (name, tensor) given to the student's code
        self.step = None
        self.missing_method = None

    def execute(self, plan: list, outputs: dict) -> None:
        for index, step in enumerate(plan):
            self.step = index
            value = self._step(step)
            if step.get("bind"):
                self.bound[step["bind"]] = value
            if step.get("output"):
                outputs[step["output"]] = value
        self.step = None

    def prepare(self, plan: list):
        """A plan of one call, resolved once, as a function to call repeatedly (timing)."""
        (step,) = plan
        function = self._callee(step)
        args, kwargs = self._arguments(step)
        return lambda: function(*args, **kwargs)

    def _step(self, step: dict):
        if step["op"] == "new":
            args, kwargs = self._arguments(step)
            optional = {k: self._arg(v) for k, v in step.get("optional_kwargs", {}).items()}
            try:
                return self.item(*args, **kwargs, **optional)
            except TypeError as exc:
                if optional and "keyword" in str(exc):
                    raise _Unsupported(f"the constructor rejects {', '.join(optional)}=: {exc}") from None
                raise
        function = self._callee(step)
        args, kwargs = self._arguments(step)
        return function(*args, **kwargs)

    def _callee(self, step: dict):
        target = step.get("target")
        if isinstance(target, dict):
            return self.trusted[target["trusted"]]
        owner = self.item if target == "@item" else self.bound[target]
        method = step.get("method")
        if method is None:
            return owner
        function = getattr(owner, method, None)
        if not callable(function):
            self.missing_method = method
            raise AttributeError(f"{type(owner).__name__} has no method {method}")
        return function

    def _arguments(self, step: dict) -> tuple[list, dict]:
        return ([self._arg(a) for a in step.get("args", [])],
                {k: self._arg(v) for k, v in step.get("kwargs", {}).items()})

    def _arg(self, tagged: list):
        tag = tagged[0]
        if tag == "value":
            return tagged[1]
        if tag == "ref":
            return self.bound[tagged[1]]
        if tag == "list":
            values = [self._arg(v) for v in tagged[1]]
            return tuple(values) if tagged[2] else values
        name, layout = tagged[1], tagged[2]
        tensor = _in_layout(self.tensors[name], layout)
        self.handed.append((name, tensor))
        return tensor

    def digests(self) -> dict:
        found: dict = {}
        for name, tensor in self.handed:
            found.setdefault(name, []).append(_digest(tensor))
        return found

    def release(self) -> None:
        """Drop every reference to the student's objects while still recording, so that a
        finalizer (`__del__`) runs where the recorder sees it."""
        self.bound.clear()
        self.handed.clear()
        self.item = None
        gc.collect()


def _in_layout(tensor, layout):
    """The same values in another memory layout (grader/plan.py's Tensor), a new tensor each
    time so that every call is handed its own."""
    import torch

    if layout == "sliced":
        spread = torch.empty((*tensor.shape, 2), dtype=tensor.dtype, device=tensor.device)
        spread[..., 0] = tensor
        return spread[..., 0]
    if layout == "transposed" and tensor.dim() >= 2:
        return tensor.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "channels_last" and tensor.dim() == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def _refused_keywords(item, plan: list) -> str | None:
    """Keywords beyond the course's signature that the item's constructor cannot take."""
    for step in plan:
        if step["op"] == "new" and step.get("optional_kwargs"):
            keywords = step["optional_kwargs"]
            if not _accepts(item, len(step.get("args", [])), {**step.get("kwargs", {}), **keywords}):
                return f"the constructor does not accept {', '.join(keywords)}="
    return None


def _definition_summary(value, unit) -> dict:
    kind = "class" if isinstance(value, type) else ("function" if callable(value) else "other")
    summary = {"unit": unit, "kind": kind, "type": _type_name(value), "signature": None,
               # A callable object, not a def (a course check's `name = Layer(...)`).
               "instance": kind == "function" and not inspect.isroutine(value)
               and not isinstance(value, functools.partial)}
    if kind == "other":
        return summary
    try:
        parameters = list(inspect.signature(value).parameters.values())
    except (TypeError, ValueError):
        return summary
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    summary["signature"] = {
        "names": [p.name for p in parameters][:20],
        "required": sum(1 for p in positional if p.default is p.empty),
        "positional": None if any(p.kind == p.VAR_POSITIONAL for p in parameters) else len(positional),
    }
    return summary


def _resolve_dotted(path: str):
    import importlib

    parts = path.split(".")
    value = importlib.import_module(parts[0])
    for part in parts[1:]:
        value = getattr(value, part)
    return value


def OperatorRecorder(forbidden, filenames):
    """A dispatch mode that counts every operator the student's code reaches, whatever Python
    name reached it (a functional call, getattr with a built-up name and a module all end in
    the same aten operator), and remembers the student's line for forbidden ones.
    grader.recorder binds everything it uses when the worker starts, before any submission
    code runs."""
    module = _recorder_module
    if module is None:             # used outside serve() (tests): nothing to bind before
        from grader import recorder as module
    return module.Recorder(forbidden, filenames)


def _accepts(cls, positional: int, keywords: dict) -> bool:
    try:
        inspect.signature(cls).bind(*([None] * positional), **keywords)
    except TypeError:
        return False
    except ValueError:  # no signature to inspect: let the call decide
        return True
    return True


_digest = None              # grader.protocol.tensor_digest, bound in main()
_recorder_module = None     # grader.recorder, bound in serve()
_max_output_bytes = 0
_wire_dtypes: frozenset = frozenset()


def _captured(result, recorder) -> dict:
    """What the grader needs of a returned value, read inside the recorder (its type, its kind,
    a copy of its data, or the exception reading it raised): once recording ends, the student's
    objects may change (a __del__, a finalizer), the copy may not. The copy's own operators are
    not counted (they are the grader's), but a forbidden one is still a hit."""
    captured = {"type": _type_name(result), "kind": _kind(result)}
    recorder.paused = True
    try:
        captured["output"], captured["device"] = _plain_data(result)
    except Exception as exc:
        captured["error"] = exc
    finally:
        recorder.paused = False
    return captured


def _plain_data(result):
    """(a plain, contiguous CPU tensor holding the returned value's data, its device name), or
    (None, None) when it has no numeric data. Tensor subclasses are read with their
    __torch_function__ switched off, so their overrides never run in the grader's own code
    (the channel, the digest) and the grader judges plain numbers only."""
    import torch

    # A copy, never a view: the student's object may still change the original later.
    if isinstance(result, torch.Tensor):
        with torch._C.DisableTorchFunctionSubclass():
            plain = torch.Tensor.as_subclass(result, torch.Tensor).detach()
            return plain.to("cpu", copy=True).contiguous(), str(plain.device)
    output = _as_tensor(result)
    if output is None:
        return None, None
    with torch._C.DisableTorchFunctionSubclass():
        return torch.Tensor.as_subclass(output, torch.Tensor).detach().clone().contiguous(), "cpu"


def _cuda_context_lost(error: dict) -> bool:
    """A device-side assert or an illegal memory access poisons the CUDA context for good:
    every later CUDA call in this process fails, so the next case needs a new worker. Out of
    memory does not: free the cache and go on."""
    import torch

    text = f"{error.get('type', '')} {error.get('message', '')}"
    if "out of memory" in text:
        try:
            torch.cuda.empty_cache()
        except Exception:
            return True
        return False
    if "CUDA error" in text or "AcceleratorError" in text or "cudaError" in text:
        return True
    try:
        torch.cuda.synchronize()
        return False
    except Exception:
        return True


def _limit_hint(exc: BaseException) -> str:
    """Names the sandbox limit behind an error, so the report says why memory ran out,
    a fork failed or a write stopped."""
    import errno

    if type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc):
        return " (out of GPU memory)"
    memory = _LIMITS.get("as") or _LIMITS.get("data")
    if memory and (isinstance(exc, MemoryError) or "can't allocate memory" in str(exc)
                   or getattr(exc, "errno", None) == errno.ENOMEM):
        return f" (the memory limit is {int(memory) >> 20} MB)"
    code = getattr(exc, "errno", None)
    if code == errno.EAGAIN and "nproc" in _LIMITS:
        return " (the process limit was reached)"
    if code == errno.EFBIG and "fsize" in _LIMITS:
        return f" (the file size limit is {int(_LIMITS['fsize']) >> 20} MB)"
    if code == errno.ENOSPC:
        return " (the private temporary folders are full)"
    return ""


def _as_tensor(result):
    """The returned value's data as a tensor, when it has numeric data; None otherwise."""
    import torch

    if isinstance(result, torch.Tensor):
        return result
    try:
        import numpy
        if isinstance(result, numpy.ndarray) and result.dtype.kind in "biufc":
            return torch.from_numpy(numpy.ascontiguousarray(result))
    except ImportError:
        pass
    if isinstance(result, (list, tuple)):
        try:
            return torch.tensor(result)
        except Exception:
            return None
    return None


def _kind(value) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return "tensor" if type(value) in (torch.Tensor, torch.nn.Parameter) else "tensor_subclass"
    if type(value).__name__ == "ndarray":
        return "ndarray"
    return "sequence" if isinstance(value, (list, tuple)) else "other"


def _type_name(value) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy
        numpy.random.seed(seed)
    except ImportError:
        pass


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


if __name__ == "__main__":
    main(sys.argv[1])
