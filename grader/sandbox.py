"""Confinement the worker applies to itself before any submission code runs.

Each protection is tried and recorded; where the platform lacks it (macOS,
Windows, a container without namespaces) the worker still runs and the report
says which protections were active. Namespaces work with root or, where the
kernel allows unprivileged user namespaces, without (grader/namespaces.py).

The worker's view of the files: the hidden folders are covered by empty
mounts, everything else is read-only, and every folder anyone may write to
(/tmp, /var/tmp, /dev/shm, /run/lock...) is a private folder of one size-capped
tmpfs. So nothing the submission writes outlives the worker or reaches another
one, and the total it may write is bounded, however many files it makes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import stat
import sys

from . import namespaces

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added after the tables merged)
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
# Per-mount flags a read-only remount must keep (a user namespace may not clear them).
MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
               "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
# Pseudo file systems: what their files allow is the kernel's business, not a place to store.
PSEUDO_ROOTS = ("/proc", "/sys")
TEMP_FILES = 16384  # inodes of the private tmpfs: many empty files cost kernel memory too


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def confine(spec: dict) -> dict:
    """Apply what `spec` asks for; return {protection: description} of what took effect.
    With a PID namespace this process stays outside as the worker's supervisor and only the
    worker, two forks down, returns (see grader/namespaces.py)."""
    active: dict[str, str] = {}
    libc = _libc()
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    spaces = namespaces.Namespaces()
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # the supervisor too dies with its parent
        spaces = namespaces.enter(libc, allow_user=spec.get("user_namespaces", True))
        if spaces.pid:
            libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # a new user namespace cleared it
            namespaces.supervise(libc, (spec["request_fd"], spec["response_fd"]))
    # A uid that is not mapped into our user namespace cannot be switched to.
    can_drop = spec.get("uid") is not None and is_root and not spaces.user
    own_proc = False
    if spaces.mount:
        reachable, own_proc = _isolate_files(libc, spec, active, spaces.pid)
        can_drop = reachable and can_drop
    elif _blocked_ancestors(spec.get("expose_paths", [])):
        can_drop = False
    how = " (in a user namespace, without root)" if spaces.user else ""
    if spaces.network:
        active["no_network"] = "new network namespace with no interfaces up" + how
    if spaces.ipc:
        active["private_ipc"] = "System V IPC and POSIX message queues of its own, gone with the worker" + how
    if spaces.pid:
        seen = "sees no other process" if own_proc else "cannot signal other processes (/proc still lists the host's)"
        active["private_processes"] = f"a PID namespace of its own: {seen}; all it starts dies with it" + how
    _set_limits(spec.get("rlimits", {}), spec.get("rlimit_labels", {}), active)
    _first_for_oom_killer(active)
    workdir = spec.get("workdir")
    if workdir:
        os.chdir(workdir)
        active["private_workdir"] = "fresh temporary directory"
    dropped = False
    if can_drop:
        try:
            os.setgroups([])
            os.setgid(spec["gid"])
            os.setuid(spec["uid"])
            active["unprivileged_user"] = spec.get("uid_label", f"uid {spec['uid']}")
            dropped = True
        except PermissionError:  # root without CAP_SETUID/CAP_SETGID (some containers)
            pass
    if libc is not None:
        if not dropped:
            namespaces.drop_capabilities(libc)
        # Both are cleared by a change of credentials, so they come after setuid.
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
            active["no_new_privileges"] = "setuid binaries cannot raise privileges"
        if libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0) == 0:
            active["dies_with_grader"] = ("the worker and all it started are killed when the grader exits"
                                          if spaces.pid else "SIGKILL when the grader exits")
    return active


def _isolate_files(libc, spec: dict, active: dict, pid_namespace: bool) -> tuple[bool, bool]:
    """Hidden paths, a read-only view of the rest, private writable folders. Returns whether the
    unprivileged user will be able to reach Python and torch (False means: do not drop to it),
    and whether /proc is the PID namespace's own."""
    hidden = []
    for path in spec.get("hide_paths", []):
        if os.path.isdir(path) and libc.mount(b"tmpfs", path.encode(), b"tmpfs",
                                              MS_RDONLY | MS_NOSUID | MS_NODEV, b"size=4k,mode=0555") == 0:
            hidden.append(path)
    if hidden:
        active["hidden_paths"] = ", ".join(hidden)
    shared = shared_folders()  # before anything is mounted over them
    if _read_only_everything(libc):
        active["read_only_system"] = "every folder but the private ones is read-only"
    # /proc for the new PID namespace: the worker's processes only (it must be mounted from
    # inside the namespace, and after the read-only remount, which would cover it too).
    own_proc = pid_namespace and libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) == 0
    _private_temp(libc, spec, active, shared)
    return _open_paths_for_nobody(libc, spec.get("expose_paths", []), spec.get("workdir"), active), own_proc


def _mounts() -> list[tuple[str, list[str]]]:
    """(mount point, per-mount options) of every mount this process sees."""
    found = []
    try:
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                fields = line.split()
                # Octal escapes in the path: space, tab, newline, backslash.
                point = fields[4].encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")
                found.append((point, fields[5].split(",")))
    except (OSError, IndexError, UnicodeError):
        pass
    return found


@functools.lru_cache(maxsize=1)
def shared_folders() -> tuple[str, ...]:
    """Every folder anyone may write to within two levels of the root or of a mount point
    (/tmp, /var/tmp, /dev/shm, /run/lock, /dev/mqueue...), outermost ones only. Deeper ones
    need no list: they are read-only like everything else. The fork server looks once (it
    takes milliseconds) and its workers inherit the answer; one made later is read-only."""
    found: list[str] = []

    def covered(path: str) -> bool:
        return any(path == f or path.startswith(f.rstrip("/") + "/") for f in found)

    def visit(path: str, depth: int) -> None:
        if covered(path) or path.startswith(PSEUDO_ROOTS):
            return
        try:
            info = os.lstat(path)
        except OSError:
            return
        if not stat.S_ISDIR(info.st_mode):
            return
        if info.st_mode & stat.S_IWOTH:
            found.append(path)
            return
        if depth == 0:
            return
        try:
            names = sorted(os.listdir(path))
        except OSError:
            return
        for name in names:
            visit(os.path.join(path, name), depth - 1)

    for top in sorted({"/", *(point for point, _ in _mounts())}):
        visit(top, 2)
    return tuple(sorted(found))


def _read_only_everything(libc) -> bool:
    """Make every mount read-only in the worker's view (mounts made afterwards are not)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    if libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)) == 0:
        return True
    # Before Linux 5.12: one remount per mount, keeping each one's other flags.
    done = True
    for point, options in _mounts():
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for option in options:
            flags |= MOUNT_FLAGS.get(option, 0)
        done = libc.mount(None, point.encode(), None, flags, None) == 0 and done
    return done


def _private_temp(libc, spec: dict, active: dict, shared: tuple[str, ...]) -> None:
    """Give each folder in `shared` an empty private one, all of them folders of one tmpfs
    capped at temp_mb: what the submission writes there never reaches the grader, the disk or
    another worker (no squatting on the report's path, no files left behind for the next
    submission), and RLIMIT_FSIZE (per file) no longer lets many files fill the disk.
    The working directory lived in the real /tmp, so it is made again inside."""
    size_mb = int(spec.get("temp_mb", 64))
    expose = [os.path.realpath(p) for p in spec.get("expose_paths", [])]
    targets = [t for t in shared if t not in expose]
    # Python, torch or the grader may live below one (a venv or a checkout in /tmp): keep a
    # handle on each such top-level folder, cover the folder, then bind those back, with what
    # is hidden inside them still hidden.
    keep: dict[str, list[tuple[str, int]]] = {}
    for target in list(targets):
        below = sorted({os.path.join(target, os.path.relpath(p, target).split(os.sep)[0])
                        for p in expose if p.startswith(target.rstrip("/") + os.sep)})
        try:
            keep[target] = [(path, os.open(path, os.O_PATH)) for path in below]
        except (OSError, AttributeError):
            targets.remove(target)
    if not targets:
        return
    # The tmpfs is mounted on the first folder and its subfolders are bound onto every one,
    # the first last (its bind hides the tmpfs's own root).
    store = targets[0]
    options = f"size={size_mb}m,nr_inodes={TEMP_FILES},mode=0755".encode()
    covered = []
    if libc.mount(b"tmpfs", store.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        targets = []
    for index, target in reversed(list(enumerate(targets))):
        private = os.path.join(store, f".private-{index}")
        os.mkdir(private)
        os.chmod(private, 0o1777)
        if libc.mount(private.encode(), target.encode(), None, MS_BIND, None) != 0:
            continue
        kept = [os.path.basename(path) for path, _ in keep.get(target, [])]
        for path, handle in keep.pop(target, []):
            if os.path.isdir(f"/proc/self/fd/{handle}"):
                os.makedirs(path, mode=0o755, exist_ok=True)
            else:
                open(path, "a").close()
            libc.mount(f"/proc/self/fd/{handle}".encode(), path.encode(), None, MS_BIND | MS_REC, None)
            os.close(handle)
        covered.append(target + (f" (but {', '.join(kept)})" if kept else ""))
    for handles in keep.values():  # of folders left as they were: the worker must not get them
        for _, handle in handles:
            os.close(handle)
    workdir = spec.get("workdir")
    if workdir and not os.path.isdir(workdir):
        os.makedirs(workdir, mode=0o700)
        if spec.get("uid") is not None:
            try:
                os.chown(workdir, spec["uid"], spec["gid"])
            except OSError:  # the uid is not mapped in our user namespace: it will not be used
                pass
    if covered:
        active["private_temp"] = f"{', '.join(sorted(covered))}: private folders of one tmpfs, {size_mb} MB in all"


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
