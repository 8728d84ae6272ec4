"""Submissions that attack the grader, graded as one class, each with its exact outcome.

Every attack is a normalisation notebook whose answer cells are the
reference (``{}``), the stub (``STUB``) or hostile code. The class also holds an
honest student, whose full marks show that no attack reached another
submission. The grader runs sandboxed with a short cell timeout.
"""
import csv
import json
import socket
import subprocess
import sys
import textwrap
import threading
from html.parser import HTMLParser

import nbformat
import pytest

from tests.helpers import ROOT, chapter_of, flagged, points_per_item, reference, released, submission, total

pytestmark = pytest.mark.xdist_group("adversarial")

STUB = None
TIMEOUT = 15
STOLEN = "window.dlbbStolen"  # what a script planted in feedback would set
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


def _test_index(cells, item):
    return next(i for i, c in enumerate(cells)
                if c.metadata.get("nbgrader", {}).get("grade_id") == f"test_{item}")


def _delete_test(cells):
    del cells[_test_index(cells, "layer_norm")]


def _blank_test(cells):
    cells[_test_index(cells, "batch_norm")].source = "pass"


def _move_test_first(cells):
    cells.insert(2, cells.pop(_test_index(cells, "instance_norm")))


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
    return {
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
        "calls_builtin": (notebook_with(answers(layer_norm=body("layer_norm", """
            return torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)
            """))), {"layer_norm"}, {"layer_norm"}),
        # the stubbed cell stubs _Normalize too, which the reference's other norms call
        # passes both runs (neither sees the op once the guard is off), and is flagged for reading
        "switches_off_the_guard": (notebook_with(answers(layer_norm=body("layer_norm", """
            import sys
            sys.setprofile(None)
            return torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)
            """))), set(), {"layer_norm"}),
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
    }


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
    out = root / "out" / "grades.csv"
    result = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(submissions), "--out", str(out),
         "--course-dir", str(course), "--timeout", str(TIMEOUT)],
        capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    return rows, expected, server, victim, out.parent


STUDENTS = ["honest", "patches_comparisons", "input_transformer", "imports_solutions",
            "reads_course_files", "rewrites_gradebook", "writes_outside", "plants_symlinks",
            "opens_network",
            "calls_builtin", "switches_off_the_guard", "edits_test", "deletes_test", "deletes_test_of_a_right_answer",
            "forges_a_flag", "reorders_tests", "infinite_loop",
            "swallows_interrupt", "exits", "memory_bomb", "fork_bomb", "floods_output",
            "scripts_feedback", "warns_but_correct"]


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
    ("empty_folder", f"missing notebook: no notebook for {A} in empty_folder/")])
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
