"""The grader's own output files: checked before grading, written atomically, failures explained.

An output the grader cannot write is the user's setup, not a bug of ours (exit 70), and it must
show up before the grading it would waste: `-o` naming a folder, or a path below a file, used to
surface only once every case had run. So the CLI checks each output first (`check_file`,
`check_folder`, `check_distinct`), and a write that still fails (the disk filled up meanwhile)
is a one-line `WriteFailed`, never a traceback.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import GraderError, OutputUnusable, UsageError, WriteFailed

# What the file system says when the path, not the disk, is the problem.
_PATH_ERRORS = {errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS, errno.ELOOP,
                errno.ENAMETOOLONG}
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "the disk quota is exceeded"}


def check_file(option: str, path: Path) -> None:
    """`path` can be written as a file: not a folder or a device, below folders that exist or
    can be made, in a folder the grader may write to. Raises OutputUnusable naming `option`."""
    path = Path(path)
    if path.is_dir():
        raise OutputUnusable(f"{option} {path}: is a folder; give the name of the file to write")
    if path.exists() and not path.is_file():
        # A rename over /dev/null (or a pipe) would replace it, not write into it.
        raise OutputUnusable(f"{option} {path}: is not a regular file (a device or a pipe); give a file")
    _check_parents(option, path)


def check_folder(option: str, path: Path) -> None:
    """`path` is a folder the grader may write in, or one it can make."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputUnusable(f"{option} {path}: is a file; give a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputUnusable(f"{option} {path}: cannot write in it (permission denied)")
        return
    _check_parents(option, path)


def _check_parents(option: str, path: Path) -> None:
    for ancestor in path.absolute().parents:
        if not (ancestor.exists() or ancestor.is_symlink()):
            continue                 # made when the output is written
        if not ancestor.is_dir():
            raise OutputUnusable(f"{option} {path}: {ancestor} is a file, not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise OutputUnusable(f"{option} {path}: cannot write in {ancestor} (permission denied)")
        return


def check_distinct(outputs: list[tuple[str, Path]], submission: Path | None) -> None:
    """No two outputs name one file, and none is the submission (a rename would replace it)."""
    seen: dict[Path, str] = {}
    graded = submission.resolve() if submission is not None else None
    for option, path in outputs:
        target = Path(path).resolve()
        if target == graded:
            raise UsageError(f"{option} {path}: is the submission itself; write the outputs elsewhere")
        if target in seen:
            raise UsageError(f"{option} {path}: also given as {seen[target]}; give each output its own file")
        seen[target] = option


def make_folder(option: str, path: Path) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _failure(option, path, exc) from None


def copy_file(source: Path, target: Path) -> None:
    """Copy a file of ours (a shard's report) into an output folder; a full disk is WriteFailed."""
    import shutil

    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        raise _failure("", target, exc) from None


def write_text_atomically(text: str, path: Path) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file,
    and whatever was at `path` before (even a forged report) is replaced. A failure leaves
    nothing behind and raises WriteFailed (disk full) or OutputUnusable (the path)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise _failure("", path, exc) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:   # exactly the text given
            stream.write(text)
            # mkstemp makes 0600 files; a report is as readable as any file the user writes.
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(stream.fileno(), 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _failure("", path, exc) from None
        raise


def _failure(option: str, path: Path, exc: OSError) -> GraderError:
    where = f"{option} {path}" if option else str(path)
    reason = (exc.strerror or str(exc)).lower()
    if exc.errno in _FULL:
        return WriteFailed(f"could not write {where}: {_FULL[exc.errno]} (free some space, then run the same "
                           "command again)")
    if exc.errno in _PATH_ERRORS:
        return OutputUnusable(f"could not write {where}: {reason}")
    return WriteFailed(f"could not write {where}: {reason}")
