"""What a worker prints: read as it comes, the last part kept, the rest dropped.

Printing is not a failure. A submission may print without end (only the time limits bound it),
and the grader neither writes it anywhere nor holds more than `keep_bytes` of it: the report's
output tails are cut from that window. A thread drains the worker's output pipe as fast as it
fills, so printing costs the worker little; `size` and `since` read what is waiting in the pipe
first, so that what the worker printed before a reply is counted when the reply is read.
"""
from __future__ import annotations

import fcntl
import os
import selectors
import threading

READ_BYTES = 1 << 16
PIPE_BYTES = 1 << 20    # a larger pipe: fewer wake-ups while a submission floods
DRAIN_BYTES = 1 << 22   # the most one catch-up reads, so a flood cannot keep the caller there


class OutputTail:
    def __init__(self, read_fd: int, keep_bytes: int):
        try:
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (AttributeError, OSError):  # not Linux, or above the system's pipe-max-size
            pass
        os.set_blocking(read_fd, False)
        self.fd = read_fd
        self.keep = max(1, keep_bytes)
        self.total = 0                    # bytes printed so far, kept or not
        self.window = bytearray()         # the last `keep` of them
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._drain, name="worker-output", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            while not self.stopping.is_set():
                if selector.select(0.1) and not self._read_waiting():
                    return  # end of file: every writer is gone

    def _read_waiting(self) -> bool:
        """Read what is waiting in the pipe (up to DRAIN_BYTES); False at end of file."""
        with self.lock:
            read = 0
            while read < DRAIN_BYTES and self.fd >= 0:
                try:
                    chunk = os.read(self.fd, READ_BYTES)
                except BlockingIOError:
                    return True
                except OSError:
                    return False
                if not chunk:
                    return False
                read += len(chunk)
                self.total += len(chunk)
                self.window += chunk
                if len(self.window) > self.keep:
                    del self.window[:len(self.window) - self.keep]
            return self.fd >= 0

    def size(self) -> int:
        self._read_waiting()
        return self.total

    def since(self, offset: int, limit: int) -> str:
        """What was printed after `offset` bytes, its last `limit` bytes at most ("..." first
        when cut)."""
        self._read_waiting()
        with self.lock:
            start = max(offset, self.total - min(limit, len(self.window)))
            if self.total <= start:
                return ""
            data = bytes(self.window[len(self.window) - (self.total - start):])
        return ("..." if start > offset else "") + data.decode("utf-8", errors="replace")

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=2)
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
