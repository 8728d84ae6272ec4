"""Which notebook counts for which student and assignment (autograder/intake.py).

The cases run on a made-up course of four assignments, whose released notebooks are
told apart by their grade ids as the real ones are (the last test checks the real ones)."""
import json
import os
import shutil
import stat
import tracemalloc
import zipfile
import zlib

import pytest

from autograder import intake
from autograder.intake import SubmissionsError, collect, identities, refusal, unpack
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


# -- hostile zips ------------------------------------------------------------------

# (signature, offsets of: method, crc, uncompressed size, name length, name) in a zip's
# local file header and its central directory record
_HEADERS = [(b"PK\x03\x04", 8, 14, 22, 26, 30), (b"PK\x01\x02", 10, 16, 24, 28, 46)]


def patch_entry(data: bytes, name: str, *, method=None, crc=None, size=None) -> bytes:
    """The zip ``data`` with both headers of the entry ``name`` claiming other fields."""
    data, raw, patched = bytearray(data), name.encode(), 0
    for signature, at_method, at_crc, at_size, at_length, at_name in _HEADERS:
        i = data.find(signature)
        while i >= 0:
            length = int.from_bytes(data[i + at_length:i + at_length + 2], "little")
            if data[i + at_name:i + at_name + length] == raw:
                for value, at, width in ((method, at_method, 2), (crc, at_crc, 4), (size, at_size, 4)):
                    if value is not None:
                        data[i + at:i + at + width] = value.to_bytes(width, "little")
                patched += 1
            i = data.find(signature, i + 1)
    assert patched == 2, f"{name}: {patched} headers found"
    return bytes(data)


def rename_entries(data: bytes, names: dict[bytes, bytes]) -> bytes:
    """The zip ``data`` with each placeholder name replaced by raw bytes of the same length,
    and flag bit 11 (UTF-8) left unset: names in whatever encoding the zipping machine had."""
    for placeholder, raw in names.items():
        assert len(placeholder) == len(raw) and data.count(placeholder) == 2
        data = data.replace(placeholder, raw)
    return data


def add_symlink(archive: zipfile.ZipFile, name: str, target) -> None:
    entry = zipfile.ZipInfo(name)
    entry.create_system, entry.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
    archive.writestr(entry, str(target))


def add_deflated(archive: zipfile.ZipFile, name: str, stream: bytes) -> None:
    """An entry whose data is the raw deflate ``stream`` (fix its headers with ``patch_entry``)."""
    archive.writestr(zipfile.ZipInfo(name), stream, compress_type=zipfile.ZIP_STORED)


def zeros_deflated(megabytes: int) -> bytes:
    """A raw deflate stream of ``megabytes`` MB of zeros, about 1 KB for each."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * megabytes + compressor.flush()


def test_zip_entries_are_extracted_as_plain_notebooks_inside(tmp_path):
    outside, victim = tmp_path / "outside", tmp_path / "victim.ipynb"
    outside.mkdir()
    victim.write_text("{}")
    absolute = tmp_path / "absolute" / "kernels.ipynb"
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        # a link to a folder outside, then a notebook written "through" it
        add_symlink(handle, "ana/work", outside)
        handle.writestr("ana/work/kernels.ipynb", "{}")
        handle.writestr("ana/data.bin", "not a notebook: not extracted")
        add_symlink(handle, "ben/kernels.ipynb", victim)
        handle.writestr("cai/" + "../" * 30 + str(tmp_path / "escaped.ipynb").lstrip("/"), "{}")
        handle.writestr(str(absolute), "{}")
        add_deflated(handle, "dan/kernels.ipynb", zeros_deflated(3 << 10))  # 3 GB of zeros
        add_deflated(handle, "eve/kernels.ipynb", zeros_deflated(64))
        add_deflated(handle, "gil/kernels.ipynb", b"not deflate data")
        handle.writestr("hal/kernels.ipynb", "{}")
        handle.writestr("XXXXX/kernels.ipynb", "{}")
        handle.writestr("YYYYY/kernels.ipynb", "{}")
        handle.writestr("fay\x1b]0;title\x07/kernels.ipynb", "{}")
    data = patch_entry(archive.read_bytes(), "dan/kernels.ipynb", method=8, size=3 << 30)
    # says 1 KB, inflates to 64 MB: zipfile stops at 1 KB, whose checksum is not the zip's
    data = patch_entry(data, "eve/kernels.ipynb", method=8, size=1024,
                       crc=zlib.crc32(bytes(64 << 20)))
    data = patch_entry(data, "gil/kernels.ipynb", method=8)
    data = patch_entry(data, "hal/kernels.ipynb", method=9)  # deflate64
    archive.write_bytes(rename_entries(data, {b"XXXXX": "élève".encode("latin-1"),
                                              b"YYYYY": "José".encode()}))

    root = unpack(archive, tmp_path / "out")
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    assert files == {"ana/work/kernels.ipynb", "ben/kernels.ipynb", "cai/" + str(tmp_path / "escaped.ipynb").lstrip("/"),
                     str(absolute).lstrip("/"), "dan/kernels.ipynb", "eve/kernels.ipynb",
                     "gil/kernels.ipynb", "hal/kernels.ipynb", "ΘlΦve/kernels.ipynb", "José/kernels.ipynb"}
    assert not [p for p in root.rglob("*") if p.is_symlink()]
    assert not any(outside.iterdir()) and victim.read_text() == "{}"
    assert not (tmp_path / "escaped.ipynb").exists() and not absolute.exists()
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 1 << 10
    assert {name: refusal(root / name) for name in sorted(files)} == {
        "ana/work/kernels.ipynb": None, "José/kernels.ipynb": None, "ΘlΦve/kernels.ipynb": None,
        "ben/kernels.ipynb": "a symbolic link in the zip (not followed)",
        "cai/" + str(tmp_path / "escaped.ipynb").lstrip("/"):
            "a path in the zip that leads out of its folder (..)",
        str(absolute).lstrip("/"): "an absolute path in the zip",
        "dan/kernels.ipynb": "larger than 100 MB (the zip says 3072 MB unzipped)",
        "eve/kernels.ipynb": "damaged in the zip (a wrong checksum or header)",
        "gil/kernels.ipynb": "damaged in the zip (its compressed data is cut short or invalid)",
        "hal/kernels.ipynb": "compressed in the zip by a method that cannot be read"}
    assert (root / "ana" / "work" / "kernels.ipynb").read_text() == "{}"


def test_a_refused_entry_does_not_hide_a_notebook_of_the_same_path(tmp_path):
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as handle, pytest.warns(UserWarning, match="Duplicate name"):
        handle.writestr("ana/kernels.ipynb", "{}")
        add_symlink(handle, "ana/kernels.ipynb", "/etc/passwd")
    root = unpack(archive, tmp_path / "out")
    assert (root / "ana" / "kernels.ipynb").read_text() == "{}"
    assert refusal(root / "ana" / "kernels.ipynb") is None


def test_zip_bomb_of_many_notebooks_is_refused_before_unzipping(tmp_path, monkeypatch):
    monkeypatch.setattr(intake, "MAX_UNZIPPED_BYTES", 3 << 20)
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        for student in ("ana", "ben", "cai", "dan"):
            handle.writestr(f"{student}/kernels.ipynb", bytes(1 << 20))
    with pytest.raises(SubmissionsError, match="its notebooks unzip to 4 MB, more than the 3 MB "
                                               "allowed: a zip bomb"):
        unpack(archive, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.ipynb"))


def test_a_huge_notebook_is_found_by_its_name_without_being_read(tmp_path):
    huge = tmp_path / "ana" / "kernels.ipynb"
    hand_in(huge, "kernels")
    os.truncate(huge, 2 << 30)  # sparse
    hand_in(tmp_path / "ben" / "kernels.ipynb", "kernels")
    tracemalloc.start()
    try:
        rows = found(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows[("ana", "kernels")] == ("kernels.ipynb", 1)
    assert peak < 16 << 20
