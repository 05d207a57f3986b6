"""Confinement the worker applies to itself before any submission code runs.

Each protection is tried and recorded; where the platform lacks it (macOS,
Windows, a container without namespaces, not running as root) the worker still
runs and the report says which protections were active.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MNT_DETACH = 0x2
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def confine(spec: dict) -> dict:
    """Apply what `spec` asks for; return {protection: description} of what took effect."""
    active: dict[str, str] = {}
    libc = _libc()
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    can_drop = spec.get("uid") is not None and is_root
    if libc is not None and is_root:
        can_drop = _isolate_namespaces(libc, spec, active) and can_drop
    _set_limits(spec.get("rlimits", {}), spec.get("rlimit_labels", {}), active)
    workdir = spec.get("workdir")
    if workdir:
        os.chdir(workdir)
        active["private_workdir"] = "fresh temporary directory"
    if can_drop:
        os.setgroups([])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
        active["unprivileged_user"] = f"uid {spec['uid']}"
    if libc is not None:
        # Both are cleared by a change of credentials, so they come after setuid.
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
            active["no_new_privileges"] = "setuid binaries cannot raise privileges"
        if libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0) == 0:
            active["dies_with_grader"] = "SIGKILL when the grader exits"
    return active


def _isolate_namespaces(libc, spec: dict, active: dict) -> bool:
    """Network and mount namespaces. Returns whether the unprivileged user will be able to
    reach Python and torch (False means: do not drop to it)."""
    if libc.unshare(CLONE_NEWNET) == 0:
        active["no_network"] = "new network namespace with no interfaces up"
    if libc.unshare(CLONE_NEWNS) != 0 or libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return not _blocked_ancestors(spec.get("expose_paths", []))
    hidden = []
    for path in spec.get("hide_paths", []):
        if os.path.isdir(path) and libc.mount(b"tmpfs", path.encode(), b"tmpfs",
                                              MS_RDONLY | MS_NOSUID | MS_NODEV, b"size=4k,mode=0555") == 0:
            hidden.append(path)
    if hidden:
        active["hidden_paths"] = ", ".join(hidden)
    return _open_paths_for_nobody(libc, spec.get("expose_paths", []), spec.get("workdir"), active)


def _blocked_ancestors(paths: list[str]) -> dict[str, list[str]]:
    """Ancestors that others cannot traverse (e.g. /root, mode 0700), with the paths below them."""
    import stat

    blocked: dict[str, list[str]] = {}
    for path in paths:
        ancestor = os.path.dirname(os.path.abspath(path))
        chain = []
        while True:
            chain.append(ancestor)
            parent = os.path.dirname(ancestor)
            if parent == ancestor:
                break
            ancestor = parent
        for ancestor in reversed(chain):  # the outermost blocked one covers the rest
            try:
                if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                    blocked.setdefault(ancestor, []).append(path)
                    break
            except OSError:
                break
    return blocked


def _open_paths_for_nobody(libc, paths: list[str], workdir: str | None, active: dict) -> bool:
    """Python may live under a directory only root can enter (pyenv in /root). In our own mount
    namespace, cover that directory with an empty tmpfs others may traverse and bind back only
    the subtrees Python needs; the rest of it stays invisible to the worker."""
    blocked = _blocked_ancestors(paths)
    if not blocked:
        return True
    if not workdir:
        return False
    for ancestor, below in blocked.items():
        stage = os.path.join(workdir, ".stage")
        os.makedirs(stage, exist_ok=True)
        if libc.mount(ancestor.encode(), stage.encode(), None, MS_BIND | MS_REC, None) != 0:
            return False
        if libc.mount(b"tmpfs", ancestor.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64k,mode=0711") != 0:
            return False
        firsts = sorted({os.path.relpath(p, ancestor).split(os.sep)[0] for p in below})
        for first in firsts:
            target = os.path.join(ancestor, first)
            source = os.path.join(stage, first)
            if os.path.isdir(source):
                os.makedirs(target, mode=0o755, exist_ok=True)
            else:
                open(target, "a").close()
            if libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None) != 0:
                return False
        libc.umount2(stage.encode(), MNT_DETACH)
        os.rmdir(stage)
        active["hidden_paths"] = ", ".join(filter(None, [active.get("hidden_paths"), f"{ancestor} (but {', '.join(firsts)})"]))
    return True


def _set_limits(rlimits: dict, labels: dict, active: dict) -> None:
    try:
        import resource
    except ImportError:  # Windows
        return
    applied = []
    for name, value in rlimits.items():
        which = getattr(resource, f"RLIMIT_{name.upper()}", None)
        if which is None:
            continue
        try:
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
            applied.append(f"{name}={labels.get(name, value)}")
        except (ValueError, OSError):
            continue
    if applied:
        active["resource_limits"] = ", ".join(applied)


def become_subreaper() -> bool:
    """Orphans of the worker's descendants get reparented to us, so we can kill them."""
    libc = _libc()
    return libc is not None and libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
