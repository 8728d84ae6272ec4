"""A bare machine: tools/system.sh installs what `make book|grade|test` need, or names the one
command to run for a user who cannot install; `make grade` grades a zip, also through a `.venv`
that is a symbolic link."""
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import CHAPTERS, ROOT, submission, total

NOBODY = 65534


def as_nobody_without(target: str) -> subprocess.CompletedProcess:
    """tools/system.sh TARGET as an unprivileged user whose PATH has Debian's Python and bash
    only, so every command it looks for on PATH (bwrap, fc-list, pg_ctlcluster) is missing."""
    with tempfile.TemporaryDirectory() as tmp:  # not under pytest's tmp_path: nobody cannot enter it
        bin_dir = Path(tmp)
        bin_dir.chmod(0o755)
        for name, path in {"python3": "/usr/bin/python3", "bash": shutil.which("bash")}.items():
            (bin_dir / name).symlink_to(path)
        return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                               "env", f"PATH={bin_dir}", "DLBB_POSTGRES_URL=", "bash",
                               str(ROOT / "tools" / "system.sh"), target],
                              capture_output=True, text=True, cwd=bin_dir, timeout=60)


def test_a_user_who_cannot_install_gets_the_command_to_run():
    result = as_nobody_without("grade")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "make grade needs Debian packages that are missing; run: sudo apt-get install -y bubblewrap"]


def test_the_book_needs_no_system_package():
    result = as_nobody_without("book")
    assert result.returncode == 0 and not result.stderr, result.stderr


def test_on_this_machine_everything_make_test_needs_is_there():
    """`make test` ran tools/system.sh test before this suite: a second run finds nothing missing
    (PostgreSQL reachable too) and installs nothing."""
    result = subprocess.run(["bash", str(ROOT / "tools" / "system.sh"), "test"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "DLBB_POSTGRES_URL": ""})
    assert result.returncode == 0 and not result.stdout and not result.stderr, result.stdout + result.stderr


def test_make_grade_grades_a_zip_through_a_linked_venv(tmp_path):
    """`make grade` on an LMS zip, with the venv reached through a symbolic link (the sandbox
    must run the interpreter at the linked path, where the kernel's command names it)."""
    import zipfile

    import nbformat
    a = CHAPTERS[0].name

    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(f"s1/{a}/{a}.ipynb", nbformat.writes(submission(a, {})))
    venv = tmp_path / "venv"
    venv.symlink_to(Path(sys.prefix).resolve())
    out = tmp_path / "out" / "grades.csv"
    result = subprocess.run(["make", "-s", "grade", f"SUBMISSIONS={archive}", f"OUT={out}",
                             f"COURSE={tmp_path / 'course'}", f"VENV={venv}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with open(out) as handle:
        [row] = csv.DictReader(handle)
    assert (row["student_id"], row["assignment"], row["status"]) == ("s1", a, "graded"), row
    assert float(row["score"]) == float(row["max_score"]) == total(a), row


def test_xdist_groups_run_on_one_worker(tmp_path):
    """`make test` shares the built book and each graded class within an xdist group: a group's
    tests must all run on one worker, or each worker builds its own (pytest 9.2 broke this)."""
    (tmp_path / "test_group.py").write_text(
        "import os, pytest\n"
        "pytestmark = pytest.mark.xdist_group('shared')\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_worker(i):\n"
        "    print('worker', os.environ['PYTEST_XDIST_WORKER'])\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-rA",
                             "-p", "no:cacheprovider", "test_group.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    workers = {line.split()[-1] for line in result.stdout.splitlines() if line.startswith("worker ")}
    assert len(workers) == 1, f"one xdist group ran on workers {sorted(workers)}"
