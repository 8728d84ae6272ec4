"""Grade a class: a folder or zip of submissions in, a grades CSV and feedback out.

Submissions are one folder per student, holding notebooks in any layout
(``autograder/intake.py`` finds the latest one per assignment). Every
(student, assignment) pair yields one CSV row naming the notebook graded; a
submission that cannot be graded gets a row whose status says why, and the
batch goes on.

Each submission is checked twice, by processes it cannot touch, within one run
of nbgrader's autograde: its notebook runs in a sandboxed kernel
(``autograder/sandbox.py``), then its answers are verified out of process on
fresh inputs (``autograder/verdict.py``), which writes any disagreement into the
item's grade cell. An item counts only when both pass it; the status lists the
disagreements, read from the graded notebook. Workers grade submissions in
parallel into one gradebook. The ledger, a table in the gradebook's database
(``autograder/ledger.py``), records what was graded from which file, so a
re-run (after a crash, or with late submissions) grades only what changed, and
several graders, on several hosts, share one class by claiming its work there.
"""
import copy
import csv
import gc
import hashlib
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy.exc import SAWarning

from . import chapters, course, nbgrader_cache, sandbox, verdict
from .intake import MAX_NOTEBOOK_BYTES, collect, identities, refusal, unpack
from .ledger import Ledger

FIELDS = ["student_id", "assignment", "score", "max_score", "status", "notebook", "notebooks_found"]
HERE = Path(__file__).resolve().parent


class GradingError(RuntimeError):
    pass


class Kind(Enum):
    GRADED = "graded"
    MISSING = "missing notebook"
    CORRUPT = "corrupt notebook"
    AUTOGRADE_FAILED = "autograde failed"
    GRADER_ERROR = "grader error"


@dataclass(frozen=True)
class Outcome:
    """What became of one submission. Only a graded one has a score: ``untouched`` when
    no answer cell changed, ``flags`` where its two checks disagree or an answer reaches into
    the interpreter (``verdict.reaches_in``), ``feedback`` False
    when its page could not be made. Any other kind has ``detail``, one line saying why.
    ``seconds``: wall time of each phase of its grading (``PHASES``)."""
    kind: Kind
    detail: str = ""
    untouched: bool = False
    flags: tuple[str, ...] = ()
    feedback: bool = True
    seconds: dict = field(default_factory=dict, compare=False)

    @property
    def graded(self) -> bool:
        return self.kind is Kind.GRADED

    def csv_status(self) -> str:
        if not self.graded:
            return f"{self.kind.value}: {self.detail}"
        parts = ["graded"]
        if self.untouched:
            parts.append("untouched: no answer cell was changed")
        if self.flags:
            parts.append("flagged: " + "; ".join(self.flags))
        if not self.feedback:
            parts.append("feedback generation failed")
        return "; ".join(parts)

    def to_json(self) -> dict:
        return dict(asdict(self), kind=self.kind.value)

    @classmethod
    def from_json(cls, data: dict) -> "Outcome":
        return cls(**dict(data, kind=Kind(data["kind"]), flags=tuple(data["flags"])))


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
    """None when ``path`` is a readable, valid notebook, else why it is corrupt, in one
    line that quotes nothing of the file. A file larger than a notebook can be is not read."""
    if why := refusal(path):
        return why
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    if size > MAX_NOTEBOOK_BYTES:
        return f"larger than {MAX_NOTEBOOK_BYTES >> 20} MB ({size >> 20} MB)"
    try:
        nbformat.validate(nbformat.read(path, as_version=4))
    except nbformat.reader.NotJSONError:
        return "not valid JSON (a truncated upload, or not a notebook file)"
    except nbformat.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        return f"JSON that breaks the notebook format at {where}"
    except Exception:  # any other parse failure is the student's file too
        return "JSON that is not a Jupyter notebook"
    return None


def _restore_metadata(notebook: Path, release: Path, target: Path) -> None:
    """Write ``notebook`` to ``target`` with the nbgrader metadata the release gives its cells:
    a cell keeps a grade id only if the release has it and no later cell has it too, and
    takes the release's metadata for it (nbgrader then restores locked cells' sources).
    nbgrader 0.9 fails the whole notebook on a duplicated, unknown or re-typed grade id."""
    nb = nbformat.read(notebook, as_version=4)
    released = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]
                for c in nbformat.read(release, as_version=4).cells
                if "grade_id" in c.metadata.get("nbgrader", {})}
    last = {c.metadata.get("nbgrader", {}).get("grade_id"): i for i, c in enumerate(nb.cells)}
    for i, cell in enumerate(nb.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in released and last[grade_id] == i:
            cell.metadata.nbgrader = copy.deepcopy(released[grade_id])
        else:
            cell.metadata.pop("nbgrader", None)
    nbformat.write(nb, target)


def _answers(notebook: Path) -> dict[str, str]:
    """The source of each answer cell, by grade id."""
    return {cell.metadata["nbgrader"]["grade_id"]: cell.source.strip()
            for cell in nbformat.read(notebook, as_version=4).cells
            if cell.get("metadata", {}).get("nbgrader", {}).get("solution")}


# -- in a worker process ------------------------------------------------------

_apis = {}
# execute: the notebook in its kernel; verify: the fresh-input check; autograde: the rest of
# nbgrader's autograde (copying, checksums, the gradebook); feedback: the HTML page
PHASES = ("execute", "verify", "autograde", "feedback")
_seconds = {}


def _timed(step, phase: str):
    """``step`` (a preprocessor class) recording its wall time as ``phase``."""
    def preprocess(self, nb, resources):
        start = time.perf_counter()
        try:
            return step.preprocess(self, nb, resources)
        finally:
            _seconds[phase] = time.perf_counter() - start
    return type(step.__name__, (step,), {"preprocess": preprocess})


def _quiet_gradebook() -> None:
    """nbgrader 0.9's gradebook code warns under SQLAlchemy 2: noise, not news."""
    warnings.filterwarnings("ignore", category=SAWarning)


def _worker_context():
    """Where the grading workers come from: multiprocessing's fork server, which imports the
    grading code and torch once (spawning each worker would import them again). This process
    does not fork them itself: it holds database connections and threads that a fork must not
    copy. Started before the release, the server imports meanwhile."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "torch"])
    multiprocessing.forkserver.ensure_running()
    return context


def _init_worker() -> None:
    gc.freeze()  # what the fork server imported is never garbage: no collection visits it
    import torch
    torch.set_num_threads(1)  # one worker per core: computing the expected outputs
    _quiet_gradebook()
    nbgrader_cache.install()


def _api(job: Job):
    key = (job.course_dir, job.db_url, job.sandboxed, job.timeout)
    if key not in _apis:
        from nbgrader.converters import Autograde
        cfg = course.config(job.course_dir, job.db_url)
        steps = []
        for step in Autograde.class_traits()["autograde_preprocessors"].default():
            if step.__name__ == "Execute":
                steps += [_timed(sandbox.SandboxedExecute if job.sandboxed else step, "execute"),
                          _timed(verdict.FreshInputCheck, "verify")]
            else:
                steps.append(step)
        cfg.Autograde.autograde_preprocessors = steps
        cfg.FreshInputCheck.sandboxed = job.sandboxed
        if job.timeout:
            cfg.Execute.timeout = cfg.FreshInputCheck.timeout = job.timeout
        from nbgrader.apps import NbGraderAPI
        _apis[key] = NbGraderAPI(config=cfg)
    return _apis[key]


def _failure(log: str) -> str:
    """The exception that stopped nbgrader, from its log: the last traceback's, but for
    nbgrader's own wrapper around it."""
    lines = log.splitlines()
    raised = []
    for i, line in enumerate(lines):
        if line.strip() == "Traceback (most recent call last):":
            indent = len(line) - len(line.lstrip())  # its frames are indented deeper
            raised += [next((after.strip() for after in lines[i + 1:]
                             if after.strip() and len(after) - len(after.lstrip()) <= indent), "")]
    raised = [error for error in raised if error and "NbGraderException" not in error]
    return (raised or [line.strip() for line in lines if line.strip()] or ["unknown error"])[-1][:200]


def _grade(job: Job) -> Outcome:
    """Autograde (with verification) and give feedback on one submission."""
    api = _api(job)
    submitted = course.notebook_path(job.course_dir, "submitted", job.assignment, job.student)
    shutil.rmtree(submitted.parent, ignore_errors=True)
    submitted.parent.mkdir(parents=True)
    release = course.notebook_path(job.course_dir, "release", job.assignment)
    _restore_metadata(job.notebook, release, submitted)
    with Gradebook(job.db_url) as gradebook:  # a grade starts afresh: no earlier manual score
        try:
            gradebook.remove_submission(job.assignment, job.student)
        except MissingEntry:
            pass
    if job.sandboxed and chapters.get(job.assignment).trains:  # once for every kernel and check
        sandbox.fork_server(sandbox.own_uid(), sandboxed=True).step_optimizer()
    _seconds.clear()
    start = time.perf_counter()
    result = api.autograde(job.assignment, job.student, force=True, create=True)
    _seconds["autograde"] = time.perf_counter() - start - sum(_seconds.values())
    if not result["success"]:
        return Outcome(Kind.AUTOGRADE_FAILED,
                       _failure((result.get("log") or "") + (result.get("error") or "")),
                       seconds=dict(_seconds))
    autograded = course.notebook_path(job.course_dir, "autograded", job.assignment, job.student)
    start = time.perf_counter()
    feedback = api.generate_feedback(job.assignment, job.student, force=True)
    _seconds["feedback"] = time.perf_counter() - start
    html = course.notebook_path(job.course_dir, "feedback", job.assignment,
                                job.student).with_suffix(".html")
    made = feedback["success"] and html.is_file()
    if made:
        target = job.feedback_dir / job.student / f"{job.assignment}.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(html, target)
    answers = _answers(job.notebook)
    hooks = [f"{item} reaches into the interpreter ({', '.join(names)}): read it"
             for item, source in answers.items() if (names := verdict.reaches_in(source))]
    return Outcome(Kind.GRADED, untouched=answers.items() <= _answers(release).items(),
                   flags=tuple(verdict.flags(nbformat.read(autograded, as_version=4)) + hooks),
                   feedback=made, seconds=dict(_seconds))


def _grade_safely(job: Job) -> Outcome:
    try:
        return _grade(job)
    except Exception as error:  # one submission must not stop the class
        return Outcome(Kind.GRADER_ERROR, f"{type(error).__name__}: {str(error)[:200]}")


# -- in the main process ------------------------------------------------------

def _sha(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


# The code that turns a submission into its grades (the rest of autograder/ chooses which
# notebook to grade, writes the CSV and the feedback, or builds what the source notebook holds).
GRADING_CODE = [HERE / name for name in ("grade.py", "sandbox.py", "forkserver.py", "verdict.py",
                                         "verify.py", "worker.py", "nbgrader_config.py")]


def _grader_sha(course_dir: Path, assignment: str, sandboxed: bool) -> str:
    """Changes exactly when something that decides this assignment's grades changes: the
    instructor notebook (tests, hidden tests and all the code they include), the probes,
    the reference they compare with, and the grading code."""
    chapter = chapters.get(assignment)
    files = ([course.notebook_path(course_dir, "source", assignment), chapter.files["probes"],
              HERE / "probes" / "__init__.py"] + chapter.reference_files + GRADING_CODE)
    return _sha(str(sandboxed).encode(), *(f.read_bytes() for f in files))


def _in_gradebook(db_url: str) -> tuple[set[tuple[str, str]], set[str]]:
    """(student, assignment) of every submission the gradebook holds, and every student."""
    with Gradebook(db_url) as gradebook:
        return ({(s.student.id, a.name) for a in gradebook.assignments for s in a.submissions},
                {student.id for student in gradebook.students})


def _cells(db_url: str, assignment: str) -> dict:
    """What autograding reads of a release: the cells of ``assignment`` that nbgrader's
    gradebook holds, by notebook, kind and name."""
    with Gradebook(db_url) as gradebook:
        return {(notebook.name, type(cell).__name__, cell.name):
                {k: v for k, v in cell.to_dict().items() if k not in ("id", "notebook", "assignment")}
                for notebook in gradebook.find_assignment(assignment).notebooks
                for cell in notebook.grade_cells + notebook.solution_cells + notebook.task_cells
                + notebook.source_cells}


def _release(course_dir: Path, assignments: set, db_url: str) -> None:
    """Release into ``course_dir`` the assignments whose source changed or that it lacks;
    write one into the gradebook only where the gradebook lacks it or holds other cells.
    (nbgrader's generate_assignment deletes and re-adds a notebook that has no submission
    yet, so a grader joining a class must not write it while another autogrades.)"""
    with Gradebook(db_url) as gradebook:
        known = {a.name for a in gradebook.assignments}
    with tempfile.TemporaryDirectory() as scratch:
        for assignment in sorted(assignments):
            source = course.notebook_path(course_dir, "source", assignment)
            before = source.read_bytes() if source.is_file() else None
            course.write_source(course_dir, assignment)
            if assignment not in known:
                course.generate(course_dir, assignment, db_url)
            elif (before != source.read_bytes()
                  or not course.notebook_path(course_dir, "release", assignment).is_file()):
                private = f"sqlite:///{Path(scratch) / assignment}.db"
                course.generate(course_dir, assignment, private)
                if _cells(private, assignment) != _cells(db_url, assignment):
                    course.generate(course_dir, assignment, db_url)


def _forget(course_dir: Path, db_url: str, feedback_dir: Path,
            ungraded: list[tuple[str, str]], new_students: set[str]) -> None:
    """Drop everything kept of each (student, assignment) whose latest attempt was not
    graded (an earlier attempt's score must not outlive the CSV's 0): its gradebook
    entry, course folders and feedback; and a student this run added to the gradebook
    who is left with no submission."""
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


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _scores(db_url: str, graded: list[tuple]) -> list[tuple[float, float]]:
    """(score, max_score) of every (submission, outcome), read in one gradebook session."""
    with Gradebook(db_url) as gradebook:
        assignments = {s.assignment for s, _ in graded}
        max_scores = {a: gradebook.find_assignment(a).max_score for a in assignments}
        scores = []
        for s, outcome in graded:
            score = 0.0
            if outcome.graded:
                try:
                    score = gradebook.find_submission(s.assignment, s.student).score
                except MissingEntry:
                    pass
            scores.append((score, max_scores[s.assignment]))
        return scores


def grade(submissions: Path, out: Path, course_dir: Path = course.HERE,
          db_url: str | None = None, workers: int | None = None, sandboxed: bool = True,
          timeout: int | None = None, lease: float = 30.0) -> list[dict]:
    """Grade every submission under ``submissions``; write ``out`` and feedback/ beside it.

    ``workers`` processes grade concurrently (default: one per core).
    ``sandboxed=False`` runs submissions unconfined: only for code you trust.
    ``timeout`` overrides the seconds a notebook cell (and a verification probe) may take.
    Any number of graders may grade one class into one gradebook at once (on PostgreSQL,
    from any hosts): each claims work from the ledger, and a claim not renewed for
    ``lease`` seconds (its grader died) is taken over. Each writes the whole class's CSV.
    """
    with warnings.catch_warnings():
        _quiet_gradebook()
        return _grade_class(submissions, out, course_dir, db_url, workers, sandboxed, timeout,
                            lease)


def _grade_class(submissions, out, course_dir, db_url, workers, sandboxed, timeout,
                 lease) -> list[dict]:
    if sandboxed and (reason := sandbox.unavailable()):
        raise GradingError(f"cannot sandbox submissions: {reason}")
    course_dir, out = Path(course_dir).resolve(), Path(out).resolve()
    db_url = db_url or f"sqlite:///{course_dir / 'gradebook.db'}"
    course.use_this_environment()  # before any gradebook
    nbgrader_cache.install()
    feedback_dir = out.parent / "feedback"
    course_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(db_url, lease)
    context = _worker_context()
    with tempfile.TemporaryDirectory() as tmp:
        released = {chapter.name: chapter.exercise for chapter in chapters.CHAPTERS}
        found = collect(unpack(Path(submissions), Path(tmp)), identities(released))
        outcomes, jobs = {}, {}
        with ledger.locked():
            _release(course_dir, {s.assignment for s in found}, db_url)
            graders = {a: _grader_sha(course_dir, a, sandboxed) for a in {s.assignment for s in found}}
            in_gradebook, students_before = _in_gradebook(db_url)
            work = {}
            for s in found:
                key = f"{s.student}/{s.assignment}"
                if s.notebook is None:
                    detail = f"no notebook for {s.assignment} in {s.student}/"
                    if s.unmatched:
                        detail += ("; notebooks that match no assignment: " + ", ".join(s.unmatched[:5])
                                   + (f" and {len(s.unmatched) - 5} more" if len(s.unmatched) > 5 else ""))
                    outcomes[key] = Outcome(Kind.MISSING, detail)
                elif problem := _read_notebook(s.notebook):
                    outcomes[key] = Outcome(Kind.CORRUPT, problem)
                else:
                    jobs[key] = Job(s.student, s.assignment, s.notebook, course_dir, db_url,
                                    feedback_dir, sandboxed, timeout)
                    work[key] = (graders[s.assignment], _sha(s.notebook.read_bytes()))
            ledger.enqueue(work, {f"{student}/{assignment}" for student, assignment in in_gradebook})
            ledger.forget(list(outcomes))
            with Gradebook(db_url) as gradebook:  # graders grading one student's assignments
                for student in {job.student for job in jobs.values()} - students_before:
                    gradebook.update_or_create_student(student)  # at once would both add them
        try:
            _grade_claimed(ledger, jobs, workers, context)
        finally:
            ledger.release()
        recorded = ledger.outcomes(list(jobs))
        outcomes.update({key: Outcome.from_json(recorded[key]) if key in recorded else
                         Outcome(Kind.GRADER_ERROR, "another grader dropped it from the ledger")
                         for key in jobs})
    graded = [(s, outcomes[f"{s.student}/{s.assignment}"]) for s in found]
    with ledger.locked():
        _forget(course_dir, db_url, feedback_dir,
                [(s.student, s.assignment) for s, outcome in graded if not outcome.graded],
                {s.student for s in found} - students_before)
    ledger.close()
    if any(outcome.graded for _, outcome in graded):
        course.copy_mathjax(out.parent)
    rows = [dict(student_id=s.student, assignment=s.assignment, score=round(score, 2),
                 max_score=round(max_score, 2), status=outcome.csv_status(), notebook=s.relative,
                 notebooks_found=s.notebooks_found)
            for (s, outcome), (score, max_score) in zip(graded, _scores(db_url, graded))]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, out)  # graders writing one CSV at once each leave a whole one
    return rows


def _grade_claimed(ledger: Ledger, jobs: dict[str, Job], workers: int | None,
                   context: multiprocessing.context.BaseContext) -> None:
    """Grade what this grader claims of ``jobs`` until none is left waiting in the ledger:
    up to ``workers`` at a time (processes from ``context``), renewing the claims while they
    run, then waiting for the other graders' (and taking over any whose lease expires)."""
    keys = list(jobs)
    if not ledger.waiting(keys):  # every outcome is recorded: no worker is needed
        return
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))

    def new_pool():
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
        pool.submit(int).result()  # the first worker waits for the fork server's imports: not
        return pool                # while a claim's lease runs, which only the loop below renews

    pool, running = new_pool(), {}
    try:
        while True:
            while len(running) < workers and (key := ledger.claim(keys)):
                try:
                    future = pool.submit(_grade_safely, jobs[key])
                except BrokenProcessPool:  # a worker process died: the rest goes on in a new pool
                    pool.shutdown(wait=False)
                    pool = new_pool()
                    future = pool.submit(_grade_safely, jobs[key])
                running[future] = key
            if not running:
                if not ledger.waiting(keys):
                    return
                time.sleep(min(2.0, ledger.lease / 3))  # the rest is claimed by other graders
                continue
            finished, _ = wait(running, timeout=ledger.lease / 3, return_when=FIRST_COMPLETED)
            for future in finished:
                key = running.pop(future)
                try:
                    outcome = future.result()
                except Exception as error:  # its worker process died with it
                    outcome = Outcome(Kind.GRADER_ERROR, f"{type(error).__name__}: {error}")
                ledger.finish(key, outcome.to_json(), outcome.graded)
            ledger.renew(list(running.values()))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
