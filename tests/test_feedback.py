"""Feedback pages: the student's own notebook with the results under each item's cell."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from browser import find_chromium, open_page
from conftest import FIXTURES, ROOT, SUBMISSIONS
from grader.feedback import feedback_html

SMALL = FIXTURES / "hostile" / "assignment.yaml"
ITEMS = ("Conv2dLoop", "Conv2dMatrix", "Conv2dMatrixV2")


def grade(path, folder, *extra):
    report, page = folder / f"{path.stem}.json", folder / f"{path.stem}.html"
    result = subprocess.run([sys.executable, "-m", "grader", str(path), "-o", str(report), "--feedback", str(page),
                             "--quiet", *map(str, extra)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(report.read_text()), page


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    # The full assignment: it has a hidden group (random), and a smallest failing case to replay.
    folder = tmp_path_factory.mktemp("feedback")
    return grade(SUBMISSIONS / "template_bug.ipynb", folder, "--device", "cpu")


def test_results_sit_under_the_cell_that_defines_each_item(notebook):
    report, page = notebook
    html = page.read_text()
    cells = json.loads((SUBMISSIONS / "template_bug.ipynb").read_text())["cells"]
    for name in ITEMS:
        cell = cells[report["items"][name]["definition"]["cell"] - 1]
        defining = html.index(f"<span class=\"nc\">{name}</span>")
        result = html.index(f"data-item='{name}'")
        next_cell = html.find("class=\"cell ", defining)
        assert defining < result and (next_cell == -1 or result < next_cell), name
        assert cell["cell_type"] == "code" and f"class {name}" in "".join(cell["source"])


def test_hidden_cases_are_counts_only_and_the_replay_line_is_there(notebook):
    report, page = notebook
    html = page.read_text()
    hidden = [c["id"] for item in report["items"].values() for c in item["cases"] if c["hidden"]]
    assert hidden and not any(case in html for case in hidden)
    assert "hidden cases: counts only" in html
    replay = report["items"]["Conv2dMatrixV2"]["smallest_failing_case"]["replay"]
    assert replay.startswith("grade ") and replay.replace("'", "&#x27;") in html


def test_a_module_gets_the_same_page_split_at_its_items(tmp_path):
    report, page = grade(SUBMISSIONS / "missing_class.py", tmp_path, "--assignment", SMALL)
    html = page.read_text()
    for name in ("Conv2dLoop", "Conv2dMatrix"):
        assert html.index(f"<span class=\"nc\">{name}</span>") < html.index(f"data-item='{name}'")
    assert html.index("data-item='Conv2dLoop'") < html.index("<span class=\"nc\">Conv2dMatrix</span>")
    assert "Not found in your file" in html and "data-item='Conv2dMatrixV2'" in html   # missing: listed apart


def test_a_file_changed_since_grading_shows_the_results_only(notebook, tmp_path):
    report, _ = notebook
    changed = tmp_path / "template_bug.ipynb"
    changed.write_text((SUBMISSIONS / "template_bug.ipynb").read_text().replace("Conv2d", "Conv2d "))
    html = feedback_html(report, changed)
    assert "changed since it was graded" in html and html.count("class='result'") == 3
    assert "<span class=\"nc\">" not in html


HOSTILE = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "id": "x\"><script>alert(1)</script>",
         "source": ["# Notes <script>document.title='pwned'</script>\n",
                    "<img src=x onerror=\"document.title='pwned'\"> [click](javascript:alert(1)) ",
                    "![tracker](https://tracker.example.org/pixel.png) <style>body{display:none}</style>\n",
                    "| a | b |\n|---|---|\n| 1 | 2 |\n"]},
        {"cell_type": "raw", "metadata": {"raw_mimetype": "text/html"}, "source": "<script>document.title='raw'</script>"},
        {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": "x = '</pre><script>alert(2)</script>'",
         "outputs": [{"output_type": "display_data", "metadata": {},
                      "data": {"text/html": "<script>document.title='out'</script>",
                               "application/javascript": "document.title='js'"}}]},
        {"cell_type": "code", "metadata": {}, "execution_count": 2, "outputs": [],
         "source": "class Conv2dLoop(ABCConv2d):\n    def __call__(self, x):\n        return x  # <b>bold</b>"},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    path = folder / "hostile.ipynb"
    path.write_text(json.dumps(HOSTILE))
    return grade(path, folder, "--assignment", SMALL)


def test_nothing_from_the_notebook_becomes_markup(hostile):
    _, page = hostile
    html = page.read_text()
    assert "<script" not in html and "onerror=" not in html.replace("onerror=&quot;", "")
    assert "javascript:" not in html and "tracker.example.org/pixel.png\"" not in html
    assert "<table>" in html and "<h1>Notes" in html        # markdown itself still renders
    assert "&lt;script&gt;document.title=&#x27;raw&#x27;&lt;/script&gt;" in html   # the raw cell, as text
    assert "document.title='out'" not in html and "document.title='js'" not in html   # outputs are dropped


browser_needed = pytest.mark.skipif(find_chromium() is None and not os.environ.get("GRADER_REQUIRE_BROWSER"),
                                    reason="no Chromium here (CI installs Debian's chromium and requires it)")


@browser_needed
def test_pages_render_in_a_real_browser_with_no_scripts_requests_or_errors(notebook, hostile):
    for _, page in (notebook, hostile):
        result = open_page(page, {
            "title": "document.title", "scripts": "document.scripts.length",
            "results": "document.querySelectorAll('.result').length",
            "placed": "[...document.querySelectorAll('#notebook .result')].map(r => "
                      "r.previousElementSibling && r.previousElementSibling.textContent.includes("
                      "'class ' + r.dataset.item))"})
        print(f"\nChromium, {page.name}: title {result.values['title']!r}, {result.values['results']} result blocks, "
              f"placed under their cells {result.values['placed']}, errors {result.errors}, "
              f"requests {result.requests}")
        assert result.errors == [] and result.requests == [] and result.values["scripts"] == 0
        assert result.values["title"] == f"Feedback: {page.stem}.ipynb"
        assert result.values["placed"] and all(result.values["placed"])
