"""Grade a class: a folder or zip of submissions in, a grades CSV and feedback out.

Submissions are laid out ``<student_id>/<assignment>/<assignment>.ipynb``.
Every (student, assignment) pair found yields one CSV row; a submission that
cannot be graded gets a row whose status says why, and the batch goes on.
"""
import csv
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy.exc import SAWarning

from . import course

FIELDS = ["student_id", "assignment", "score", "max_score", "status"]
# nbgrader 0.9's gradebook code triggers these under SQLAlchemy 2: noise, not news.
warnings.filterwarnings("ignore", category=SAWarning)


class SubmissionsError(ValueError):
    pass


def _unpack(submissions: Path, tmp: Path) -> Path:
    if submissions.is_dir():
        return submissions
    if not submissions.exists():
        raise SubmissionsError(f"{submissions}: no such folder or zip file")
    try:
        with zipfile.ZipFile(submissions) as archive:
            archive.extractall(tmp)  # ZipFile drops absolute paths and '..' components
    except zipfile.BadZipFile as error:
        raise SubmissionsError(f"{submissions}: not a folder nor a valid zip ({error})") from None
    return tmp


def _pairs(root: Path) -> list[tuple[str, str]]:
    """(student_id, assignment) for every student folder and every assignment
    any student submitted, so a student who missed one still gets a row."""
    students = sorted(p.name for p in root.iterdir()
                      if p.is_dir() and not p.name.startswith((".", "__")))
    assignments = sorted({a for s in students for a in course.ASSIGNMENTS
                          if (root / s / a).is_dir()})
    return [(s, a) for s in students for a in assignments or course.ASSIGNMENTS]


def _read_notebook(path: Path) -> str | None:
    """None when ``path`` is a readable, valid notebook, else the reason it is not."""
    if not path.is_file():
        return f"missing notebook: expected {path.parent.name}/{path.name}"
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


def _score(db_url: str, assignment: str, student: str, status: str):
    with Gradebook(db_url) as gradebook:
        max_score = gradebook.find_assignment(assignment).max_score
        if not status.startswith("graded"):
            return 0.0, max_score
        try:
            return gradebook.find_submission(assignment, student).score, max_score
        except MissingEntry:
            return 0.0, max_score


def grade(submissions: Path, out: Path, course_dir: Path = course.HERE,
          db_url: str | None = None) -> list[dict]:
    """Grade every submission under ``submissions``; write ``out`` and feedback/ beside it."""
    course_dir, out = Path(course_dir).resolve(), Path(out).resolve()
    db_url = db_url or f"sqlite:///{course_dir / 'gradebook.db'}"
    api = course.api(course_dir, db_url)
    feedback_dir = out.parent / "feedback"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = _unpack(Path(submissions), Path(tmp))
        pairs = _pairs(root)
        for assignment in sorted({a for _, a in pairs}):
            course.release(course_dir, assignment, db_url)
        for student, assignment in pairs:
            notebook = root / student / assignment / f"{assignment}.ipynb"
            status = _read_notebook(notebook) or _grade_one(
                api, course_dir, notebook, student, assignment, feedback_dir)
            score, max_score = _score(db_url, assignment, student, status)
            rows.append(dict(student_id=student, assignment=assignment,
                             score=round(score, 2), max_score=round(max_score, 2),
                             status=status))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return rows
