"""The terminal view of a report dict (the same data as the JSON, never a second path)."""
from __future__ import annotations

from .safe_text import terminal_safe

STATUS_WORDS = {"graded": "", "missing": "MISSING", "load_error": "LOAD ERROR", "wrong_form": "WRONG FORM"}


def item_word(report: dict) -> str:
    """What the table's first column holds: class, function, or item when both."""
    kinds = {item.get("kind", "class") for item in report["items"].values()}
    return kinds.pop() if len(kinds) == 1 else "item"


def render_text(report: dict, color: bool = False) -> str:
    report = terminal_safe(report)   # a field stays on its line, and nothing in it reaches the terminal raw
    lines = []
    sub = report["submission"]
    lines.append(f"{report['assignment']['id']} · {sub['path']} · seed {report['seed']}"
                 + (f" · case {report['only_case']}" if report.get("only_case") else ""))
    lines.append("")
    width = max([len(name) for name in report["items"]] + [5])
    lines.append(f"{item_word(report):<{width}}  {'score':>13}  {'passed':>7}  groups")
    for name, cls in report["items"].items():
        score = f"{_num(cls['score'])}/{_num(cls['max_score'])}"
        if cls["status"] != "graded":
            lines.append(f"{name:<{width}}  {score:>13}  {'-':>7}  {_paint(STATUS_WORDS[cls['status']], 'red', color)}"
                         f" {cls.get('message', '')}")
            continue
        cases = [c for c in cls["cases"] if c["status"] != "skipped"]
        passed = sum(1 for c in cases if c["status"] == "passed")
        lines.append(f"{name:<{width}}  {score:>13}  {f'{passed}/{len(cases)}':>7}  {_groups_line(cls, color)}")
        pad = " " * width
        lines.extend(f"{pad}    {line}" for line in _checks_lines(cls, color))
        if cls.get("message") and not cls["violations"]:
            lines.append(f"{pad}    note: {cls['message']}")
        for violation in cls["violations"]:
            lines.append(f"{pad}    violation: {violation['message']}")
        for note in cls.get("static_notes", []):
            lines.append(f"{pad}    note: {note['message']}")
        causes = cls.get("likely_causes", [])
        for cause in causes:
            cost = f" (costs {_num(cause['points'])} points)" if "points" in cause else ""
            lines.append(f"{pad}    likely cause: {cause['cause'].replace('_', ' ')}{cost}: {cause['evidence']}")
            if cause.get("smallest_failing_case"):
                lines.extend(_smallest_lines(cause["smallest_failing_case"], pad + "      "))
        smallest = cls.get("smallest_failing_case")
        if smallest and not any(c.get("smallest_failing_case") for c in causes):
            lines.extend(_smallest_lines(smallest, pad + "    "))
            continue
        if smallest:
            continue
        # A wrong answer teaches more than a refused keyword, so it is shown first.
        failure = next((c for c in cls["cases"] if c["status"] in ("failed", "error", "timeout")),
                       next((c for c in cls["cases"] if c["status"] == "unsupported"), None))
        if failure is not None:
            label = "not supported" if failure["status"] == "unsupported" else "first failure"
            lines.append(f"{pad}    {label}: {_describe_case(failure)}")
            lines.append(f"{pad}      {failure['message']}")
    lines.append("")
    lines.append(f"total {_num(report['score'])}/{_num(report['max_score'])}")
    skipped_cuda = sum(1 for cls in report["items"].values() for c in cls["cases"]
                       if c["status"] == "skipped" and c["device"] == "cuda")
    if skipped_cuda:
        lines.append(f"{skipped_cuda} CUDA cases skipped: CUDA is not available here")
    lines.extend(_load_lines(report["load"]))
    protections = report["environment"].get("protections", {})
    if protections:
        lines.append("sandbox: " + ", ".join(sorted(protections)))
    return "\n".join(lines)


def _smallest_lines(smallest: dict, pad: str) -> list[str]:
    return [f"{pad}smallest failing case: {_describe_case(smallest)}", f"{pad}  {smallest['message']}",
            f"{pad}  replay: {smallest['replay']}"]


def _checks_lines(cls: dict, color: bool) -> list[str]:
    """`methods: _to_rows ok, _to_columns 4/6` (and why the first one failed), and
    `speed: 3.2x <baseline>'s time on cpu, vectorized`."""
    lines = []
    checks = cls.get("checks") or []
    methods = [c for c in checks if c["kind"] == "method"]
    if methods and all(m["status"] == "not_run" for m in methods):
        lines.append(f"methods: {methods[0]['message']}")
    elif methods:
        words = {"passed": ("ok", "green"), "missing": ("missing", "red"), "not_run": ("not run", "yellow")}
        parts = []
        for m in methods:
            word, colour = words.get(m["status"], (f"{m['passed']}/{m['total']}", "red"))
            parts.append(_paint(f"{m['name']} {word}", colour, color))
        lines.append("methods: " + ", ".join(parts))
        failing = next((m for m in methods if m["status"] in ("failed", "error")), None)
        if failing is not None:
            lines.append(f"  {failing['name']}: {failing['message']}")
    for check in checks:
        if check["kind"] == "speed":
            lines.extend(_speed_lines(check, color))
    return lines


def _speed_lines(check: dict, color: bool) -> list[str]:
    speed = check.get("speed") or {}
    if speed.get("ratio") is not None:
        ratio = speed["ratio"]
        text = f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x"
        text += f" {speed['baseline']}'s time on {speed['device']}"
    elif check["status"] in ("not_run", "timeout"):
        text = check["message"].split("; ")[0]
    else:
        text = "not timed"
    if speed.get("vectorized") is True:
        text += ", vectorized"
    elif speed.get("vectorized") is False and speed.get("operators"):
        small, large = speed["operators"][0]["count"], speed["operators"][-1]["count"]
        text += ", " + _paint(f"not vectorized (operators per call grow with the output: {small} -> {large})",
                              "yellow", color)
    lines = [f"speed: {text}"]
    if check["status"] == "error" and check["message"]:
        lines.append(f"  {check['message'].split('; ')[0]}")
    return lines


def _groups_line(cls: dict, color: bool) -> str:
    parts = []
    for group in cls.get("groups", []):
        counted = sum(group[s] for s in ("passed", "failed", "error", "timeout", "unsupported"))
        if counted == 0:
            continue
        if group["passed"] == counted:
            parts.append(_paint(f"{group['name']} ok", "green", color))
        elif group["unsupported"] == counted:
            parts.append(_paint(f"{group['name']} unsupported", "yellow", color))
        else:
            parts.append(_paint(f"{group['name']} {group['passed']}/{counted}", "red", color))
    return ", ".join(parts)


def _describe_case(case: dict) -> str:
    """`id [device] status: <parameters in words>`; a smallest failing case has no group id worth showing."""
    name = "" if case["id"].startswith("custom-") else f"{case['id']} "
    return f"{name}[{case['device']}] {case['status']}: {case['description']}"


def _load_lines(load: dict) -> list[str]:
    lines = []
    if load.get("fatal"):
        lines.append(f"loading failed: {load['fatal']}")
    for error in load["errors"]:
        where = f"cell {error['cell']}, line {error['line']}" if error["cell"] else f"line {error['line']}"
        lines.append(f"not loaded ({where}): {error['message']}")
    syntax = [s for s in load["skipped"] if s["kind"] in ("syntax_error", "unreadable")]
    for note in syntax:
        lines.append(f"skipped: {note['message']}")
    others = [s for s in load["skipped"] if s["kind"] not in ("syntax_error", "unreadable")]
    if others:
        cells = sorted({s["cell"] for s in others if s["cell"] is not None})
        where = f" (cells {', '.join(map(str, cells[:12]))}{'...' if len(cells) > 12 else ''})" if cells else ""
        lines.append(f"{len(others)} statements that are not definitions were not run{where}")
    return lines


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _paint(text: str, colour: str, enabled: bool) -> str:
    if not enabled or not text:
        return text
    code = {"red": "31", "green": "32", "yellow": "33"}[colour]
    return f"\033[{code}m{text}\033[0m"
