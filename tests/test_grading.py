"""Grade a class of fixture submissions and check every row exactly.

The submissions are the released student notebooks with answer cells filled
in: the reference solution, nothing, or a typical mistake. The expected score
of each is the assignment's total minus the points of the items the mistake
breaks, read from the notebook's own grade cells (not copied from a run).
"""
import csv
import html
import os
import subprocess
import sys
import zipfile

import nbformat
import pytest

from tests.helpers import (CHAPTERS, ROOT, flagged, hidden_lines, mistakes, points_per_item, released,
                           submission, total)

pytestmark = pytest.mark.xdist_group("grading")

# (chapter, mistake) for every chapter: the reference answers, the untouched release and
# each classic mistake of the chapter's own tests (MISTAKES in tests/test_<chapter>.py).
CASES = [(chapter.name, mistake) for chapter in CHAPTERS for mistake in mistakes(chapter)]
STUDENTS = sorted({mistake.student for _, mistake in CASES})
# a chapter's notebook for the two broken uploads
BROKEN = CHAPTERS[0].name


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    submissions = root / "submissions"
    for assignment, mistake in CASES:
        path = submissions / mistake.student / assignment / f"{assignment}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(submission(assignment, mistake.answers), path)
    corrupt = submissions / "corrupt" / BROKEN / f"{BROKEN}.ipynb"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text(released(BROKEN).read_text()[:5000])  # truncated upload
    (submissions / "no_notebook" / BROKEN).mkdir(parents=True)
    out = root / "out" / "grades.csv"
    # as under `make grade`: the course's packages are importable by the grader (a
    # sandboxed submission still cannot see them)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(submissions), "--out", str(out),
         "--course-dir", str(root / "course")],
        capture_output=True, text=True, timeout=1500, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as handle:
        rows = {(row["student_id"], row["assignment"]): row for row in csv.DictReader(handle)}
    return rows, out.parent


def ids(case):
    return f"{case[0]}-{case[1].student}"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_fixture_scores_exactly(graded, case):
    rows, _ = graded
    assignment, mistake = case
    points = points_per_item(assignment)
    row = rows[mistake.student, assignment]
    assert row["status"].startswith("graded"), row["status"]
    assert flagged(row["status"]) == mistake.flagged, row["status"]
    assert float(row["max_score"]) == total(assignment)
    assert float(row["score"]) == total(assignment) - sum(points[item] for item in mistake.loses)


def test_every_student_gets_a_row_per_assignment(graded):
    rows, _ = graded
    assert set(rows) == {(student, chapter.name) for student in STUDENTS + ["corrupt", "no_notebook"]
                         for chapter in CHAPTERS}


def test_missing_assignments_get_zero_rows(graded):
    rows, _ = graded
    for chapter in CHAPTERS:
        for student in set(STUDENTS) - {mistake.student for mistake in mistakes(chapter)}:
            row = rows[student, chapter.name]
            assert row["status"].startswith("missing notebook:"), (student, chapter.name)
            assert float(row["score"]) == 0 and float(row["max_score"]) == total(chapter.name)


def test_corrupt_and_missing_notebooks_get_error_rows(graded):
    rows, _ = graded
    assert rows["corrupt", BROKEN]["status"].startswith("corrupt notebook:")
    assert rows["no_notebook", BROKEN]["status"].startswith("missing notebook:")
    for student in ("corrupt", "no_notebook"):
        assert float(rows[student, BROKEN]["score"]) == 0
        assert float(rows[student, BROKEN]["max_score"]) == total(BROKEN)


def test_feedback_per_student_without_hidden_tests(graded):
    rows, out_dir = graded
    for (student, assignment), row in rows.items():
        page = out_dir / "feedback" / student / f"{assignment}.html"
        assert page.is_file() == row["status"].startswith("graded"), (student, assignment)
    for chapter in CHAPTERS:
        hidden = hidden_lines(chapter)
        assert hidden, f"{chapter.name} has no hidden tests to keep out of feedback"
        for mistake in mistakes(chapter):
            text = html.unescape((out_dir / "feedback" / mistake.student / f"{chapter.name}.html").read_text())
            assert "HIDDEN TESTS" not in text
            leaked = [line for line in hidden if line in text]
            assert not leaked, f"{mistake.student}/{chapter.name} feedback shows hidden tests: {leaked[:3]}"


@pytest.mark.parametrize("case", [case for case in CASES if case[1].diagnosis], ids=ids)
def test_feedback_names_the_mistake(graded, case):
    _, out_dir = graded
    assignment, mistake = case
    page = (out_dir / "feedback" / mistake.student / f"{assignment}.html").read_text()
    assert mistake.diagnosis in html.unescape(page)


def test_zip_of_submissions(tmp_path):
    archive = tmp_path / "lms.zip"
    a = BROKEN
    reference_nb = nbformat.writes(submission(a, {}))
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(f"s1/{a}/{a}.ipynb", reference_nb)
        handle.writestr(f"s2/{a}/{a}.ipynb", "not a notebook")
        # two attempts renamed by the LMS: only the upload dates say the complete one is newer
        handle.writestr(zipfile.ZipInfo(f"s3/week 2/{a}-attempt2.ipynb", (2026, 3, 2, 9, 0, 0)),
                        nbformat.writes(submission(a, None)))
        handle.writestr(zipfile.ZipInfo(f"s3/{a.capitalize()} (1).ipynb", (2026, 3, 2, 23, 59, 0)),
                        reference_nb)
    from autograder.grade import grade
    rows = grade(archive, tmp_path / "grades.csv", course_dir=tmp_path / "course")
    assert [(r["student_id"], r["status"].split(":")[0]) for r in rows] == [
        ("s1", "graded"), ("s2", "corrupt notebook"), ("s3", "graded")]
    assert rows[0]["score"] == rows[0]["max_score"] == rows[2]["score"] == total(a)
    assert (rows[2]["notebook"], rows[2]["notebooks_found"]) == (f"{a.capitalize()} (1).ipynb", 2)
    assert (rows[0]["notebook"], rows[0]["notebooks_found"]) == (f"{a}/{a}.ipynb", 1)


def test_not_a_zip_is_a_clear_error(tmp_path):
    bogus = tmp_path / "submissions.zip"
    bogus.write_text("nope")
    result = subprocess.run([sys.executable, "-m", "autograder", "grade", str(bogus),
                             "--out", str(tmp_path / "g.csv")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "not a folder nor a valid zip" in result.stderr
    assert "Traceback" not in result.stderr
