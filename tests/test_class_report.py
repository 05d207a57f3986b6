"""The class report: the summary it draws, and the page itself in a real browser."""
import copy
import json
import os
import shutil
import subprocess
import sys

import pytest

from browser import find_chromium, open_page
from conftest import FIXTURES, ROOT, SUBMISSIONS
from grader.batch import GRADER_FAILURE
from grader.class_report import render, side_by_side
from grader.class_summary import summarize

SMALL = FIXTURES / "hostile" / "assignment.yaml"
CLASS = {"correct_module.py": SUBMISSIONS / "correct_module.py",
         "template_bug.ipynb": SUBMISSIONS / "template_bug.ipynb",
         "renamed_copy.py": FIXTURES / "similarity" / "renamed_copy.py",
         "near_copy.py": FIXTURES / "similarity" / "near_copy.py",
         "independent.py": FIXTURES / "similarity" / "independent.py",
         "markup_in_comments.py": FIXTURES / "class_report" / "markup_in_comments.py",
         "load_error.py": FIXTURES / "class_report" / "load_error.py",
         "shortcuts.py": FIXTURES / "hostile" / "shortcuts.py",
         "loop_in_call.py": FIXTURES / "hostile" / "loop_in_call.py"}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("class")
    (folder / "in").mkdir()
    for name, source in CLASS.items():
        shutil.copy(source, folder / "in" / name)
    out = folder / "out"
    result = subprocess.run([sys.executable, "-m", "grader", "batch", str(folder / "in"), "-o", str(out),
                             "--assignment", str(SMALL), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    ids = sorted(p.stem for p in (folder / "in").iterdir())
    reports = [json.loads((out / f"{i}.json").read_text()) for i in ids]
    return out, reports, ids


def test_the_summary_counts_scores_groups_causes_and_outliers(graded):
    _, reports, ids = graded
    summary = summarize(reports, ids)
    assert summary["submissions"] == 9 and sum(summary["total"]["counts"]) == 9
    loop = next(i for i in summary["items"] if i["name"] == "Conv2dLoop")
    assert loop["statuses"] == {"graded": 8, "load_error": 1} and sum(loop["scores"]["counts"]) == 9
    basic = next(g for g in loop["groups"] if g["name"] == "basic")
    passed = sum(g["passed"] for r in reports for g in r["items"]["Conv2dLoop"].get("groups", [])
                 if g["name"] == "basic")
    assert basic["passed"] == passed and 0 < basic["rate"] < 1
    outliers = {kind: [e["id"] for e in entries] for kind, entries in summary["outliers"].items()}
    assert outliers == {"timeouts": ["loop_in_call"], "violations": ["shortcuts"], "load_failures": ["load_error"],
                        "grader_failures": []}
    assert any(c["examples"] == ["template_bug"] for c in summary["causes"])
    assert max(s["seconds"] for s in summary["durations"]["slowest"]) == summary["durations"]["slowest"][0]["seconds"]


def test_similar_submissions_are_grouped_with_their_sources(graded):
    _, reports, ids = graded
    groups = {(g["item"], tuple(g["members"])) for g in summarize(reports, ids)["similar"]}
    copies = ("correct_module", "markup_in_comments", "near_copy", "renamed_copy")
    assert ("Conv2dLoop", copies) in groups and ("Conv2dMatrix", copies) in groups
    assert not any("independent" in members for _, members in groups)
    pair = next(g for g in summarize(reports, ids)["similar"] if g["item"] == "Conv2dLoop")["side_by_side"][0]
    assert "class Conv2dLoop" in pair["source_a"] and "class Conv2dLoop" in pair["source_b"]


def test_grader_failures_are_outliers_and_the_page_does_not_depend_on_the_run(graded):
    _, reports, ids = graded
    failed = copy.deepcopy(reports[0])
    failed["load"]["fatal"] = f"{GRADER_FAILURE}: RuntimeError: boom"
    summary = summarize([failed, *reports[1:]], ids)
    assert [e["id"] for e in summary["outliers"]["grader_failures"]] == [ids[0]]
    assert render(summarize(reports, ids)) == render(summarize(copy.deepcopy(reports), list(ids)))


def test_the_side_by_side_view_aligns_shared_lines_and_escapes():
    html = side_by_side("a", "x = 1\n# <b>c</b>\ny = 2", "b", "x = 1\nz = 3\ny  =  2")
    assert html.count("class=same") == 2 and "&lt;b&gt;c&lt;/b&gt;" in html and "<b>c" not in html


browser_needed = pytest.mark.skipif(find_chromium() is None and not os.environ.get("GRADER_REQUIRE_BROWSER"),
                                    reason="no Chromium here (CI installs Debian's chromium and requires it)")

DOM = {
    "title": "document.title",
    "scripts": "document.scripts.length",
    "images": "document.images.length",
    "svgs": "document.querySelectorAll('svg').length",
    "bars": "document.querySelectorAll('#scores rect.bar').length",
    "cells": "document.querySelectorAll('#heatmap rect.cell').length",
    "cell_texts": "[...document.querySelectorAll('#heatmap svg text')].map(t => t.textContent)",
    "causes": "document.querySelectorAll('#causes tr').length - 1",
    "outliers": "[...document.querySelectorAll('#outliers .card b')].map(b => b.textContent)",
    "groups": "document.querySelectorAll('.similar-group').length",
    "side_by_side_text": "[...document.querySelectorAll('table.sbs')].map(t => t.textContent).join('\\n')",
    "links": "[...document.querySelectorAll('a')].map(a => a.getAttribute('href'))",
    "overflow": "document.documentElement.scrollWidth - document.documentElement.clientWidth",
}


@browser_needed
def test_the_page_renders_in_a_real_browser_offline_without_errors(graded, tmp_path):
    out, reports, ids = graded
    page = open_page(out / "class_report.html", DOM, screenshot=True)
    print(f"\nChromium: {page.values['svgs']} SVG charts, {page.values['cells']} heatmap cells, "
          f"{page.values['causes']} likely causes, {page.values['groups']} similar groups; "
          f"errors {page.errors}, requests {page.requests}, scripts {page.values['scripts']}")
    assert page.errors == [] and page.requests == []
    assert page.values["scripts"] == 0 and page.values["images"] == 0
    assert page.values["title"] == "Conv2d, hostile-submission tests: class report"   # not "pwned"
    items = summarize(reports, ids)["items"]
    assert page.values["svgs"] == 1 + len(items) + 1 + 1     # total, each item, heatmap, durations
    assert page.values["bars"] == 10 * (1 + len(items))
    assert page.values["cells"] == len(items) * 2             # the small config's two groups
    rates = [f"{100 * g['rate']:.0f}%" for item in items for g in item["groups"]]
    assert [t for t in page.values["cell_texts"] if t.endswith("%")] == rates and "Conv2dMatrixV2" in \
        page.values["cell_texts"]
    assert page.values["causes"] == len(summarize(reports, ids)["causes"]) > 0
    assert page.values["outliers"] == ["Time-outs: 1", "Violations (forbidden operators): 1", "Load failures: 1",
                                       "Grader failures (rerun to retry): 0"]
    assert page.values["groups"] >= 3
    assert '<script>document.title = "pwned"</script>' in page.values["side_by_side_text"]   # shown as text
    assert all((out / link).is_file() for link in page.values["links"])
    assert page.values["overflow"] <= 0                       # nothing wider than the window
    assert page.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(page.screenshot) > 20_000
    (tmp_path / "class_report.png").write_bytes(page.screenshot)


@browser_needed
def test_the_browser_check_itself_catches_scripts_errors_and_requests(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><img src='http://127.0.0.1:9/x.png'>"
                   "<script>console.error('e'); throw new Error('boom')</script></body></html>")
    page = open_page(bad, {"scripts": "document.scripts.length"})
    assert page.exceptions and page.console_errors and page.requests == ["http://127.0.0.1:9/x.png"]
