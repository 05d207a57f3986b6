"""Text a submission controls, made safe for terminals, pages and spreadsheets (issue 11)."""
import sys
import unicodedata

import pytest

from grader.safe_text import UNSAFE_RANGES, csv_cell, one_line, terminal_safe, with_lines

CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")


def test_the_unsafe_ranges_cover_every_control_and_format_character_of_this_python():
    """The table is written out (scanning Unicode at import would cost every run a quarter of a
    second); a newer Python's Unicode must not add a character it misses."""
    inside = lambda cp: any(low <= cp <= high for low, high in UNSAFE_RANGES)
    missed = [f"U+{cp:04X}" for cp in range(sys.maxunicode + 1)
              if unicodedata.category(chr(cp)) in CATEGORIES and not inside(cp)]
    assert missed == []
    extra = [f"U+{cp:04X}" for low, high in UNSAFE_RANGES for cp in range(low, high + 1)
             if unicodedata.category(chr(cp)) not in CATEGORIES + ("Cn",)]
    assert extra == [], "only controls, format characters, separators and unassigned ones"


@pytest.mark.parametrize("text, shown", [
    ("plain text · ok", "plain text · ok"),
    ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
    ("\x1b[2J\x1b]52;c;eA==\x07", "\\x1b[2J\\x1b]52;c;eA==\\x07"),
    ("\x9b2J\x85", "\\x9b2J\\x85"),
    ("\u202eabc\u202c\u2066\u200b\ufeff\u2028", "\\u202eabc\\u202c\\u2066\\u200b\\ufeff\\u2028"),
    ("\ud800", "\\ud800"),
    ("\U000e0041", "\\U000e0041"),
    ("C:\\path\\n", "C:\\path\\n"),          # a backslash is no control: left as it is
])
def test_one_line_shows_what_a_terminal_would_act_on_as_escapes(text, shown):
    assert one_line(text) == shown
    assert "\n" not in one_line(text) and one_line(text).encode("utf-8")


def test_with_lines_keeps_lines_and_tabs_and_nothing_else():
    assert with_lines("a\r\nb\n\tc\x1b[0m\u202e") == "a\nb\n\tc\\x1b[0m\\u202e"
    assert with_lines("a\rb") == "a\\rb"


def test_terminal_safe_reaches_every_string_of_a_report():
    report = {"items": {"x\x1b": {"message": "a\nb", "cases": [{"m": "\u202e"}], "n": 3}}, "ok": None}
    assert terminal_safe(report) == {"items": {"x\\x1b": {"message": "a\\nb", "cases": [{"m": "\\u202e"}], "n": 3}},
                                     "ok": None}


@pytest.mark.parametrize("cell", ["=1+1", "+1+1", "-A1", "@SUM(A1)", "\t=1", "\r=1", "-", "+", "-1+1",
                                  "\uff1d1+1"])
def test_a_text_cell_that_a_spreadsheet_would_read_as_a_formula_gets_a_quote(cell):
    assert csv_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", [12.5, 0, -3.25, "-3.25", "+4", "1e-05", "", "alice", "a=b", " =1"])
def test_numbers_and_plain_text_are_left_as_they_are(cell):
    assert csv_cell(cell) == cell
