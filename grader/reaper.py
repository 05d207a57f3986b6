"""Make sure nothing a submission started outlives grading.

Where the worker has a PID namespace (grader/namespaces.py), the kernel kills
everything in it when the worker goes. Everywhere else: the worker leads its own
session, so one killpg reaches the processes that stayed in it, and processes
that left it (setsid daemons, double forks) are reparented to the grader when it
is a child subreaper; `sweep_orphans` kills every child of ours that is not a
live worker.
"""
from __future__ import annotations

import os
import signal
import sys
import time

_live_workers: set[int] = set()
_is_subreaper = False


def become_subreaper() -> bool:
    global _is_subreaper
    from .sandbox import become_subreaper as prctl_subreaper

    _is_subreaper = _is_subreaper or prctl_subreaper()
    return _is_subreaper


def is_subreaper() -> bool:
    return _is_subreaper


def register_worker(pid: int) -> None:
    _live_workers.add(pid)


def kill_worker(pid: int) -> None:
    """SIGKILL the worker's whole session, then whatever escaped it."""
    _live_workers.discard(pid)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    sweep_orphans()


def sweep_orphans(rounds: int = 3, pause_s: float = 0.01) -> int:
    """Kill children of ours that are not live workers, until none appear for `rounds` scans."""
    if not _is_subreaper or not sys.platform.startswith("linux"):
        return 0
    killed = 0
    quiet = 0
    for _ in range(1000):  # a fork bomb under a process limit runs out long before this
        orphans = [pid for pid in _children() if pid not in _live_workers]
        if not orphans:
            quiet += 1
            if quiet >= rounds:
                break
            time.sleep(pause_s)
            continue
        quiet = 0
        for pid in orphans:
            for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    target()
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            killed += 1
    return killed


def _children() -> list[int]:
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as handle:
            direct = [int(pid) for pid in handle.read().split()]
    except OSError:
        direct = []
    # Children of other threads of ours (the kernel lists children per thread).
    try:
        threads = os.listdir(f"/proc/{me}/task")
    except OSError:
        threads = []
    for tid in threads:
        if tid == str(me):
            continue
        try:
            with open(f"/proc/{me}/task/{tid}/children") as handle:
                direct.extend(int(pid) for pid in handle.read().split())
        except OSError:
            continue
    return sorted(set(direct))


def count_tasks(uid: int) -> int:
    """Processes and threads owned by `uid`: RLIMIT_NPROC counts them all."""
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return total


def kill_all_workers() -> None:
    """Ctrl-C in a batch: every worker goes, now."""
    for pid in list(_live_workers):
        kill_worker(pid)


def kill_and_wait(process, timeout_s: float = 5.0) -> None:
    """Kill a worker or the fork server (and what escaped it), then reap it."""
    import subprocess

    kill_worker(process.pid)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
