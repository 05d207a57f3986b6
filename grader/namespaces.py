"""Namespaces of the worker's own, with root or without it, and the processes that keep them.

As root the worker creates its mount, network, IPC and PID namespaces directly. As an ordinary
user (a laptop, a CI runner, a Slurm job, a Kubernetes pod) it first creates a user namespace,
where the kernel allows unprivileged ones, mapping only its own uid: there it holds the
capabilities the other namespaces need. Either way no capability is left when submission code
runs (drop_capabilities, or the change to an unprivileged uid).

A PID namespace makes everything the submission starts die together: when the namespace's first
process (its init) dies, the kernel kills every other process in it. After unshare(CLONE_NEWPID)
only the next child is that init, and the init must not run submission code (code could clear
its own parent-death signal and outlive the grader), so the worker is the init's child:

    grader, or the fork server
      └─ the process that unshared (outside the namespace): exits as the worker did
           └─ init, PID 1; SIGKILL when its parent dies: reaps orphans, exits with the worker
                └─ the worker, PID 2: runs submission code; killed by the kernel with the init

Killing the grader kills the fork server (its parent-death signal), which kills the process
outside, which kills the init, which takes the whole namespace with it.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


@dataclass(frozen=True)
class Namespaces:
    """Which namespaces the worker got; `user`: through a user namespace (no root needed)."""
    user: bool = False
    mount: bool = False
    network: bool = False
    ipc: bool = False
    pid: bool = False


def enter(libc, allow_user: bool) -> Namespaces:
    """Unshare every namespace this process may, directly or through a new user namespace.
    Must run single-threaded (a user namespace requires it): in a fresh fork or interpreter."""
    mount = _unshare_mount(libc)
    user = False
    if not mount and allow_user and _enter_user_namespace(libc):
        user, mount = True, _unshare_mount(libc)
    return Namespaces(user=user, mount=mount, network=libc.unshare(CLONE_NEWNET) == 0,
                      ipc=libc.unshare(CLONE_NEWIPC) == 0, pid=libc.unshare(CLONE_NEWPID) == 0)


def _unshare_mount(libc) -> bool:
    # Without private propagation, every mount the worker makes would show up on the host.
    return libc.unshare(CLONE_NEWNS) == 0 and libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0


def _enter_user_namespace(libc) -> bool:
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER) != 0:
        return False
    # Our own uid and gid only (all an unprivileged process may map); setgroups must be denied
    # before an unprivileged process may write its gid map.
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        try:
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
        except OSError:  # setgroups is missing before Linux 3.19; unmapped ids still confine
            continue
    return True


def supervise(libc, close_fds: tuple[int, ...]) -> None:
    """Called after unshare(CLONE_NEWPID): fork the namespace's init, which forks the worker.
    Returns in the worker only; this process and the init exit as the worker does.
    `close_fds` are the worker's request and reply pipes, which only the worker may hold (the
    grader sees the worker's death as the reply pipe's end)."""
    lifeline, lifeline_end = os.pipe()   # reads end-of-file in the init once we are gone
    status_read, status_write = os.pipe()  # the worker's wait status, from the init
    init = os.fork()
    if init == 0:
        os.close(lifeline_end)
        os.close(status_read)
        _run_init(libc, lifeline, status_write, close_fds)
        return
    os.close(lifeline)
    os.close(status_write)
    _close(close_fds)
    _, status = os.waitpid(init, 0)
    reported = os.read(status_read, 32)
    _exit_as(int(reported) if reported.isdigit() else status)


def _run_init(libc, lifeline: int, status_write: int, close_fds: tuple[int, ...]) -> None:
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if select.select([lifeline], [], [], 0)[0]:
        os._exit(1)  # our parent died before the death signal was set
    # The init of a namespace ignores signals it has no handler for; Python's SIGINT handler
    # would let the worker kill it (and so itself, which is all it could do).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    worker = os.fork()
    if worker == 0:
        os.close(lifeline)
        os.close(status_write)
        return
    _close(close_fds)
    while True:
        pid, status = os.wait()  # orphans of the namespace are ours to reap
        if pid == worker:
            os.write(status_write, str(status).encode())
            os._exit(0)  # the kernel kills whatever else is left in the namespace


def _exit_as(status: int) -> None:
    """Exit the way the worker did, so that the grader reads its signal (SIGXCPU, SIGKILL...)."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            import resource
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            signal.signal(-code, signal.SIG_DFL)
        except (ImportError, OSError, ValueError):
            pass
        os.kill(os.getpid(), -code)
        code = 128 - code
    os._exit(code)


def _close(fds: tuple[int, ...]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def drop_capabilities(libc) -> bool:
    """Leave no capability, now or after an exec: in a user namespace the worker holds them all
    (it could unmount what hides the reference), and so does root that could not change uid."""
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability, or not allowed to: capset below still applies
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: twice 32 bits, all zero
    return libc.capset(header, data) == 0
