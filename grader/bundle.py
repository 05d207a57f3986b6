"""`grade bundle --student -o DIR`: the students' distribution, as an installable wheel.

The wheel holds the grader package and, for each assignment (every bundled one, or those
named with --assignment), its public config (no hidden groups, a public seed), its scaffold,
its handout and its subject's modules (the parent-side code the harness needs to grade:
parameters, plans, answers from torch, likely causes), and nothing else: no `reference`
package, no tests, no fixtures, no example solution, no instructor seed. It is built here
with zipfile (a wheel is a zip with a `.dist-info` folder), byte for byte the same for the
same sources.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import zipfile
from pathlib import Path

from . import __version__
from .errors import EXIT_OK, UsageError

REQUIREMENTS = ("torch>=2.1,<3", "pyyaml>=6", "nbformat>=5.7", "ipython>=8")
GRADER_DIR = Path(__file__).resolve().parent
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Files of the grader package that travel; caches and editor leftovers do not.
GRADER_SUFFIXES = (".py", ".json")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grade bundle", description=(
        "Write the students' distribution: a wheel with the grader and the assignment's public "
        "config (no hidden groups, a public seed), scaffold and handout, without the reference."))
    parser.add_argument("--student", action="store_true",
                        help="build the student package (required: the only kind this command builds)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help="folder to write the wheel into")
    parser.add_argument("--assignment", dest="assignments", action="append", metavar="ID_OR_PATH",
                        help="an assignment to include (repeat for several; default: every bundled one)")
    parser.add_argument("--public-seed", type=int, metavar="N",
                        help="the seed students' checks use, with one assignment (default: derived one way "
                             "from each whole config)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.student:
        raise UsageError("grade bundle builds the students' package: pass --student "
                         "(the instructor's is this repository, `pip install .`)")
    from .config import bundled_assignment_ids, load_assignment
    from .public import public_seed

    assignments = [load_assignment(a) for a in (args.assignments or bundled_assignment_ids())]
    if args.public_seed is not None and len(assignments) != 1:
        raise UsageError("--public-seed sets one assignment's public seed: give exactly one --assignment")
    seeds = {}
    for assignment in assignments:
        seed = public_seed(assignment) if args.public_seed is None else args.public_seed
        if seed == assignment.seed:
            raise UsageError("--public-seed must differ from the assignment's own seed")
        seeds[assignment.id] = seed
    wheel = build_student_wheel(assignments, args.output, seeds)
    print(f"wrote {wheel}")
    for assignment in assignments:
        hidden = [g.name for g in assignment.groups if g.hidden]
        print(f"  {assignment.id}: public cases only, {len(assignment.groups) - len(hidden)} groups"
              + (f" (left out, hidden: {', '.join(hidden)})" if hidden else "")
              + f"; public seed {seeds[assignment.id]} (the instructor's seed is not in the package)")
    print("  no reference package, no fixtures, no example solution")
    print(f"  students: pip install {wheel.name} && grade check their_notebook.ipynb")
    return EXIT_OK


def dist_name(assignments) -> str:
    """`<id>_grader_student` for one assignment, `grader_student` for a course's several."""
    if len(assignments) == 1:
        return f"{assignments[0].id}_grader_student".replace("-", "_")
    return "grader_student"


def student_files(assignments, seeds: dict[str, int]) -> dict[str, bytes]:
    """Archive path -> contents of everything the student package installs."""
    from .public import public_config_text

    files: dict[str, bytes] = {}
    for path in sorted(GRADER_DIR.rglob("*")):
        relative = path.relative_to(GRADER_DIR)
        if path.is_file() and path.suffix in GRADER_SUFFIXES and "__pycache__" not in relative.parts \
                and not path.name.startswith("."):
            files[f"grader/{relative.as_posix()}"] = path.read_bytes()
    files["assignments/__init__.py"] = b'"""Assignments bundled with the grader (public configs)."""\n'
    for assignment in assignments:
        folder = assignment.path.parent
        prefix = f"assignments/{folder.name}"
        files[f"{prefix}/__init__.py"] = b""
        files[f"{prefix}/assignment.yaml"] = public_config_text(assignment, seeds[assignment.id]).encode()
        files[f"{prefix}/{assignment.scaffold_name}"] = (folder / assignment.scaffold_name).read_bytes()
        for module in assignment.subject_files:
            files[f"{prefix}/{module.name}"] = module.read_bytes()
        handout = folder / "handout.ipynb"
        if handout.is_file():
            files[f"{prefix}/handout.ipynb"] = handout.read_bytes()
    return files


def build_student_wheel(assignments, out_dir: Path, seeds: dict[str, int]) -> Path:
    name, version = dist_name(assignments), __version__
    info = f"{name}-{version}.dist-info"
    files = student_files(assignments, seeds)
    for assignment in assignments:
        _check_public(assignment, files, f"assignments/{assignment.path.parent.name}")
    files[f"{info}/METADATA"] = _metadata(assignments, name, version).encode()
    files[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: grader.bundle ({version})\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n").encode()
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\ngrade = grader.cli:main\n"
    files[f"{info}/top_level.txt"] = b"assignments\ngrader\n"
    record = [f"{path},sha256={_digest(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    temporary = wheel.with_name(wheel.name + ".part")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():  # dist-info last, RECORD at the very end
            entry = zipfile.ZipInfo(path, date_time=ZIP_DATE)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    temporary.replace(wheel)
    return wheel


def _check_public(assignment, files: dict[str, bytes], prefix: str) -> None:
    """The written config must load (beside the files that travel with it, nothing else),
    hold no hidden group and not the instructor's seed."""
    import tempfile

    from .config import load_assignment

    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging) / Path(prefix).name
        folder.mkdir()
        for path, data in files.items():
            if path.startswith(prefix + "/"):
                (folder / path[len(prefix) + 1:]).write_bytes(data)
        public = load_assignment(str(folder / "assignment.yaml"))
    if any(g.hidden for g in public.groups) or public.seed == assignment.seed:
        raise AssertionError("the student config still holds hidden groups or the instructor's seed")


def _metadata(assignments, name: str, version: str) -> str:
    ids = ", ".join(a.id for a in assignments)
    lines = ["Metadata-Version: 2.1", f"Name: {name.replace('_', '-')}",
             f"Version: {version}",
             f"Summary: Self-check for {ids} (public cases only)",
             "Requires-Python: >=3.10"]
    lines += [f"Requires-Dist: {requirement}" for requirement in REQUIREMENTS]
    return "\n".join(lines) + "\n"


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
