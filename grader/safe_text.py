"""Text from a submission, made safe to show to an instructor: terminals, HTML pages, CSV cells.

A student chooses file names, exception messages, the names of the types they return and what
their code prints, and all of it ends up in what the grader shows. On a terminal an escape
sequence is a command: it can clear the screen, set the window title, write the clipboard
(OSC 52), hide text, or move the cursor back over a line to print a forged ``total 100/100`` in
its place; a bidi override (U+202E) reorders what follows it, on a terminal and in a browser
alike, and zero-width characters hide what is there. So every renderer passes the report's text
through here, and what it shows of such a character is its Python escape (``\\x1b``,
``\\u202e``): visible, inert, and still telling the instructor what was there.

- `one_line`: for a field the terminal table shows on one line: newline, carriage return and tab
  are escaped too, so a message can never start a line of its own.
- `with_lines`: keeps newline and tab (a traceback, a source file in an HTML page).
- `terminal_safe`: a report dict (or any JSON-like value) with every string cleaned, keys too:
  one line each, except under the keys given (fields rendered with their lines).
- `csv_cell`: a text cell a spreadsheet would read as a formula gets a leading quote.

The JSON report keeps the raw text: ``json.dumps`` escapes every control and non-ASCII
character, so the file is valid, shows nothing raw, and a tool reading it gets what the
submission really said.
"""
from __future__ import annotations

import re

# Every character of the Unicode categories Cc (controls: C0, DEL, C1, where U+009B alone is a
# CSI), Cf (format: bidi embeddings, overrides, isolates and marks, zero-width characters, the
# byte-order mark, tag characters), Cs (lone surrogates: no encoder writes them), Zl and Zp (line
# and paragraph separators: str.splitlines and some renderers break lines there), for Python
# 3.11's Unicode 14. Ranges may span unassigned code points. Written out, not computed: scanning
# Unicode at import would cost every run a quarter of a second; tests/test_safe_text.py checks
# the table against the running Python's Unicode.
UNSAFE_RANGES = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E),
    (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x206F), (0xD800, 0xDFFF), (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0001, 0xE007F),
)
_CLASS = "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in UNSAFE_RANGES)
_ONE_LINE = re.compile(f"[{_CLASS}]")
_WITH_LINES = re.compile(f"(?![\t\n])[{_CLASS}]")

# Cells a spreadsheet evaluates (OWASP, "CSV Injection"): =, +, -, @, and tab or carriage return
# before one of them; and the full-width =, +, - and @ that some locales' spreadsheets take too.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _escaped(match: re.Match) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def one_line(text: str) -> str:
    return _ONE_LINE.sub(_escaped, text)


def with_lines(text: str) -> str:
    # A Windows line end is a line end, not a carriage return that could overwrite the line.
    return _WITH_LINES.sub(_escaped, text.replace("\r\n", "\n"))


def terminal_safe(value, keep_lines: frozenset[str] = frozenset(), _lines: bool = False):
    """A copy of a JSON-like value (dicts, lists, strings, numbers) with every string, keys
    included, cleaned: with `with_lines` under a key in `keep_lines`, else with `one_line`."""
    if isinstance(value, str):
        return with_lines(value) if _lines else one_line(value)
    if isinstance(value, dict):
        return {one_line(key) if isinstance(key, str) else key: terminal_safe(item, keep_lines, key in keep_lines)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [terminal_safe(item, keep_lines, _lines) for item in value]
    return value


def csv_cell(value):
    """A text cell with a leading quote where a spreadsheet would evaluate it; numbers (and text
    that is just a number, such as ``-3.25``) are left as they are, so scores stay numeric."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
