"""Messages between the grader and its worker: a JSON header plus raw tensor bytes.

Nothing here ever unpickles: tensors cross as (dtype, shape, bytes) and are
rebuilt as plain tensors, so a student's object cannot run code in the grader.
This module imports only the standard library and torch, because the worker
imports it too.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import struct
import time

import torch

HEADER_LIMIT = 1 << 20          # a header bigger than this is a broken or hostile worker
# No graded output comes near this (a case's output is usually a few KB). The grader holds a
# message several times over while decoding it, and the worker's memory limit does not cover
# the grader: this caps what a hostile worker can make the grader allocate per message.
PAYLOAD_LIMIT = 64 << 20
LENGTHS = struct.Struct(">II")  # header length, payload length

WIRE_DTYPES = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
    "float64": torch.float64, "complex64": torch.complex64, "complex128": torch.complex128,
    "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32,
    "int64": torch.int64, "bool": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in WIRE_DTYPES.items()}


class ProtocolError(Exception):
    """The other side sent something that is not a well-formed message."""


class ChannelTimeout(Exception):
    pass


class ChannelClosed(Exception):
    pass


def tensor_to_wire(tensor: torch.Tensor) -> tuple[dict, bytes]:
    """A plain CPU copy of the tensor's data, whatever subclass or device it had."""
    plain = torch.Tensor.as_subclass(tensor, torch.Tensor).detach()
    if plain.dtype not in DTYPE_NAMES:
        raise TypeError(f"tensor dtype {plain.dtype} cannot be graded")
    plain = plain.to("cpu").contiguous()
    # The bytes straight from memory: Tensor.numpy() would need numpy, which torch does not.
    raw = ctypes.string_at(plain.data_ptr(), plain.numel() * plain.element_size()) if plain.numel() else b""
    return {"dtype": DTYPE_NAMES[plain.dtype], "shape": list(plain.shape)}, raw


def tensor_from_wire(spec: dict, raw) -> torch.Tensor:
    """A plain tensor from its spec and bytes (bytes, or a writable buffer such as a slice of
    the channel's own: one copy is made, the tensor's own)."""
    dtype = WIRE_DTYPES.get(spec.get("dtype"))
    shape = spec.get("shape")
    if dtype is None or not isinstance(shape, list) or \
            not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ProtocolError("malformed tensor spec")
    count = 1
    for n in shape:
        count *= n
    itemsize = torch.empty((), dtype=dtype).element_size()
    if count * itemsize != len(raw):
        raise ProtocolError("tensor byte count does not match its shape")
    try:
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        if isinstance(raw, bytes):
            raw = bytearray(raw)
        return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape).clone()
    except (RuntimeError, TypeError, ValueError, OverflowError) as exc:  # [0, 10**30]: empty, yet too big
        raise ProtocolError(f"malformed tensor spec: {str(exc)[:100]}") from None


def tensor_digest(tensor: torch.Tensor) -> str:
    """Identifies a tensor's exact contents, so the grader can tell whether a layer mutated it."""
    import hashlib

    spec, raw = tensor_to_wire(tensor)
    return hashlib.sha256(json.dumps(spec).encode() + raw).hexdigest()


class Channel:
    """One direction-pair of pipes carrying framed messages."""

    def __init__(self, read_fd: int, write_fd: int):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._buffer = bytearray()

    def send(self, header: dict, tensors: dict[str, torch.Tensor] | None = None,
             deadline: float | None = None) -> None:
        """A deadline bounds the write too: a request bigger than the pipe's buffer would
        otherwise block for good on a worker that stopped reading."""
        blobs = []
        if tensors:
            specs = {}
            for name, tensor in tensors.items():
                spec, raw = tensor_to_wire(tensor)
                spec["nbytes"] = len(raw)
                specs[name] = spec
                blobs.append(raw)
            header = dict(header, tensors=specs)
        encoded = json.dumps(header).encode()
        payload = b"".join(blobs)
        self._write_all(LENGTHS.pack(len(encoded), len(payload)) + encoded + payload, deadline)

    def receive(self, deadline: float | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
        """The next message. A timeout keeps what has arrived so far: the caller polls with
        short deadlines, and a message split across polls must not desynchronise the stream.
        Tensors are read straight out of the receive buffer: a message costs its size once
        for the buffer and once for the tensors, never more (a worker can send 32 MB)."""
        header_len, payload_len = LENGTHS.unpack(self._fill(LENGTHS.size, deadline))
        if header_len > HEADER_LIMIT or payload_len > PAYLOAD_LIMIT:
            raise ProtocolError(f"message too large ({header_len} + {payload_len} bytes)")
        total = LENGTHS.size + header_len + payload_len
        self._fill(total, deadline)
        view = memoryview(self._buffer)
        try:
            return self._decode(view, header_len, total)
        finally:
            view.release()
            del self._buffer[:total]

    @staticmethod
    def _decode(view: memoryview, header_len: int, total: int) -> tuple[dict, dict[str, torch.Tensor]]:
        try:
            header = json.loads(bytes(view[LENGTHS.size:LENGTHS.size + header_len]))
        except (ValueError, RecursionError):  # json raises RecursionError for deep nesting
            raise ProtocolError("header is not JSON") from None
        if not isinstance(header, dict):
            raise ProtocolError("header is not an object")
        start = LENGTHS.size + header_len
        tensors = {}
        specs = header.pop("tensors", {}) or {}
        if not isinstance(specs, dict):
            raise ProtocolError("tensors is not an object")
        offset = start
        for name, spec in specs.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("nbytes"), int) or spec["nbytes"] < 0:
                raise ProtocolError("malformed tensor spec")
            end = offset + spec["nbytes"]
            if end > total:
                raise ProtocolError("tensor bytes run past the payload")
            part = view[offset:end]
            try:
                tensors[name] = tensor_from_wire(spec, part)
            finally:
                part.release()
            offset = end
        return header, tensors

    def _write_all(self, data: bytes, deadline: float | None = None) -> None:
        view = memoryview(data)
        if deadline is not None:
            os.set_blocking(self.write_fd, False)
        while view:
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise ChannelTimeout()
                _, ready, _ = select.select([], [self.write_fd], [], wait)
                if not ready:
                    raise ChannelTimeout()
            try:
                written = os.write(self.write_fd, view)
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise ChannelClosed("the other side closed the channel") from None
            view = view[written:]

    def _fill(self, size: int, deadline: float | None) -> bytes:
        """The first `size` buffered bytes, reading until they have arrived (not consumed;
        returned as bytes only when they are few: the length prefix)."""
        while len(self._buffer) < size:
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise ChannelTimeout()
                ready, _, _ = select.select([self.read_fd], [], [], wait)
                if not ready:
                    raise ChannelTimeout()
            chunk = os.read(self.read_fd, min(size - len(self._buffer), 1 << 20))
            if not chunk:
                raise ChannelClosed("the other side closed the channel")
            self._buffer.extend(chunk)
        return bytes(self._buffer[:size]) if size <= LENGTHS.size else b""
