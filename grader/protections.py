"""Every protection the grader can apply, and a plain word on those that were off.

The worker reports which protections took effect (sandbox.confine); the grader
itself may also reap orphans (a child subreaper, Linux only, `grade` and
`grade check` only). Where a platform lacks some (not Linux, a container without
namespaces, no root for a uid of the worker's own), grading still runs and this
says what is off.
Time limits are enforced by the grader's own process everywhere.
"""
from __future__ import annotations

from typing import Mapping

# name -> (what it does, what it needs)
NAMESPACES = "Linux, and root or unprivileged user namespaces"
WORKER_PROTECTIONS = {
    "unprivileged_user": ("student code runs under a uid of its own", "root, and a Python that `nobody` can read"),
    "no_network": ("no network for student code", NAMESPACES),
    "hidden_paths": ("the reference, configs, tests and the submission's folder are hidden", NAMESPACES),
    "read_only_system": ("student code can write nowhere but its private folders", NAMESPACES),
    "private_temp": ("private /tmp, /var/tmp, /dev/shm, /run/lock (every folder anyone may write to), "
                     "size-capped in all", NAMESPACES),
    "private_ipc": ("private System V IPC and POSIX message queues", NAMESPACES),
    "private_processes": ("student code sees no other process, and all it starts dies with it", NAMESPACES),
    "private_workdir": ("a fresh working folder", "a writable temporary folder"),
    "resource_limits": ("memory, CPU time, file size, open file and process caps", "Unix"),
    "oom_killed_first": ("student processes go first if memory runs out", "Linux"),
    "no_new_privileges": ("setuid programs cannot raise privileges", "Linux"),
    "dies_with_grader": ("student code is killed when the grader exits", "Linux"),
}
GRADER_PROTECTIONS = {
    "reaps_orphans": ("processes that left the worker's session are killed after grading",
                      "Linux and the `grade` command, not check() in a notebook"),
}


def protections_off(active: Mapping[str, str], reaps_orphans: bool) -> list[tuple[str, tuple[str, str]]]:
    """(name, (what it does, what it needs)) for each protection that was not active."""
    off = [(name, text) for name, text in WORKER_PROTECTIONS.items() if name not in active]
    if not reaps_orphans:
        off.extend(GRADER_PROTECTIONS.items())
    return off


def describe_off(active: Mapping[str, str], reaps_orphans: bool) -> str | None:
    off = protections_off(active, reaps_orphans)
    if not off:
        return None
    return "protections off here (time limits still apply): " + \
        ", ".join(f"{name} (needs {needs})" for name, (_, needs) in off)
