"""Find each student's notebook for each assignment in a folder or zip of LMS downloads.

A submission folder holds one folder per student. Inside it, any layout goes:
``<assignment>/<assignment>.ipynb`` (the course's own), ``<assignment>.ipynb``,
LMS renames such as ``Norms (2).ipynb`` or ``norms-attempt3.ipynb``, and any
depth of nesting. A notebook belongs to assignment ``a`` when ``a`` is one of
the words of its file name, or, failing that, of one of the folders between
the student's folder and the file (words: runs of letters and digits,
case-folded). Among several notebooks for one assignment the latest wins:
newest modification time (a zip's entry dates are kept), then the highest
attempt number in the name, then the path. Hidden files and folders,
``__MACOSX`` and ``.ipynb_checkpoints`` are skipped.
"""
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

SKIPPED_DIRS = {"__MACOSX", ".ipynb_checkpoints"}


class SubmissionsError(ValueError):
    pass


@dataclass(frozen=True)
class Submission:
    student: str
    assignment: str
    notebook: Path | None  # None: the student handed in nothing for this assignment
    relative: str          # the notebook's path under the student's folder, "" if none
    notebooks_found: int   # how many notebooks were found for this assignment


def unpack(submissions: Path, tmp: Path) -> Path:
    """The folder to read: ``submissions`` itself, or the zip extracted into ``tmp``."""
    if submissions.is_dir():
        return submissions
    if not submissions.exists():
        raise SubmissionsError(f"{submissions}: no such folder or zip file")
    try:
        with zipfile.ZipFile(submissions) as archive:
            archive.extractall(tmp)  # ZipFile drops absolute paths and '..' components
            for entry in archive.infolist():
                path = tmp / entry.filename
                if not entry.is_dir() and path.is_file():  # keep the upload's date
                    stamp = time.mktime(entry.date_time + (0, 0, -1))
                    os.utime(path, (stamp, stamp))
    except zipfile.BadZipFile as error:
        raise SubmissionsError(f"{submissions}: not a folder nor a valid zip ({error})") from None
    return tmp


def _skipped(name: str) -> bool:
    return name in SKIPPED_DIRS or name.startswith(".")


def _words(name: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", name.casefold())


def _notebooks(folder: Path) -> list[Path]:
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not _skipped(d))
        found += [Path(directory) / f for f in sorted(files)
                  if f.lower().endswith(".ipynb") and not _skipped(f)]
    return found


def _assignment_of(path: Path, student_dir: Path, assignments: list[str]) -> str | None:
    for words in [_words(path.stem)] + [_words(part) for part in
                                        reversed(path.relative_to(student_dir).parts[:-1])]:
        matches = [a for a in assignments if a in words]
        if len(matches) == 1:
            return matches[0]
    return None


def _recency(path: Path) -> tuple:
    attempt = max((int(w) for w in _words(path.stem) if w.isdigit()), default=0)
    return path.stat().st_mtime, attempt, str(path)


def collect(root: Path, assignments: list[str]) -> list[Submission]:
    """One ``Submission`` per student folder and assignment any student handed in
    (every assignment if nobody handed in anything), sorted by student then assignment."""
    students = sorted(p for p in root.iterdir() if p.is_dir() and not _skipped(p.name))
    found = {}
    for student_dir in students:
        for path in _notebooks(student_dir):
            assignment = _assignment_of(path, student_dir, assignments)
            if assignment:
                found.setdefault((student_dir.name, assignment), []).append(path)
    handed_in = sorted({a for _, a in found}) or sorted(assignments)
    rows = []
    for student_dir in students:
        for assignment in handed_in:
            paths = found.get((student_dir.name, assignment), [])
            latest = max(paths, key=_recency) if paths else None
            rows.append(Submission(student_dir.name, assignment, latest,
                                   str(latest.relative_to(student_dir)) if latest else "",
                                   len(paths)))
    return rows
