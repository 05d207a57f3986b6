"""The operator recorder: which torch operators the student's code reached, and from which line.

A dispatch mode sees the operator itself (aten.convolution), whatever Python name reached it.
It runs in the worker, next to submission code, so everything it relies on is bound here, when
the worker imports this module before any submission code runs: a submission that replaces
collections.Counter, traceback.extract_stack, sys._getframe, builtins or torch's own Python
helpers (_push_mode, OpOverload attributes) afterwards changes nothing it uses. Three rules keep
the record honest where binding is not enough:

- what runs is what was recorded: the operator's name is read from its schema, and the operator
  executed is the real one looked up by that name, so an operator object that lies about its
  name computes what it claimed to be;
- an operator the dispatcher did not know when this module was imported (registered by the
  submission, e.g. with torch.library) and a tensor subclass with its own __torch_dispatch__
  (whose code runs while the mode is paused) are recorded as unverifiable;
- the dispatch stack and torch's operator classes are checked: a mode already on the stack when
  recording starts, a recorder that was popped or covered by another mode, and patched operator
  classes are recorded as unverifiable.

Objects that exist when recording starts are frozen out of the garbage collector (gc.freeze), so
the collection at the end only finalizes what the student's code made, and gc.get_objects() no
longer lists the worker's own objects while the student's code runs.

Module names here stay generic: which operators are forbidden is the caller's data.
"""
from __future__ import annotations

import gc
import linecache
import signal
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_getframe = sys._getframe
_settrace, _setprofile = sys.settrace, sys.setprofile
_type, _len, _sorted, _frozenset, _isinstance, _str = type, len, sorted, frozenset, isinstance, str
_tuple, _id, _RuntimeError = tuple, id, RuntimeError
_object_getattribute = object.__getattribute__
_gc_collect, _gc_enable, _gc_disable, _gc_freeze = gc.collect, gc.enable, gc.disable, gc.freeze
_setitimer = signal.setitimer
_TIMERS = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)
_source_lines = linecache.cache          # the dict itself: the worker fills it with the student's cells
_FunctionSchema = torch._C.FunctionSchema
_schema_name = torch._C.FunctionSchema.__dict__["name"].fget
_schema_overload = torch._C.FunctionSchema.__dict__["overload_name"].fget
_get_overload = torch._C._get_operation_overload
_push = torch._C._push_on_torch_dispatch_stack
_pop = torch._C._pop_torch_dispatch_stack
_stack_len = torch._C._len_torch_dispatch_stack
_stack_at = torch._C._get_dispatch_stack_at
_OPERATOR_TYPES = _frozenset({torch._ops.OpOverload, torch._ops.TorchBindOpOverload})
_KNOWN = _frozenset(name.split(".", 1)[0] for name in torch._C._dispatch_get_all_op_names())


def _class_state(classes) -> tuple:
    return _tuple((cls, _tuple((key, _id(value)) for key, value in cls.__dict__.items())) for cls in classes)


_WATCHED_CLASSES = (torch._ops.OpOverload, torch._ops.TorchBindOpOverload, torch._ops.OpOverloadPacket,
                    _FunctionSchema)
_CLASSES_AT_START = _class_state(_WATCHED_CLASSES)
_resolved: dict = {}                     # (qualified name, overload) -> the C++ operator

MAX_OPERATORS = 200
# What the recorder reports in place of an operator name when it cannot vouch for the record.
UNVERIFIED_STACK = "<the dispatch stack was changed while recording>"
UNVERIFIED_CLASSES = "<torch's operator classes were patched>"
UNVERIFIED_SUBCLASS = "<a tensor subclass with its own __torch_dispatch__>"


class Recorder(TorchDispatchMode):
    """Use as `with recorder:` around the student's code, and drop every reference to the
    student's objects before the block ends (leaving it settles: see settle()).

    counts: operator -> times dispatched; hits: operator -> the student's line, for forbidden
    operators and for what the recorder could not verify (an operator registered after start,
    or one of the UNVERIFIED_* markers)."""

    @classmethod
    def _should_skip_dynamo(cls):
        # Otherwise torch wraps __torch_dispatch__ so that its first call imports
        # torch._dynamo: 1.3 s per worker for nothing we use.
        return False

    def __init__(self, forbidden, filenames):
        # TorchDispatchMode.__init__ only keeps flags for torch's Python helpers, which this
        # mode does not use (it pushes itself with the C function bound above).
        self.forbidden = _frozenset(forbidden)
        self.filenames = _frozenset(filenames)
        self.counts: dict = {}
        self.hits: dict = {}
        self.paused = False

    def __enter__(self):
        # Objects from before this point are never collected during recording: the collection
        # in settle() stays cheap, and nothing older is finalized later by surprise.
        _gc_freeze()
        _gc_enable()
        if _stack_len() != 0:
            # A mode left on the stack by submission code would sit under this one: the operators
            # this one passes on would reach it, and what it runs would not be recorded.
            self._hit(UNVERIFIED_STACK)
        _push(self)
        return self

    def __exit__(self, exc_type, exc, tb):
        self.settle()                       # with this mode still on the stack
        depth = _stack_len()
        while depth > 0:                    # modes the student left pushed go too, then this one
            depth -= 1
            if _pop(None) is self:
                break
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if _type(func) not in _OPERATOR_TYPES:
            raise _RuntimeError("the operator recorder was handed something that is not a torch operator")
        schema = _object_getattribute(func, "_schema")
        if _type(schema) is not _FunctionSchema:
            raise _RuntimeError("the operator recorder was handed an operator without a schema")
        qualified, overload = _schema_name(schema), _schema_overload(schema)
        key = (qualified, overload)
        operator = _resolved.get(key)
        if operator is None:
            found = _get_overload(qualified, overload)
            if found is None:
                raise _RuntimeError(f"the operator recorder cannot find {qualified}.{overload}")
            operator = _resolved[key] = found[0]
        namespace, _, name = qualified.partition("::")
        if namespace != "aten":
            name = qualified
        if not self.paused:
            counts = self.counts
            counts[name] = counts.get(name, 0) + 1
        if name in self.forbidden or qualified not in _KNOWN:
            self._hit(name)
        if types:
            self._hit(UNVERIFIED_SUBCLASS)
        return operator(*args, **(kwargs or {}))

    def _hit(self, name: str) -> None:
        if name not in self.hits:
            self.hits[name] = self._student_line()
            self.counts.setdefault(name, 0)

    def _student_line(self):
        frame = _getframe(1)
        while frame is not None:
            code = frame.f_code
            if code.co_filename in self.filenames:
                return f"{code.co_filename}, line {frame.f_lineno}: {_line_text(code.co_filename, frame.f_lineno)}"
            frame = frame.f_back
        return None

    def _check_stack(self) -> None:
        depth = _stack_len()
        if depth == 0 or _stack_at(depth - 1) is not self:
            self._hit(UNVERIFIED_STACK)
        if _class_state(_WATCHED_CLASSES) != _CLASSES_AT_START:
            self._hit(UNVERIFIED_CLASSES)

    def settle(self) -> None:
        """Run when the `with` ends, before this mode leaves the stack: stop every way the
        student's code could run after recording (trace and profile hooks, interval timers),
        finalize the objects it dropped while the recorder still sees them, and collect nothing
        more until the next recording."""
        _settrace(None)
        _setprofile(None)
        for timer in _TIMERS:
            _setitimer(timer, 0)
        _gc_collect()
        _gc_disable()
        self._check_stack()

    def summary(self) -> dict:
        """Forbidden and unverified operators first, then the most dispatched: the list is cut at
        MAX_OPERATORS, and a hit must never be what the cut drops."""
        hits = self.hits
        ranked = _sorted(self.counts.items(), key=_rank_key(hits))
        return {"operators": {name: count for name, count in ranked[:MAX_OPERATORS]},
                "forbidden_hits": {name: hits[name] for name in hits}}


def _rank_key(hits):
    def key(item):
        return (item[0] not in hits, -item[1], item[0])
    return key


def _line_text(filename: str, line: int) -> str:
    entry = _source_lines.get(filename)
    if _type(entry) is not _tuple or _len(entry) < 3 or _type(entry[2]) is not list:
        return ""
    lines = entry[2]
    if not 0 < line <= _len(lines) or _type(lines[line - 1]) is not _str:
        return ""
    return lines[line - 1].strip()[:120]
