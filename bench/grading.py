"""Throughput of the course grader against plain, sequential ``nbgrader autograde``.

    PYTHONPATH=. python bench/grading.py            # 40 submissions of every assignment
    PYTHONPATH=. python bench/grading.py --quick    # 1 submission of the first chapter (smoke test)

Each synthetic submission is the released notebook with every answer cell
either the reference or left as the stub (70 / 30, seeded), so scores vary.
The baseline is nbgrader's own command, ``nbgrader autograde <assignment>``,
one assignment after another, kernels unconfined. The course grader
(``autograder.grade``) does more per notebook: a sandboxed kernel,
out-of-process verification and feedback HTML, with one worker per core; its
per-phase wall times (``autograder.grade.PHASES``, summed over every notebook)
come from the ledger it writes.
Both grade the same files in fresh course folders; release is not timed for
the baseline and is timed for the course grader. The ratio is from this one
run, and the two graders' scores are compared submission by submission.
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook

from autograder import chapters, course
from autograder.grade import PHASES, grade
from autograder.ledger import Ledger


def synthetic(assignment: str, rng: random.Random) -> nbformat.NotebookNode:
    stubs = {cell.metadata["nbgrader"]["grade_id"]: cell.source
             for cell in course.answered(assignment, None).cells
             if cell.metadata.get("nbgrader", {}).get("solution")}
    return course.answered(assignment, {item: stub for item, stub in stubs.items() if rng.random() >= 0.7})


def nbgrader_sequential(root: Path, assignments: list[str], students: list[str]) -> dict:
    """Seconds spent in ``nbgrader autograde``, and the scores it gave."""
    shutil.copyfile(course.HERE / "nbgrader_config.py", root / "nbgrader_config.py")
    for assignment in assignments:
        course.release(root, assignment)
    seconds = 0.0
    for assignment in assignments:
        t0 = time.perf_counter()
        subprocess.run(["nbgrader", "autograde", assignment, "--create", "--force",
                        f"--CourseDirectory.root={root}"], cwd=root, check=True,
                       capture_output=True)
        seconds += time.perf_counter() - t0
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        scores = {(s.student.id, a): s.score for a in assignments
                  for s in gradebook.find_assignment(a).submissions}
    return {"seconds": seconds, "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-assignment", type=int, default=40)
    parser.add_argument("--assignments", nargs="*", default=chapters.NAMES)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="1 submission of the first chapter")
    args = parser.parse_args()
    if args.quick:
        args.per_assignment, args.assignments = 1, chapters.NAMES[:1]
    rng = random.Random(0)
    students = [f"student{i:03d}" for i in range(args.per_assignment)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for student in students:
            for assignment in args.assignments:
                notebook = synthetic(assignment, rng)
                for place in (tmp / "class" / student, tmp / "nbgrader" / "submitted" / student):
                    (place / assignment).mkdir(parents=True, exist_ok=True)
                    nbformat.write(notebook, place / assignment / f"{assignment}.ipynb")
        n = len(students) * len(args.assignments)
        print(f"grading {len(students)} submissions x {len(args.assignments)} assignments = {n} "
              f"notebooks on {os.cpu_count()} cores (load average {os.getloadavg()[0]:.2f})")
        baseline = nbgrader_sequential(tmp / "nbgrader", args.assignments, students)
        t0 = time.perf_counter()
        rows = grade(tmp / "class", tmp / "out" / "grades.csv", course_dir=tmp / "course",
                     workers=args.workers)
        ours = time.perf_counter() - t0
        ledger = Ledger(f"sqlite:///{tmp / 'course' / 'gradebook.db'}").outcomes()
        phases = {phase: sum(outcome["seconds"].get(phase, 0.0) for outcome in ledger.values())
                  for phase in PHASES}
    print(f"{'grader':<40} {'seconds':>9} {'notebooks/min':>14}")
    print(f"{'nbgrader autograde, sequential':<40} {baseline['seconds']:9.1f} "
          f"{60 * n / baseline['seconds']:14.1f}")
    print(f"{f'course grader, {args.workers} workers':<40} {ours:9.1f} {60 * n / ours:14.1f}")
    print(f"course grader's phases, summed over its {len(ledger)} notebooks "
          f"({args.workers} at a time):")
    for phase, seconds in phases.items():
        print(f"  {phase:<12} {seconds:9.1f} s  {seconds / len(ledger):6.2f} s per notebook")
    print(f"throughput ratio (course grader / nbgrader): {baseline['seconds'] / ours:.2f}")
    agree = sum(baseline["scores"].get((r["student_id"], r["assignment"])) == r["score"]
                for r in rows)
    print(f"scores agree on {agree}/{n} submissions")


if __name__ == "__main__":
    sys.exit(main())
