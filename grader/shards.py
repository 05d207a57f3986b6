"""Shards of a batch, their manifests, and merging them without losing a submission.

A shard is the share of a batch's submissions whose id hashes to its index. It is named the
way the scheduler that runs it names it:

- `--shard K/N`: 1-based, as in a CI matrix (`shard: [1, 2, 3, 4]`);
- `--shard-index I --shard-count N`: 0-based;
- `--shard env`: from the environment of a Slurm job array (SLURM_ARRAY_TASK_ID minus
  SLURM_ARRAY_TASK_MIN, divided by SLURM_ARRAY_TASK_STEP, of SLURM_ARRAY_TASK_COUNT tasks, so
  `--array=1-4` and `--array=0-3` both work) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX,
  0-based; Kubernetes does not tell a pod the job's completions, so give `--shard-count N`).

Every shard writes `manifest.json` before it grades anything and again when it stops: which
shard it is, the ids it owns, the ids of the whole batch, and the assignment, seed, devices and
grader it grades with. `merge` reads the manifests, refuses to mix shards graded differently,
and names every submission that has no valid report: those of a shard whose folder is missing,
and those a present shard owns but never finished.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
EXIT_INCOMPLETE = 1    # a merge that wrote what it had, but some submissions have no report


@dataclass(frozen=True)
class ShardSpec:
    index: int          # 0-based
    count: int
    source: str         # how it was given, for the manifest and error messages

    @property
    def label(self) -> str:
        return f"{self.index + 1}/{self.count}"

    def owns(self, identity: str) -> bool:
        return owner(identity, self.count) == self.index


def owner(identity: str, count: int) -> int:
    """The 0-based shard that owns an id: by a hash of the id, so adding a submission does not
    move the others between shards."""
    return int(hashlib.sha256(identity.encode()).hexdigest(), 16) % count


def resolve(shard: str | None, index: int | None = None, count: int | None = None,
            environ=None) -> ShardSpec:
    environ = os.environ if environ is None else environ
    if shard is not None and index is not None:
        raise UsageError("--shard and --shard-index both name the shard; give one")
    if index is not None:
        if count is None:
            raise UsageError("--shard-index needs --shard-count")
        return _checked(index, count, f"--shard-index {index} --shard-count {count}")
    if shard is None or shard == "1/1":
        if count not in (None, 1):
            raise UsageError("--shard-count needs --shard-index or --shard env")
        return ShardSpec(0, 1, "--shard 1/1")
    if shard == "env":
        return _from_environment(environ, count)
    try:
        k, n = (int(part) for part in shard.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like K/N (e.g. 2/8) or be env, not {shard!r}") from None
    if count is not None:
        raise UsageError("--shard K/N already gives the count; drop --shard-count")
    if not 1 <= k <= n:
        raise UsageError(f"--shard {shard}: K must be between 1 and N")
    return ShardSpec(k - 1, n, f"--shard {shard}")


def _checked(index: int, count: int, source: str) -> ShardSpec:
    if count < 1:
        raise UsageError(f"{source}: the count must be at least 1")
    if not 0 <= index < count:
        raise UsageError(f"{source}: the 0-based index must be between 0 and {count - 1}")
    return ShardSpec(index, count, source)


def _from_environment(environ, count: int | None) -> ShardSpec:
    slurm, kubernetes = environ.get("SLURM_ARRAY_TASK_ID"), environ.get("JOB_COMPLETION_INDEX")
    if slurm is not None and kubernetes is not None:
        raise UsageError("--shard env: both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX are set; "
                         "give --shard-index and --shard-count")
    try:
        if slurm is not None:
            task, low = int(slurm), int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
            step = int(environ.get("SLURM_ARRAY_TASK_STEP", "1") or "1")
            tasks = int(environ["SLURM_ARRAY_TASK_COUNT"]) if count is None else count
            if step < 1 or (task - low) % step:
                raise UsageError(f"--shard env: SLURM_ARRAY_TASK_ID {task} is not on the array's steps "
                                 "(an irregular --array list?); give --shard-index and --shard-count")
            return _checked((task - low) // step, tasks,
                            f"SLURM_ARRAY_TASK_ID={task} (min {low}, step {step}, {tasks} tasks)")
        if kubernetes is not None:
            if count is None:
                raise UsageError("--shard env: JOB_COMPLETION_INDEX is set, but Kubernetes does not tell a pod "
                                 "the job's completions; add --shard-count N (spec.completions)")
            return _checked(int(kubernetes), count, f"JOB_COMPLETION_INDEX={kubernetes} ({count} completions)")
    except KeyError as missing:
        raise UsageError(f"--shard env: {missing.args[0]} is not set") from None
    except ValueError:
        raise UsageError("--shard env: the scheduler's shard variables are not whole numbers") from None
    raise UsageError("--shard env: neither SLURM_ARRAY_TASK_ID (Slurm job array) nor JOB_COMPLETION_INDEX "
                     "(Kubernetes Indexed Job) is set")


# ---------------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------------


def manifest(spec: ShardSpec, inputs: list, owned: list, plans: list, status: str, graded: int = 0,
             assignment_of=None) -> dict:
    """`inputs`: every (id) of the batch, in the batch's order; `owned`: this shard's items
    (with id, path and sha256); `plans`: how it grades each assignment it has (batch.Plan:
    assignment, seed, devices); status: started, finished or interrupted."""
    from . import __version__
    from .provenance import grading_fingerprint

    return {
        "manifest_version": MANIFEST_VERSION,
        "shard": {"index": spec.index, "count": spec.count, "label": spec.label, "source": spec.source},
        "assignments": sorted(({"id": p.assignment.id, "sha256": p.assignment.sha256, "seed": p.seed,
                                "devices": list(p.devices)} for p in plans), key=lambda a: a["id"]),
        "grader": {"version": __version__, "fingerprint": grading_fingerprint()},
        "status": status,
        "graded": graded,
        "inputs": list(inputs),
        "owned": [{"id": i.id, "path": i.path.as_posix(), "sha256": i.sha256,
                   "assignment": assignment_of(i) if assignment_of else None} for i in owned],
    }


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        data["shard"]["index"], data["shard"]["count"]
        [(a["id"], a["sha256"], a["seed"], a["devices"]) for a in data["assignments"]]
        [entry["id"] for entry in data["owned"]]
        if data.get("manifest_version") != MANIFEST_VERSION or not isinstance(data["inputs"], list):
            raise ValueError("unknown manifest version")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{str(path)!r} is not a readable shard manifest ({type(exc).__name__}: {exc})") from None
    return data


# What must agree between the shards of one batch, and how to say it (and, for each assignment
# any of them grades, its config, seed and devices: see _refuse_mixing).
SAME = (("grader", lambda m: (m["grader"]["version"], m["grader"]["fingerprint"]), "grader versions"),
        ("inputs", lambda m: (m["shard"]["count"], hashlib.sha256("\n".join(m["inputs"]).encode()).hexdigest()),
         "batches (shard counts or input lists)"))


@dataclass(frozen=True)
class Merged:
    reports: tuple[dict, ...]          # in the batch's order
    ids: tuple[str, ...]
    sources: tuple[Path, ...]          # the report files
    expected: int                      # submissions the batch had (the reports' count without manifests)
    missing_shards: tuple[str, ...]    # labels, e.g. "3/4"
    missing: tuple[tuple[str, str], ...]   # (id, why) of every submission with no valid report
    ignored: tuple[tuple[str, str], ...]   # (file, why) of report files not taken
    manifests: tuple[dict, ...]

    def copy_into(self, out: Path) -> None:
        """Make `out` a batch folder of its own: the reports (the class report links to them)
        and, from shard manifests, a manifest of one shard, so it can be merged again."""
        from .outputs import copy_file, make_folder
        from .report import write_json_atomically

        make_folder("-o", out)
        for source in self.sources:
            if source.resolve() != (out / source.name).resolve():
                copy_file(source, out / source.name)
        if self.manifests:
            first = self.manifests[0]
            write_json_atomically(dict(first, shard={"index": 0, "count": 1, "label": "1/1", "source": "grade merge"},
                                       status="incomplete" if self.missing else "finished", graded=len(self.ids),
                                       owned=[e for m in self.manifests for e in m["owned"]],
                                       merged_from=[m["shard"]["label"] for m in self.manifests]), out / MANIFEST)

    def expected_by_assignment(self) -> dict[str, int]:
        """Submissions per assignment that present shards own (what a gradebook should hold)."""
        counts: dict[str, int] = {}
        for m in self.manifests:
            for entry in m["owned"]:
                if entry.get("assignment"):
                    counts[entry["assignment"]] = counts.get(entry["assignment"], 0) + 1
        return counts

    def summary_fields(self) -> dict:
        return {"missing_shards": list(self.missing_shards),
                "missing_submissions": [{"id": i, "why": why} for i, why in self.missing]}

    def problems(self) -> list[str]:
        lines = [f"ignored {path}: {why}" for path, why in self.ignored]
        if self.missing_shards:
            lines.append(f"missing shards: {', '.join(self.missing_shards)}")
        if self.missing:
            lines.append(f"{len(self.missing)} of {self.expected} submissions have no report:")
            lines += [f"  {identity}: {why}" for identity, why in self.missing]
        return lines


def merge(folders: list[Path]) -> Merged:
    from .schema_check import errors

    manifests: list[tuple[Path, dict]] = []
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"{str(folder)!r} is not a folder of reports")
        found = read_manifest(folder)
        if found is not None:
            manifests.append((folder, found))
    if manifests and len(manifests) != len(folders):
        bare = [str(f) for f in folders if f not in {m[0] for m in manifests}]
        raise UsageError(f"{', '.join(bare)}: no {MANIFEST}; merge either shard folders that all have one, "
                         "or only folders without (from an older grader)")
    _refuse_mixing([m for _, m in manifests])
    taken: dict[str, tuple[dict, Path]] = {}
    ignored, invalid = [], {}
    for folder, owned in _owned_by_folder(folders, manifests).items():
        for path in sorted(folder.glob("*.json")):
            if path.name in NOT_REPORTS or path.name.startswith(NOT_REPORT_PREFIXES):
                continue
            if owned is not None and path.stem not in owned:
                ignored.append((str(path), "not owned by this folder's shard"))
                continue
            try:
                report = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                invalid[path.stem] = f"unreadable report {path} ({type(exc).__name__})"
                continue
            problems = errors(report)
            if problems:
                invalid[path.stem] = f"invalid report {path}: {problems[0]}"
                continue
            if path.stem in taken:
                raise UsageError(f"report {path.stem!r} appears in more than one folder")
            taken[path.stem] = (report, path)
    _refuse_mixed_reports([r for r, _ in taken.values()], [m for _, m in manifests])
    missing_shards: list[str] = []
    missing: list[tuple[str, str]] = []
    if manifests:
        first = manifests[0][1]
        count = first["shard"]["count"]
        present = {}
        for folder, m in manifests:
            index = m["shard"]["index"]
            if index in present:
                raise UsageError(f"{present[index]} and {folder} are both shard {m['shard']['label']}")
            present[index] = folder
        missing_shards = [f"{i + 1}/{count}" for i in range(count) if i not in present]
        order = list(first["inputs"])
        for identity in order:
            shard = owner(identity, count)
            if shard not in present:
                missing.append((identity, f"shard {shard + 1}/{count} is missing"))
            elif identity not in taken:
                status = next(m for _, m in manifests if m["shard"]["index"] == shard)["status"]
                missing.append((identity, invalid.get(identity) or f"no report in shard {shard + 1}/{count} "
                                f"(its batch {'stopped early' if status != 'finished' else 'wrote none'})"))
        expected = len(order)
    else:
        order = sorted(taken, key=lambda i: taken[i][0]["submission"]["path"])
        missing = sorted(invalid.items())
        expected = len(taken) + len(invalid)
    ids = [i for i in order if i in taken]
    return Merged(reports=tuple(taken[i][0] for i in ids), ids=tuple(ids), sources=tuple(taken[i][1] for i in ids),
                  expected=expected, missing_shards=tuple(missing_shards), missing=tuple(missing),
                  ignored=tuple(ignored), manifests=tuple(m for _, m in manifests))


NOT_REPORTS = {MANIFEST, "summary.json", "roster.json", "gradebook.json"}
NOT_REPORT_PREFIXES = ("roster-",)     # a mixed batch's roster-<assignment>.json


def _owned_by_folder(folders: list[Path], manifests: list[tuple[Path, dict]]) -> dict[Path, set | None]:
    by_folder = {folder: {e["id"] for e in m["owned"]} for folder, m in manifests}
    return {folder: by_folder.get(folder) for folder in folders}


def _refuse_mixing(manifests: list[dict]) -> None:
    """The shards of one batch grade each assignment alike; a batch that mixes assignments may
    have shards with fewer of them, but never two versions of one."""
    graded: dict[str, dict] = {}
    for m in manifests:
        for entry in m["assignments"]:
            key = (entry["sha256"], entry["seed"], tuple(entry["devices"]))
            graded.setdefault(entry["id"], {}).setdefault(key, []).append(m["shard"]["label"])
    for assignment_id, versions in graded.items():
        if len(versions) > 1:
            keys = list(versions)
            words = next(words for position, words in enumerate(("assignments (config and scaffold)", "seeds",
                                                                 "devices"))
                         if len({key[position] for key in keys}) > 1)
            shards = "; ".join(f"{', '.join(labels)}: {_show(key)}" for key, labels in versions.items())
            raise UsageError(f"the shards graded {assignment_id} with different {words} ({shards}); merge only "
                             "shards of one batch, or regrade the odd ones")
    for _, value, words in SAME:
        values = {value(m) for m in manifests}
        if len(values) > 1:
            shards = ", ".join(f"{m['shard']['label']}: {_show(value(m))}" for m in manifests)
            raise UsageError(f"the shards were graded with different {words} ({shards}); merge only shards of "
                             "one batch, or regrade the odd ones")


def _refuse_mixed_reports(reports: list[dict], manifests: list[dict]) -> None:
    """Reports must agree with each other and with the manifests, per assignment (a stale
    report left in a folder from another run would otherwise slip in)."""
    def key(report):
        return (report["assignment"].get("sha256"), report["seed"], tuple(report.get("devices", ())),
                report["environment"].get("grader_fingerprint"))
    kinds: dict[str, set] = {}
    for report in reports:
        kinds.setdefault(report["assignment"]["id"], set()).add(key(report))
    for m in manifests:
        for entry in m["assignments"]:
            kinds.setdefault(entry["id"], set()).add((entry["sha256"], entry["seed"], tuple(entry["devices"]),
                                                      m["grader"]["fingerprint"]))
    for assignment_id, found in kinds.items():
        if len(found) > 1:
            raise UsageError(f"the reports of {assignment_id} were graded with different assignments, seeds, devices "
                             f"or grader versions ({'; '.join(sorted(_show(k) for k in found))}); "
                             "merge reports of one batch only")


def _show(value) -> str:
    if isinstance(value, tuple):
        return " ".join(_show(v) for v in value)
    text = str(value)
    return text[:12] if len(text) == 64 else text
