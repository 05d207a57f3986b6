"""The minimal report validator agrees with jsonschema, and refuses what it cannot check."""
import copy
import json
import subprocess
import sys

import jsonschema
import pytest

from conftest import ROOT, SUBMISSIONS
from grader import schema_check

SCHEMA = json.loads(schema_check.SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.json"
    subprocess.run([sys.executable, "-m", "grader", str(SUBMISSIONS / "template_bug.ipynb"), "--device", "cpu",
                    "--case", "basic-001", "-o", str(out), "--quiet"], cwd=ROOT, check=True, timeout=300)
    return json.loads(out.read_text())


def breakages(report):
    """(what, broken copy) pairs: each one breaks a different rule of the schema."""
    def broken(edit):
        data = copy.deepcopy(report)
        edit(data)
        return data
    item = next(iter(report["items"]))
    return [
        ("negative score", broken(lambda d: d.update(score=-1))),
        ("unknown status", broken(lambda d: d["items"][item].update(status="exploded"))),
        ("missing required", broken(lambda d: d["load"].pop("fatal"))),
        ("extra property", broken(lambda d: d.update(extra=1))),
        ("bad pattern", broken(lambda d: d["submission"].update(sha256="xyz"))),
        ("wrong type", broken(lambda d: d.update(seed="2026"))),
        ("bool is not a number", broken(lambda d: d.update(duration_s=True))),
        ("oneOf: neither null nor object", broken(lambda d: d["items"][item].update(definition=[1]))),
        ("array items", broken(lambda d: d["items"][item]["similarity"].update(signature=["a"]))),
        ("too long", broken(lambda d: d["items"][item]["similarity"].update(source="x" * 20001))),
        ("too many keys", broken(lambda d: d["submission"].update(metadata={str(i): "v" for i in range(18)}))),
    ]


def test_a_real_report_is_valid_for_both(report):
    jsonschema.validate(report, SCHEMA)
    assert schema_check.errors(report) == []


def test_every_breakage_is_caught_by_both(report):
    for what, data in breakages(report):
        assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(data), what
        assert schema_check.errors(data), what


def test_errors_name_the_path(report):
    data = copy.deepcopy(report)
    data["items"]["Conv2dLoop"]["cases"][0]["status"] = "exploded"
    assert schema_check.errors(data)[0].startswith("$.items.Conv2dLoop.cases[0].status:")


def test_a_schema_keyword_it_does_not_check_is_refused(monkeypatch, tmp_path):
    schema = dict(SCHEMA, properties=dict(SCHEMA["properties"], seed={"type": "integer", "multipleOf": 2}))
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    monkeypatch.setattr(schema_check, "SCHEMA_PATH", path)
    schema_check._report_schema.cache_clear()
    try:
        with pytest.raises(schema_check.SchemaUnsupported, match="multipleOf"):
            schema_check.errors({})
    finally:
        schema_check._report_schema.cache_clear()


def test_local_references_are_followed():
    schema = {"$defs": {"n": {"type": "integer", "minimum": 0}}, "type": "object",
              "properties": {"a": {"$ref": "#/$defs/n"}}}
    assert schema_check.is_valid({"a": 1}, schema) and not schema_check.is_valid({"a": -1}, schema)
