"""Which notebook counts for which student and assignment (autograder/intake.py)."""
import os
import zipfile

import pytest

from autograder.intake import SubmissionsError, collect, unpack

ASSIGNMENTS = ["atrous", "gan", "norms", "roi"]


def touch(path, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    os.utime(path, (mtime, mtime))


def found(root):
    return {(s.student, s.assignment): (s.relative, s.notebooks_found) for s in collect(root, ASSIGNMENTS)}


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
