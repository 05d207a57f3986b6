"""Reports read back (a resumed batch, a merge) are checked against the report schema.

A minimal validator rather than a runtime dependency on `jsonschema`, for two reasons:
- the grader must run where only torch is installed (a bare GPU image: `submission.py` already
  reads notebooks without nbformat there, and jsonschema comes in only through nbformat);
- a resumed batch reads every report again, and jsonschema takes about 40 ms for one report of
  a full run (170 KB), 20 s for a course of 500, where this takes a few milliseconds.
It implements the keywords the schema uses (below) and refuses a schema that uses any other,
so a schema change it cannot check fails loudly instead of passing everything; the tests check
it against jsonschema on real and broken reports.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "report.schema.json"
CHECKED = {"type", "enum", "const", "required", "properties", "additionalProperties", "items", "oneOf",
           "anyOf", "allOf", "minimum", "maximum", "pattern", "minLength", "maxLength", "minItems",
           "maxItems", "maxProperties", "$ref"}
IGNORED = {"$schema", "$id", "$defs", "definitions", "title", "description", "default", "examples", "$comment"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


class SchemaUnsupported(Exception):
    """The schema uses a keyword this validator does not check."""


def errors(document, schema: dict | None = None, limit: int = 5) -> list[str]:
    """Up to `limit` violations, each as ``path: what is wrong``; empty when `document` is valid."""
    root = schema if schema is not None else _report_schema()
    found: list[str] = []
    _check(document, root, root, "$", found, limit)
    return found


def is_valid(document, schema: dict | None = None) -> bool:
    return not errors(document, schema, limit=1)


@functools.lru_cache(maxsize=1)
def _report_schema() -> dict:
    schema = json.loads(SCHEMA_PATH.read_text())
    _refuse_unknown(schema)
    return schema


def _refuse_unknown(schema) -> None:
    if isinstance(schema, dict):
        unknown = set(schema) - CHECKED - IGNORED
        if unknown:
            raise SchemaUnsupported(f"schema keywords not checked: {', '.join(sorted(unknown))}")
        for key, value in schema.items():
            if key in ("properties", "$defs", "definitions"):
                for sub in value.values():
                    _refuse_unknown(sub)
            elif key in ("items", "additionalProperties"):
                _refuse_unknown(value)
            elif key in ("oneOf", "anyOf", "allOf"):
                for sub in value:
                    _refuse_unknown(sub)


def _type_ok(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES[name])


def _check(value, schema, root: dict, path: str, found: list[str], limit: int) -> None:
    if len(found) >= limit or schema is True:
        return
    if schema is False:
        found.append(f"{path}: not allowed")
        return
    if "$ref" in schema:
        _check(value, _resolve(root, schema["$ref"]), root, path, found, limit)
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_type_ok(value, k) for k in kinds):
            found.append(f"{path}: {type(value).__name__} is not {' or '.join(kinds)}")
            return
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        found.append(f"{path}: {str(value)[:40]!r} is not one of {schema['enum']}")
    if "const" in schema and not _same(value, schema["const"]):
        found.append(f"{path}: must be {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{path}: {value} is below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{path}: {value} is above {schema['maximum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{path}: does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            found.append(f"{path}: length {len(value)} is out of bounds")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            found.append(f"{path}: {len(value)} items is out of bounds")
        if "items" in schema:
            for index, element in enumerate(value):
                _check(element, schema["items"], root, f"{path}[{index}]", found, limit)
    if isinstance(value, dict):
        _check_object(value, schema, root, path, found, limit)
    for keyword in ("oneOf", "anyOf"):
        if keyword in schema:
            passing = sum(1 for sub in schema[keyword] if not _sub_errors(value, sub, root, path))
            if passing == 0 or (keyword == "oneOf" and passing > 1):
                found.append(f"{path}: matches {passing} of the {keyword} alternatives")
    for sub in schema.get("allOf", ()):
        _check(value, sub, root, path, found, limit)


def _check_object(value: dict, schema: dict, root: dict, path: str, found: list[str], limit: int) -> None:
    for key in schema.get("required", ()):
        if key not in value:
            found.append(f"{path}: {key!r} is missing")
    if len(value) > schema.get("maxProperties", len(value)):
        found.append(f"{path}: more than {schema['maxProperties']} properties")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, element in value.items():
        if key in properties:
            _check(element, properties[key], root, f"{path}.{key}", found, limit)
        elif extra is False:
            found.append(f"{path}: unexpected property {key!r}")
        elif isinstance(extra, dict):
            _check(element, extra, root, f"{path}.{key}", found, limit)


def _sub_errors(value, schema, root: dict, path: str) -> list[str]:
    found: list[str] = []
    _check(value, schema, root, path, found, 1)
    return found


def _same(a, b) -> bool:
    # JSON Schema equality: 1 == 1.0, but True is not 1.
    return type(a) is type(b) and a == b or (_type_ok(a, "number") and _type_ok(b, "number") and a == b)


def _resolve(root: dict, reference: str):
    if not reference.startswith("#/"):
        raise SchemaUnsupported(f"only local references are checked, not {reference!r}")
    node = root
    for part in reference[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node
