"""Submissions that attack the grader, graded as one class, each with its exact outcome.

Every attack is a normalisation notebook whose answer cells are the
reference (``{}``), the stub (``STUB``) or hostile code. The class also holds an
honest student, whose full marks show that no attack reached another
submission. The grader runs sandboxed with a short cell timeout. A second, small
class is handed in as a zip whose other entries attack the unzipping.
"""
import copy
import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import zipfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbgrader.utils import compute_checksum

from tests.helpers import ROOT, chapter_of, flagged, points_per_item, reference, released, submission, total
from tests.test_intake import add_deflated, add_symlink, patch_entry, rename_entries, zeros_deflated

pytestmark = pytest.mark.xdist_group("adversarial")

STUB = None
TIMEOUT = 6
STOLEN = "window.dlbbStolen"  # what a script planted in feedback would set
# terminal escapes: clear the screen, colour, retitle the window, write the clipboard (OSC 52),
# a hyperlink (OSC 8), an 8-bit CSI
ANSI = ("\x1b[2J\x1b[31mcrimson\x1b[0m \x1b]0;owned\x07 \x1b]52;c;cHduZWQ=\x07 "
        "\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\ \x9b31mcsi")
CONTROL = set(map(chr, range(32))) - {"\n", "\t"} | {"\x7f"} | set(map(chr, range(0x80, 0xa0)))
# the attacks are written against the normalisation items, wherever the course grades them
A = chapter_of("batch_norm").name
ITEMS = list(points_per_item(A))


def answers(**cells):
    """Answer cells: the reference for every item not named, ``STUB`` for the stub."""
    stubs = {c.metadata["nbgrader"]["grade_id"]: c.source
             for c in nbformat.read(released(A), as_version=4).cells
             if c.metadata.get("nbgrader", {}).get("solution")}
    return {item: stubs[item] if cells.get(item, "") is STUB
            else cells.get(item) or reference(A, item) for item in ITEMS}


def before(item, code):
    return textwrap.dedent(code) + "\n" + reference(A, item)


def after(item, code):
    return reference(A, item) + "\n" + textwrap.dedent(code)


def body(item, code):
    """The reference with ``code`` as the first lines of the function body."""
    source = reference(A, item)
    marker = "    ### BEGIN SOLUTION\n"
    assert marker in source
    return source.replace(marker, textwrap.indent(textwrap.dedent(code), "    ") + marker, 1)


def notebook_with(cells, edit=None):
    nb = submission(A, cells)
    if edit:
        edit(nb.cells)
    return nbformat.writes(nb)


def _index(cells, grade_id):
    return next(i for i, c in enumerate(cells)
                if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _delete_test(cells):
    del cells[_index(cells, "test_layer_norm")]


def _blank_test(cells):
    cells[_index(cells, "test_batch_norm")].source = "pass"


def _move_test_first(cells):
    cells.insert(2, cells.pop(_index(cells, "test_instance_norm")))


def _duplicate_test(cells):
    """A second test_layer_norm, after the real one, that passes anything."""
    fake = copy.deepcopy(cells[_index(cells, "test_layer_norm")])
    fake.id, fake.source = "fake-test", "pass"
    cells.insert(_index(cells, "test_layer_norm") + 1, fake)


def _duplicate_answer(cells):
    """A second layer_norm answer cell, right after the first, holding the stub."""
    stub = copy.deepcopy(cells[_index(cells, "layer_norm")])
    stub.id, stub.source = "second-answer", answers(layer_norm=STUB)["layer_norm"]
    cells.insert(_index(cells, "layer_norm") + 1, stub)


def _rename_test(cells):
    test = cells[_index(cells, "test_layer_norm")]
    test.metadata.nbgrader.grade_id, test.source = "test_layer_norm_v2", "pass"


def _rename_answer(cells):
    cells[_index(cells, "layer_norm")].metadata.nbgrader.grade_id = "my_layer_norm"


def _raise_points(cells):
    cells[_index(cells, "test_batch_norm")].metadata.nbgrader.points = 1000


def _forge_checksum(cells):
    """test_layer_norm emptied, with the checksum of its new source."""
    test = cells[_index(cells, "test_layer_norm")]
    test.source = "pass"
    test.metadata.nbgrader.checksum = compute_checksum(test)


def _lock_answer(cells):
    answer = cells[_index(cells, "batch_norm")]
    answer.metadata.update(editable=False, deletable=False)
    answer.metadata.nbgrader.locked = True


def _answer_as_test(cells):
    """The layer_norm answer cell claims to be a test cell worth 10 points."""
    cells[_index(cells, "layer_norm")].metadata.nbgrader.update(grade=True, solution=False, points=10)


def _unlock_guard(cells):
    """The provided cell that installs the notebook's guard edited to switch it off, and
    marked as neither locked nor read-only."""
    setup = cells[_index(cells, "setup")]
    setup.source += "\n\ndef run_graded(fn, *args, forbidden=frozenset(), **kwargs):\n" \
                    "    return fn(*args, **kwargs)\n"
    setup.metadata.update(editable=True, deletable=True)
    setup.metadata.nbgrader.locked = False


def _add_script_markdown(cells):
    cells.insert(1, nbformat.v4.new_markdown_cell(f"<script>{STOLEN} = 'markdown'</script>"))


class Runnable(HTMLParser):
    """What a browser would run of a page: scripts, event handlers, javascript: links."""

    def __init__(self, page):
        super().__init__()
        self.code, self._in_script = [], False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.code += [value for name, value in attrs if value and (
            name.startswith("on") or value.strip().lower().startswith("javascript:"))]
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.code.append(data)


class Server:
    """A TCP server on the grader's loopback that counts connections."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port, self.connections = self.socket.getsockname()[1], 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            connection, _ = self.socket.accept()
            self.connections += 1
            connection.close()


def attacks(course, server, victim):
    """student -> (notebook text, lost items or "autograde failed", flagged items)."""
    gradebook, solutions = course / "gradebook.db", ROOT / "solutions" / f"{A}.py"
    source = course / "source" / A / f"{A}.ipynb"
    everything = set(ITEMS)
    cases = {
        "honest": (notebook_with(answers()), set(), set()),
        # the notebook's checks hold aliases taken before any answer ran; verification
        # does not use the kernel at all
        "patches_comparisons": (notebook_with(answers(batch_norm=after("batch_norm", """
            import numpy, torch
            torch.allclose = lambda *args, **kwargs: True
            torch.testing.assert_close = lambda *args, **kwargs: None
            numpy.testing.assert_allclose = lambda *args, **kwargs: None
            numpy.allclose = lambda *args, **kwargs: True
            def batch_norm(input, *args, **kwargs):
                return input
            """))), {"batch_norm"}, set()),
        # empties every later cell, tests included: the notebook passes them all, the
        # worker (plain exec, no IPython) finds the stubs
        "input_transformer": (notebook_with(answers(
            batch_norm=after("batch_norm",
                             "get_ipython().input_transformers_post.append(lambda lines: [])"),
            layer_norm=STUB, instance_norm=STUB, group_norm=STUB, BatchNorm2d=STUB,
            batch_norm_backward=STUB)),
            everything - {"batch_norm"}, everything - {"batch_norm"}),
        "imports_solutions": (notebook_with(answers(
            batch_norm=f"from solutions.{A} import batch_norm\n")),
            {"batch_norm"}, set()),
        # each answer works only if the file it reads is visible
        "reads_course_files": (notebook_with(answers(
            batch_norm=f"exec(open({str(solutions)!r}).read())\n",
            layer_norm=before("layer_norm", f"open({str(ROOT / 'autograder' / 'templates' / f'{A}.md')!r}).read()"),
            instance_norm=before("instance_norm", f"open({str(source)!r}).read()"),
            group_norm=before("group_norm", f"open({str(gradebook)!r}, 'rb').read()"))),
            {"batch_norm", "layer_norm", "instance_norm", "group_norm"}, set()),
        "rewrites_gradebook": (notebook_with(answers(batch_norm=before("batch_norm", f"""
            import sqlite3
            with sqlite3.connect({str(gradebook)!r}) as db:
                db.execute("update grade set manual_score = 0")
            """))), {"batch_norm"}, set()),
        "writes_outside": (notebook_with(answers(batch_norm=before("batch_norm", f"""
            open({str(ROOT / 'solutions' / 'HACKED')!r}, "w").write("x")
            """))), {"batch_norm"}, set()),
        # the grader writes the graded notebook and reads the worker's outputs as root:
        # neither may follow a link the submission planted
        "plants_symlinks": (notebook_with(answers(batch_norm=after("batch_norm", f"""
            import os
            for name in os.listdir("."):
                os.remove(name)
                os.symlink({str(victim)!r}, name)
            for k in range(50):
                for i in range(8):
                    os.symlink({str(victim)!r}, f"out-{{k}}-{{i}}.npy")
            """))), everything, everything),
        "opens_network": (notebook_with(answers(layer_norm=before("layer_norm", f"""
            import socket
            socket.create_connection(("127.0.0.1", {server.port}), timeout=5).close()
            """))), {"layer_norm"}, set()),
        # refused by the notebook's guard and, at torch's dispatcher, by the verification's
        "calls_builtin": (notebook_with(answers(layer_norm=body("layer_norm", """
            return torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)
            """))), {"layer_norm"}, set()),
        # passes the notebook, whose guard it switched off, not the verification, whose guard it
        # cannot reach; flagged for that and for reading
        "switches_off_the_guard": (notebook_with(answers(layer_norm=body("layer_norm", """
            import sys
            sys.setprofile(None)
            return torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)
            """))), {"layer_norm"}, {"layer_norm"}),
        # the stubbed cell stubs _Normalize too, which the reference's other norms call
        "edits_test": (notebook_with(answers(batch_norm=STUB), _blank_test),
                       {"batch_norm", "layer_norm", "instance_norm", "group_norm"}, set()),
        "deletes_test": (notebook_with(answers(layer_norm=STUB), _delete_test), {"layer_norm"}, set()),
        # a right answer whose test is gone: the item's grade cell comes back, failing and flagged
        "deletes_test_of_a_right_answer": (notebook_with(answers(), _delete_test),
                                           {"layer_norm"}, {"layer_norm"}),
        # an error named like the grader's disagreement output must not read as one
        "forges_a_flag": (notebook_with(answers(layer_norm=body("layer_norm", """
            class FreshInputCheckPassed(Exception):
                pass
            raise FreshInputCheckPassed("notebook tests failed (x), fresh-input check passed")
            """))), {"layer_norm"}, set()),
        "reorders_tests": (notebook_with(answers(instance_norm=STUB), _move_test_first),
                           {"instance_norm"}, set()),
        "infinite_loop": (notebook_with(answers(batch_norm=body("batch_norm", "while True: pass\n"))),
                          {"batch_norm"}, set()),
        "swallows_interrupt": (notebook_with(answers(layer_norm=body("layer_norm", """
            import time
            while True:
                try:
                    time.sleep(0.1)
                except KeyboardInterrupt:
                    pass
            """))), "autograde failed", set()),
        "exits": (notebook_with(answers(instance_norm=body("instance_norm", "import os; os._exit(0)\n"))),
                  "autograde failed", set()),
        "memory_bomb": (notebook_with(answers(group_norm=body("group_norm", """
            hoard = []
            while True:
                hoard.append(bytearray(1 << 28))
            """))), {"group_norm"}, set()),
        "fork_bomb": (notebook_with(answers(batch_norm_backward=body("batch_norm_backward", """
            import os
            for _ in range(100000):
                if os.fork() == 0:
                    import time; time.sleep(60); os._exit(0)
            """))), {"batch_norm_backward"}, set()),
        "floods_output": (notebook_with(answers(layer_norm=after("layer_norm", """
            line = "x" * 1023
            for _ in range(1 << 20):
                print(line)
            """))), set(), set()),
        # the instructor opens every feedback page: nothing a submission displays may run there
        "scripts_feedback": (notebook_with(answers(layer_norm=after("layer_norm", f"""
            from IPython.display import HTML, Javascript, display
            display(HTML("<script>{STOLEN} = 'html'</script><img src=x onerror=\\"{STOLEN} = 'img'\\">"))
            display(Javascript("{STOLEN} = 'javascript'"))
            """)), _add_script_markdown), set(), set()),
        "warns_but_correct": (notebook_with(answers(layer_norm=body("layer_norm", """
            import sys, warnings
            warnings.warn("a student warning")
            warnings.warn("deprecated", DeprecationWarning)
            print("debug output", file=sys.stderr)
            """))), set(), set()),
        # fills its folder, /tmp and /dev/shm until refused (at most 1 GB each), frees them,
        # then answers: the notebook and the verification both run it
        "fills_disk": (notebook_with(answers(group_norm=before("group_norm", """
            import os
            def fill(folder):
                written, files = 0, []
                try:
                    while True:
                        files.append(os.path.join(folder, f"fill-{len(files)}"))
                        with open(files[-1], "wb") as handle:
                            for _ in range(32):
                                handle.write(bytes(1 << 20))
                                written += 1 << 20
                                if written > 1 << 30:
                                    raise SystemError(f"{folder}: 1 GB written, no limit")
                except OSError:
                    pass
                finally:
                    for name in files:
                        if os.path.exists(name):
                            os.remove(name)
            for folder in (".", "/tmp", "/dev/shm"):
                fill(folder)
            """))), set(), set()),
        # a thread that outlives its cell: it rebinds the answer after the cell returned
        # and prints into the cells that run later
        "leaves_a_thread": (notebook_with(answers(layer_norm=after("layer_norm", """
            import threading, time
            def haunt():
                while True:
                    globals()["layer_norm"] = lambda input, *args, **kwargs: input
                    print("layer_norm's thread is still running")
                    time.sleep(0.2)
            threading.Thread(target=haunt, daemon=True).start()
            """))), {"layer_norm"}, set()),
        # terminal escapes in its outputs and, through its error, in its flag
        "prints_escapes": (notebook_with(answers(layer_norm=body("layer_norm", f"""
            import sys
            print({ANSI!r})
            print({ANSI!r}, file=sys.stderr)
            try:
                get_ipython  # only the notebook's kernel has it
            except NameError:
                pass
            else:
                raise ValueError({ANSI!r})
            """))), {"layer_norm"}, {"layer_norm"}),
        # nbgrader keeps the last of two cells with one grade id and restores a locked
        # cell's source from the release: the fake test runs the real test
        "duplicates_test_id": (notebook_with(answers(layer_norm=STUB), _duplicate_test),
                               {"layer_norm"}, set()),
        # the last answer cell is the answer, in the notebook as in the verification
        "duplicates_answer_id": (notebook_with(answers(), _duplicate_answer), {"layer_norm"}, set()),
        "renames_test_id": (notebook_with(answers(layer_norm=STUB), _rename_test),
                            {"layer_norm"}, set()),
        "renames_answer_id": (notebook_with(answers(), _rename_answer), {"layer_norm"}, {"layer_norm"}),
        "raises_points": (notebook_with(answers(), _raise_points), set(), set()),
        "forges_checksum": (notebook_with(answers(layer_norm=STUB), _forge_checksum),
                            {"layer_norm"}, set()),
        "locks_an_answer": (notebook_with(answers(), _lock_answer), set(), set()),
        "answer_claims_test": (notebook_with(answers(), _answer_as_test), set(), set()),
    }
    # nbgrader restores the guard's cell from the release: graded as if it were untouched
    cases["unlocks_the_guard"] = (notebook_with(answers(layer_norm=body("layer_norm", """
        return torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)
        """)), _unlock_guard), *cases["calls_builtin"][1:])
    return cases


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("adversarial")
    course, submissions, server = root / "course", root / "submissions", Server()
    victim = root / "victim.txt"
    victim.write_text("untouched")
    expected = attacks(course, server, victim)
    for student, (text, _, _) in expected.items():
        path = submissions / student / A / f"{A}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(text)
    for student, name, text in [
            ("corrupt", f"{A}.ipynb", released(A).read_text()[:3000]),
            ("not_a_notebook", f"{A}.ipynb", json.dumps({"cells": "none", "nbformat": 4})),
            ("empty_file", f"{A}.ipynb", ""),
            # found by what it is (its cells' grade ids), not by its name
            ("wrong_name", "homework.ipynb", released(A).read_text()),
            ("unrelated_notebook", "homework.ipynb", json.dumps(nbformat.v4.new_notebook()))]:
        (submissions / student).mkdir()
        (submissions / student / name).write_text(text)
    (submissions / "empty_folder").mkdir()
    huge = submissions / "huge_notebook" / A / f"{A}.ipynb"
    huge.parent.mkdir(parents=True)
    huge.write_text(released(A).read_text())
    os.truncate(huge, 2 << 30)  # sparse: costs no disk
    out = root / "out" / "grades.csv"
    result = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(submissions), "--out", str(out),
         "--course-dir", str(course), "--timeout", str(TIMEOUT)],
        capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    return rows, expected, server, victim, out.parent


# nbgrader 0.9 alone fails the whole notebook (SchemaTooOldError, ValidationError, MissingEntry)
# on a duplicated or unknown grade id or an answer cell marked as a test: the grader gives each
# cell the release's nbgrader metadata first (grade._restore_metadata)
STUDENTS = ["honest", "patches_comparisons", "input_transformer", "imports_solutions",
            "reads_course_files", "rewrites_gradebook", "writes_outside", "plants_symlinks",
            "opens_network", "calls_builtin", "switches_off_the_guard", "edits_test",
            "deletes_test", "deletes_test_of_a_right_answer", "forges_a_flag", "reorders_tests",
            "infinite_loop", "swallows_interrupt", "exits", "memory_bomb", "fork_bomb",
            "floods_output", "scripts_feedback", "warns_but_correct", "fills_disk",
            "leaves_a_thread", "prints_escapes", "duplicates_test_id", "duplicates_answer_id",
            "renames_test_id", "renames_answer_id", "raises_points", "forges_checksum",
            "locks_an_answer", "answer_claims_test", "unlocks_the_guard"]


@pytest.mark.parametrize("student", STUDENTS)
def test_attack_scores_exactly(graded, student):
    rows, expected, _, _, _ = graded
    _, lost, flags = expected[student]
    row = rows[student]
    assert float(row["max_score"]) == total(A)
    if lost == "autograde failed":
        assert row["status"].startswith("autograde failed:"), row["status"]
        assert float(row["score"]) == 0
        return
    points = points_per_item(A)
    assert float(row["score"]) == total(A) - sum(points[i] for i in lost), row["status"]
    assert row["status"].startswith("graded") and flagged(row["status"]) == flags, row["status"]


def test_stopped_kernels_are_named(graded):
    rows, _, _, _, _ = graded
    assert "ignored the interrupt" in rows["swallows_interrupt"]["status"]


@pytest.mark.parametrize("student, status", [
    ("corrupt", "corrupt notebook: not valid JSON (a truncated upload, or not a notebook file)"),
    ("not_a_notebook", "corrupt notebook: "), ("empty_file", "corrupt notebook: the file is empty"),
    ("wrong_name", "graded; untouched: no answer cell was changed"),
    ("unrelated_notebook", f"missing notebook: no notebook for {A} in unrelated_notebook/; "
                           "notebooks that match no assignment: homework.ipynb"),
    ("empty_folder", f"missing notebook: no notebook for {A} in empty_folder/"),
    ("huge_notebook", "corrupt notebook: larger than 100 MB (2048 MB)")])
def test_unusable_submissions_get_rows(graded, student, status):
    rows, _, _, _, _ = graded
    assert rows[student]["status"].startswith(status), rows[student]["status"]
    assert not set('{}[]"\n') & set(rows[student]["status"]), "the status quotes the file"
    assert float(rows[student]["score"]) == 0


def test_nothing_escaped(graded):
    _, _, server, victim, out_dir = graded
    assert server.connections == 0
    assert victim.read_text() == "untouched"
    assert not (ROOT / "solutions" / "HACKED").exists()
    feedback = out_dir / "feedback" / "floods_output" / f"{A}.html"
    assert feedback.stat().st_size < 8 << 20, "the gigabyte of output reached the feedback"


def test_feedback_runs_no_submitted_script(graded):
    _, _, _, _, out_dir = graded
    page = (out_dir / "feedback" / "scripts_feedback" / f"{A}.html").read_text()
    assert "dlbbStolen" in page, "the submission's outputs are missing from its feedback"
    assert not [code for code in Runnable(page).code if "dlbbStolen" in code]


def test_statuses_hold_no_terminal_escapes(graded):
    rows, _, _, _, _ = graded
    assert "crimson" in rows["prints_escapes"]["status"], "the flag lost the error's text"
    assert not {student: row["status"] for student, row in rows.items()
                if CONTROL & set(row["status"])}


def test_feedback_holds_no_terminal_escapes(graded):
    """Colour escapes become HTML; anything else that a terminal would act on (a title, the
    clipboard, links) must not reach a page that an instructor may also grep or cat."""
    _, _, _, _, out_dir = graded
    page = (out_dir / "feedback" / "prints_escapes" / f"{A}.html").read_text()
    assert "ansi-red-fg" in page and "crimson" in page, "the outputs are missing from the feedback"
    assert not CONTROL & set(page)


# -- a class handed in as a zip ------------------------------------------------------

@pytest.fixture(scope="module")
def zipped(tmp_path_factory):
    """A zip of three honest students and of entries that attack the unzipping."""
    root = tmp_path_factory.mktemp("adversarial_zip")
    honest, notebook = notebook_with(answers()), f"{A}.ipynb"
    outside, victim = root / "outside", root / "victim" / notebook
    outside.mkdir()
    victim.parent.mkdir()
    victim.write_text(honest)
    absolute = Path("/") / f"{root.name}-absolute" / notebook
    archive = root / "class.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        add_symlink(handle, "honest/work", outside)  # then written "through" the link
        handle.writestr(f"honest/work/{notebook}", honest)
        handle.writestr(f"XXXXX/{notebook}", honest)
        handle.writestr(f"YYYYY/{notebook}", honest)
        add_symlink(handle, f"linked/{notebook}", victim)
        handle.writestr("escapes/" + "../" * 30 + str(root / "escaped" / notebook).lstrip("/"), honest)
        handle.writestr(str(absolute), honest)
        add_deflated(handle, f"zip_bomb/{notebook}", zeros_deflated(3 << 10))
        add_deflated(handle, f"lying_bomb/{notebook}", zeros_deflated(64))
        handle.writestr(f"huge_notebook/{notebook}", honest)
    data = patch_entry(archive.read_bytes(), f"zip_bomb/{notebook}", method=8, size=3 << 30)
    data = patch_entry(data, f"lying_bomb/{notebook}", method=8, size=1024,
                       crc=zlib.crc32(bytes(64 << 20)))
    data = patch_entry(data, f"huge_notebook/{notebook}", size=2 << 30)
    archive.write_bytes(rename_entries(data, {b"XXXXX": "élève".encode("latin-1"),
                                              b"YYYYY": "José".encode()}))
    out = root / "out" / "grades.csv"
    result = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(archive), "--out", str(out),
         "--course-dir", str(root / "course"), "--timeout", str(TIMEOUT)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    return rows, root, absolute


# latin-1 bytes, not UTF-8: read as the zip format's code page 437
@pytest.mark.parametrize("student", ["honest", "José", "élève".encode("latin-1").decode("cp437")])
def test_zipped_honest_students_are_graded(zipped, student):
    rows, _, _ = zipped
    assert (float(rows[student]["score"]), rows[student]["status"]) == (total(A), "graded")


@pytest.mark.parametrize("student, status", [
    ("linked", "corrupt notebook: a symbolic link in the zip (not followed)"),
    ("escapes", "corrupt notebook: a path in the zip that leads out of its folder (..)"),
    ("zip_bomb", "corrupt notebook: larger than 100 MB (the zip says 3072 MB unzipped)"),
    ("lying_bomb", "corrupt notebook: damaged in the zip (a wrong checksum or header)"),
    ("huge_notebook", "corrupt notebook: larger than 100 MB (the zip says 2048 MB unzipped)")])
def test_zip_attacks_get_rows(zipped, student, status):
    rows, _, _ = zipped
    assert (rows[student]["status"], float(rows[student]["score"])) == (status, 0)


def test_zip_wrote_nothing_outside(zipped):
    rows, root, absolute = zipped
    assert rows[absolute.parent.name]["status"] == "corrupt notebook: an absolute path in the zip"
    assert not absolute.parent.exists() and not (root / "escaped").exists()
    assert not any((root / "outside").iterdir())
    assert (root / "victim" / f"{A}.ipynb").read_text() == notebook_with(answers())
    assert len(rows) == 9
