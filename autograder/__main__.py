"""Command line: python -m autograder {build,check,grade}."""
import argparse
import sys
from pathlib import Path

from . import course


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="regenerate autograder/source/ and exercises/")
    commands.add_parser("check", help="exercises/ current? solutions pass, stubs fail?")
    grade = commands.add_parser("grade", help="grade a folder or zip of submissions")
    grade.add_argument("submissions", type=Path,
                       help="folder or zip with one folder per student (or a single folder holding "
                            "those) with the notebooks in any layout (e.g. "
                            "<student_id>/<assignment>/<assignment>.ipynb); a notebook is matched to "
                            "its assignment by its cells' grade ids, else by its name, and the latest "
                            "per assignment is graded")
    grade.add_argument("--out", type=Path, default=Path("grades.csv"),
                       help="grades CSV; per-student feedback HTML goes to feedback/ beside it")
    grade.add_argument("--course-dir", type=Path, default=course.HERE,
                       help="nbgrader course directory holding the gradebook (default: autograder/)")
    grade.add_argument("--db", dest="db_url", default=None,
                       help="gradebook SQLAlchemy URL (default: sqlite in the course directory)")
    grade.add_argument("--workers", type=int, default=None,
                       help="submissions graded at once (default: one per core)")
    grade.add_argument("--timeout", type=int, default=None,
                       help="seconds a cell or a verification probe may run (default: 120 / 60)")
    grade.add_argument("--lease", type=float, default=30.0,
                       help="seconds a grader's claim on a submission lasts unrenewed: graders "
                            "sharing one gradebook take over a dead one's work after this "
                            "(default: 30)")
    grade.add_argument("--unsafe-no-sandbox", dest="sandboxed", action="store_false",
                       help="run submissions without bubblewrap: they can then read the hidden "
                            "tests and rewrite the gradebook. Only for code you trust.")
    return parser


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    if args.command == "build":
        for path in course.build():
            print(f"wrote {path.relative_to(course.ROOT)}")
        return 0
    if args.command == "check":
        problems = course.check()
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        print("check: ok" if not problems else f"check: {len(problems)} problem(s)")
        return 1 if problems else 0
    from .grade import GradingError, grade as grade_submissions
    from .intake import SubmissionsError
    try:
        rows = grade_submissions(args.submissions, args.out, args.course_dir, args.db_url,
                                 args.workers, args.sandboxed, args.timeout, args.lease)
    except (SubmissionsError, GradingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for row in rows:
        print(f"{row['student_id']:>20} {row['assignment']:>12} "
              f"{row['score']:>6}/{row['max_score']:<4} {row['status']}")
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
