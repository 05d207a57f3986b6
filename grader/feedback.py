"""Feedback a student can open: their own notebook as HTML, the results under each item's cell.

As nbgrader's `generate_feedback` does, the notebook is rendered with nbconvert's HTMLExporter;
unlike it, the page is built from the report alone (the student audience view: hidden cases
as counts only), never from a re-run, and it trusts nothing in the notebook:

- code cells are shown highlighted, without their outputs (the grader never ran the notebook,
  so they are the student's own run, not evidence, and they may carry HTML or scripts);
- markdown is rendered with raw HTML escaped, unsafe links neutralized (mistune's escape
  mode) and only embedded images shown, and raw cells are shown as plain text;
- the page has no scripts and a Content-Security-Policy that forbids them and any fetch, so
  even a markdown image cannot call out.

Each graded item's result table goes right under the cell that defines it (the report's
`definition.cell`), with the groups, likely causes, violations and the line that replays the
smallest failing case. A `.py` submission gets the same page around its source, split at the
graded items. If the file changed since it was graded, only the results are shown.
"""
from __future__ import annotations

import ast
import hashlib
import json
from html import escape
from pathlib import Path

from .class_summary import items_of
from .render import _checks_lines, _describe_case, _num
from .render_html import _badge, _groups, render_html
from .safe_text import with_lines

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font-family:system-ui,sans-serif;margin:24px max(16px, calc((100% - 1000px) / 2));color:#222}
.cell{margin:10px 0} .input_prompt{display:none}
.input_area{border:1px solid #ddd;border-radius:4px;background:#f7f7f7;overflow-x:auto}
.input_area pre{margin:4px 8px;font:13px/1.4 ui-monospace,monospace}
.md{line-height:1.5} .md pre{background:#f7f7f7;border:6px solid #f7f7f7}
.raw{white-space:pre-wrap;font:13px ui-monospace,monospace;color:#555}
.result{background:#f3f6fb;border:solid #f3f6fb;border-width:8px 12px;border-left:4px solid #3f6fb5;
margin:6px 0 18px} .result>*{margin-left:10px}
.result h3{margin-top:0;margin-bottom:6px;font-size:15px} .result table{border-collapse:collapse;font-size:13px}
.result td,.result th{border:solid transparent;border-width:2px 8px;text-align:left;vertical-align:top}
.result th{background:#e6ecf5}
.replay{background:#fff;border:solid #fff;border-width:4px 6px;box-shadow:0 0 0 1px #ccd;
font:12px ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}
.note{color:#8a6d00}
"""


def feedback_html(report: dict, submission: Path | None = None) -> str:
    """The page for one report (any audience: it is shown to the student as the student view).
    `submission`: the notebook or module graded (default: the report's path)."""
    from .report import for_students

    view = for_students(report) if report.get("audience") != "student" else report
    path = Path(submission if submission is not None else view["submission"]["path"])
    blocks = {name: _result_block(name, item) for name, item in items_of(view).items()}
    cells, note = _cells(view, path)
    placed: set[str] = set()
    if cells is not None:
        for cell in cells:
            for name in cell.get("after", ()):
                if name in blocks and name not in placed:
                    cell.setdefault("results", []).append(blocks[name])
                    placed.add(name)
    leftovers = [blocks[n] for n in blocks if n not in placed]
    body = _render_cells(cells) if cells is not None else ""
    title = f"Feedback: {path.name}"
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>{escape(title)}</title><style>{_pygments_css()}{STYLE}</style></head><body>"
            f"<h1>{escape(title)}</h1><div id='summary'>{render_html(view)}</div>"
            + (f"<p class='note'>{escape(note)}</p>" if note else "")
            + (f"<h2>Not found in your file</h2>{''.join(leftovers)}" if leftovers and cells is not None else "")
            + ("".join(leftovers) if cells is None else "")
            + f"<div id='notebook'>{body}</div></body></html>\n")
    # The student's cells are text as well as markup: control and bidi characters are escaped
    # over the whole page (safe_text.py), after nbconvert and mistune are done with it.
    return with_lines(page)


def write_feedback(report: dict, target: Path, submission: Path | None = None) -> None:
    from .report import write_text_atomically

    write_text_atomically(feedback_html(report, submission), target)


# ---------------------------------------------------------------------------------------------
# The student's cells
# ---------------------------------------------------------------------------------------------


def _cells(report: dict, path: Path) -> tuple[list[dict] | None, str]:
    """[{kind: code|markdown|raw, source, after: [item names]}], or None with why."""
    if report["submission"].get("refused"):    # inputs.py: a link out of the folder is never opened
        return None, "The submitted file was not read (the results say why), so only the results are shown."
    try:
        data = path.read_bytes()
    except OSError:
        return None, "The submitted file could not be read, so only the results are shown."
    if hashlib.sha256(data).hexdigest() != report["submission"]["sha256"]:
        return None, "The file changed since it was graded, so only the results are shown."
    text = data.decode("utf-8-sig", errors="replace")
    defined = {name: (item.get("definition") or {}) for name, item in items_of(report).items()}
    if report["submission"]["kind"] != "notebook":
        return _module_cells(text, defined), ""
    try:
        notebook = json.loads(text)
        raw_cells = [c for c in notebook["cells"] if isinstance(c, dict)]
    except (ValueError, KeyError, TypeError):
        return None, "The notebook could not be read, so only the results are shown."
    cells = []
    for number, cell in enumerate(raw_cells, start=1):
        source = cell.get("source", "")
        source = "".join(s for s in source if isinstance(s, str)) if isinstance(source, list) else str(source)
        kind = cell.get("cell_type") if cell.get("cell_type") in ("code", "markdown") else "raw"
        cells.append({"kind": kind, "source": source,
                      "after": [n for n, d in defined.items() if d.get("cell") == number]})
    return cells, ""


def _module_cells(text: str, defined: dict[str, dict]) -> list[dict]:
    """A module split into cells at its graded items: each item's statement is a cell of its own."""
    lines = text.splitlines(keepends=True)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return [{"kind": "code", "source": text, "after": [n for n, d in defined.items() if d.get("line")]}]
    spans = []
    for statement in tree.body:
        names = [n for n, d in defined.items() if d.get("cell") is None and d.get("line") == statement.lineno]
        if names:
            start = min([statement.lineno] + [d.lineno for d in getattr(statement, "decorator_list", [])])
            spans.append((start, statement.end_lineno, names))
    cells, position = [], 1
    for start, end, names in spans:
        if start > position:
            cells.append({"kind": "code", "source": "".join(lines[position - 1:start - 1]), "after": []})
        cells.append({"kind": "code", "source": "".join(lines[start - 1:end]), "after": names})
        position = end + 1
    if position <= len(lines):
        cells.append({"kind": "code", "source": "".join(lines[position - 1:]), "after": []})
    return [c for c in cells if c["source"].strip() or c["after"]]


def _render_cells(cells: list[dict]) -> str:
    """nbconvert renders the code cells; every other block (markdown, raw cells, results) is a
    placeholder it passes through, replaced by the grader's own escaped HTML afterwards (nbconvert
    would otherwise run raw HTML through its sanitizer, which mangles headings and tables). The
    placeholders carry a random nonce, so no text in the notebook can stand for one."""
    import secrets

    import mistune
    import nbformat
    from nbconvert import HTMLExporter

    markdown = mistune.create_markdown(renderer=_Markdown(escape=True), plugins=["table", "strikethrough"])
    nonce = secrets.token_hex(12)
    slots: dict[str, str] = {}
    notebook = nbformat.v4.new_notebook()

    def slot(html: str) -> None:
        marker = f"grader-slot-{nonce}-{len(slots)}"
        slots[marker] = html
        cell = nbformat.v4.new_raw_cell(marker, metadata={"raw_mimetype": "text/html"})
        cell["id"] = f"slot-{len(slots)}"
        notebook.cells.append(cell)

    for number, cell in enumerate(cells):
        if cell["kind"] == "code":
            code = nbformat.v4.new_code_cell(cell["source"].rstrip("\n"))
            code["id"] = f"cell-{number}"   # the notebook's own ids are the student's text
            notebook.cells.append(code)
        elif cell["kind"] == "markdown":
            slot(f"<div class='md'>{markdown(cell['source'])}</div>")
        else:
            slot(f"<div class='raw'>{escape(cell['source'])}</div>")
        for block in cell.get("results", []):
            slot(block)
    notebook.metadata["language_info"] = {"name": "python"}
    body, _ = HTMLExporter(template_name="basic").from_notebook_node(notebook)
    for marker, html in slots.items():
        if body.count(marker) != 1:
            raise RuntimeError("nbconvert did not pass a feedback placeholder through")
        body = body.replace(marker, html)
    return body


def _Markdown(escape: bool):
    import mistune

    class Markdown(mistune.HTMLRenderer):
        """mistune's HTML with raw HTML escaped, and images only from the notebook itself (data:
        URIs): an image from the web would be a request the page makes when a student opens it."""

        def image(self, text: str, url: str, title=None) -> str:
            if url.startswith("data:image/"):
                return super().image(text, url, title)
            return f"<span class='note'>[image: {mistune.escape(text or url)}]</span>"

    return Markdown(escape=escape)


def _pygments_css() -> str:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(style="default").get_style_defs(".highlight")


# ---------------------------------------------------------------------------------------------
# One item's results
# ---------------------------------------------------------------------------------------------

COUNTED = ("passed", "failed", "error", "timeout", "unsupported")


def _result_block(name: str, item: dict) -> str:
    score = f"{_num(item['score'])}/{_num(item['max_score'])}"
    head = f"<h3>{escape(name)}: {score}</h3>"
    if item["status"] != "graded":
        return (f"<div class='result' data-item='{escape(name, quote=True)}'>{head}"
                f"{_badge(item['status'].replace('_', ' '), 'failed')} {escape(item.get('message', ''))}</div>")
    rows = []
    for group in item.get("groups", []):
        counted = sum(group.get(s, 0) for s in COUNTED)
        if counted == 0:
            continue
        if group["hidden"]:
            detail = "hidden cases: counts only"
        else:
            failure = next((c for c in item["cases"] if c["group"] == group["name"] and c["status"] in COUNTED[1:]),
                           None)
            detail = "" if failure is None else (f"<code>{escape(_describe_case(failure))}</code><br>"
                                                  f"{escape(failure['message'])}")
        rows.append(f"<tr><td>{escape(group['name'])}</td><td>{escape(group.get('description', ''))}</td>"
                    f"<td>{group['passed']}/{counted}</td><td>{detail}</td></tr>")
    parts = [head, _groups(item)]
    if rows:
        parts.append("<table><tr><th>group</th><th>what it varies</th><th>passed</th><th>first failure</th></tr>"
                     + "".join(rows) + "</table>")
    parts += [f"<div>{escape(line)}</div>" for line in _checks_lines(item, False)]
    for cause in item.get("likely_causes", []):
        parts.append(f"<div>likely cause: <b>{escape(cause['cause'].replace('_', ' '))}</b>: "
                     f"{escape(cause['evidence'])}</div>")
    for violation in item.get("violations", []):
        parts.append(f"<div style='color:#b71c1c'>violation: {escape(violation['message'])}</div>")
    smallest = item.get("smallest_failing_case")
    if smallest:
        parts.append(f"<div>smallest failing case: <code>{escape(_describe_case(smallest))}</code><br>"
                     f"{escape(smallest['message'])}</div><div>replay it:</div>"
                     f"<div class='replay'>{escape(smallest['replay'])}</div>")
    return f"<div class='result' data-item='{escape(name, quote=True)}'>{''.join(parts)}</div>"
