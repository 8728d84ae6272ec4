"""Grade a class: a folder or zip of submissions in, a grades CSV and feedback out.

Submissions are one folder per student, holding notebooks in any layout
(``autograder/intake.py`` finds the latest one per assignment). Every
(student, assignment) pair yields one CSV row naming the notebook graded; a
submission that cannot be graded gets a row whose status says why, and the
batch goes on.
"""
import csv
import shutil
import tempfile
import warnings
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy.exc import SAWarning

from . import course
from .intake import collect, unpack

FIELDS = ["student_id", "assignment", "score", "max_score", "status", "notebook", "notebooks_found"]
# nbgrader 0.9's gradebook code triggers these under SQLAlchemy 2: noise, not news.
warnings.filterwarnings("ignore", category=SAWarning)


def _read_notebook(path: Path) -> str | None:
    """None when ``path`` is a readable, valid notebook, else the reason it is not."""
    try:
        nbformat.validate(nbformat.read(path, as_version=4))
    except Exception as error:  # any parse or schema failure is the student's file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"corrupt notebook: {type(error).__name__}: {first_line[:120]}"
    return None


def _grade_one(api, course_dir: Path, notebook: Path, student: str, assignment: str,
               feedback_dir: Path) -> str:
    submitted = course.notebook_path(course_dir, "submitted", assignment, student)
    shutil.rmtree(submitted.parent, ignore_errors=True)
    submitted.parent.mkdir(parents=True)
    shutil.copyfile(notebook, submitted)
    result = api.autograde(assignment, student, force=True, create=True)
    if not result["success"]:
        lines = (result.get("error") or result.get("log") or "unknown error").strip().splitlines()
        return f"autograde failed: {lines[-1][:160]}"
    feedback = api.generate_feedback(assignment, student, force=True)
    html = course.notebook_path(course_dir, "feedback", assignment, student).with_suffix(".html")
    if not feedback["success"] or not html.is_file():
        return "graded; feedback generation failed"
    target = feedback_dir / student / f"{assignment}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(html, target)
    return "graded"


def _scores(db_url: str, graded: list[tuple]) -> list[tuple[float, float]]:
    """(score, max_score) of every (submission, status), read in one gradebook session."""
    with Gradebook(db_url) as gradebook:
        assignments = {s.assignment for s, _ in graded}
        max_scores = {a: gradebook.find_assignment(a).max_score for a in assignments}
        scores = []
        for s, status in graded:
            score = 0.0
            if status.startswith("graded"):
                try:
                    score = gradebook.find_submission(s.assignment, s.student).score
                except MissingEntry:
                    pass
            scores.append((score, max_scores[s.assignment]))
        return scores


def grade(submissions: Path, out: Path, course_dir: Path = course.HERE,
          db_url: str | None = None) -> list[dict]:
    """Grade every submission under ``submissions``; write ``out`` and feedback/ beside it."""
    course_dir, out = Path(course_dir).resolve(), Path(out).resolve()
    db_url = db_url or f"sqlite:///{course_dir / 'gradebook.db'}"
    api = course.api(course_dir, db_url)
    feedback_dir = out.parent / "feedback"
    graded = []
    with tempfile.TemporaryDirectory() as tmp:
        found = collect(unpack(Path(submissions), Path(tmp)), course.ASSIGNMENTS)
        for assignment in sorted({s.assignment for s in found}):
            course.release(course_dir, assignment, db_url)
        for s in found:
            if s.notebook is None:
                status = f"missing notebook: no notebook for {s.assignment} in {s.student}/"
            else:
                status = _read_notebook(s.notebook) or _grade_one(
                    api, course_dir, s.notebook, s.student, s.assignment, feedback_dir)
            graded.append((s, status))
    rows = [dict(student_id=s.student, assignment=s.assignment, score=round(score, 2),
                 max_score=round(max_score, 2), status=status, notebook=s.relative,
                 notebooks_found=s.notebooks_found)
            for (s, status), (score, max_score) in zip(graded, _scores(db_url, graded))]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return rows
