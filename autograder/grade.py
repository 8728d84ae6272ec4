"""Grade a class: a folder or zip of submissions in, a grades CSV and feedback out.

Submissions are one folder per student, holding notebooks in any layout
(``autograder/intake.py`` finds the latest one per assignment). Every
(student, assignment) pair yields one CSV row naming the notebook graded; a
submission that cannot be graded gets a row whose status says why, and the
batch goes on.

Each submission is graded twice, by processes it cannot touch:
1. nbgrader's autograde, with the kernel in a sandbox (``autograder/sandbox.py``);
2. out-of-process verification on fresh inputs (``autograder/verify.py``).
An item counts only when both pass it; where they disagree the status says so.
Workers grade submissions in parallel into one gradebook. A ledger beside the
gradebook records what was graded from which file, so a re-run (after a crash,
or with late submissions) grades only what changed.
"""
import csv
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy.exc import SAWarning

from . import course, sandbox, verify
from .intake import collect, identities, unpack

FIELDS = ["student_id", "assignment", "score", "max_score", "status", "notebook", "notebooks_found"]
# nbgrader 0.9's gradebook code triggers these under SQLAlchemy 2: noise, not news.
warnings.filterwarnings("ignore", category=SAWarning)
HERE = Path(__file__).resolve().parent


class GradingError(RuntimeError):
    pass


@dataclass(frozen=True)
class Job:
    student: str
    assignment: str
    notebook: Path
    course_dir: Path
    db_url: str
    feedback_dir: Path
    sandboxed: bool
    timeout: int | None


def _read_notebook(path: Path) -> str | None:
    """None when ``path`` is a readable, valid notebook, else the reason it is not, in
    one line that quotes nothing of the file."""
    if path.stat().st_size == 0:
        return "corrupt notebook: the file is empty"
    try:
        nbformat.validate(nbformat.read(path, as_version=4))
    except nbformat.reader.NotJSONError:
        return "corrupt notebook: not valid JSON (a truncated upload, or not a notebook file)"
    except nbformat.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        return f"corrupt notebook: JSON that breaks the notebook format at {where}"
    except Exception:  # any other parse failure is the student's file too
        return "corrupt notebook: JSON that is not a Jupyter notebook"
    return None


def _answers(notebook: Path) -> dict[str, str]:
    """The source of each answer cell, by grade id."""
    return {cell.metadata["nbgrader"]["grade_id"]: cell.source.strip()
            for cell in nbformat.read(notebook, as_version=4).cells
            if cell.get("metadata", {}).get("nbgrader", {}).get("solution")}


# -- in a worker process ------------------------------------------------------

_apis = {}


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)  # one worker per core: computing the expected outputs


def _api(job: Job):
    key = (job.course_dir, job.db_url, job.sandboxed, job.timeout)
    if key not in _apis:
        cfg = course.config(job.course_dir, job.db_url)
        if job.sandboxed:
            from nbgrader.converters import Autograde
            cfg.Autograde.autograde_preprocessors = [
                sandbox.SandboxedExecute if p.__name__ == "Execute" else p
                for p in Autograde.class_traits()["autograde_preprocessors"].default()]
        if job.timeout:
            cfg.Execute.timeout = job.timeout
        from nbgrader.apps import NbGraderAPI
        _apis[key] = NbGraderAPI(config=cfg)
    return _apis[key]


def _test_errors(job: Job) -> dict[str, str]:
    """The one-line error (``ename: evalue``) of each failing grade cell of the autograded
    notebook, by grade id."""
    autograded = course.notebook_path(job.course_dir, "autograded", job.assignment, job.student)
    errors = {}
    for cell in nbformat.read(autograded, as_version=4).cells:
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if output.get("output_type") == "error":
                line = (f"{output.get('ename', '')}: {output.get('evalue', '')}".strip(": ")
                        .splitlines() or [""])[0]
                errors[cell.metadata.get("nbgrader", {}).get("grade_id")] = line[:120]
    return errors


def _count_verified(job: Job, verdicts: dict) -> list[str]:
    """Let an item count only when verification agrees; for each disagreement, which
    side failed on what (a bug that one side's inputs miss causes one as well as a
    bypassed guard does)."""
    flags, errors = [], None
    with Gradebook(job.db_url) as gradebook:
        for item, verdict in verdicts.items():
            grade = gradebook.find_grade(f"test_{item}", job.assignment, job.assignment,
                                         job.student)
            passed = grade.auto_score is not None and grade.auto_score >= grade.max_score > 0
            grade.manual_score = 0.0 if verdict and grade.auto_score else None
            grade.needs_manual_grade = False
            if passed and verdict:
                flags.append(f"{item} notebook tests passed, fresh-input check failed "
                             f"({_one_line(verdict)})")
            elif not passed and not verdict:
                errors = _test_errors(job) if errors is None else errors
                why = _one_line(errors.get(f"test_{item}") or "no error shown")
                flags.append(f"{item} notebook tests failed ({why}), fresh-input check passed")
        gradebook.db.commit()
    return flags


def _one_line(text: str) -> str:
    """``text`` fit for a part of a status: one line, no '; ', at most 120 characters."""
    return " ".join(text.split()).replace("; ", ", ")[:120]


def _failure(log: str) -> str:
    """The exception that stopped nbgrader, from its log: the last one but its own wrapper."""
    errors = [line.strip() for line in log.splitlines()
              if re.match(r"[\w.]+(Error|Exception): ", line.strip())
              and "NbGraderException" not in line]
    return (errors or log.strip().splitlines() or ["unknown error"])[-1][:200]


def _grade(job: Job) -> str:
    """Autograde, verify and give feedback on one submission; its status."""
    api = _api(job)
    submitted = course.notebook_path(job.course_dir, "submitted", job.assignment, job.student)
    shutil.rmtree(submitted.parent, ignore_errors=True)
    submitted.parent.mkdir(parents=True)
    shutil.copyfile(job.notebook, submitted)
    result = api.autograde(job.assignment, job.student, force=True, create=True)
    if not result["success"]:
        return f"autograde failed: {_failure((result.get('log') or '') + (result.get('error') or ''))}"
    release = course.notebook_path(job.course_dir, "release", job.assignment)
    verdicts = verify.verify(job.assignment, release, job.notebook, sandboxed=job.sandboxed,
                             timeout=job.timeout or 60)
    flags = _count_verified(job, verdicts)
    status = "graded"
    if _answers(job.notebook).items() <= _answers(release).items():
        status += "; untouched: no answer cell was changed"
    status += ("; flagged: " + "; ".join(flags)) if flags else ""
    feedback = api.generate_feedback(job.assignment, job.student, force=True)
    html = course.notebook_path(job.course_dir, "feedback", job.assignment,
                                job.student).with_suffix(".html")
    if not feedback["success"] or not html.is_file():
        return status + "; feedback generation failed"
    target = job.feedback_dir / job.student / f"{job.assignment}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(html, target)
    return status


def _grade_safely(job: Job) -> str:
    try:
        return _grade(job)
    except Exception as error:  # one submission must not stop the class
        return f"grader error: {type(error).__name__}: {str(error)[:200]}"


# -- in the main process ------------------------------------------------------

def _sha(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _grader_sha(course_dir: Path, assignment: str, sandboxed: bool) -> str:
    """Changes whenever anything that decides this assignment's grades changes."""
    files = sorted(HERE.glob("*.py")) + [HERE / "probes" / "__init__.py",
                                         HERE / "probes" / f"{assignment}.py",
                                         course.ROOT / "solutions" / "common.py",
                                         course.ROOT / "solutions" / f"{assignment}.py",
                                         course.notebook_path(course_dir, "release", assignment)]
    return _sha(str(sandboxed).encode(), *(f.read_bytes() for f in files))


class Ledger:
    """What was graded, from which file, by which grader: ``ledger.json`` in the course."""

    def __init__(self, path: Path):
        self.path = path
        self.entries = json.loads(path.read_text()) if path.is_file() else {}

    def forget(self, keys: list[str]) -> None:
        if any(self.entries.pop(key, None) for key in keys):
            self._write()

    def current(self, key: str, record: dict) -> dict | None:
        entry = self.entries.get(key)
        return entry if entry and all(entry.get(k) == v for k, v in record.items()) else None

    def record(self, key: str, entry: dict) -> None:
        self.entries[key] = entry
        self._write()

    def _write(self) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
        os.replace(partial, self.path)  # a crash leaves the old ledger or the new one


def _in_gradebook(db_url: str) -> tuple[set[tuple[str, str]], set[str]]:
    """(student, assignment) of every submission the gradebook holds, and every student."""
    with Gradebook(db_url) as gradebook:
        return ({(s.student.id, a.name) for a in gradebook.assignments for s in a.submissions},
                {student.id for student in gradebook.students})


def _release(course_dir: Path, assignments: set, db_url: str) -> None:
    """Release the assignments whose source changed or that the gradebook lacks."""
    with Gradebook(db_url) as gradebook:
        known = {a.name for a in gradebook.assignments}
    for assignment in sorted(assignments):
        source = course.notebook_path(course_dir, "source", assignment)
        before = source.read_bytes() if source.is_file() else None
        course.write_source(course_dir, assignment)
        if (assignment not in known or before != source.read_bytes()
                or not course.notebook_path(course_dir, "release", assignment).is_file()):
            course.release(course_dir, assignment, db_url)


def _forget(course_dir: Path, db_url: str, feedback_dir: Path, ledger: Ledger,
            ungraded: list[tuple[str, str]], new_students: set[str]) -> None:
    """Drop everything kept of each (student, assignment) whose latest attempt was not
    graded (an earlier attempt's score must not outlive the CSV's 0): its gradebook
    entry, course folders, ledger entry and feedback; and a student this run added to
    the gradebook who is left with no submission."""
    with Gradebook(db_url) as gradebook:
        for student, assignment in ungraded:
            try:
                gradebook.remove_submission(assignment, student)
            except MissingEntry:
                pass
        for student in new_students & {student for student, _ in ungraded}:
            try:
                if not gradebook.find_student(student).submissions:
                    gradebook.remove_student(student)
            except MissingEntry:
                pass
    for student, assignment in ungraded:
        for stage in ("submitted", "autograded", "feedback"):
            folder = course.notebook_path(course_dir, stage, assignment, student).parent
            shutil.rmtree(folder, ignore_errors=True)
            _remove_if_empty(folder.parent)
        (feedback_dir / student / f"{assignment}.html").unlink(missing_ok=True)
        _remove_if_empty(feedback_dir / student)
    ledger.forget([f"{student}/{assignment}" for student, assignment in ungraded])


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


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
          db_url: str | None = None, workers: int | None = None, sandboxed: bool = True,
          timeout: int | None = None) -> list[dict]:
    """Grade every submission under ``submissions``; write ``out`` and feedback/ beside it.

    ``workers`` processes grade concurrently (default: one per core).
    ``sandboxed=False`` runs submissions unconfined: only for code you trust.
    ``timeout`` overrides the seconds a notebook cell (and a verification probe) may take.
    """
    if sandboxed and (reason := sandbox.unavailable()):
        raise GradingError(f"cannot sandbox submissions: {reason}")
    course_dir, out = Path(course_dir).resolve(), Path(out).resolve()
    db_url = db_url or f"sqlite:///{course_dir / 'gradebook.db'}"
    feedback_dir = out.parent / "feedback"
    ledger = Ledger(course_dir / "ledger.json")
    with tempfile.TemporaryDirectory() as tmp:
        released = {a: course.EXERCISES / f"{a}.ipynb" for a in course.ASSIGNMENTS}
        found = collect(unpack(Path(submissions), Path(tmp)), identities(released))
        course_dir.mkdir(parents=True, exist_ok=True)
        _release(course_dir, {s.assignment for s in found}, db_url)
        graders = {a: _grader_sha(course_dir, a, sandboxed) for a in {s.assignment for s in found}}
        statuses, jobs = {}, {}
        in_gradebook, students_before = _in_gradebook(db_url)
        for s in found:
            key = f"{s.student}/{s.assignment}"
            if s.notebook is None:
                statuses[key] = f"missing notebook: no notebook for {s.assignment} in {s.student}/"
                if s.unmatched:
                    statuses[key] += ("; notebooks that match no assignment: "
                                      + ", ".join(s.unmatched[:5])
                                      + (f" and {len(s.unmatched) - 5} more" if len(s.unmatched) > 5 else ""))
                continue
            record = dict(db=db_url, grader=graders[s.assignment],
                          notebook=_sha(s.notebook.read_bytes()))
            entry = ledger.current(key, record)
            if entry and (s.student, s.assignment) in in_gradebook:
                statuses[key] = entry["status"]
            elif problem := _read_notebook(s.notebook):
                statuses[key] = problem
            else:
                jobs[key] = (Job(s.student, s.assignment, s.notebook, course_dir, db_url,
                                 feedback_dir, sandboxed, timeout), record)
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            futures = {pool.submit(_grade_safely, job): key for key, (job, _) in jobs.items()}
            for future in as_completed(futures):
                key = futures[future]
                try:
                    statuses[key] = future.result()
                except Exception as error:  # a worker process died: the rest goes on
                    statuses[key] = f"grader error: {type(error).__name__}: {error}"
                if statuses[key].startswith("graded"):
                    ledger.record(key, dict(jobs[key][1], status=statuses[key]))
    graded = [(s, statuses[f"{s.student}/{s.assignment}"]) for s in found]
    _forget(course_dir, db_url, feedback_dir, ledger,
            [(s.student, s.assignment) for s, status in graded if not status.startswith("graded")],
            {s.student for s in found} - students_before)
    if any(status.startswith("graded") for _, status in graded):
        course.copy_mathjax(out.parent)
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
