"""Which files are submissions, and which of them the grader refuses to read.

The instructor names files, folders or patterns; what is inside a submissions folder is the
students' (an unpacked upload keeps its symbolic links, its modes and its hard links). Read
blindly, as root, that lets a student's `hw.py -> /course/solution.py` be graded as their own
work, and a link to a root-only file be quoted in their report. So:

- the tree rule: a file whose real path (every link followed) is outside the real path of the
  folder it was found in is refused: the folder given, the fixed part of a pattern
  (`subs/*/*.ipynb` -> `subs`), the common folder of the files given by name. A link to a folder
  outside is not followed at all. Links that stay inside are followed.
- the privilege rule (a batch run as root): the worker's user (a uid that owns nothing, in
  nobody's group) must be able to read the file, and to enter every folder between the
  submissions folder and the file; the grader does not read with more privilege than that.
  The submissions folder itself and what is above it are the instructor's choice, not checked.
- the same file reached by two paths (named twice, a link inside the folder, a hard link) is
  graded once, under the path that goes through no link.

A refused file gets a report that says why (pipeline.refused_report): a submission is a file
and every submission has a report, so the gradebook shows the 0 and the student sees the
reason. A linked folder is not one submission: it is a line in the batch's output and summary.
"""
from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

SUFFIXES = (".ipynb", ".py")


@dataclass(frozen=True)
class Found:
    path: Path                   # as found or given: what reports, ids and messages name
    refused: str | None = None   # why the grader does not read it, or None


@dataclass(frozen=True)
class Collected:
    files: tuple[Found, ...]                      # every submission, refused ones too, by path
    folder_links: tuple[Found, ...]               # links to folders outside: not followed
    duplicates: tuple[tuple[Path, Path], ...]     # (path not graded, the path graded: the same file)


def collect(raw_paths: list[str], as_root: bool | None = None) -> Collected:
    """The submissions `grade batch` was given: files, folders (searched recursively, hidden
    files and folders skipped) and glob patterns. `as_root` (default: whether the grader runs
    as root) turns the privilege rule on."""
    if as_root is None:
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    roots: dict[Path, Path] = {}           # each file found -> the folder it was found in
    named: list[Path] = []
    links: list[Found] = []
    for raw in raw_paths:
        path = Path(raw)
        if glob.has_magic(raw):
            matches = [Path(p) for p in glob.glob(raw, recursive=True)]
            if not matches:
                raise UsageError(f"no submissions match {raw!r}")
            root = _fixed_part(path)
            for match in sorted(matches):
                if match.suffix in SUFFIXES and match.is_file():
                    roots.setdefault(match, root)
        elif path.is_dir():
            for found in _walk(path, links):
                roots.setdefault(found, path)
        elif path.is_file():
            named.append(path)
        else:
            raise UsageError(f"{raw!r} is not a file, a folder or a pattern that matches")
    if named:
        common = Path(os.path.commonpath([os.path.abspath(p.parent) for p in named]))
        for path in named:
            roots.setdefault(path, common)
    files = [Found(path, refusal(path, root, as_root)) for path, root in sorted(roots.items(),
                                                                               key=lambda e: e[0].as_posix())]
    kept, duplicates = _once_each(files)
    return Collected(files=tuple(kept), folder_links=tuple(links), duplicates=tuple(duplicates))


def single(path: Path) -> Found:
    """The one submission `grade` was given. The tree rule holds (a link out of the file's own
    folder is refused: in Gradescope the folder is the student's upload), the privilege rule
    does not: the instructor named this file, and reading what they can read is what they asked."""
    if path.is_dir():
        raise UsageError(f"submission {str(path)!r} is a folder: give the notebook or module in it "
                         f"(--find-in {path} grades the one it holds, grade batch grades each)")
    if not (path.is_file() or path.is_symlink()):
        if glob.has_magic(str(path)):
            raise UsageError(f"submission {str(path)!r} matches no file")
        raise UsageError(f"submission {str(path)!r} not found")
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"submission {path.name!r}: expected a .ipynb notebook or a .py module")
    return Found(path, refusal(path, Path(os.path.abspath(path)).parent, as_root=False))


def find_one(folder: Path) -> Found:
    """`grade --find-in FOLDER`: the one notebook in the folder and below (else the one module),
    whatever its name; none, or several, is a usage error that says what was found."""
    if not folder.is_dir():
        raise UsageError(f"--find-in {str(folder)!r}: not a folder")
    files = collect([str(folder)], as_root=False).files
    for suffix, kind in ((".ipynb", "notebook"), (".py", "module")):
        chosen = [f for f in files if f.path.suffix == suffix]
        if len(chosen) == 1:
            return chosen[0]
        if chosen:
            names = ", ".join(str(f.path.relative_to(folder)) for f in chosen[:5])
            raise UsageError(f"{len(chosen)} {kind}s in {folder} ({names}{', ...' if len(chosen) > 5 else ''}): "
                             f"submit exactly one")
    raise UsageError(f"no notebook or module in {folder} (nor in its folders but hidden ones): submit a .ipynb "
                     "notebook or a .py module")


def refusal(path: Path, root: Path, as_root: bool) -> str | None:
    """Why `path`, found in the folder `root`, is not to be read, or None."""
    real, real_root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if not _within(real, real_root):
        how = "is a link" if path.is_symlink() else "goes through a linked folder"
        return f"{path} {how} to {real}, outside the submissions folder {root}: not the student's own file"
    if as_root:
        blocked = _not_for_the_worker(real, real_root)
        if blocked:
            return (f"the grader runs as root and the worker's user could not read {blocked}: not read with "
                    "more privilege than the worker has (make it readable by others to grade it)")
    return None


def _walk(folder: Path, links: list[Found]):
    for here, folders, names in os.walk(folder):    # never follows a link to a folder
        base = Path(here)
        for name in list(folders):
            child = base / name
            if name.startswith("."):
                folders.remove(name)
            elif child.is_symlink() and not _within(Path(os.path.realpath(child)), Path(os.path.realpath(folder))):
                links.append(Found(child, f"{child} is a link to the folder {os.path.realpath(child)}, outside the "
                                          f"submissions folder {folder}: nothing in it was read"))
        for name in names:
            path = base / name
            if not name.startswith(".") and path.suffix in SUFFIXES and path.is_file():
                yield path


def _fixed_part(pattern: Path) -> Path:
    """The folders of a pattern before its first wildcard: what the pattern cannot leave."""
    fixed = []
    for part in pattern.parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _not_for_the_worker(real: Path, real_root: Path) -> str | None:
    """The first folder the worker's user could not enter, or the file it could not read."""
    group = _nobody_gid()

    def allowed(info: os.stat_result, other: int, in_group: int) -> bool:
        return bool(info.st_mode & other) or (group is not None and info.st_gid == group
                                               and bool(info.st_mode & in_group))

    folder = real_root
    for part in real.relative_to(real_root).parts[:-1]:
        folder = folder / part
        info = os.stat(folder)
        if not allowed(info, stat.S_IXOTH, stat.S_IXGRP):
            return f"{folder} (mode {stat.S_IMODE(info.st_mode):04o}: others may not enter it)"
    info = os.stat(real)
    if not allowed(info, stat.S_IROTH, stat.S_IRGRP):
        return f"{real} (mode {stat.S_IMODE(info.st_mode):04o}: others may not read it)"
    return None


def _nobody_gid() -> int | None:
    try:
        import pwd
        return pwd.getpwnam("nobody").pw_gid
    except (ImportError, KeyError):
        return None


def _once_each(files: list[Found]) -> tuple[list[Found], list[tuple[Path, Path]]]:
    """Files that are the same file (device and inode) kept once: the one whose path goes
    through no link (and has no `..`), else the first by path. Refused files are each kept (each
    gets its report)."""
    groups: dict[tuple[int, int], list[Found]] = {}
    for found in files:
        if found.refused is None:
            info = os.stat(found.path)
            groups.setdefault((info.st_dev, info.st_ino), []).append(found)
    dropped: dict[Path, Path] = {}
    for same in groups.values():
        keep = min(same, key=lambda f: (os.path.realpath(f.path) != os.path.abspath(f.path),
                                        os.path.normpath(f.path) != str(f.path), f.path.as_posix()))
        dropped.update((f.path, keep.path) for f in same if f is not keep)
    return [f for f in files if f.path not in dropped], sorted(dropped.items(), key=lambda e: e[0].as_posix())
