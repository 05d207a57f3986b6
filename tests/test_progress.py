"""The batch's progress line fits the terminal, 80 columns by default."""
import io
import re

from grader.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def lines_drawn(total, label, columns=None):
    clock = iter(range(0, 10 ** 6, 7))
    progress = Progress(total, stream=Terminal(), clock=lambda: next(clock))
    if columns:
        progress.columns = lambda: columns
    for _ in range(total):
        progress.advance(label, "100/100 (1.0 s)")
    return [line for line in re.split(r"[\r\n]", progress.stream.getvalue()) if line]


def test_the_live_line_fits_80_columns_whatever_the_counts_and_label():
    for total, label in ((5, "a"), (12345, "x" * 200), (999_999, "stem-0123abcd")):
        drawn = lines_drawn(min(total, 300), label)
        assert drawn and all(len(line) == 79 for line in drawn), max(map(len, drawn))
    assert "ETA" in drawn[0] and drawn[0].startswith("[")


def test_a_narrow_or_wide_terminal():
    assert all(len(line) == 119 for line in lines_drawn(3, "label", columns=120))
    assert all(len(line) <= 39 for line in lines_drawn(3, "label", columns=20))


def test_plain_lines_off_a_terminal_keep_the_outcome():
    stream = io.StringIO()
    Progress(1, stream=stream).advance("alice", "87/100 (2.0 s)")
    assert stream.getvalue().endswith("] alice: 87/100 (2.0 s)\n")
