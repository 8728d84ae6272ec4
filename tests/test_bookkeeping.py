"""Grading bookkeeping: refusing to run unsandboxed, resuming after a crash,
re-grading only what changed, parallel workers, on SQLite and on PostgreSQL.

PostgreSQL: the server at $DLBB_POSTGRES_URL (default: the local one `make test`
starts, tools/system.sh). A missing server fails those tests.
"""
import csv
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import nbformat
import pytest
import sqlalchemy as sa
from nbgrader.api import Gradebook

from autograder import grade as grading, sandbox
from tests.helpers import ROOT, chapter_of, mistakes, points_per_item, submission, total

pytestmark = pytest.mark.xdist_group("bookkeeping")
# a chapter with a mistake that costs points, and its mistakes by student
CHAPTER = chapter_of("batch_norm")
A = CHAPTER.name
MISTAKES = {mistake.student: mistake for mistake in mistakes(CHAPTER)}
POSTGRES = os.environ.get("DLBB_POSTGRES_URL", "postgresql+psycopg://dlbb:dlbb@127.0.0.1:5432/postgres")


def test_refuses_to_grade_unsandboxed(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "unavailable", lambda: "bwrap not found")
    with pytest.raises(grading.GradingError, match="bwrap not found") as refusal:
        grading.grade(tmp_path, tmp_path / "grades.csv", course_dir=tmp_path / "course")
    assert "--unsafe-no-sandbox" not in str(refusal.value), "a missing tool is fixed by installing it"


def test_command_line_refusal_is_one_clear_line(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no bwrap on PATH
    result = subprocess.run([sys.executable, "-m", "autograder", "grade", str(tmp_path),
                             "--out", str(tmp_path / "g.csv"), "--course-dir", str(tmp_path / "c")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "cannot sandbox submissions: bwrap" in result.stderr and "make grade" in result.stderr
    assert "--unsafe-no-sandbox" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gradebook.db'}"
        return
    server = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    try:
        with server.connect():
            pass
    except sa.exc.OperationalError as error:
        pytest.fail(f"no PostgreSQL server at {POSTGRES} (`make test` run as root starts one): "
                    f"{str(error).splitlines()[0]}")
    name = f"dlbb_{uuid.uuid4().hex[:12]}"
    with server.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    yield sa.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    with server.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    server.dispose()


def hand_in(folder, student, fixture):
    path = folder / student / A / f"{A}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(submission(A, MISTAKES[fixture].answers), path)
    return path


def expected_score(fixture):
    return total(A) - sum(points_per_item(A)[item] for item in MISTAKES[fixture].loses)


def graded_at(course, student):
    """When the student's notebook was last autograded (None: never)."""
    path = course / "autograded" / student / A / f"{A}.ipynb"
    return path.stat().st_mtime_ns if path.exists() else None


def read_csv(path):
    with open(path) as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)}


def gradebook_scores(db_url):
    with Gradebook(db_url) as gradebook:
        return {s.student.id: s.score for s in gradebook.find_assignment(A).submissions}


def test_resumes_after_a_crash_and_regrades_only_what_changed(tmp_path, db_url):
    folder, course, out = tmp_path / "in", tmp_path / "course", tmp_path / "out" / "grades.csv"
    class_ = {"ann": "reference", "bob": "untouched", "cy": "wrong_axes", "dee": "eps_outside_sqrt"}
    for student, fixture in class_.items():
        hand_in(folder, student, fixture)
    command = [sys.executable, "-m", "autograder", "grade", str(folder), "--out", str(out),
               "--course-dir", str(course), "--db", db_url, "--workers", "2"]

    # a crash: the grader is killed once the first submission is recorded
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while not (course / "ledger.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert (course / "ledger.json").exists(), "the grader recorded no submission in 300 s"
    done_before = {s for s in class_ if graded_at(course, s)}
    recorded = {s for s in class_ if f"{s}/{A}" in (course / "ledger.json").read_text()}
    assert recorded and recorded <= done_before

    stamps = {s: graded_at(course, s) for s in recorded}
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    assert {s: graded_at(course, s) for s in recorded} == stamps, "recorded work was redone"
    rows = read_csv(out)
    assert {s: float(rows[s]["score"]) for s in class_} == {
        s: expected_score(f) for s, f in class_.items()}
    assert gradebook_scores(db_url) == {s: expected_score(f) for s, f in class_.items()}

    # nothing changed: nothing is graded; a late submission and a new attempt are
    stamps = {s: graded_at(course, s) for s in class_}
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    assert {s: graded_at(course, s) for s in class_} == stamps
    hand_in(folder, "bob", "reference")
    hand_in(folder, "eve", "biased_running_var")
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    regraded = {s for s in class_ if graded_at(course, s) != stamps[s]}
    assert regraded == {"bob"}
    final = {**{s: expected_score(f) for s, f in class_.items()},
             "bob": total(A), "eve": expected_score("biased_running_var")}
    rows = read_csv(out)
    assert {s: float(r["score"]) for s, r in rows.items()} == final
    assert gradebook_scores(db_url) == final  # one submission per student: nothing counted twice
    assert {s: r["status"] for s, r in rows.items()} == {s: "graded" for s in final}

    # broken new attempts, one never autograded (corrupt), one whose autograde failed after
    # nbgrader had recorded it: each 0 replaces the earlier grade in the gradebook too
    feedback = out.parent / "feedback" / "cy" / f"{A}.html"
    assert feedback.is_file()
    (folder / "cy" / A / f"{A}.ipynb").write_text("{ not json")
    nbformat.write(submission(A, {next(iter(CHAPTER.items)): "import os\nos._exit(0)"}),
                   folder / "dee" / A / f"{A}.ipynb")
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    rows = read_csv(out)
    assert rows["cy"]["status"].startswith("corrupt notebook") and float(rows["cy"]["score"]) == 0
    assert rows["dee"]["status"].startswith("autograde failed") and float(rows["dee"]["score"]) == 0
    assert gradebook_scores(db_url) == {s: v for s, v in final.items() if s not in ("cy", "dee")}
    assert not feedback.exists(), "the earlier attempt's feedback outlived it"


def test_bench_quick_prints_a_ratio_from_its_own_times():
    result = subprocess.run([sys.executable, "bench/grading.py", "--quick"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    times = [float(m) for m in re.findall(r"^(?:nbgrader|course).*?\s(\d+\.\d)\s+\d+\.\d$",
                                          result.stdout, re.M)]
    ratio = float(re.search(r"throughput ratio .*: (\d+\.\d+)", result.stdout).group(1))
    assert len(times) == 2 and ratio == pytest.approx(times[0] / times[1], abs=0.02)
    assert "scores agree on 2/2 submissions" in result.stdout
