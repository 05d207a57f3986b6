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
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
# World-writable folders; the worker gets private, size-capped ones (see _private_temp).
SHARED_TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


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
    _first_for_oom_killer(active)
    workdir = spec.get("workdir")
    if workdir:
        os.chdir(workdir)
        active["private_workdir"] = "fresh temporary directory"
    if can_drop:
        try:
            os.setgroups([])
            os.setgid(spec["gid"])
            os.setuid(spec["uid"])
            active["unprivileged_user"] = spec.get("uid_label", f"uid {spec['uid']}")
        except PermissionError:  # root without CAP_SETUID/CAP_SETGID (some containers)
            pass
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
    _private_temp(libc, spec, active)
    return _open_paths_for_nobody(libc, spec.get("expose_paths", []), spec.get("workdir"), active)


def _private_temp(libc, spec: dict, active: dict) -> None:
    """Cover /tmp, /var/tmp and /dev/shm with empty, size-capped tmpfs mounts of the worker's own.
    What the submission writes there then never reaches the grader or the disk: no directory
    squatting on the report's path (which would stop the grader writing it), no files left
    behind, and no filling the disk with many files, which RLIMIT_FSIZE (per file) allows.
    The working directory lived in the real /tmp, so it is made again inside."""
    size_mb = int(spec.get("temp_mb", 64))
    expose = [os.path.realpath(p) for p in spec.get("expose_paths", [])]
    covered = []
    for folder in SHARED_TEMP_DIRS:
        real = os.path.realpath(folder)
        if real in covered or not os.path.isdir(real) or any(p == real for p in expose):
            continue
        # Python, torch or the grader may live below it (a venv or a checkout in /tmp): keep
        # a handle on each such top-level folder, cover the temp folder, then bind those
        # folders back, with what is hidden inside them still hidden.
        keep = sorted({os.path.join(real, os.path.relpath(p, real).split(os.sep)[0])
                       for p in expose if p.startswith(real + os.sep)})
        handles = []
        try:
            handles = [(path, os.open(path, os.O_PATH)) for path in keep]
        except (OSError, AttributeError):
            for _, handle in handles:
                os.close(handle)
            continue
        if libc.mount(b"tmpfs", real.encode(), b"tmpfs", MS_NOSUID | MS_NODEV,
                      f"size={size_mb}m,mode=1777".encode()) != 0:
            for _, handle in handles:
                os.close(handle)
            continue
        for path, handle in handles:
            if os.path.isdir(f"/proc/self/fd/{handle}"):
                os.makedirs(path, mode=0o755, exist_ok=True)
            else:
                open(path, "a").close()
            libc.mount(f"/proc/self/fd/{handle}".encode(), path.encode(), None, MS_BIND | MS_REC, None)
            os.close(handle)
        covered.append(real + (f" (but {', '.join(os.path.basename(k) for k in keep)})" if keep else ""))
    workdir = spec.get("workdir")
    if workdir and not os.path.isdir(workdir):
        os.makedirs(workdir, mode=0o700)
        if spec.get("uid") is not None:
            os.chown(workdir, spec["uid"], spec["gid"])
    if covered:
        active["private_temp"] = f"{', '.join(covered)}: empty tmpfs of {size_mb} MB each"


def _first_for_oom_killer(active: dict) -> None:
    """RLIMIT_AS caps each process, not all of them together, so a submission that forks can
    still exhaust the machine. Should that happen, the kernel's out-of-memory killer picks the
    submission's processes (children inherit the score), never the grader."""
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")
    except OSError:  # not Linux
        return
    active["oom_killed_first"] = "the submission's processes go first if memory runs out"


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
        # A [soft, hard] pair leaves room between the two, so that a signal (SIGXCPU) comes
        # before the SIGKILL at the hard limit.
        soft, wanted_hard = value if isinstance(value, (list, tuple)) else (value, value)
        try:
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                soft, wanted_hard = min(soft, hard), min(wanted_hard, hard)
            resource.setrlimit(which, (soft, wanted_hard))
            applied.append(f"{name}={labels.get(name, soft)}")
        except (ValueError, OSError):
            continue
    if applied:
        active["resource_limits"] = ", ".join(applied)


def become_subreaper() -> bool:
    """Orphans of the worker's descendants get reparented to us, so we can kill them."""
    libc = _libc()
    return libc is not None and libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
