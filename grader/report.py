"""The JSON report: the product's main output, versioned and schema-checked.

Everything a person or a tool sees is rendered from `report_to_dict`, so the
terminal table, the JSON and later exports cannot disagree.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .pipeline import GradeReport
from .score import CASE_STATUSES, CaseResult, ClassReport

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "report.schema.json"


def report_to_dict(report: GradeReport, audience: str = "instructor") -> dict:
    data = _full_dict(report)
    data["audience"] = audience
    return data if audience == "instructor" else for_students(data)


def for_students(data: dict) -> dict:
    """What a student may see: hidden cases as counts only (their groups keep the counts),
    no parameters, messages or output of a hidden case anywhere."""
    data = json.loads(json.dumps(data))
    data["audience"] = "student"
    for cls in data["classes"].values():
        hidden_ids = {c["id"] for c in cls["cases"] if c["hidden"]}
        cls["cases"] = [c for c in cls["cases"] if not c["hidden"]]
        for group in cls.get("groups", []):
            if group["hidden"]:
                group["description"] = "hidden cases"
        smallest = cls.get("smallest_failing_case")
        if smallest and smallest.get("started_from") in hidden_ids:
            cls["smallest_failing_case"] = None
        cls["likely_causes"] = [c for c in cls.get("likely_causes", [])
                                if not any(i in c["evidence"] for i in hidden_ids)]
        for violation in cls.get("violations", []):
            if violation.get("case") in hidden_ids:
                violation["case"] = None
                violation["message"] = violation["message"].split(" (case ")[0] + " (a hidden case)"
    return data


def _full_dict(report: GradeReport) -> dict:
    return _with_instructor_fields(report, {
        "schema_version": SCHEMA_VERSION,
        "assignment": {"id": report.assignment.id, "title": report.assignment.title,
                       "sha256": report.assignment.sha256},
        "submission": {"path": str(report.submission.path), "sha256": report.submission.sha256,
                       "kind": report.submission.kind},
        "seed": report.seed,
        "devices": list(report.devices),
        "only_case": report.only_case,
        "score": report.score,
        "max_score": report.max_score,
        "classes": {c.name: _class_dict(c) for c in report.classes},
        "load": _load_dict(report),
        "environment": dict(report.environment) | {"protections": dict(report.protections),
                                                   "worker_restarts": report.worker_restarts},
        "duration_s": report.duration_s,
    })


# --- The instructor's view (issue 13) -------------------------------------------------------
# Optional fields the class report, similarity groups, feedback pages and roster matching read,
# so that they need nothing but the reports (a merge of shards sees what one batch sees):
# where each item is defined, a fingerprint of its graded code with its source text, the
# notebook's identity metadata, and the fingerprint of the grading code.
def _with_instructor_fields(report: GradeReport, data: dict) -> dict:
    from .provenance import grading_fingerprint
    from .roster import notebook_metadata
    from .similarity import VERSION, fingerprint, unit_hashes

    common = unit_hashes(report.assignment.scaffold_source)
    for name, item in data.get("items", data.get("classes", {})).items():
        units = [u for u in report.submission.units if name in u.defines]
        item["definition"] = {"cell": units[-1].cell, "line": units[-1].line} if units else None
        found = fingerprint(report.submission, name, common) if units else None
        item["similarity"] = None if found is None else {
            "version": VERSION, "exact": found.exact, "signature": list(found.signature), "tokens": found.tokens,
            "source": found.source, "truncated": found.truncated}
    data["submission"]["metadata"] = notebook_metadata(report.submission.path, report.submission.sha256)
    data["environment"].setdefault("grader_fingerprint", grading_fingerprint())
    return data
# --- end of the instructor's view -----------------------------------------------------------


def _class_dict(report: ClassReport) -> dict:
    return {
        "status": report.status,
        "score": report.score,
        "max_score": report.max_score,
        "message": report.message,
        "violations": [{"operator": v.operator, "source": v.source, "kind": v.kind, "location": v.location,
                        "case": v.case, "message": v.describe()} for v in report.violations],
        "likely_causes": [{"cause": c.cause, "evidence": c.evidence} for c in report.likely_causes],
        "smallest_failing_case": _smallest_dict(report.smallest_failure),
        "methods": [_method_dict(m) for m in report.methods],
        "speed": _speed_dict(report.speed),
        "groups": [{"name": g.name, "description": g.description, "hidden": g.hidden, "weight": g.weight,
                    **{status: g.count(status) for status in CASE_STATUSES}} for g in report.groups],
        "cases": [_case_dict(r) for r in report.cases],
    }


def _method_dict(check) -> dict:
    return {"name": check.name, "status": check.status, "passed": check.passed, "total": check.total,
            "message": check.message, "layout": check.layout, "points": check.points, "score": check.score,
            "cases": list(check.cases)}


def _speed_dict(speed) -> dict | None:
    if speed is None:
        return None
    return {"status": speed.status, "message": speed.message, "device": speed.device,
            "baseline": "torch.nn.functional.conv2d", "params": dict(speed.params), "repeats": speed.repeats,
            "median_s": speed.median_s, "torch_median_s": speed.torch_median_s, "ratio": speed.ratio,
            "operators": [{"height": h, "width": w, "count": n} for h, w, n in speed.operators],
            "vectorized": speed.vectorized, "points": speed.points, "score": speed.score}


def _smallest_dict(found) -> dict | None:
    if found is None:
        return None
    comparison = found.comparison
    return {
        "id": found.case.id,
        "params": _params_dict(found.case.params),
        "device": found.case.device,
        "expected_shape": list(comparison.expected_shape),
        "actual_shape": None if comparison.actual_shape is None else list(comparison.actual_shape),
        "first_mismatch": None if comparison.first_mismatch is None else list(comparison.first_mismatch),
        "status": comparison.verdict,
        "message": comparison.message,
        "started_from": found.started_from,
        "tries": found.tries,
        "replay": found.replay,
    }


def _params_dict(p) -> dict:
    return {"batch": p.batch, "in_channels": p.in_channels, "out_channels": p.out_channels,
            "height": p.height, "width": p.width, "kernel_size": p.kernel_size, "stride": p.stride,
            "padding": p.padding, "dilation": p.dilation, "dtype": p.dtype}


def _case_dict(result: CaseResult) -> dict:
    case, comparison, run = result.case, result.comparison, result.run
    p = case.params
    return {
        "id": case.id,
        "group": case.group,
        "device": case.device,
        "hidden": case.hidden,
        "params": _params_dict(p),
        "status": result.status,
        "message": result.message,
        "expected_shape": list(comparison.expected_shape),
        "actual_shape": None if comparison.actual_shape is None else list(comparison.actual_shape),
        "max_abs_error": comparison.max_abs_error,
        "first_mismatch": None if comparison.first_mismatch is None else list(comparison.first_mismatch),
        "returned_type": run.returned_type,
        "error": None if run.error is None else {"type": run.error.type, "message": run.error.message,
                                                  "location": run.error.location,
                                                  "traceback": run.error.traceback},
        "stdout_tail": run.stdout_tail,
        "duration_s": round(run.duration_s, 6),
    }


def _load_dict(report: GradeReport) -> dict:
    return {
        "units_kept": len(report.submission.units),
        "skipped": [{"cell": n.cell, "line": n.line, "kind": n.kind, "message": n.message}
                    for n in report.submission.notes],
        "errors": [{"cell": _cell_number(f.filename), "line": f.line, "type": f.error.type,
                    "message": f.error.message, "location": f.error.location}
                   for f in report.load.failures],
        "fatal": report.load.fatal,
        "stdout_tail": report.load.stdout_tail,
    }


def _cell_number(filename: str) -> int | None:
    return int(filename.split()[1]) if filename.startswith("cell ") else None


def write_json_atomically(data: dict, path: Path) -> None:
    write_text_atomically(json.dumps(data, indent=2) + "\n", path)


def write_text_atomically(text: str, path: Path) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file,
    and whatever was at `path` before (even a forged report) is replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            # mkstemp makes 0600 files; a report is as readable as any file the user writes.
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(stream.fileno(), 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
