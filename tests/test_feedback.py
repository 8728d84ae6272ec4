"""What a class gets back: a zipped class folder graded through the command line, its
feedback pages (hidden tests kept out, items named, maths offline) and its statuses; and
nbgrader's own commands, which the README names, in a fresh copy of the course."""
import csv
import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from tests.helpers import CHAPTERS, ROOT, hidden_lines, reference, released, submission

pytestmark = pytest.mark.xdist_group("feedback")  # its class, graded once

# Right wherever it is called, except from a line of a hidden-test block: only a hidden
# check fails, so its traceback would print hidden lines around the failing one.
A = next(chapter for chapter in CHAPTERS if "box_iou" in chapter.items)  # the first to grade it
WRONG_ONLY_UNDER_HIDDEN_TESTS = reference(A.name, "box_iou").replace("def box_iou(", "def _box_iou(") + '''

import linecache, sys

def box_iou(boxes1, boxes2):
    iou = _box_iou(boxes1, boxes2)
    frame = sys._getframe(1)
    while frame is not None:
        marks = [line for line in linecache.getlines(frame.f_code.co_filename)[:frame.f_lineno]
                 if "HIDDEN " + "TESTS" in line]
        if marks and "BEGIN" in marks[-1]:
            return iou * 0.5
        frame = frame.f_back
    return iou
'''
CLASS = "Class-DL-2025"


class Page(HTMLParser):
    """A feedback page's text as a reader sees it, and the scripts and styles it loads."""

    def __init__(self, page):
        super().__init__()
        self.parts, self.loads = [], []
        self.feed(page)
        self.text = html.unescape("".join(self.parts))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.loads.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.loads.append(attrs["href"])

    def handle_data(self, data):
        self.parts.append(data)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("feedback")
    students = root / "zipped" / CLASS
    write(students / "ana" / "RoIAlign_hw.ipynb",
          nbformat.writes(submission(A.name, {"box_iou": WRONG_ONLY_UNDER_HIDDEN_TESTS})))
    write(students / "ben" / A.name / f"{A.name}.ipynb", nbformat.writes(submission(A.name, None)))
    write(students / "cai" / "notes.ipynb", "{}")
    write(students / "dan" / f"{A.name}.ipynb", nbformat.writes(submission(A.name, {"box_iou": (
        "def box_iou(boxes1, boxes2):\n    import os\n    os._exit(0)\n")})))
    write(students / "eve" / f"{A.name}.ipynb", released(A.name).read_text()[:4000])
    write(students / "fay" / f"{A.name}.ipynb",
          json.dumps({"cells": "none", "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    archive = shutil.make_archive(str(root / "class"), "zip", root / "zipped")  # zip -r class.zip Class-DL-2025
    out, course = root / "out" / "grades.csv", root / "course"
    result = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", archive, "--out", str(out),
         "--course-dir", str(course)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    return rows, out.parent / "feedback", course, result.stdout


def test_the_wrapped_class_is_graded_per_student(graded):
    rows, _, _, _ = graded
    assert sorted(rows) == ["ana", "ben", "cai", "dan", "eve", "fay"]
    assert rows["ana"]["notebook"] == "RoIAlign_hw.ipynb"


def test_a_hidden_failure_reaches_the_student_as_its_message_only(graded):
    rows, feedback, course, _ = graded
    autograded = nbformat.read(course / "autograded" / "ana" / A.name / f"{A.name}.ipynb", as_version=4)
    error = next(o for c in autograded.cells for o in c.get("outputs", [])
                 if c.metadata.get("nbgrader", {}).get("grade_id") == "test_box_iou"
                 and o.output_type == "error")
    traceback = "\n".join(error.traceback)
    hidden = hidden_lines(A, "test_box_iou")
    assert hidden and [line for line in hidden if line in traceback], \
        "the fixture must fail inside the hidden block, where the traceback shows hidden lines"
    page = Page((feedback / "ana" / f"{A.name}.html").read_text()).text
    assert f"{error.ename}: {error.evalue}" in page
    assert not [line for line in hidden if line in page]
    assert "HIDDEN TESTS" not in page


def test_a_disagreement_says_which_side_failed_on_what(graded):
    rows, feedback, _, _ = graded
    status = rows["ana"]["status"]
    # its answer inspects its callers' frames, which is flagged too
    assert re.fullmatch(r"graded; flagged: box_iou notebook tests failed \(AssertionError: box_iou[^;]+\), "
                        r"fresh-input check passed; box_iou reaches into the interpreter "
                        r"\(_getframe, f_back\): read it", status), status
    page = Page((feedback / "ana" / f"{A.name}.html").read_text()).text
    assert "FreshInputCheckPassed: notebook tests failed (AssertionError: box_iou" in page, \
        "the feedback must say what the CSV says, in the item's own grade cell"


def test_the_score_table_names_every_item(graded):
    _, feedback, _, _ = graded
    page = Page((feedback / "ben" / f"{A.name}.html").read_text()).text
    items = [c.metadata["nbgrader"]["grade_id"].removeprefix("test_")
             for c in nbformat.read(released(A.name), as_version=4).cells
             if c.metadata.get("nbgrader", {}).get("grade")]
    assert "Test cell" not in page
    for item in items:
        assert f"Tests of {item} (Score: 0.0 /" in page, item


def test_an_untouched_notebook_says_so(graded):
    rows, _, _, _ = graded
    assert rows["ben"]["status"] == "graded; untouched: no answer cell was changed"
    assert float(rows["ben"]["score"]) == 0
    assert rows["ana"]["status"].startswith("graded; flagged:")  # an edited notebook is not


def test_unmatched_notebooks_are_named_in_the_status_and_on_the_console(graded):
    rows, _, _, stdout = graded
    assert rows["cai"]["status"] == (f"missing notebook: no notebook for {A.name} in cai/; "
                                     "notebooks that match no assignment: notes.ipynb")
    assert "notes.ipynb" in stdout


def test_corrupt_files_get_one_readable_line(graded):
    rows, _, _, _ = graded
    for student in ("eve", "fay"):
        status = rows[student]["status"]
        assert status.startswith("corrupt notebook: ") and "\n" not in status
        assert not set('{}[]"') & set(status), status


def test_a_discarded_student_leaves_nothing_behind(graded):
    rows, feedback, course, _ = graded
    assert rows["dan"]["status"].startswith("autograde failed")
    with sqlite3.connect(course / "gradebook.db") as db:
        students = {row[0] for row in db.execute("select id from student")}
    assert students == {"ana", "ben"}
    assert not [p for p in course.rglob("*") if "dan" in p.relative_to(course).parts]
    assert not (feedback / "dan").exists()


def test_feedback_loads_nothing_from_the_network(graded):
    _, feedback, _, _ = graded
    page_path = feedback / "ana" / f"{A.name}.html"
    page = page_path.read_text()
    loads = Page(page).loads
    assert not [url for url in loads if re.match(r"(https?:)?//", url)], loads
    assert any("mathjax" in url for url in loads), "the page loads no MathJax"
    for url in loads:
        assert (page_path.parent / url).resolve().is_file(), url
    assert "cdn" not in page.lower()


def test_feedback_maths_render_offline(graded):
    _, feedback, _, _ = graded
    page = feedback / "ben" / f"{A.name}.html"
    assert "$" in Page(page.read_text()).text, "the page has no maths to render"
    dom = subprocess.run([shutil.which("chromium") or "chromium", "--headless", "--no-sandbox",
                          "--disable-gpu", "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "<mjx-container" in dom, "MathJax typeset nothing"


def nbgrader(cwd, *args):
    result = subprocess.run([str(Path(sys.executable).parent / "nbgrader"), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, (args, result.stderr[-3000:])
    return result.stderr  # nbgrader logs to stderr


def test_nbgrader_commands_work_in_a_fresh_course(tmp_path):
    course, home = tmp_path / "course", tmp_path / "home"
    ignored = [line.removeprefix("autograder/").strip("/")
               for line in (ROOT / ".gitignore").read_text().splitlines() if line.startswith("autograder/")]
    shutil.copytree(ROOT / "autograder", course, ignore=shutil.ignore_patterns("__pycache__", *ignored))
    assert not (course / "source").exists()          # as in a fresh clone
    home.mkdir()
    exchange = [f"--Exchange.root={course / 'exchange'}", "--course=dlbb"]
    nbgrader(course, "generate_assignment", A.name)
    nbgrader(course, "release_assignment", A.name)
    assert f"dlbb {A.name}" in nbgrader(course, "list")
    nbgrader(home, "fetch_assignment", A.name, *exchange)
    nbgrader(home, "submit", A.name, *exchange)
    nbgrader(course, "collect", A.name)
    student = next((course / "submitted").iterdir()).name
    nbgrader(course, "autograde", A.name)
    nbgrader(course, "generate_feedback", A.name)
    page = course / "feedback" / student / A.name / f"{A.name}.html"
    loads = Page(page.read_text()).loads
    assert loads and all((page.parent / url).resolve().is_file() for url in loads), loads


def test_a_second_feedback_page_compiles_no_template(tmp_path, monkeypatch):
    """nbgrader makes an exporter for every page; the templates it compiled for the first
    are reused, and the page comes out the same."""
    import jinja2
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from autograder import course
    cfg = GenerateFeedback(coursedir=CourseDirectory(), config=course.config(tmp_path)).config
    exporter = cfg.GenerateFeedback.exporter_class
    notebook = nbformat.read(released(A.name), as_version=4)
    for cell in notebook.cells:  # as graded: no test passed
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.metadata.nbgrader.score = 0
    nbgrader = {"notebook": A.name, "score": 0, "max_score": 1, "late_penalty": 0}
    first, _ = exporter(config=cfg).from_notebook_node(notebook, {"nbgrader": nbgrader})
    compiled, compile_ = [], jinja2.Environment.compile
    monkeypatch.setattr(jinja2.Environment, "compile",
                        lambda self, source, *a, **k: compiled.append(source) or compile_(self, source, *a, **k))
    second, _ = exporter(config=cfg).from_notebook_node(notebook, {"nbgrader": nbgrader})
    assert not compiled
    assert second == first
