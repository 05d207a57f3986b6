"""The notebook view of a report dict: a compact HTML table (same data as render_text).

Every string that comes from the report is escaped: messages quote student output.
"""
from __future__ import annotations

from html import escape

from .render import _checks_lines, _describe_case, _load_lines, _num, item_word
from .safe_text import with_lines

COLOURS = {"ok": ("#1b5e20", "#e8f5e9"), "unsupported": ("#8a6d00", "#fff8e1"), "failed": ("#b71c1c", "#ffebee")}
# A transparent border spaces the text like a cell margin would.
CELL = "border:solid transparent;border-width:2px 8px;text-align:left;vertical-align:top"


def render_html(report: dict, notes: list[str] | tuple[str, ...] = ()) -> str:
    rows = []
    for name, cls in report["items"].items():
        score = f"{_num(cls['score'])}/{_num(cls['max_score'])}"
        if cls["status"] != "graded":
            rows.append(_row(name, score, "-", _badge(cls["status"].replace("_", " "), "failed")
                             + " " + escape(cls.get("message", ""))))
            continue
        cases = [c for c in cls["cases"] if c["status"] != "skipped"]
        passed = sum(1 for c in cases if c["status"] == "passed")
        details = [_groups(cls)]
        details += [f"<div>{escape(line)}</div>" for line in _checks_lines(cls, False)]
        for cause in cls.get("likely_causes", []):
            details.append(f"<div>likely cause: <b>{escape(cause['cause'].replace('_', ' '))}</b>: "
                           f"{escape(cause['evidence'])}</div>")
        for violation in cls["violations"]:
            details.append(f"<div style='color:#b71c1c'>violation: {escape(violation['message'])}</div>")
        failure = next((c for c in cls["cases"] if c["status"] in ("failed", "error", "timeout")),
                       next((c for c in cls["cases"] if c["status"] == "unsupported"), None))
        if failure is not None:
            label = "not supported" if failure["status"] == "unsupported" else "first failure"
            details.append(f"<div>{label}: <code>{escape(_describe_case(failure))}</code><br>"
                           f"<span style='opacity:0.8'>{escape(failure['message'])}</span></div>")
        rows.append(_row(name, score, f"{passed}/{len(cases)}", "".join(details)))
    header = "".join(f"<th style='{CELL}'>{title}</th>" for title in (item_word(report), "score", "passed", "groups"))
    footer = [f"<b>total {_num(report['score'])}/{_num(report['max_score'])}</b>"]
    footer += [escape(line) for line in _load_lines(report["load"])]
    footer += [escape(note) for note in notes]
    html = (f"<div class='grader-check'><div style='opacity:0.7'>{escape(report['assignment']['id'])} · "
            f"{escape(str(report['submission']['path']))} · seed {report['seed']}</div>"
            f"<table style='border-collapse:separate;border-spacing:0;margin:4px 0'><thead><tr>{header}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            + "".join(f"<div>{line}</div>" for line in footer) + "</div>")
    # Escaping makes text inert as markup; with_lines makes it inert as text (a bidi override
    # reorders a browser's line too).
    return with_lines(html)


def _row(name: str, score: str, passed: str, details: str) -> str:
    cell = CELL + ";box-shadow:inset 0 1px 0 #ccc"   # the line above each row
    return (f"<tr><td style='{cell}'><code>{escape(name)}</code></td>"
            f"<td style='{cell}'>{score}</td><td style='{cell}'>{passed}</td>"
            f"<td style='{cell}'>{details}</td></tr>")


def _groups(cls: dict) -> str:
    badges = []
    for group in cls.get("groups", []):
        counted = sum(group[s] for s in ("passed", "failed", "error", "timeout", "unsupported"))
        if counted == 0:
            continue
        if group["passed"] == counted:
            badges.append(_badge(f"{group['name']} ok", "ok", group.get("description", "")))
        elif group["unsupported"] == counted:
            badges.append(_badge(f"{group['name']} unsupported", "unsupported", group.get("description", "")))
        else:
            badges.append(_badge(f"{group['name']} {group['passed']}/{counted}", "failed",
                                 group.get("description", "")))
    return f"<div>{' '.join(badges)}</div>"


def _badge(text: str, state: str, title: str = "") -> str:
    colour, background = COLOURS[state]
    return (f"<span title='{escape(title, quote=True)}' style='color:{colour};background:{background};"
            f"border:solid transparent;border-width:0 4px;border-radius:3px;white-space:nowrap'>{escape(text)}</span>")
