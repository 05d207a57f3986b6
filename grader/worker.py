"""The only process that runs submission code.

Started by runner.py with a sandbox spec; it confines itself, imports torch,
then answers requests on two pipes: `load` (run the scaffold and the kept
definitions), `run` (grade one case: construct, set_kernel, call) and `exit`.
It never sees an expected output: it returns what the student's code produced,
as plain tensor data, and the grader decides.
"""
from __future__ import annotations

import builtins
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
    channel.send({"event": "ready", "pid": os.getpid(), "protections": protections})
    worker = Worker(channel)
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
        # Imported before any submission code runs: it binds torch's conv2d for the speed check.
        from grader import worker_checks
        self._checks = worker_checks

    @property
    def extra_ops(self) -> dict:
        """Requests beyond load and run; each handler takes (request, tensors) and returns
        (reply fields, reply tensors)."""
        checks = self._checks
        return {"methods": lambda request, tensors: checks.methods(self, request, tensors),
                "speed": lambda request, tensors: checks.speed(self, request, tensors)}

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
        self.namespace = {"__name__": "submission", "__builtins__": builtins}
        exec(compile(request["scaffold"], request["scaffold_name"], "exec"), self.namespace)
        skip = set(request.get("skip_units", []))
        for unit in request["units"]:
            if unit["index"] in skip:
                continue
            self._remember_source(unit)
            self.channel.send({"event": "unit_start", "index": unit["index"]})
            error = self._run_unit(unit, request["statement_s"])
            _flush_output()
            self.channel.send({"event": "unit_done", "index": unit["index"], "error": error})
        classes = {}
        for name in request["classes"]:
            value = self.namespace.get(name)
            classes[name] = "missing" if value is None else ("class" if isinstance(value, type) else
                                                              f"not a class ({type(value).__name__})")
        self.channel.send({"event": "loaded", "classes": classes})

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
        import torch

        response = {"event": "result", "case": request["case"], "class": request["class"]}
        try:
            response.update(self._run_case(request, tensors))
        except BaseException as exc:
            response.update(status="error", error=self._describe(exc))
        if request.get("device") == "cuda" and response.get("status") == "error":
            response["restart"] = _cuda_context_lost(response.get("error") or {})
        _flush_output()
        self.channel.send({k: v for k, v in response.items() if k != "output"},
                          {"output": response["output"]} if "output" in response else None)
        del torch

    def _run_case(self, request: dict, tensors: dict) -> dict:
        import torch

        cls = self.namespace.get(request["class"])
        params = request["params"]
        device = request["device"]
        _seed_everything(request["seed"])
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        data = tensors["input"].to(device)
        kernel = tensors["kernel"].to(device)
        args = (params["in_channels"], params["out_channels"], params["kernel_size"], params["stride"])
        keywords = request["keywords"]
        if keywords and not _accepts(cls, args, keywords):
            return {"status": "unsupported",
                    "message": f"the constructor does not accept {', '.join(keywords)}="}
        recorder = OperatorRecorder(request.get("forbidden", ()), self.filenames)
        started = time.perf_counter()
        try:
            with recorder:
                try:
                    layer = cls(*args, **keywords)
                except TypeError as exc:
                    if keywords and "keyword" in str(exc):
                        return {"status": "unsupported",
                                "message": f"the constructor rejects {', '.join(keywords)}=: {exc}"}
                    raise
                layer.set_kernel(kernel)
                result = layer(data)
                if device == "cuda":
                    torch.cuda.synchronize()
                duration = time.perf_counter() - started
                returned = _captured(result, recorder)
                layer = result = None      # dropped (their __del__ runs) while recorded: see Recorder
        except BaseException as exc:
            return {"status": "error", "error": self._describe(exc), **recorder.summary()}
        # Our input tensors live until the reply is sent (run() holds them): a finalizer the
        # student hung on them must not run between recording and sending.
        tensors["_in_use"] = (data, kernel)
        response = {"status": "returned", "duration_s": duration, **recorder.summary(),
                    "returned_type": returned["type"], "returned_kind": returned["kind"],
                    "input_sha256": _digest(data), "kernel_sha256": _digest(kernel)}
        if "error" in returned:
            return {**response, "status": "error", "error": self._describe(returned["error"]),
                    "message": "the returned value's data could not be read"}
        output, output_device = returned["output"], returned["device"]
        if output is not None and output.dtype not in _wire_dtypes:
            response["message"] = f"returned a tensor of dtype {output.dtype}, which cannot be graded"
        elif output is not None:
            size = output.numel() * output.element_size()
            if size > _max_output_bytes:
                response["message"] = (f"output has {output.numel()} elements ({size >> 20} MB, more than "
                                       f"the {_max_output_bytes >> 20} MB the grader reads); not graded")
            else:
                response["output"], response["output_device"] = output, output_device
        return response

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


def OperatorRecorder(forbidden, filenames):
    """A dispatch mode that counts every operator the student's code reaches, whatever Python
    name reached it (F.conv2d, getattr(torch, "con" + "v2d"), nn.Conv2d all end in
    aten.convolution), and remembers the student's line for forbidden ones. grader.recorder
    binds everything it uses when the worker starts, before any submission code runs."""
    module = _recorder_module
    if module is None:             # used outside serve() (tests): nothing to bind before
        from grader import recorder as module
    return module.Recorder(forbidden, filenames)


def _accepts(cls, args: tuple, keywords: dict) -> bool:
    try:
        inspect.signature(cls).bind(*args, **keywords)
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
    """(a plain, contiguous CPU copy of the returned value's data, its device name), or
    (None, None) when it has no numeric data. Always a copy, never a view of the student's
    memory. Tensor subclasses are read with their __torch_function__ switched off, so their
    overrides never run in the grader's own code (the channel, the digest) and the grader
    judges plain numbers only."""
    import torch

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
