"""Which notebook counts for which student and assignment (autograder/intake.py).

The cases run on a made-up course of four assignments, whose released notebooks are
told apart by their grade ids as the real ones are (the last test checks the real ones)."""
import json
import os
import shutil
import zipfile

import pytest

from autograder.intake import SubmissionsError, collect, identities, unpack
from autograder.template import answer_objects
from tests.helpers import CHAPTERS

ASSIGNMENTS = ["attn", "kernels", "mlp", "vit"]
IDS = {a: {f"{a}_setup", f"test_{a}"} for a in ASSIGNMENTS}


def released(assignment):
    """A released notebook of the made-up course: a setup cell and a test cell."""
    cells = [{"cell_type": "code", "source": "", "outputs": [], "execution_count": None,
              "metadata": {"nbgrader": {"grade_id": grade_id, "grade": grade_id.startswith("test_")}}}
             for grade_id in sorted(IDS[assignment])]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def touch(path, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    os.utime(path, (mtime, mtime))


def found(root):
    return {(s.student, s.assignment): (s.relative, s.notebooks_found) for s in collect(root, IDS)}


def hand_in(path, assignment, mtime=100):
    """``path`` holding the released notebook of ``assignment``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(released(assignment)))
    os.utime(path, (mtime, mtime))


def test_course_layout_and_lms_renames(tmp_path):
    touch(tmp_path / "ana" / "kernels" / "kernels.ipynb", 100)
    touch(tmp_path / "ben" / "Kernels (2).ipynb", 100)
    touch(tmp_path / "ben" / "downloads" / "week3" / "MLP_final.IPYNB", 100)
    touch(tmp_path / "cai" / "attn" / "my answers.ipynb", 100)    # the folder names it
    touch(tmp_path / "cai" / "xmlparser.ipynb", 100)                 # 'mlp' is not a word of it
    assert found(tmp_path) == {
        ("ana", "mlp"): ("", 0), ("ana", "kernels"): ("kernels/kernels.ipynb", 1), ("ana", "attn"): ("", 0),
        ("ben", "mlp"): ("downloads/week3/MLP_final.IPYNB", 1), ("ben", "kernels"): ("Kernels (2).ipynb", 1),
        ("ben", "attn"): ("", 0),
        ("cai", "mlp"): ("", 0), ("cai", "kernels"): ("", 0), ("cai", "attn"): ("attn/my answers.ipynb", 1)}


def test_latest_attempt_wins(tmp_path):
    touch(tmp_path / "ana" / "kernels.ipynb", 300)
    touch(tmp_path / "ana" / "old" / "kernels.ipynb", 100)
    touch(tmp_path / "ben" / "kernels-10.ipynb", 200)               # same time: highest attempt,
    touch(tmp_path / "ben" / "kernels-9.ipynb", 200)                # not the last path
    touch(tmp_path / "ben" / ".ipynb_checkpoints" / "kernels-checkpoint.ipynb", 900)
    touch(tmp_path / "ben" / "__MACOSX" / "._norms.ipynb", 900)
    assert found(tmp_path) == {("ana", "kernels"): ("kernels.ipynb", 2), ("ben", "kernels"): ("kernels-10.ipynb", 2)}


def test_ambiguous_file_name_falls_back_to_its_folder(tmp_path):
    touch(tmp_path / "ana" / "mlp" / "mlp vs kernels.ipynb", 100)
    touch(tmp_path / "ana" / "stuff" / "kernels and attn.ipynb", 100)  # ambiguous all the way: ignored
    assert found(tmp_path) == {("ana", "mlp"): ("mlp/mlp vs kernels.ipynb", 1)}


def test_nobody_handed_in_anything_gives_every_assignment(tmp_path):
    (tmp_path / "ana").mkdir()
    assert sorted(a for _, a in found(tmp_path)) == ASSIGNMENTS


def test_zip_keeps_upload_dates(tmp_path):
    archive = tmp_path / "lms.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(zipfile.ZipInfo("ana/kernels (3).ipynb", (2026, 1, 5, 10, 0, 0)), "{}")
        handle.writestr(zipfile.ZipInfo("ana/kernels (4).ipynb", (2026, 1, 4, 10, 0, 0)), "{}")
    root = unpack(archive, tmp_path / "out")
    assert found(root) == {("ana", "kernels"): ("kernels (3).ipynb", 2)}


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(SubmissionsError, match="no such folder or zip file"):
        unpack(tmp_path / "missing.zip", tmp_path / "out")
    (tmp_path / "bogus.zip").write_text("nope")
    with pytest.raises(SubmissionsError, match="not a folder nor a valid zip"):
        unpack(tmp_path / "bogus.zip", tmp_path / "out")


def test_released_notebooks_are_told_apart_by_their_own_grade_ids():
    """Every chapter has grade ids no other has. An item two chapters grade (the NMS exercise
    grades the RoI chapter's box_iou again) is the same reference object in both."""
    ids = identities({chapter.name: chapter.exercise for chapter in CHAPTERS})
    graded = {}
    for chapter in CHAPTERS:
        assert ids[chapter.name], chapter.name
        assert not ids[chapter.name] & set().union(*(ids[c.name] for c in CHAPTERS if c != chapter))
        for item, objects in answer_objects(chapter.template).items():
            graded.setdefault(item, set()).add(objects[-1])
    assert all(len(objects) == 1 for objects in graded.values()), graded


def test_notebooks_found_by_what_they_are(tmp_path):
    hand_in(tmp_path / "ana" / "DCMLP.ipynb", "mlp")
    hand_in(tmp_path / "ana" / "kernelization.ipynb", "kernels")
    hand_in(tmp_path / "ana" / "hw" / "AttnAlign_hw.ipynb", "attn")
    hand_in(tmp_path / "ben" / "MLPs.ipynb", "mlp")
    hand_in(tmp_path / "ben" / "kernels.ipynb", "attn")             # content wins over the name
    touch(tmp_path / "ben" / "notes.ipynb", 100)                  # matches nothing
    rows = {(s.student, s.assignment): s for s in collect(tmp_path, IDS)}
    assert {key: (s.relative, s.notebooks_found) for key, s in rows.items()} == {
        ("ana", "mlp"): ("DCMLP.ipynb", 1), ("ana", "kernels"): ("kernelization.ipynb", 1),
        ("ana", "attn"): ("hw/AttnAlign_hw.ipynb", 1),
        ("ben", "mlp"): ("MLPs.ipynb", 1), ("ben", "kernels"): ("", 0), ("ben", "attn"): ("kernels.ipynb", 1)}
    assert rows["ben", "kernels"].unmatched == ("notes.ipynb",)
    assert rows["ana", "mlp"].unmatched == ()


def class_folder(root, mtime=1.7e9):  # a zip's dates start in 1980
    hand_in(root / "Class-DL-2025" / "ana" / "DCMLP.ipynb", "mlp", mtime)
    hand_in(root / "Class-DL-2025" / "ana" / "kernels" / "kernels.ipynb", "kernels", mtime)
    hand_in(root / "Class-DL-2025" / "ben" / "mlp.ipynb", "mlp", mtime)
    hand_in(root / "Class-DL-2025" / "cai" / "week 3" / "MLPs (2).ipynb", "mlp", mtime)
    touch(root / "__MACOSX" / "Class-DL-2025" / "._ana", mtime)


def test_a_folder_wrapping_the_class_is_unwrapped(tmp_path):
    class_folder(tmp_path / "class")
    shutil.make_archive(str(tmp_path / "class"), "zip", tmp_path / "class")  # zip -r class.zip Class-DL-2025
    for root in (tmp_path / "class", unpack(tmp_path / "class.zip", tmp_path / "out")):
        assert found(root) == {
            ("ana", "mlp"): ("DCMLP.ipynb", 1), ("ana", "kernels"): ("kernels/kernels.ipynb", 1),
            ("ben", "mlp"): ("mlp.ipynb", 1), ("ben", "kernels"): ("", 0),
            ("cai", "mlp"): ("week 3/MLPs (2).ipynb", 1), ("cai", "kernels"): ("", 0)}


def test_one_student_with_assignment_folders_is_not_unwrapped(tmp_path):
    hand_in(tmp_path / "ana" / "mlp" / "mlp.ipynb", "mlp")
    hand_in(tmp_path / "ana" / "kernels" / "kernels.ipynb", "kernels")
    hand_in(tmp_path / "ana" / "old" / "kernels.ipynb", "kernels", mtime=50)
    assert found(tmp_path) == {("ana", "mlp"): ("mlp/mlp.ipynb", 1),
                               ("ana", "kernels"): ("kernels/kernels.ipynb", 2)}


def test_attempt_folders_are_attempts_not_students(tmp_path):
    hand_in(tmp_path / "ana" / "attempt1" / "kernels.ipynb", "kernels", mtime=100)
    hand_in(tmp_path / "ana" / "Attempt 2" / "kernels.ipynb", "kernels", mtime=200)
    hand_in(tmp_path / "ben" / "2026-03-01" / "mlp.ipynb", "mlp", mtime=200)
    hand_in(tmp_path / "ben" / "2026-03-02" / "mlp.ipynb", "mlp", mtime=100)  # dates are names, mtime decides
    hand_in(tmp_path / "cai" / "v1" / "mlp.ipynb", "mlp", mtime=100)
    hand_in(tmp_path / "cai" / "final version" / "mlp.ipynb", "mlp", mtime=300)
    assert found(tmp_path) == {
        ("ana", "mlp"): ("", 0), ("ana", "kernels"): ("Attempt 2/kernels.ipynb", 2),
        ("ben", "mlp"): ("2026-03-01/mlp.ipynb", 2), ("ben", "kernels"): ("", 0),
        ("cai", "mlp"): ("final version/mlp.ipynb", 2), ("cai", "kernels"): ("", 0)}


def test_a_student_folder_holding_students_is_a_clear_error(tmp_path):
    class_folder(tmp_path)
    hand_in(tmp_path / "dan" / "mlp.ipynb", "mlp")                # beside the class folder
    with pytest.raises(SubmissionsError, match=r"Class-DL-2025/ holds 3 folders that each look "
                                               r"like a student \(ana, ben, cai\)"):
        collect(tmp_path, IDS)
