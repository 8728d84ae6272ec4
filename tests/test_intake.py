"""Which notebook counts for which student and assignment (autograder/intake.py)."""
import json
import os
import shutil
import zipfile

import pytest

from autograder import course
from autograder.intake import SubmissionsError, collect, identities, unpack

ASSIGNMENTS = ["atrous", "gan", "norms", "roi"]
RELEASED = {a: course.EXERCISES / f"{a}.ipynb" for a in ASSIGNMENTS}
IDS = identities(RELEASED)


def touch(path, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    os.utime(path, (mtime, mtime))


def found(root):
    return {(s.student, s.assignment): (s.relative, s.notebooks_found) for s in collect(root, IDS)}


def hand_in(path, assignment, mtime=100):
    """``path`` holding the released notebook of ``assignment``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RELEASED[assignment], path)
    os.utime(path, (mtime, mtime))


def test_course_layout_and_lms_renames(tmp_path):
    touch(tmp_path / "ana" / "norms" / "norms.ipynb", 100)
    touch(tmp_path / "ben" / "Norms (2).ipynb", 100)
    touch(tmp_path / "ben" / "downloads" / "week3" / "GAN_final.IPYNB", 100)
    touch(tmp_path / "cai" / "roi" / "my answers.ipynb", 100)    # the folder names it
    touch(tmp_path / "cai" / "organ.ipynb", 100)                 # 'gan' is not a word of it
    assert found(tmp_path) == {
        ("ana", "gan"): ("", 0), ("ana", "norms"): ("norms/norms.ipynb", 1), ("ana", "roi"): ("", 0),
        ("ben", "gan"): ("downloads/week3/GAN_final.IPYNB", 1), ("ben", "norms"): ("Norms (2).ipynb", 1),
        ("ben", "roi"): ("", 0),
        ("cai", "gan"): ("", 0), ("cai", "norms"): ("", 0), ("cai", "roi"): ("roi/my answers.ipynb", 1)}


def test_latest_attempt_wins(tmp_path):
    touch(tmp_path / "ana" / "norms.ipynb", 300)
    touch(tmp_path / "ana" / "old" / "norms.ipynb", 100)
    touch(tmp_path / "ben" / "norms-10.ipynb", 200)               # same time: highest attempt,
    touch(tmp_path / "ben" / "norms-9.ipynb", 200)                # not the last path
    touch(tmp_path / "ben" / ".ipynb_checkpoints" / "norms-checkpoint.ipynb", 900)
    touch(tmp_path / "ben" / "__MACOSX" / "._norms.ipynb", 900)
    assert found(tmp_path) == {("ana", "norms"): ("norms.ipynb", 2), ("ben", "norms"): ("norms-10.ipynb", 2)}


def test_ambiguous_file_name_falls_back_to_its_folder(tmp_path):
    touch(tmp_path / "ana" / "gan" / "gan vs norms.ipynb", 100)
    touch(tmp_path / "ana" / "stuff" / "norms and roi.ipynb", 100)  # ambiguous all the way: ignored
    assert found(tmp_path) == {("ana", "gan"): ("gan/gan vs norms.ipynb", 1)}


def test_nobody_handed_in_anything_gives_every_assignment(tmp_path):
    (tmp_path / "ana").mkdir()
    assert sorted(a for _, a in found(tmp_path)) == ASSIGNMENTS


def test_zip_keeps_upload_dates(tmp_path):
    archive = tmp_path / "lms.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(zipfile.ZipInfo("ana/norms (3).ipynb", (2026, 1, 5, 10, 0, 0)), "{}")
        handle.writestr(zipfile.ZipInfo("ana/norms (4).ipynb", (2026, 1, 4, 10, 0, 0)), "{}")
    root = unpack(archive, tmp_path / "out")
    assert found(root) == {("ana", "norms"): ("norms (3).ipynb", 2)}


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(SubmissionsError, match="no such folder or zip file"):
        unpack(tmp_path / "missing.zip", tmp_path / "out")
    (tmp_path / "bogus.zip").write_text("nope")
    with pytest.raises(SubmissionsError, match="not a folder nor a valid zip"):
        unpack(tmp_path / "bogus.zip", tmp_path / "out")


def test_released_notebooks_are_told_apart_by_their_own_grade_ids():
    for assignment, ids in IDS.items():
        assert ids, assignment
        released = json.loads(RELEASED[assignment].read_text())
        graded = {c["metadata"]["nbgrader"]["grade_id"] for c in released["cells"]
                  if c["metadata"].get("nbgrader", {}).get("grade")}
        assert graded <= ids, assignment   # every test cell's id belongs to one chapter
        assert not ids & set().union(*(IDS[a] for a in ASSIGNMENTS if a != assignment))


def test_notebooks_found_by_what_they_are(tmp_path):
    hand_in(tmp_path / "ana" / "DCGAN.ipynb", "gan")
    hand_in(tmp_path / "ana" / "normalization.ipynb", "norms")
    hand_in(tmp_path / "ana" / "hw" / "RoIAlign_hw.ipynb", "roi")
    hand_in(tmp_path / "ben" / "GANs.ipynb", "gan")
    hand_in(tmp_path / "ben" / "norms.ipynb", "roi")             # content wins over the name
    touch(tmp_path / "ben" / "notes.ipynb", 100)                  # matches nothing
    rows = {(s.student, s.assignment): s for s in collect(tmp_path, IDS)}
    assert {key: (s.relative, s.notebooks_found) for key, s in rows.items()} == {
        ("ana", "gan"): ("DCGAN.ipynb", 1), ("ana", "norms"): ("normalization.ipynb", 1),
        ("ana", "roi"): ("hw/RoIAlign_hw.ipynb", 1),
        ("ben", "gan"): ("GANs.ipynb", 1), ("ben", "norms"): ("", 0), ("ben", "roi"): ("norms.ipynb", 1)}
    assert rows["ben", "norms"].unmatched == ("notes.ipynb",)
    assert rows["ana", "gan"].unmatched == ()


def class_folder(root, mtime=1.7e9):  # a zip's dates start in 1980
    hand_in(root / "Class-DL-2025" / "ana" / "DCGAN.ipynb", "gan", mtime)
    hand_in(root / "Class-DL-2025" / "ana" / "norms" / "norms.ipynb", "norms", mtime)
    hand_in(root / "Class-DL-2025" / "ben" / "gan.ipynb", "gan", mtime)
    hand_in(root / "Class-DL-2025" / "cai" / "week 3" / "GANs (2).ipynb", "gan", mtime)
    touch(root / "__MACOSX" / "Class-DL-2025" / "._ana", mtime)


def test_a_folder_wrapping_the_class_is_unwrapped(tmp_path):
    class_folder(tmp_path / "class")
    shutil.make_archive(str(tmp_path / "class"), "zip", tmp_path / "class")  # zip -r class.zip Class-DL-2025
    for root in (tmp_path / "class", unpack(tmp_path / "class.zip", tmp_path / "out")):
        assert found(root) == {
            ("ana", "gan"): ("DCGAN.ipynb", 1), ("ana", "norms"): ("norms/norms.ipynb", 1),
            ("ben", "gan"): ("gan.ipynb", 1), ("ben", "norms"): ("", 0),
            ("cai", "gan"): ("week 3/GANs (2).ipynb", 1), ("cai", "norms"): ("", 0)}


def test_one_student_with_assignment_folders_is_not_unwrapped(tmp_path):
    hand_in(tmp_path / "ana" / "gan" / "gan.ipynb", "gan")
    hand_in(tmp_path / "ana" / "norms" / "norms.ipynb", "norms")
    hand_in(tmp_path / "ana" / "old" / "norms.ipynb", "norms", mtime=50)
    assert found(tmp_path) == {("ana", "gan"): ("gan/gan.ipynb", 1),
                               ("ana", "norms"): ("norms/norms.ipynb", 2)}


def test_attempt_folders_are_attempts_not_students(tmp_path):
    hand_in(tmp_path / "ana" / "attempt1" / "norms.ipynb", "norms", mtime=100)
    hand_in(tmp_path / "ana" / "Attempt 2" / "norms.ipynb", "norms", mtime=200)
    hand_in(tmp_path / "ben" / "2026-03-01" / "gan.ipynb", "gan", mtime=200)
    hand_in(tmp_path / "ben" / "2026-03-02" / "gan.ipynb", "gan", mtime=100)  # dates are names, mtime decides
    hand_in(tmp_path / "cai" / "v1" / "gan.ipynb", "gan", mtime=100)
    hand_in(tmp_path / "cai" / "final version" / "gan.ipynb", "gan", mtime=300)
    assert found(tmp_path) == {
        ("ana", "gan"): ("", 0), ("ana", "norms"): ("Attempt 2/norms.ipynb", 2),
        ("ben", "gan"): ("2026-03-01/gan.ipynb", 2), ("ben", "norms"): ("", 0),
        ("cai", "gan"): ("final version/gan.ipynb", 2), ("cai", "norms"): ("", 0)}


def test_a_student_folder_holding_students_is_a_clear_error(tmp_path):
    class_folder(tmp_path)
    hand_in(tmp_path / "dan" / "gan.ipynb", "gan")                # beside the class folder
    with pytest.raises(SubmissionsError, match=r"Class-DL-2025/ holds 3 folders that each look "
                                               r"like a student \(ana, ben, cai\)"):
        collect(tmp_path, IDS)
