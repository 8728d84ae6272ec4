"""Find each student's notebook for each assignment in a folder or zip of LMS downloads.

A submission folder holds one folder per student; a folder (or zip) whose only
entry is a folder holding the class (``zip -r class.zip Class-DL-2025``) is
unwrapped first. Inside a student's folder, any layout goes:
``<assignment>/<assignment>.ipynb`` (the course's own), ``<assignment>.ipynb``,
LMS renames such as ``Norms (2).ipynb`` or ``DCGAN.ipynb``, and any depth of
nesting. A notebook belongs to the assignment whose released notebook it
comes from: the one with the most of the grade ids (nbgrader's cell metadata)
that only that released notebook has. Failing that (metadata lost, file
corrupt) it belongs to assignment ``a`` when ``a`` is one of the words of its
file name, or, failing that, of one of the folders between the student's
folder and the file (words: runs of letters and digits, case-folded). Among
several notebooks for one assignment the latest wins: newest modification
time (a zip's entry dates are kept), then the highest attempt number in the
name, then the path. Hidden files and folders, ``__MACOSX`` and
``.ipynb_checkpoints`` are skipped.

Of a zip only the notebooks (and folders) are extracted, each within the extraction
folder and as a plain file: no entry is written through a link or outside, and no
notebook is read or unzipped past ``MAX_NOTEBOOK_BYTES``. A notebook entry that is
refused (a link, a path leaving the zip's folder, too large, damaged) leaves an empty
stand-in whose ``refusal`` says why, so that its student's row does.
"""
import functools
import json
import os
import re
import shutil
import stat
import time
import unicodedata
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SKIPPED_DIRS = {"__MACOSX", ".ipynb_checkpoints"}
# Words that name a folder as one attempt of a student's, not as another student.
ATTEMPT_WORDS = {"attempt", "try", "retry", "version", "submission", "resubmission", "draft",
                 "final", "late", "old", "new", "latest"}
MAX_NOTEBOOK_BYTES = 100 * 2**20  # a larger notebook is not read: nobody writes one by hand
MAX_UNZIPPED_BYTES = 16 * 2**30   # all the notebooks a zip may unpack to
_ENCRYPTED, _UTF8_NAME = 0x1, 0x800  # zip flag bits 0 and 11
_refused: dict[Path, str] = {}


class SubmissionsError(ValueError):
    pass


@dataclass(frozen=True)
class Submission:
    student: str
    assignment: str
    notebook: Path | None  # None: the student handed in nothing for this assignment
    relative: str          # the notebook's path under the student's folder, "" if none
    notebooks_found: int   # how many notebooks were found for this assignment
    unmatched: tuple[str, ...] = ()  # the student's notebooks that belong to no assignment


def unpack(submissions: Path, tmp: Path) -> Path:
    """The folder to read: ``submissions`` itself, or the zip's notebooks extracted into ``tmp``."""
    if submissions.is_dir():
        return submissions
    if not submissions.exists():
        raise SubmissionsError(f"{submissions}: no such folder or zip file")
    try:
        with zipfile.ZipFile(submissions) as archive:
            _extract(archive, Path(tmp))
    except zipfile.BadZipFile as error:
        raise SubmissionsError(f"{submissions}: not a folder nor a valid zip ({error})") from None
    except SubmissionsError as error:
        raise SubmissionsError(f"{submissions}: {error}") from None
    return tmp


def refusal(path: Path) -> str | None:
    """Why ``unpack`` refused the zip entry whose stand-in is ``path``; None for any other file."""
    return _refused.get(Path(path).resolve())


def _name(entry: zipfile.ZipInfo) -> str:
    """The entry's name: UTF-8 when it decodes so (many zip tools write UTF-8 without
    saying so), else code page 437 as the zip format has it."""
    if entry.flag_bits & _UTF8_NAME:
        return entry.filename
    try:
        return entry.filename.encode("cp437").decode("utf-8")
    except UnicodeError:
        return entry.filename


def _problem(name: str, entry: zipfile.ZipInfo) -> str | None:
    """Why a notebook entry may not be extracted, or None."""
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "an absolute path in the zip"
    if ".." in name.split("/"):
        return "a path in the zip that leads out of its folder (..)"
    if stat.S_ISLNK(entry.external_attr >> 16):
        return "a symbolic link in the zip (not followed)"
    if entry.flag_bits & _ENCRYPTED:
        return "encrypted in the zip"
    if entry.file_size > MAX_NOTEBOOK_BYTES:
        return (f"larger than {MAX_NOTEBOOK_BYTES >> 20} MB "
                f"(the zip says {entry.file_size >> 20} MB unzipped)")
    return None


def _extract(archive: zipfile.ZipFile, tmp: Path) -> None:
    """Each notebook of ``archive`` as a plain file under ``tmp``, dated as in the zip;
    a refused one as an empty stand-in (``refusal``); every folder the zip names."""
    notebooks, folders = [], {Path()}
    for entry in archive.infolist():
        name = _name(entry).replace("\\", "/")
        if any(unicodedata.category(c) == "Cc" for c in name):
            continue  # control characters: no student or file is named so
        parts = [p for p in name.split("/") if p not in ("", ".", "..")]
        if not parts or any(_skipped(p) for p in parts):
            continue
        if entry.is_dir():
            folders.add(Path(*parts))
        elif parts[-1].lower().endswith(".ipynb"):
            notebooks.append((Path(*parts), entry, _problem(name, entry)))
    unzipped = sum(entry.file_size for _, entry, problem in notebooks if not problem)
    if unzipped > MAX_UNZIPPED_BYTES:
        raise SubmissionsError(f"its notebooks unzip to {unzipped >> 20} MB, more than the "
                               f"{MAX_UNZIPPED_BYTES >> 20} MB allowed: a zip bomb?")
    for folder in folders:
        _make_folder(tmp / folder)
    # refused entries first: a notebook of the same path replaces the stand-in
    for path, entry, problem in sorted(notebooks, key=lambda n: n[2] is None):
        target = tmp / path
        if not _make_folder(target.parent) or target.is_dir():
            continue  # a file of the zip holds this folder's place, or a folder this file's
        if not problem:
            try:
                with archive.open(entry) as source, open(target, "wb") as copy:
                    shutil.copyfileobj(source, copy)  # zipfile stops at the size the zip gives
                _refused.pop(target.resolve(), None)
            except zipfile.BadZipFile:
                problem = "damaged in the zip (a wrong checksum or header)"
            except (EOFError, zlib.error):
                problem = "damaged in the zip (its compressed data is cut short or invalid)"
            except NotImplementedError:
                problem = "compressed in the zip by a method that cannot be read"
        if problem:
            target.write_bytes(b"")
            _refused[target.resolve()] = problem
        stamp = time.mktime(entry.date_time + (0, 0, -1))  # keep the upload's date
        os.utime(target, (stamp, stamp))


def _make_folder(path: Path) -> bool:
    """Make ``path`` a folder; False when a file of the zip is in the way."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return False
    return True


def identities(released: dict[str, Path]) -> dict[str, set[str]]:
    """For each assignment, the grade ids that only its released notebook has."""
    ids = {assignment: _grade_ids(path) for assignment, path in released.items()}
    shared = Counter(i for found in ids.values() for i in found)
    return {assignment: {i for i in found if shared[i] == 1} for assignment, found in ids.items()}


def _grade_ids(path: Path) -> frozenset[str]:
    """The nbgrader grade ids of a notebook's cells; none if it cannot be read."""
    try:
        info = path.stat()
    except OSError:
        return frozenset()
    return _read_grade_ids(path, info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=4096)
def _read_grade_ids(path: Path, mtime_ns: int, size: int) -> frozenset[str]:
    if size > MAX_NOTEBOOK_BYTES:
        return frozenset()
    try:
        cells = json.loads(path.read_bytes()).get("cells", [])
        return frozenset(str(cell["metadata"]["nbgrader"]["grade_id"]) for cell in cells
                         if isinstance(cell, dict) and "grade_id" in
                         (cell.get("metadata") or {}).get("nbgrader", {}))
    except (OSError, ValueError, AttributeError, TypeError):
        return frozenset()


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


def _assignment_of(path: Path, student_dir: Path, assignments: dict[str, set[str]]) -> str | None:
    ids = _grade_ids(path)
    overlap = Counter({a: len(ids & unique) for a, unique in assignments.items() if ids & unique})
    ranked = overlap.most_common(2)
    if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
        return ranked[0][0]
    for words in [_words(path.stem)] + [_words(part) for part in
                                        reversed(path.relative_to(student_dir).parts[:-1])]:
        matches = [a for a in assignments if a in words]
        if len(matches) == 1:
            return matches[0]
    return None


def _attempt_like(name: str) -> bool:
    """A folder named like one attempt of a student's (``attempt 2``, ``v3``, ``2026-03-02``)."""
    words = _words(name)
    return bool(set(words) & ATTEMPT_WORDS) or all(w.isdigit() or re.fullmatch(r"v\d+", w)
                                                   for w in words)


def _student_like(folder: Path, assignments: dict[str, set[str]]) -> list[str]:
    """The subfolders of ``folder`` that look like students of one class: named neither
    after an assignment nor like an attempt, and handing in an assignment that another of
    them hands in."""
    subfolders = [d for d in sorted(folder.iterdir()) if d.is_dir() and not _skipped(d.name)
                  and not set(_words(d.name)) & set(assignments) and not _attempt_like(d.name)]
    handed_in = {d.name: {a for p in _notebooks(d) if (a := _assignment_of(p, d, assignments))}
                 for d in subfolders}
    count = Counter(a for found in handed_in.values() for a in found)
    return [name for name, found in handed_in.items() if any(count[a] > 1 for a in found)]


def _class_folder(root: Path, assignments: dict[str, set[str]]) -> Path:
    """``root``, or the folder holding the class that ``root`` only wraps."""
    entries = [p for p in root.iterdir() if not _skipped(p.name)]
    while len(entries) == 1 and entries[0].is_dir() and len(_student_like(entries[0], assignments)) > 1:
        root = entries[0]
        entries = [p for p in root.iterdir() if not _skipped(p.name)]
    return root


def _recency(path: Path) -> tuple:
    attempt = max((int(w) for w in _words(path.stem) if w.isdigit()), default=0)
    return path.stat().st_mtime, attempt, str(path)


def collect(root: Path, assignments: dict[str, set[str]]) -> list[Submission]:
    """One ``Submission`` per student folder and assignment any student handed in
    (every assignment if nobody handed in anything), sorted by student then assignment.

    ``assignments`` maps each assignment to the grade ids only its released notebook
    has (``identities``). A student folder whose subfolders look like several students
    is a SubmissionsError: grading it as one student would mix their work.
    """
    root = _class_folder(root, assignments)
    students = sorted(p for p in root.iterdir() if p.is_dir() and not _skipped(p.name))
    found, unmatched = {}, {}
    for student_dir in students:
        if len(inner := _student_like(student_dir, assignments)) > 1:
            raise SubmissionsError(
                f"{student_dir.name}/ holds {len(inner)} folders that each look like a student "
                f"({', '.join(inner[:5])}{', ...' if len(inner) > 5 else ''}): give the folder "
                f"(or zip) with one folder per student")
        for path in _notebooks(student_dir):
            if assignment := _assignment_of(path, student_dir, assignments):
                found.setdefault((student_dir.name, assignment), []).append(path)
            else:
                unmatched.setdefault(student_dir.name, []).append(str(path.relative_to(student_dir)))
    handed_in = sorted({a for _, a in found}) or sorted(assignments)
    rows = []
    for student_dir in students:
        for assignment in handed_in:
            paths = found.get((student_dir.name, assignment), [])
            latest = max(paths, key=_recency) if paths else None
            rows.append(Submission(student_dir.name, assignment, latest,
                                   str(latest.relative_to(student_dir)) if latest else "",
                                   len(paths), tuple(unmatched.get(student_dir.name, ()))))
    return rows
