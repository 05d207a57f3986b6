"""A warm, clean starting point for workers.

Starting Python and importing torch costs about a second; a batch of 500
submissions, and every restart after a timeout, would pay it again. The fork
server is a process that has imported torch and the worker code but never runs
submission code: each worker is a fresh fork of it, so no submission can affect
another, and a worker starts in milliseconds. It never touches CUDA (a CUDA
context does not survive fork); workers initialise CUDA themselves.

The grader talks to it over a Unix socket: a JSON line per request, with the
worker's pipe ends passed as file descriptors (SCM_RIGHTS).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
             f"sys.path.insert(0, {str(PACKAGE_ROOT)!r}); "
             "from grader.{module} import {function}; {function}(sys.argv[1])")


def bootstrap(module: str, function: str) -> str:
    """Python code that runs grader.<module>.<function>(argv[1]) with a clean sys.path."""
    return BOOTSTRAP.format(module=module, function=function)


def worker_environment(workdir: str) -> dict:
    """The worker's whole environment: nothing of the grader's (CI tokens stay out)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": workdir, "TMPDIR": workdir,
           "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "SYSTEMROOT", "VIRTUAL_ENV"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def available() -> bool:
    return (hasattr(os, "fork") and hasattr(socket, "send_fds") and sys.platform.startswith("linux")
            and os.environ.get("GRADER_FORKSERVER", "1") != "0")


class ForkServerError(Exception):
    pass


class ForkedProcess:
    """What the runner needs of a worker process, like subprocess.Popen's pid/wait."""

    def __init__(self, server: "ForkServer", pid: int):
        self.server = server
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.status(self.pid, 60.0 if timeout is None else timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
        return self.returncode


class ForkServer:
    def __init__(self, startup_s: float = 120.0):
        self.startup_s = startup_s
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.ready = False

    def start(self) -> None:
        from . import reaper

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.process = subprocess.Popen(
            [sys.executable, "-c", bootstrap("forkserver", "serve_forever"), str(theirs.fileno())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=worker_environment("/"), cwd="/", start_new_session=True,
            pass_fds=(theirs.fileno(),), close_fds=True)
        theirs.close()
        reaper.register_worker(self.process.pid)  # a sweep for orphans must spare it
        self.sock = ours

    def _ensure_ready(self) -> None:
        if self.ready:
            return
        if self.process is None:
            self.start()
        reply = self._reply(time.monotonic() + self.startup_s)
        if reply.get("event") != "ready":
            raise ForkServerError("the fork server did not start")
        self.ready = True

    def spawn(self, spec: dict, env: dict, cwd: str, fds: tuple[int, int, int]) -> ForkedProcess:
        """A new worker: fds are its request-read, response-write and output ends."""
        with self.lock:
            self._ensure_ready()
            message = json.dumps({"op": "spawn", "spec": spec, "env": env, "cwd": cwd}).encode() + b"\n"
            socket.send_fds(self.sock, [message], list(fds))
            reply = self._reply(time.monotonic() + 30)
        if not isinstance(reply.get("pid"), int):
            raise ForkServerError(f"the fork server could not start a worker: {reply.get('error')}")
        return ForkedProcess(self, reply["pid"])

    def status(self, pid: int, wait_s: float) -> int | None:
        """The worker's exit status as Popen.returncode would give it, or None if still running."""
        with self.lock:
            self.sock.sendall(json.dumps({"op": "status", "pid": pid, "wait_s": wait_s}).encode() + b"\n")
            reply = self._reply(time.monotonic() + wait_s + 10)
        return reply.get("returncode")

    def _reply(self, deadline: float) -> dict:
        while b"\n" not in self.buffer:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, OSError):
                raise ForkServerError("the fork server stopped answering") from None
            if not chunk:
                raise ForkServerError("the fork server exited")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        from . import reaper

        if self.process is not None:
            reaper.kill_and_wait(self.process)
            self.process = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.ready = False


_server: ForkServer | None = None
_server_lock = threading.Lock()


def prestart(startup_s: float = 120.0) -> None:
    """Start the fork server now, so its torch import overlaps with the grader's own."""
    global _server
    if not available():
        return
    with _server_lock:
        if _server is None:
            _server = ForkServer(startup_s)
            try:
                _server.start()
            except OSError:
                _server = None


def get() -> ForkServer | None:
    prestart()
    return _server


def discard(server: ForkServer) -> None:
    """Forget a fork server that failed; the next get() starts a fresh one."""
    global _server
    with _server_lock:
        if _server is server:
            _server = None
    server.close()


def shutdown() -> None:
    global _server
    with _server_lock:
        if _server is not None:
            _server.close()
            _server = None


# The server side: runs in its own process, never runs submission code itself.

def serve_forever(fd: str) -> None:
    from grader import sandbox

    libc = sandbox._libc()
    if libc is not None:
        libc.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    sock = socket.socket(fileno=int(fd))
    import torch
    torch.set_num_threads(1)
    import grader.protocol  # noqa: F401  (imported once here, inherited by every worker)
    import grader.worker  # noqa: F401
    from torch.utils._python_dispatch import TorchDispatchMode  # noqa: F401
    sandbox.shared_folders()  # looked for once here, inherited by every worker
    try:
        import numpy  # noqa: F401
    except ImportError:
        pass
    statuses: dict[int, int] = {}

    def reap(*_):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            statuses[pid] = os.waitstatus_to_exitcode(status)

    signal.signal(signal.SIGCHLD, reap)
    sock.sendall(b'{"event": "ready"}\n')
    buffer = b""
    while True:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 8)
        if not data:
            os._exit(0)
        buffer += data
        while b"\n" in buffer:
            line, _, buffer = buffer.partition(b"\n")
            request = json.loads(line)
            if request.get("op") == "spawn":
                reply = _fork_worker(request, fds, sock)
                fds = []
            elif request.get("op") == "status":
                reply = {"returncode": _wait_for(request["pid"], request.get("wait_s", 0), statuses, reap)}
            else:
                os._exit(0)
            sock.sendall(json.dumps(reply).encode() + b"\n")


def _wait_for(pid: int, wait_s: float, statuses: dict, reap) -> int | None:
    deadline = time.monotonic() + wait_s
    while True:
        reap()
        if pid in statuses:
            return statuses.pop(pid)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def _fork_worker(request: dict, fds: list[int], sock: socket.socket) -> dict:
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return {"error": f"expected 3 file descriptors, got {len(fds)}"}
    request_fd, response_fd, output_fd = fds
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sock.close()
            os.setsid()
            os.dup2(output_fd, 1)
            os.dup2(output_fd, 2)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            keep = {0, 1, 2, request_fd, response_fd}
            for entry in os.listdir("/proc/self/fd"):
                if int(entry) not in keep:
                    try:
                        os.close(int(entry))
                    except OSError:
                        pass
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            spec = dict(request["spec"], request_fd=request_fd, response_fd=response_fd)
            from grader.worker import serve
            serve(spec)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(1)
    for fd in fds:
        os.close(fd)
    return {"pid": pid}
