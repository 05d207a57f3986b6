"""`grade bundle --student -o DIR`: the students' distribution, as an installable wheel.

The wheel holds the grader package, the assignment's public config (no hidden groups,
a public seed), its scaffold and handout, and nothing else: no `reference` package, no
tests, no example solution, no instructor seed. It is built here with zipfile (a wheel
is a zip with a `.dist-info` folder), byte for byte the same for the same sources.
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
    parser.add_argument("--assignment", default="conv2d", help="bundled assignment id or path to its YAML")
    parser.add_argument("--public-seed", type=int, metavar="N",
                        help="the seed students' checks use (default: derived one way from the whole config)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.student:
        raise UsageError("grade bundle builds the students' package: pass --student "
                         "(the instructor's is this repository, `pip install .`)")
    from .config import load_assignment
    from .public import public_seed

    assignment = load_assignment(args.assignment)
    seed = public_seed(assignment) if args.public_seed is None else args.public_seed
    if seed == assignment.seed:
        raise UsageError("--public-seed must differ from the assignment's own seed")
    wheel = build_student_wheel(assignment, args.output, seed)
    hidden = [g.name for g in assignment.groups if g.hidden]
    print(f"wrote {wheel}")
    print(f"  public cases only: {len(assignment.groups) - len(hidden)} groups"
          + (f" (left out, hidden: {', '.join(hidden)})" if hidden else ""))
    print(f"  public seed {seed} (the instructor's seed is not in the package); no reference package")
    print(f"  students: pip install {wheel.name} && grade check their_notebook.ipynb")
    return EXIT_OK


def dist_name(assignment) -> str:
    return f"{assignment.id}_grader_student".replace("-", "_")


def student_files(assignment, seed: int) -> dict[str, bytes]:
    """Archive path -> contents of everything the student package installs."""
    from .public import public_config_text

    files: dict[str, bytes] = {}
    for path in sorted(GRADER_DIR.rglob("*")):
        relative = path.relative_to(GRADER_DIR)
        if path.is_file() and path.suffix in GRADER_SUFFIXES and "__pycache__" not in relative.parts \
                and not path.name.startswith("."):
            files[f"grader/{relative.as_posix()}"] = path.read_bytes()
    folder = assignment.path.parent
    prefix = f"assignments/{folder.name}"
    files["assignments/__init__.py"] = b'"""Assignments bundled with the grader (public configs)."""\n'
    files[f"{prefix}/__init__.py"] = b""
    files[f"{prefix}/assignment.yaml"] = public_config_text(assignment, seed).encode()
    files[f"{prefix}/{assignment.scaffold_name}"] = (folder / assignment.scaffold_name).read_bytes()
    handout = folder / "handout.ipynb"
    if handout.is_file():
        files[f"{prefix}/handout.ipynb"] = handout.read_bytes()
    return files


def build_student_wheel(assignment, out_dir: Path, seed: int) -> Path:
    name, version = dist_name(assignment), __version__
    info = f"{name}-{version}.dist-info"
    files = student_files(assignment, seed)
    _check_public(assignment, files[f"assignments/{assignment.path.parent.name}/assignment.yaml"])
    files[f"{info}/METADATA"] = _metadata(assignment, version).encode()
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


def _check_public(assignment, config: bytes) -> None:
    """The written config must load, hold no hidden group and not the instructor's seed."""
    import tempfile

    from .config import load_assignment

    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging)
        (folder / "assignment.yaml").write_bytes(config)
        (folder / assignment.scaffold_name).write_text(assignment.scaffold_source)
        public = load_assignment(str(folder / "assignment.yaml"))
    if any(g.hidden for g in public.groups) or public.seed == assignment.seed:
        raise AssertionError("the student config still holds hidden groups or the instructor's seed")


def _metadata(assignment, version: str) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {dist_name(assignment).replace('_', '-')}",
             f"Version: {version}",
             f"Summary: Self-check for the {assignment.id} assignment (public cases only)",
             "Requires-Python: >=3.10"]
    lines += [f"Requires-Dist: {requirement}" for requirement in REQUIREMENTS]
    return "\n".join(lines) + "\n"


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
