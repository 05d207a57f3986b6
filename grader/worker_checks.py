"""The worker's side of the per-method checks and the speed check (grader/methods.py is the
grader's side). Runs inside the worker, next to submission code: it calls the student's
helper methods and times the student's layer, and returns plain data only; the grader
compares, judges and scores.

`conv2d` is bound when the worker starts, before any submission code runs, so a submission
that replaces torch.nn.functional.conv2d does not slow down the baseline it is timed against.
"""
from __future__ import annotations

import time

import torch

from grader import worker as _worker

_conv2d = torch.nn.functional.conv2d
_perf_counter = time.perf_counter
MAX_REPEATS = 15


def methods(worker, request: dict, tensors: dict) -> tuple[dict, dict]:
    """For each of request["calls"] ({"method", "args"}), a fresh layer (course signature),
    set_kernel, then the method with its arguments, all inside the operator recorder.
    A string argument names one of the request's tensors (a fresh copy per call)."""
    cls = worker.namespace.get(request["class"])
    device = request["device"]
    params = request["params"]
    args = (params["in_channels"], params["out_channels"], params["kernel_size"], params["stride"])
    calls, out, budget = [], {}, _worker._max_output_bytes
    for index, call in enumerate(request["calls"]):
        method = call["method"]
        if not callable(getattr(cls, method, None)):
            calls.append({"status": "missing"})
            continue
        _worker._seed_everything(request["seed"])
        values = {name: tensor.to(device).clone() for name, tensor in tensors.items()}
        arguments = [values[a] if isinstance(a, str) else a for a in call["args"]]
        recorder = _worker.OperatorRecorder(request.get("forbidden", ()), worker.filenames)
        try:
            with recorder:
                layer = cls(*args)
                layer.set_kernel(values["kernel"])
                result = getattr(layer, method)(*arguments)
                if device == "cuda":
                    torch.cuda.synchronize()
                returned = _worker._captured(result, recorder)   # a copy, read while recorded
                layer = result = None
        except BaseException as exc:
            calls.append({"status": "error", "error": worker._describe(exc), **recorder.summary()})
            continue
        entry = {"status": "returned", **recorder.summary(), "returned_type": returned["type"],
                 "returned_kind": returned["kind"]}
        data = returned.get("output")
        if "error" in returned:
            entry.update(status="error", error=worker._describe(returned["error"]))
            data = None
        if data is not None:
            size = data.numel() * data.element_size()
            if size > budget:
                entry["message"] = f"returned {data.numel()} elements, more than the grader reads"
            else:
                budget -= size
                out[f"call{index}"] = data
        calls.append(entry)
    fields = {"status": "ok", "calls": calls}
    if device == "cuda":
        fields["restart"] = _context_lost([c.get("error") for c in calls])
    return fields, out


def speed(worker, request: dict, tensors: dict) -> tuple[dict, None]:
    """Operators dispatched by one call at two input sizes, then the student's layer and
    torch.nn.functional.conv2d timed in turn (after one warm-up call each) until
    request["repeats"] pairs, or fewer once request["budget_s"] seconds have gone by since the
    request began (a slow layer is timed once, by its warm-up call, or not at all)."""
    started = _perf_counter()
    budget = request["budget_s"]
    cls = worker.namespace.get(request["class"])
    device = request["device"]
    _worker._seed_everything(request["seed"])
    on = {name: tensor.to(device) for name, tensor in tensors.items()}

    def layer_for(params, kernel):
        layer = cls(params["in_channels"], params["out_channels"], params["kernel_size"], params["stride"])
        layer.set_kernel(kernel)
        return layer

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    fields = {"status": "ok"}
    counts = []
    try:
        for name in ("count_small", "count_large"):
            layer = layer_for(request["count_params"], on["count_kernel"].clone())
            data = on[name].clone()
            recorder = _worker.OperatorRecorder(request.get("forbidden", ()), worker.filenames)
            with recorder:
                layer(data)
                sync()
            counts.append(sum(recorder.counts.values()))
        fields["operators"] = counts
    except BaseException as exc:
        fields["count_error"] = worker._describe(exc)

    params = request["time_params"]
    student, baseline = [], []
    try:
        if _perf_counter() - started > budget:
            fields["time_skipped"] = True
            raise _Skip()
        layer = layer_for(params, on["time_kernel"].clone())
        data, kernel, stride = on["time_input"].clone(), on["time_kernel"].clone(), params["stride"]
        first = _perf_counter()
        layer(data)                       # warm-up: first-call costs are not the layer's speed
        sync()
        second = _perf_counter()
        _conv2d(data, kernel, stride=stride)
        sync()
        warm_up = (second - first, _perf_counter() - second)
        repeats = min(int(request["repeats"]), MAX_REPEATS)
        while len(student) < repeats and _perf_counter() - started < budget:
            first = _perf_counter()
            layer(data)
            sync()
            second = _perf_counter()
            _conv2d(data, kernel, stride=stride)
            sync()
            third = _perf_counter()
            student.append(second - first)
            baseline.append(third - second)
        if not student:                   # out of time after the warm-up: it is the one sample
            student, baseline = [warm_up[0]], [warm_up[1]]
    except _Skip:
        pass
    except BaseException as exc:
        fields["time_error"] = worker._describe(exc)
    fields.update(student_s=student, torch_s=baseline)
    if device == "cuda":
        fields["restart"] = _context_lost([fields.get("count_error"), fields.get("time_error")])
    return fields, None


class _Skip(Exception):
    pass


def _context_lost(errors: list) -> bool:
    """An error that poisoned the CUDA context: the next request needs a new worker."""
    return any(_worker._cuda_context_lost(error) for error in errors if isinstance(error, dict))
