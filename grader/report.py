"""The JSON report: the product's main output, versioned and schema-checked.

Everything a person or a tool sees is rendered from `report_to_dict`, so the
terminal table, the JSON and later exports cannot disagree.
"""
from __future__ import annotations

import json
from pathlib import Path

from .outputs import write_text_atomically
from .pipeline import GradeReport
from .score import CASE_STATUSES, CaseResult, ItemReport

SCHEMA_VERSION = "2.0"
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
    for cls in data["items"].values():
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
        for cause in cls["likely_causes"]:
            if (cause.get("smallest_failing_case") or {}).get("started_from") in hidden_ids:
                cause["smallest_failing_case"] = None
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
                       "kind": report.submission.kind, "refused": report.submission.refused},
        "seed": report.seed,
        "devices": list(report.devices),
        "only_case": report.only_case,
        "score": report.score,
        "max_score": report.max_score,
        "items": {c.name: _item_dict(c, report) for c in report.items},
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
    for graded in report.items:
        item = data["items"][graded.name]
        unit = _defining_unit(report, graded)
        item["definition"] = {"cell": unit.cell, "line": unit.line} if unit is not None else None
        found = fingerprint(report.submission, graded.python_name, common) if unit is not None else None
        item["similarity"] = None if found is None else {
            "version": VERSION, "exact": found.exact, "signature": list(found.signature), "tokens": found.tokens,
            "source": found.source, "truncated": found.truncated}
    # A refused file is not opened, for its metadata either (it may be a link to a root-only file).
    data["submission"]["metadata"] = notebook_metadata(report.submission.path, report.submission.sha256) \
        if report.submission.refused is None else {}
    data["environment"].setdefault("grader_fingerprint", grading_fingerprint())
    return data


def _defining_unit(report: GradeReport, item: ItemReport):
    """The kept statement that defines what the item was graded on: the definition its
    signature picked (a file may define one name twice), else the last one of its name."""
    from .runner import resolve_item

    spec = report.assignment.item(item.name)
    found = resolve_item(report.load, spec, report.assignment.task_of(spec).signature)
    units = {u.index: u for u in report.submission.units}
    if found.definition is not None and found.definition.unit in units:
        return units[found.definition.unit]
    defining = [u for u in report.submission.units if item.python_name in u.defines]
    return defining[-1] if defining else None
# --- end of the instructor's view -----------------------------------------------------------


def _item_dict(item: ItemReport, report: GradeReport) -> dict:
    describe = report.assignment.subject.describe
    return {
        "kind": item.kind,
        "name": item.python_name,
        "status": item.status,
        "score": item.score,
        "max_score": item.max_score,
        "message": item.message,
        "violations": [{"operator": v.operator, "source": v.source, "kind": v.kind, "location": v.location,
                        "case": v.case, "message": v.describe()} for v in item.violations],
        "static_notes": [{"name": n.operator, "location": n.location, "message": n.describe()}
                         for n in item.static_notes],
        "likely_causes": [{"cause": c.cause, "evidence": c.evidence, "points": c.points, "failing": len(c.cases),
                           "smallest_failing_case": _smallest_dict(found, describe)}
                          for c, found in zip(item.likely_causes, item.cause_failures or (None,) * len(item.likely_causes))],
        "smallest_failing_case": _smallest_dict(item.smallest_failure, describe),
        "checks": [_check_dict(c) for c in item.checks],
        "groups": [{"name": g.name, "description": g.description, "hidden": g.hidden, "weight": g.weight,
                    **{status: g.count(status) for status in CASE_STATUSES}} for g in item.groups],
        "cases": [_case_dict(r, describe) for r in item.cases],
    }


def _check_dict(check) -> dict:
    data = {"name": check.name, "kind": check.kind, "status": check.status, "message": check.message,
            "points": check.points, "score": check.score, "passed": check.passed, "total": check.total,
            "layout": check.layout, "cases": list(check.cases), "speed": None}
    speed = check.speed
    if speed is not None:
        data["speed"] = {"device": speed.device, "baseline": speed.baseline, "params": _jsonable(dict(speed.params)),
                         "repeats": speed.repeats, "median_s": speed.median_s,
                         "baseline_median_s": speed.baseline_median_s, "ratio": speed.ratio,
                         "operators": [{"label": label, "count": n} for label, n in speed.operators],
                         "vectorized": speed.vectorized}
    return data


def _jsonable(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _smallest_dict(found, describe) -> dict | None:
    if found is None:
        return None
    comparison = found.comparison
    return {
        "id": found.case.id,
        "params": found.case.params.as_dict(),
        "description": describe(found.case.params),
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


def _case_dict(result: CaseResult, describe) -> dict:
    case, comparison, run = result.case, result.comparison, result.run
    decided = run.output_named(comparison.output) if comparison.output else (run.outputs[0] if run.outputs else None)
    return {
        "id": case.id,
        "group": case.group,
        "device": case.device,
        "hidden": case.hidden,
        "params": case.params.as_dict(),
        "description": describe(case.params),
        "status": result.status,
        "message": result.message,
        "output": comparison.output,
        "expected_shape": list(comparison.expected_shape),
        "actual_shape": None if comparison.actual_shape is None else list(comparison.actual_shape),
        "max_abs_error": comparison.max_abs_error,
        "first_mismatch": None if comparison.first_mismatch is None else list(comparison.first_mismatch),
        "returned_type": decided.returned_type if decided is not None else None,
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
