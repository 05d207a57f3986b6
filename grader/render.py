"""The terminal view of a report dict (the same data as the JSON, never a second path)."""
from __future__ import annotations

STATUS_WORDS = {"graded": "", "missing": "MISSING", "load_error": "LOAD ERROR"}


def render_text(report: dict, color: bool = False) -> str:
    lines = []
    sub = report["submission"]
    lines.append(f"{report['assignment']['id']} · {sub['path']} · seed {report['seed']}"
                 + (f" · case {report['only_case']}" if report.get("only_case") else ""))
    lines.append("")
    width = max([len(name) for name in report["classes"]] + [5])
    lines.append(f"{'class':<{width}}  {'score':>13}  {'passed':>7}  groups")
    for name, cls in report["classes"].items():
        score = f"{_num(cls['score'])}/{_num(cls['max_score'])}"
        if cls["status"] != "graded":
            lines.append(f"{name:<{width}}  {score:>13}  {'-':>7}  {_paint(STATUS_WORDS[cls['status']], 'red', color)}"
                         f" {cls.get('message', '')}")
            continue
        cases = [c for c in cls["cases"] if c["status"] != "skipped"]
        passed = sum(1 for c in cases if c["status"] == "passed")
        lines.append(f"{name:<{width}}  {score:>13}  {f'{passed}/{len(cases)}':>7}  {_groups_line(cls, color)}")
        pad = " " * width
        for violation in cls["violations"]:
            lines.append(f"{pad}    violation: {violation['message']}")
        for cause in cls.get("likely_causes", []):
            lines.append(f"{pad}    likely cause: {cause['cause'].replace('_', ' ')}: {cause['evidence']}")
        smallest = cls.get("smallest_failing_case")
        if smallest:
            lines.append(f"{pad}    smallest failing case: {_describe_case(smallest)}")
            lines.append(f"{pad}      {smallest['message']}")
            lines.append(f"{pad}      replay: {smallest['replay']}")
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
    skipped_cuda = sum(1 for cls in report["classes"].values() for c in cls["cases"]
                       if c["status"] == "skipped" and c["device"] == "cuda")
    if skipped_cuda:
        lines.append(f"{skipped_cuda} CUDA cases skipped: CUDA is not available here")
    lines.extend(_load_lines(report["load"]))
    protections = report["environment"].get("protections", {})
    if protections:
        lines.append("sandbox: " + ", ".join(sorted(protections)))
    return "\n".join(lines)


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
    """`id [device] status: input ...`; a smallest failing case has no group id worth showing."""
    p = case["params"]
    shape = f"input {p['batch']}x{p['in_channels']}x{p['height']}x{p['width']}"
    extras = [f"kernel {p['kernel_size']}", f"{p['out_channels']} filters", f"stride {p['stride']}"]
    if p["padding"]:
        extras.append(f"padding {p['padding']}")
    if p["dilation"] != 1:
        extras.append(f"dilation {p['dilation']}")
    if p["dtype"] != "float32":
        extras.append(p["dtype"])
    name = "" if case["id"].startswith("custom-") else f"{case['id']} "
    return f"{name}[{case['device']}] {case['status']}: {shape}, {', '.join(extras)}"


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
