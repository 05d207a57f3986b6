"""Exports of a report dict (the JSON data `report_to_dict` produces) to other tools' formats.

Every function here reads the dict only, never the Python objects behind it, so a report
written weeks ago exports the same way as a fresh one:

- `gradescope_results`: Gradescope's autograder ``results.json``
  (https://gradescope-autograders.readthedocs.io/en/latest/specs/), one test per class and group,
  and one per checked method (and speed check) that carries points.
- `junit_xml`: JUnit XML for CI dashboards, one ``<testcase>`` per graded case.
- `gradebook_rows` / `write_gradebook_csv`: one CSV row per submission for a course's gradebook.

Hidden cases are the grader's held-out tests: no export shows their parameters or messages.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Sequence

from .safe_text import csv_cell, terminal_safe

COUNTED = ("passed", "failed", "error", "timeout", "unsupported")   # every status but skipped
HIDDEN_VISIBILITY = "after_published"   # Gradescope shows these tests once grades are published
HIDDEN_MESSAGE = "hidden case"

# ---------------------------------------------------------------------------------------------
# Gradescope
# ---------------------------------------------------------------------------------------------


def gradescope_results(report: dict, decimals: int = 2) -> dict:
    """The Gradescope ``results.json`` for one report.

    One test per graded class and case group that ran at least one counted (not skipped) case,
    named ``"<class> · <group>"`` and numbered ``"<class #>.<group #>"`` by position in the report
    (so a group keeps its number across submissions). A group's ``max_score`` is the class's
    points times its weight over the summed weights of the class's groups with counted cases;
    its ``score`` is that times passed/counted, scaled so the class's tests add up to the class's
    reported score (a violation penalty zeroes them all). Scores are rounded to `decimals` by
    largest remainder, first across classes and then across each class's groups, so the tests
    add up exactly to the report's total rounded to `decimals` (which is the top-level score)
    and their maxima to the report's maximum. Within a class the earned and the lost points are
    rounded apart, so a group whose cases all passed scores exactly its maximum and one with
    none passed scores 0; the price is that a group's maximum may differ by one hundredth
    between submissions.

    Public groups' output names the first case that did not pass, with its parameters and
    message; hidden groups are ``after_published`` and their output gives counts only. A class
    that is missing, failed to load or ran no counted case is one test scoring 0 with the
    class's message. Violations are listed in the output of each of their class's tests.
    """
    report = terminal_safe(report)   # Gradescope shows the outputs in a page: one line per field
    unit = 10 ** decimals
    classes = list(report["items"].items())
    class_max = _apportion([c["max_score"] * unit for _, c in classes], round(report["max_score"] * unit))
    class_got = _apportion([c["score"] * unit for _, c in classes], round(report["score"] * unit),
                           caps=class_max)
    tests = []
    for number, ((name, cls), max_units, got_units) in enumerate(zip(classes, class_max, class_got), 1):
        tests.extend(_class_tests(name, cls, number, max_units, got_units, unit))
    return {
        "score": sum(class_got) / unit,
        "execution_time": int(round(report.get("duration_s", 0))),
        "output": _summary(report),
        "visibility": "visible",
        "stdout_visibility": "hidden",   # the grader's own log: for instructors only
        "tests": tests,
    }


def gradescope_failure(reason: str, execution_time: float = 0.0) -> dict:
    """The ``results.json`` for a submission that could not be graded at all (no notebook, two of
    them, a refused link, a failure of the grader's own): 0 points and the reason, so that
    Gradescope shows a score and why, not a platform error. No tests: there were none."""
    from .safe_text import one_line

    return {
        "score": 0.0,
        "execution_time": int(round(execution_time)),
        "output": f"This submission could not be graded: {one_line(reason)}",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [],
    }


def _class_tests(name: str, cls: dict, number: int, max_units: int, got_units: int, unit: int) -> list[dict]:
    groups = [(i, g) for i, g in enumerate(cls.get("groups", []), 1) if _counted(g)]
    if cls["status"] != "graded" or not groups:
        message = cls.get("message") or "no case of this class was run"
        return [_test(name, f"{number}", got_units / unit, max_units / unit, "failed",
                      _with_violations(message, cls), "visible")]
    weights = sum(g["weight"] for _, g in groups)
    # Checked methods and speed points are tests of their own; the groups share the rest.
    checks = _check_tests(cls)
    rest = 1 - sum(share for _, share, _, _, _ in checks)
    raw_max = [rest * (g["weight"] / weights if weights else 1 / len(groups)) for _, g in groups]
    raw_got = [m * g["passed"] / _counted(g) for m, (_, g) in zip(raw_max, groups)]
    raw_max += [share for _, share, _, _, _ in checks]
    raw_got += [got for _, _, got, _, _ in checks]
    # The class's reported score decides: a violation penalty scales every share down to it;
    # a difference of one unit is rounding, and a group with every case passed stays at its maximum.
    earned = max_units * sum(raw_got)
    scale = 1.0 if abs(earned - got_units) <= 1 else (got_units / earned if earned else 0.0)
    raw_got = [g * scale for g in raw_got]
    # Earned and lost points are apportioned apart, so a group keeps exactly what it earned and
    # loses nothing when every case passed; its maximum is the sum of the two.
    gots = _apportion([g * max_units for g in raw_got], got_units)
    losts = _apportion([(m - g) * max_units for m, g in zip(raw_max, raw_got)], max_units - got_units)
    maxes = [g + lost for g, lost in zip(gots, losts)]
    tests = []
    for (index, group), max_g, got_g in zip(groups, maxes, gots):
        passed = group["passed"] == _counted(group) and got_g == max_g
        output = _hidden_group_output(group) if group["hidden"] else _public_group_output(group, cls)
        tests.append(_test(f"{name} · {group['name']}", f"{number}.{index}", got_g / unit, max_g / unit,
                           "passed" if passed else "failed", _with_violations(output, cls),
                           HIDDEN_VISIBILITY if group["hidden"] else "visible"))
    extra = zip(checks, maxes[len(groups):], gots[len(groups):])
    for index, ((label, _, _, ok, output), max_g, got_g) in enumerate(extra, len(cls.get("groups", [])) + 1):
        tests.append(_test(f"{name} · {label}", f"{number}.{index}", got_g / unit, max_g / unit,
                           "passed" if ok and got_g == max_g else "failed", _with_violations(output, cls),
                           "visible"))
    return tests


def _check_tests(cls: dict) -> list[tuple[str, float, float, bool, str]]:
    """(name, share of the class's points, share earned, passed, output) for each checked method
    and the speed check that carry points and ran."""
    total = cls["max_score"]
    found = []
    for check in cls.get("checks") or []:
        if check["points"] <= 0 or check["status"] == "not_run" or total <= 0:
            continue
        if check["kind"] == "speed":
            vectorized = bool((check.get("speed") or {}).get("vectorized"))
            output = "vectorized" if vectorized else (check["message"] or "not vectorized")
            found.append((check["name"], check["points"] / total, check["score"] / total, vectorized, output))
            continue
        output = (f"{check['passed']} of {check['total']} cases passed"
                  + (f"; layout: {check['layout']}" if check.get("layout") else "")
                  + (f"\n{check['message']}" if check["message"] else ""))
        found.append((check["name"], check["points"] / total, check["score"] / total,
                      check["status"] == "passed", output))
    return found


def _test(name: str, number: str, score: float, max_score: float, status: str, output: str,
          visibility: str) -> dict:
    return {"name": name, "number": number, "score": score, "max_score": max_score, "status": status,
            "output": output, "visibility": visibility}


def _counted(group: dict) -> int:
    return sum(group[s] for s in COUNTED)


def _counts_text(group: dict) -> str:
    counted = _counted(group)
    others = [f"{group[s]} {s}" for s in COUNTED[1:] if group[s]]
    return (f"{group['passed']} of {counted} case{'s' if counted != 1 else ''} passed"
            + (f" ({', '.join(others)})" if others else ""))


def _hidden_group_output(group: dict) -> str:
    return f"hidden cases: {_counts_text(group)}"


def _public_group_output(group: dict, cls: dict) -> str:
    lines = [f"{group['description']}: {_counts_text(group)}" if group.get("description")
             else _counts_text(group)]
    failure = next((c for c in cls["cases"] if c["group"] == group["name"] and not c["hidden"]
                    and c["status"] in COUNTED[1:]), None)
    if failure is not None:
        lines.append(f"first failure: {failure['id']} [{failure['device']}] {failure['status']}")
        lines.append(f"  {describe_case(failure)}")
        lines.append(f"  {failure['message']}")
    return "\n".join(lines)


def _with_violations(output: str, cls: dict) -> str:
    return "\n".join([output] + [f"violation: {v['message']}" for v in cls.get("violations", [])])


def _summary(report: dict) -> str:
    title = report["assignment"].get("title") or report["assignment"]["id"]
    lines = [f"{title}: {_num(report['score'])}/{_num(report['max_score'])}"]
    if report["load"].get("fatal"):      # nothing was graded (a refused file, a failed load): say why first
        lines.append(f"Not graded: {report['load']['fatal']}")
    for name, cls in report["items"].items():
        status = "" if cls["status"] == "graded" else f" ({cls['status'].replace('_', ' ')})"
        lines.append(f"{name}: {_num(cls['score'])}/{_num(cls['max_score'])}{status}")
    if any(g["hidden"] and _counted(g) for c in report["items"].values() for g in c.get("groups", [])):
        lines.append("Hidden case groups are shown once grades are published.")
    return "\n".join(lines)


def _apportion(exact: Sequence[float], total: int, caps: Sequence[int] | None = None) -> list[int]:
    """Whole numbers near `exact` (amounts already in units, adding up to about `total`) that
    add up to exactly `total`: floors first, then the largest remainders get one more unit (never
    past their `caps`), or the smallest lose one when the floors overshoot."""
    result = [math.floor(x + 1e-9) for x in exact]   # 2.9999999996 is 3, not 2
    if caps is not None:
        result = [min(r, c) for r, c in zip(result, caps)]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - result[i]), i))
    while sum(result) < total:
        grown = [i for i in order if caps is None or result[i] < caps[i]][:total - sum(result)]
        if not grown:
            raise ValueError(f"cannot apportion {total} units within the caps {list(caps or ())}")
        for i in grown:
            result[i] += 1
    for i in reversed(order):
        if sum(result) <= total:
            break
        result[i] -= min(result[i], sum(result) - total)
    return result


def describe_case(case: dict) -> str:
    """A case's parameters in words (the assignment's description), then every parameter, so
    an export names the case exactly: ``input 2x3x5x5, kernel 3 (batch=2, ...)``."""
    exact = ", ".join(f"{name}={'x'.join(map(str, value)) if isinstance(value, list) else value}"
                      for name, value in case["params"].items())
    return f"{case.get('description', '')} ({exact})" if case.get("description") else exact


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------------------------
# JUnit XML
# ---------------------------------------------------------------------------------------------

# Characters XML 1.0 cannot carry at all (ANSI escapes and NULs in a student's output would
# otherwise make the whole file unparsable); they are replaced by U+FFFD.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def junit_xml(report: dict) -> str:
    """The report as JUnit XML: one ``<testsuite name="<assignment>.<class>">`` per class and one
    ``<testcase name="<case id>[<device>]" classname="<assignment>.<class>">`` per case.

    failed -> ``<failure>``; error and timeout -> ``<error>``; skipped and unsupported ->
    ``<skipped>``, each with the case's message, its parameters and, for an error, the traceback.
    Hidden cases keep their name but their message is "hidden case" and nothing else is shown.
    tests/failures/errors/skipped/time are on every suite and on the root ``<testsuites>``.
    A class that is missing or failed to load is an empty suite whose properties and
    ``<system-err>`` carry its status and message.
    """
    report = terminal_safe(report, keep_lines=frozenset({"traceback"}))   # a CI page shows the messages
    assignment = report["assignment"]["id"]
    root = ET.Element("testsuites", name=assignment)
    totals = Counter()
    for name, cls in report["items"].items():
        suite = ET.SubElement(root, "testsuite", name=f"{assignment}.{name}")
        properties = ET.SubElement(suite, "properties")
        for key in ("status", "score", "max_score"):
            ET.SubElement(properties, "property", name=key, value=str(cls[key]))
        counts = Counter()
        for case in cls["cases"]:
            _junit_case(suite, case, f"{assignment}.{name}")
            counts["tests"] += 1
            counts[_JUNIT_KIND.get(case["status"], "")] += 1
            counts["time"] += case.get("duration_s", 0.0)
        messages = ([cls["message"]] if cls.get("message") else []) + \
                   [f"violation: {v['message']}" for v in cls.get("violations", [])]
        if messages:
            ET.SubElement(suite, "system-err").text = _xml_text("\n".join(messages))
        _set_counts(suite, counts, counts["time"])
        totals.update(counts)
    _set_counts(root, totals, report.get("duration_s", totals["time"]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


_JUNIT_KIND = {"failed": "failure", "error": "error", "timeout": "error", "unsupported": "skipped",
               "skipped": "skipped"}


def _junit_case(suite: ET.Element, case: dict, classname: str) -> None:
    element = ET.SubElement(suite, "testcase", name=f"{case['id']}[{case['device']}]", classname=classname,
                            time=f"{case.get('duration_s', 0.0):.6f}")
    kind = _JUNIT_KIND.get(case["status"])
    if kind is None:
        return
    if case["hidden"]:
        ET.SubElement(element, kind, message=HIDDEN_MESSAGE, type=case["status"])
        return
    message = case["message"] or case["status"]
    child = ET.SubElement(element, kind, message=_xml_text(message), type=case["status"])
    if kind != "skipped":
        details = [describe_case(case), message]
        if case.get("error") and case["error"].get("traceback"):
            details.append(case["error"]["traceback"])
        child.text = _xml_text("\n".join(details))


def _set_counts(element: ET.Element, counts: Counter, time: float) -> None:
    for key, counter_key in (("tests", "tests"), ("failures", "failure"), ("errors", "error"),
                             ("skipped", "skipped")):
        element.set(key, str(counts[counter_key]))
    element.set("time", f"{time:.3f}")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


# ---------------------------------------------------------------------------------------------
# Gradebook CSV
# ---------------------------------------------------------------------------------------------

FIXED_COLUMNS = ("submission_id", "path", "sha256", "total", "max_total")


def submission_id(report: dict, batch: Sequence[dict] = ()) -> str:
    """A stable id for a submission within `batch` (the reports exported together).

    The file's stem (``alice.ipynb`` -> ``alice``) when no other submission in the batch has
    that stem; otherwise the stem and the first 8 hex digits of the file's sha256
    (``hw-991fa091``); and where that still collides (the same content at several paths), the
    stem and the first 8 hex digits of the sha256 of the path. The id depends on the file, its
    path and the other submissions in the batch with the same stem, never on the batch's order;
    the same file graded twice gets one id (both rows carry it).
    """
    stem = Path(report["submission"]["path"]).stem
    others = list(batch)
    mine = next((i for i, r in enumerate(others) if r is report), None)
    if mine is not None:
        del others[mine]   # the report itself; another copy of it in the batch still counts
    if not any(Path(r["submission"]["path"]).stem == stem for r in others):
        return stem
    with_sha = f"{stem}-{report['submission']['sha256'][:8]}"
    if not any(Path(r["submission"]["path"]).stem == stem and r["submission"]["sha256"] ==
               report["submission"]["sha256"] and r["submission"]["path"] != report["submission"]["path"]
               for r in others):
        return with_sha
    return f"{stem}-{hashlib.sha256(report['submission']['path'].encode()).hexdigest()[:8]}"


def gradebook_rows(reports: list[dict], ids: Sequence[str] | None = None) -> list[dict]:
    """One row per report: submission_id, path, sha256, total, max_total, one score column per
    class (named by the class, in report order; a class one report lacks is left empty), and
    status: ``ok``, or ``;``-joined ``missing:<class>``, ``load_error:<class>`` and
    ``violation:<class>`` entries. `ids`, when given, are the submission ids to use (a batch
    names its report files by them)."""
    rows = []
    for number, report in enumerate(reports):
        identity = ids[number] if ids is not None else submission_id(report, reports)
        row = {"submission_id": identity, "path": report["submission"]["path"],
               "sha256": report["submission"]["sha256"], "total": report["score"],
               "max_total": report["max_score"]}
        problems = []
        for name, cls in report["items"].items():
            if name in FIXED_COLUMNS or name == "status":
                raise ValueError(f"class {name!r} clashes with a gradebook column")
            row[name] = cls["score"]
            if cls["status"] != "graded":
                problems.append(f"{cls['status']}:{name}")
            if cls.get("violations"):
                problems.append(f"violation:{name}")
        row["status"] = ";".join(problems) or "ok"
        rows.append(row)
    return rows


def gradebook_columns(rows: list[dict]) -> list[str]:
    """The CSV header: the fixed columns, every class in first-seen order, then status."""
    classes = []
    for row in rows:
        classes.extend(k for k in row if k not in FIXED_COLUMNS and k != "status" and k not in classes)
    return [*FIXED_COLUMNS, *classes, "status"]


def write_gradebook_csv(reports: list[dict], path: str | Path, ids: Sequence[str] | None = None) -> Path:
    """Write `gradebook_rows(reports, ids)` to `path` as UTF-8 CSV with a header row; returns the path."""
    from .outputs import write_text_atomically

    rows = gradebook_rows(reports, ids)
    path = Path(path)
    stream = io.StringIO(newline="")
    writer = csv.DictWriter(stream, fieldnames=gradebook_columns(rows), restval="")
    writer.writeheader()
    # Paths and ids are the students' file names: `=HYPERLINK(...)` must stay text. Scores
    # are numbers, never touched.
    writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in rows)
    write_text_atomically(stream.getvalue(), path)   # a full disk is a one-line error, not half a file
    return path
