"""`class_report.html`: the class summary (class_summary.py) drawn as one self-contained page.

The page needs nothing but itself: CSS inline, charts as inline SVG (svg.py), no scripts, no
fonts or images to fetch, and a Content-Security-Policy that forbids any (so a page opened
from a shared drive cannot call out, whatever a submission's text tried). Everything that came
from a report is escaped: sources, messages and ids are a student's text.
"""
from __future__ import annotations

import difflib
from html import escape
from urllib.parse import quote

from . import svg
from .render import _num
from .safe_text import with_lines

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.muted{color:#666} .grid{display:flex;flex-wrap:wrap;gap:12px}
.card{box-shadow:0 0 0 1px #ddd;border:solid #fff;border-width:6px 8px;border-radius:6px;margin:1px}
table{border-collapse:collapse;font-size:13px}
td,th{border:solid transparent;border-width:3px 8px;text-align:left;vertical-align:top}
tr+tr td{box-shadow:inset 0 1px #eee} th{background:#f4f4f4}
.sbs{font:12px/1.35 ui-monospace,monospace;table-layout:fixed;width:100%}
.sbs td{white-space:pre-wrap;word-break:break-all;width:50%;border-width:0 6px;box-shadow:none}
.sbs tr.same td{background:#fff3cd} .sbs th{font:600 12px system-ui,sans-serif}
details{margin:4px 0} summary{cursor:pointer}
.tag{display:inline-block;border:solid #eee;border-width:0 5px;border-radius:3px;background:#eee;font-size:12px}
"""


def render(summary: dict, roster: dict | None = None) -> str:
    title = summary["assignment"]["title"]
    body = [f"<h1>{escape(title)}: the class at a glance</h1>",
            f"<p class='muted' id='overview'>{summary['submissions']} submissions · mean "
            f"{_opt(summary['total']['mean'])} / median {_opt(summary['total']['median'])} of "
            f"{_num(summary['max_score'])} points · {summary['total']['full_marks']} with full marks · "
            f"drawn from the reports alone</p>",
            "<h2>Scores</h2><div class='grid' id='scores'>",
            _card(svg.histogram(summary["total"]["counts"], summary["total"]["labels"],
                                f"total (of {_num(summary['max_score'])})", colour="#2d5d9f"))]
    for item in summary["items"]:
        statuses = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in item["statuses"].items())
        body.append(_card(svg.histogram(item["scores"]["counts"], item["scores"]["labels"],
                                        f"{item['name']} (of {_num(item['max_score'])})")
                          + f"<div class='muted'>{escape(statuses)}</div>"))
    body.append("</div>")
    body += _heatmap(summary)
    body += _causes(summary)
    body += _outliers(summary)
    body += _durations(summary)
    body += _similar(summary)
    if roster is not None:
        body += _roster(roster)
    # Escaped as markup, and as text: no control or bidi character of a submission's survives.
    return with_lines("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                      f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
                      f"<title>{escape(title)}: class report</title><style>{STYLE}</style></head><body>"
                      + "".join(body) + "</body></html>\n")


def _card(content: str) -> str:
    return f"<div class='card'>{content}</div>"


def _heatmap(summary: dict) -> list[str]:
    columns: list[str] = []
    hidden = set()
    for item in summary["items"]:
        for group in item["groups"]:
            if group["name"] not in columns:
                columns.append(group["name"])
            if group["hidden"]:
                hidden.add(group["name"])
    if not columns:
        return []
    rows, values, texts, tips = [], [], [], []
    for item in summary["items"]:
        by_name = {g["name"]: g for g in item["groups"]}
        rows.append(item["name"])
        values.append([]), texts.append([]), tips.append([])
        for column in columns:
            group = by_name.get(column)
            rate = None if group is None else group["rate"]
            values[-1].append(rate)
            texts[-1].append("-" if rate is None else f"{100 * rate:.0f}%")
            tips[-1].append(f"{item['name']} · {column}: no case ran" if rate is None else
                            f"{item['name']} · {column}: {group['passed']} of {group['counted']} cases passed "
                            f"({group['unsupported']} unsupported); {group['all_passed']} of "
                            f"{group['submissions']} submissions passed all")
    labels = [f"{c} (hidden)" if c in hidden else c for c in columns]
    return ["<h2>Pass rate per case group</h2>",
            "<p class='muted'>Passed cases over the cases run, over the whole class: the kinds of input "
            "that break each item.</p>",
            f"<div id='heatmap'>{svg.heatmap(rows, labels, values, texts, tips, 'pass rate per case group')}</div>"]


def _causes(summary: dict) -> list[str]:
    out = ["<h2>Most common likely causes</h2>"]
    if not summary["causes"]:
        return out + ["<p class='muted'>No report names a likely cause.</p>"]
    rows = [f"<tr><td>{escape(c['item'])}</td><td>{escape(c['cause'].replace('_', ' '))}</td>"
            f"<td>{c['count']}</td><td>{_percent(c['count'], summary['submissions'])}</td>"
            f"<td>{_links(c['examples'])}</td></tr>" for c in summary["causes"]]
    return out + ["<table id='causes'><tr><th>item</th><th>likely cause</th><th>submissions</th><th>share</th>"
                  "<th>examples</th></tr>" + "".join(rows) + "</table>"]


OUTLIER_TITLES = {"timeouts": "Time-outs", "violations": "Violations (forbidden operators)",
                  "load_failures": "Load failures", "grader_failures": "Grader failures (rerun to retry)"}


def _outliers(summary: dict) -> list[str]:
    out = ["<h2>Outliers</h2><div class='grid' id='outliers'>"]
    for kind, title in OUTLIER_TITLES.items():
        entries = summary["outliers"][kind]
        rows = "".join(f"<tr><td>{_links([e['id']])}</td><td>{escape(e['detail'][:300])}</td></tr>"
                       for e in entries[:50])
        more = f"<p class='muted'>and {len(entries) - 50} more</p>" if len(entries) > 50 else ""
        out.append(f"<div class='card' id='outliers-{kind}'><b>{title}: {len(entries)}</b>"
                   + (f"<table>{rows}</table>{more}" if entries else "") + "</div>")
    return out + ["</div>"]


def _durations(summary: dict) -> list[str]:
    durations = summary["durations"]
    slowest = "".join(f"<tr><td>{_links([s['id']])}</td><td>{s['seconds']} s</td></tr>"
                      for s in durations["slowest"])
    return ["<h2>Time per submission</h2><div class='grid' id='durations'>",
            _card(svg.histogram(durations["counts"], durations["labels"],
                                f"seconds per submission (median {_opt(durations['median_s'])} s, "
                                f"total {durations['total_s']} s)", width=460, colour="#6b4fa3",
                                tips=durations["ranges"])),
            _card(f"<b>slowest</b><table>{slowest}</table>"), "</div>"]


def _similar(summary: dict) -> list[str]:
    out = ["<h2>Similar submissions</h2>",
           "<p class='muted'>Submissions whose graded code is the same once comments, whitespace, docstrings, "
           "the names of locals and helpers and the order of definitions are set aside (exact), or shares most "
           "of its normalized code (near copy). A group most of the class belongs to is likely code the course "
           "handed out. Shared lines are highlighted in the side-by-side views.</p>"]
    if not summary["similar"]:
        return out + ["<p class='muted' id='similar'>No two submissions are similar.</p>"]
    out.append("<div id='similar'>")
    opened = False
    for number, group in enumerate(summary["similar"], start=1):
        if group["exact"]:
            kind = "exact copies"
        else:
            low, high = group["near"]
            kind = (f"{group['versions']} versions after normalization, near copies "
                    f"{100 * low:.0f}%{'' if low == high else f' to {100 * high:.0f}%'}"
                    + (", each one an exact copy of another" if group["copied"] == len(group["members"]) else
                       f", {group['copied']} of them exact copies of another" if group["copied"] else ""))
        note = " · <span class='tag'>most of the class</span>" if group["share"] > 0.5 else ""
        out.append(f"<div class='card similar-group'><b>{escape(group['item'])}</b> · group {number}: "
                   f"{len(group['members'])} submissions, {kind}{note}"
                   f"<div>{_links(group['members'][:40])}"
                   + (f" and {len(group['members']) - 40} more" if len(group["members"]) > 40 else "") + "</div>")
        for pair in group["side_by_side"]:
            # The first near copy of the page is shown open, as an example of what to look for.
            show = not opened and pair["similarity"] < 1
            opened = opened or show
            out.append(f"<details{' open' if show else ''}><summary>{escape(pair['a'])} and {escape(pair['b'])} "
                       f"side by side ({100 * pair['similarity']:.0f}%)</summary>"
                       + side_by_side(pair["a"], pair["source_a"], pair["b"], pair["source_b"]) + "</details>")
        out.append("</div>")
    return out + ["</div>"]


def side_by_side(name_a: str, text_a: str, name_b: str, text_b: str, limit: int = 600) -> str:
    """Two sources in two columns, aligned line by line; lines the two share (ignoring
    whitespace and comments) are highlighted."""
    left, right = text_a.splitlines()[:limit], text_b.splitlines()[:limit]
    matcher = difflib.SequenceMatcher(None, [_key(x) for x in left], [_key(x) for x in right], autojunk=False)
    rows = []
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        for k in range(max(a1 - a0, b1 - b0)):
            a = left[a0 + k] if a0 + k < a1 else ""
            b = right[b0 + k] if b0 + k < b1 else ""
            same = tag == "equal" and _key(a) != ""
            rows.append(f"<tr{' class=same' if same else ''}><td>{escape(a)}</td><td>{escape(b)}</td></tr>")
    return (f"<table class='sbs'><tr><th>{escape(name_a)}</th><th>{escape(name_b)}</th></tr>"
            + "".join(rows) + "</table>")


def _key(line: str) -> str:
    return "".join(line.split("#", 1)[0].split())


def _roster(roster: dict) -> list[str]:
    sections = (("unmatched_submissions", "Submissions no roster entry matches", lambda e: _links([e["submission_id"]])
                 + f" {escape(e['path'])}"),
                ("ambiguous_submissions", "Submissions several roster entries match",
                 lambda e: _links([e["submission_id"]]) + " " + escape(", ".join(e["students"]))),
                ("students_with_several_submissions", "Students with several submissions (not exported)",
                 lambda e: escape(e["student_id"]) + " " + _links(e["submission_ids"])),
                ("students_without_submission", "Students without a submission",
                 lambda e: escape(f"{e['student_id']} {e['name']}".strip())))
    out = [f"<h2>Roster</h2><p class='muted'>{len(roster['matched'])} students matched to a submission "
           "(their grades are in canvas_grades.csv and moodle_grades.csv).</p><div class='grid' id='roster'>"]
    for key, title, show in sections:
        entries = roster[key]
        items = "".join(f"<li>{show(e)}</li>" for e in entries[:100])
        out.append(f"<div class='card'><b>{title}: {len(entries)}</b>" + (f"<ul>{items}</ul>" if items else "")
                   + "</div>")
    return out + ["</div>"]


def _links(ids: list[str]) -> str:
    return ", ".join(f"<a href='{quote(i)}.json'>{escape(i)}</a>" for i in ids)


def _percent(count: int, total: int) -> str:
    return f"{100 * count / total:.0f}%" if total else "-"



def _opt(value) -> str:
    return "-" if value is None else _num(value)
