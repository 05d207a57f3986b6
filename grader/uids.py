"""Worker uids that no other grader on this host hands out, and no leftover process holds.

A grader running as root gives each live worker a uid of its own, far above real accounts (with
one shared uid, two workers could signal each other and would share one process budget). The
uids come in blocks: a grader process claims a block by holding an flock on its lock file, in a
folder only root may write to, for as long as it runs. So graders running at once (shards on one
node) never hand out the same uid, and a uid whose block no live grader holds belongs to no live
worker: whatever still runs under it was left by a grader that was killed (SIGKILL, the OOM
killer, a cancelled CI job) and could signal the next worker given that uid. Such processes are
killed when a block is claimed, before any worker gets a uid of it.
"""
from __future__ import annotations

import fcntl
import os
import signal
import stat
import threading
from pathlib import Path

BASE = 2_100_000_000
BLOCK = 256                  # uids per block: more than the live workers of one grader
BLOCKS = 4096                # BASE + BLOCKS * BLOCK stays below 2**32 - 1
LOCK_FOLDER = Path("/run/grader-uids")


class UidPool:
    """The uids of the blocks this grader holds; a worker's uid goes back when it is killed."""

    def __init__(self, folder: Path = LOCK_FOLDER):
        self.folder = folder
        self.lock = threading.Lock()
        self.blocks: dict[int, int | None] = {}   # block -> descriptor holding its lock
        self.in_use: set[int] = set()

    def acquire(self) -> int:
        with self.lock:
            for block in self.blocks:
                for uid in range(BASE + block * BLOCK, BASE + (block + 1) * BLOCK):
                    if uid not in self.in_use:
                        self.in_use.add(uid)
                        return uid
            uid = BASE + self._claim() * BLOCK
            self.in_use.add(uid)
            return uid

    def release(self, uid: int | None) -> None:
        with self.lock:
            self.in_use.discard(uid)

    def _claim(self) -> int:
        folder = _lock_folder(self.folder)
        if folder is None:
            # No folder only root may write to (a read-only /run): a block by process id, which
            # concurrent graders are unlikely to share, and no sweep (no way to tell who is live).
            block = next(b % BLOCKS for b in range(os.getpid(), os.getpid() + BLOCKS) if b % BLOCKS not in self.blocks)
            self.blocks[block] = None
            return block
        for block in range(BLOCKS):
            if block in self.blocks:
                continue
            fd = _try_lock(folder, block)
            if fd is None:
                continue
            self.blocks[block] = fd
            sweep_stale(folder, live=set(self.blocks) - {block}, claimed=block)
            return block
        raise RuntimeError(f"all {BLOCKS} blocks of worker uids are held by running graders")


def _lock_folder(folder: Path) -> Path | None:
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        return None
    return folder


def _try_lock(folder: Path, block: int) -> int | None:
    """A descriptor holding block's lock, or None when a live grader holds it."""
    try:
        fd = os.open(folder / f"{block}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def sweep_stale(folder: Path, live: set[int], claimed: int) -> set[int]:
    """Kill every process running under a worker uid of a block that no live grader holds
    (`live`: this grader's other blocks; `claimed`: the block just claimed, not yet used).
    Returns the uids swept."""
    swept = set()
    for block, uids in sorted(_running_worker_uids().items()):
        if block in live:
            continue
        fd = None if block == claimed else _try_lock(folder, block)
        if block != claimed and fd is None:
            continue  # another grader's live workers
        for uid in sorted(uids):
            _kill_everything_of(uid)
            swept.add(uid)
        if fd is not None:
            os.close(fd)
    return swept


def _running_worker_uids() -> dict[int, set[int]]:
    """Block -> the uids of it that some process runs under (real, effective, saved or fs)."""
    found: dict[int, set[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                line = next(line for line in handle if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        for uid in {int(value) for value in line.split()[1:]}:
            if BASE <= uid < BASE + BLOCKS * BLOCK:
                found.setdefault((uid - BASE) // BLOCK, set()).add(uid)
    return found


def _kill_everything_of(uid: int) -> None:
    """SIGKILL every process of `uid`, in one kill(-1) made as that uid: the kernel does it in
    one pass, so a process that forks all the time cannot slip a child past it."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)  # every process we may signal but ourselves
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
