"""Grading bookkeeping: refusing to run unsandboxed, resuming after a crash,
re-grading only what changed, parallel workers (on SQLite); several graders sharing
one class through the ledger in PostgreSQL, one of them killed; the cluster runners.

PostgreSQL: the server at $DLBB_POSTGRES_URL (default: the local one `make test`
starts, tools/system.sh). A missing server fails those tests.
"""
import csv
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid

import nbformat
import pytest
import sqlalchemy as sa
import yaml
from nbgrader.api import Gradebook

from autograder import course, grade as grading, sandbox
from autograder.__main__ import parser
from autograder.ledger import TABLE
from tests.helpers import ROOT, chapter_of, mistakes, points_per_item, submission, total

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


@pytest.fixture
def postgres():
    """A fresh, empty PostgreSQL database's URL, dropped afterwards."""
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


def ledger_rows(db_url):
    """The ledger's rows by key (none before a grader created it)."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(TABLE.name):
                return {}
            return {row.key: row for row in connection.execute(sa.select(TABLE))}
    finally:
        engine.dispose()


def recorded(db_url):
    """Students whose submission the ledger has an outcome for."""
    return {key.split("/")[0] for key, row in ledger_rows(db_url).items() if row.outcome}


def test_resumes_after_a_crash_and_regrades_only_what_changed(tmp_path):
    """On SQLite; on PostgreSQL the graders' test below kills one grader and breaks attempts."""
    db_url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    folder, course, out = tmp_path / "in", tmp_path / "course", tmp_path / "out" / "grades.csv"
    class_ = {"ann": "reference", "bob": "untouched", "cy": "wrong_axes", "dee": "eps_outside_sqrt"}
    for student, fixture in class_.items():
        hand_in(folder, student, fixture)
    # a short lease: the next run takes the killed grader's claims over within 5 s
    command = [sys.executable, "-m", "autograder", "grade", str(folder), "--out", str(out),
               "--course-dir", str(course), "--db", db_url, "--workers", "2", "--lease", "5"]

    # a crash: the grader is killed once the first submission is recorded
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while not recorded(db_url) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done = recorded(db_url)
    assert done, "the grader recorded no submission in 300 s"
    assert done <= {s for s in class_ if graded_at(course, s)}

    stamps = {s: graded_at(course, s) for s in done}
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    assert {s: graded_at(course, s) for s in done} == stamps, "recorded work was redone"
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


def test_a_joining_grader_writes_nothing_to_the_gradebook(tmp_path, monkeypatch):
    """nbgrader's generate_assignment deletes and re-adds a notebook that has no submission
    yet (in separate commits), which pulls the cells from under a grader autograding its
    first one (CI caught it: a correct submission's autograde failed). A grader whose
    release matches what the gradebook holds leaves the gradebook alone. Each release
    renders the template once."""
    renders = []
    monkeypatch.setattr(course, "render", lambda path, render=course.render: renders.append(path) or render(path))
    gradebook = tmp_path / "gradebook.db"
    grading._release(tmp_path / "first", {A}, f"sqlite:///{gradebook}")
    before = gradebook.read_bytes()
    grading._release(tmp_path / "second", {A}, f"sqlite:///{gradebook}")
    assert (tmp_path / "second" / "release" / A / f"{A}.ipynb").is_file()
    assert gradebook.read_bytes() == before, "the second grader's release wrote the gradebook"

    with Gradebook(f"sqlite:///{gradebook}") as held:  # as if released from another source
        cell = held.find_notebook(A, A).grade_cells[0]
        name, points, cell.max_score = cell.name, cell.max_score, cell.max_score + 1
        held.db.commit()
    grading._release(tmp_path / "third", {A}, f"sqlite:///{gradebook}")
    with Gradebook(f"sqlite:///{gradebook}") as held:
        assert held.find_grade_cell(name, A, A).max_score == points, "a differing release was kept"
    assert len(renders) == 3


def test_an_autograde_failure_is_named_by_its_cause_not_nbgraders_wrapper():
    log = """[INFO] Autograding norms/norms.ipynb
[ERROR] There was an error processing assignment: norms
    Traceback (most recent call last):
      File "nbgrader/preprocessors/overwritecells.py", line 220, in preprocess_cell
        grade_cell = self.gradebook.find_graded_cell(
                     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
    nbgrader.api.MissingEntry: No such grade cell: norms/norms/test_batch_norm

[ERROR] Please see the the above traceback for details on the specific errors on the above failures.
Traceback (most recent call last):
  File "nbgrader/converters/base.py", line 468, in convert_notebooks
    raise NbGraderException(msg)
nbgrader.converters.base.NbGraderException: Please see the the above traceback for details.
"""
    assert grading._failure(log) == "nbgrader.api.MissingEntry: No such grade cell: norms/norms/test_batch_norm"
    assert grading._failure("[ERROR] the kernel died\n") == "[ERROR] the kernel died"


def test_graders_on_one_postgresql_share_a_class_and_outlive_a_killed_one(tmp_path, postgres):
    """Three graders, each with its own course folder as if on its own host, start at once;
    one is killed while it holds a claim and a fourth starts. Each surviving grader writes
    the single grader's CSV, and every submission was graded by exactly one of them."""
    folder = tmp_path / "in"
    class_ = {f"s{i}_{fixture}": fixture for i, fixture in enumerate(MISTAKES)}
    for student, fixture in class_.items():
        hand_in(folder, student, fixture)

    def grader(name, db, *options):
        return [sys.executable, "-m", "autograder", "grade", str(folder),
                "--out", str(tmp_path / name / "grades.csv"), "--course-dir", str(tmp_path / name),
                "--db", db, *options]

    subprocess.run(grader("single", f"sqlite:///{tmp_path / 'single.db'}", "--workers", "2"),
                   check=True, capture_output=True, timeout=600)
    expected = (tmp_path / "single" / "grades.csv").read_text()

    def start(name):
        return subprocess.Popen(grader(name, postgres, "--workers", "1", "--lease", "10"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
    graders = {name: start(name) for name in ("g1", "g2", "g3")}
    killed = graders.pop("g2")
    deadline = time.monotonic() + 300

    def holding():
        return [key for key, row in ledger_rows(postgres).items()
                if not row.outcome and row.owner and f":{killed.pid}:" in row.owner]
    while not (recorded(postgres) and holding()) and time.monotonic() < deadline:
        time.sleep(0.1)
    held = holding()
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert held, "g2 never held a claim while another submission was recorded"
    graders["g4"] = start("g4")
    for name, process in graders.items():
        _, errors = process.communicate(timeout=600)
        assert process.returncode == 0, f"{name}: {errors.decode()[-2000:]}"
        assert (tmp_path / name / "grades.csv").read_text() == expected, name

    rows = ledger_rows(postgres)
    assert set(rows) == {f"{s}/{A}" for s in class_} and all(row.outcome for row in rows.values())
    folders = {process.pid: tmp_path / name for name, process in [("g2", killed), *graders.items()]}
    for key, row in rows.items():
        student = key.split("/")[0]
        by = folders[int(row.graded_by.split(":")[1])]
        assert by.name != "g2" or key not in held, f"{key}: recorded by the killed grader"
        others = [name for name in graders if tmp_path / name != by
                  and graded_at(tmp_path / name, student)]
        assert graded_at(by, student) and not others, f"{key} graded by {by.name} and {others}"
    assert gradebook_scores(postgres) == {s: expected_score(f) for s, f in class_.items()}

    # new attempts that cannot be graded, one corrupt, one whose autograde fails after nbgrader
    # recorded it: one grader's run drops their earlier grades from the gradebook
    corrupt, fails = list(class_)[:2]
    (folder / corrupt / A / f"{A}.ipynb").write_text("{ not json")
    nbformat.write(submission(A, {next(iter(CHAPTER.items)): "import os\nos._exit(0)"}),
                   folder / fails / A / f"{A}.ipynb")
    subprocess.run(grader("g1", postgres, "--workers", "2"), check=True, capture_output=True,
                   timeout=600)
    rows = read_csv(tmp_path / "g1" / "grades.csv")
    assert rows[corrupt]["status"].startswith("corrupt notebook")
    assert rows[fails]["status"].startswith("autograde failed")
    assert gradebook_scores(postgres) == {s: expected_score(f) for s, f in class_.items()
                                          if s not in (corrupt, fails)}


def grader_options(make_variables: list[str]):
    """The options `make grade` passes the grader for these variables, as the grader's own
    parser reads them (it exits on one it does not know)."""
    recipe = subprocess.run(["make", "-s", "-n", "-o", "system-grade", "-o", ".venv/bin/.installed",
                             "grade", *make_variables], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    argv = shlex.split(recipe.replace("\\\n", " "))
    return parser().parse_args(argv[argv.index("autograder") + 1:])


def test_kubernetes_job_runs_graders_on_one_postgresql_gradebook():
    job = yaml.safe_load((ROOT / "autograder" / "cluster" / "grade-job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["parallelism"] == job["spec"]["completions"] > 1
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["make", "grade"]
    url = "postgresql+psycopg://user:secret@db.example/class"
    options = grader_options([arg.replace("$(DLBB_DB)", url) for arg in container["args"]])
    assert options.db_url == url and options.command == "grade"
    assert options.workers == int(container["resources"]["limits"]["cpu"])
    assert container["securityContext"]["privileged"], "bubblewrap needs the namespaces"


def test_slurm_array_task_runs_a_grader_on_one_postgresql_gradebook(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "make").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$DLBB_MAKE_ARGS"\n')
    (fake / "make").chmod(0o755)
    url = "postgresql+psycopg://user:secret@db.example/class"
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "DLBB_DB": url,
           "SUBMISSIONS": "/shared/class.zip", "SLURM_SUBMIT_DIR": str(ROOT),
           "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3", "SLURM_CPUS_PER_TASK": "4",
           "TMPDIR": str(tmp_path), "DLBB_MAKE_ARGS": str(tmp_path / "args")}
    subprocess.run(["bash", str(ROOT / "autograder" / "cluster" / "grade.sbatch")], env=env,
                   check=True, timeout=60)
    make_args = (tmp_path / "args").read_text().splitlines()
    assert make_args[0] == "grade"
    options = grader_options(make_args[1:])
    assert (options.db_url, options.workers, str(options.submissions)) == (url, 4, "/shared/class.zip")
    assert options.course_dir == tmp_path / "dlbb-course-77-3"
    without_db = {k: v for k, v in env.items() if k != "DLBB_DB"}
    refused = subprocess.run(["bash", str(ROOT / "autograder" / "cluster" / "grade.sbatch")],
                             env=without_db, capture_output=True, text=True)
    assert refused.returncode != 0 and "DLBB_DB" in refused.stderr


def test_bench_quick_prints_a_ratio_from_its_own_times():
    result = subprocess.run([sys.executable, "bench/grading.py", "--quick"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    times = [float(m) for m in re.findall(r"^(?:nbgrader|course).*?\s(\d+\.\d)\s+\d+\.\d$",
                                          result.stdout, re.M)]
    ratio = float(re.search(r"throughput ratio .*: (\d+\.\d+)", result.stdout).group(1))
    assert len(times) == 2 and ratio == pytest.approx(times[0] / times[1], abs=0.02)
    assert "scores agree on 1/1 submissions" in result.stdout
