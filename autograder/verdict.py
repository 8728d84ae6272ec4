"""One verdict per item: out-of-process verification as a step of nbgrader's autograde.

``FreshInputCheck`` runs after the (sandboxed) execution. It verifies the
submission being autograded (``autograder/verify.py``) and, where an item's two
checks disagree, writes an error output into the item's grade cell
(``test_<item>``) saying which check failed on what. nbgrader's SaveAutoGrades
then scores the cell from its outputs, the feedback shows them, and ``flags``
reads them back for the CSV: the three agree by construction.
"""
import ast
import os
import re

import nbformat
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import determine_grade
from traitlets import Bool, Float

from . import verify

# The error names only this step writes: the notebook tests passed and the fresh-input
# check failed (the cell then scores 0), or the reverse (the cell scored 0 already).
FRESH_FAILED = "FreshInputCheckFailed"
FRESH_PASSED = "FreshInputCheckPassed"
VERDICTS = (FRESH_FAILED, FRESH_PASSED)


# What an answer has no business touching: the interpreter's hooks and frames, raw memory and
# torch's registration machinery. Naming them proves nothing, but it is how a notebook's guard
# is switched off, so the CSV asks for a look.
HOOK_MODULES = ("ctypes", "gc", "torch._C", "torch.library", "torch.utils._python_dispatch")
HOOK_NAMES = frozenset({"setprofile", "settrace", "_getframe", "currentframe", "f_back",
                        "f_globals", "f_locals", "f_builtins", "tb_frame", "gi_frame"})


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def reaches_in(source: str) -> list[str]:
    """What of ``HOOK_MODULES`` and ``HOOK_NAMES`` the code ``source`` names: imported,
    dotted, or as a string (``getattr(sys, "settrace")``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # the notebook's own run fails it
        return []
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Attribute):
            names.add(_dotted(node))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    found = {module for name in names for module in HOOK_MODULES
             if name == module or name.startswith(module + ".")}
    return sorted(found | {name.rpartition(".")[2] for name in names} & HOOK_NAMES)


# A terminal escape sequence (CSI, OSC or a two-character escape, 7- or 8-bit) and any other
# control character: what a submission's text may not carry into a CSV or a page
ESCAPES = re.compile(r"(\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(\x1b\]|\x9d)[^\x07\x1b\x9c]*(\x07|\x1b\\|\x9c)?"
                     r"|\x1b[@-_]?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")
COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # SGR: what nbconvert turns into HTML


def no_escapes(text: str, keep_colours: bool = False) -> str:
    """``text`` without terminal escapes (but its colours if ``keep_colours``)."""
    if not keep_colours:
        return ESCAPES.sub("", text)
    return "".join(ESCAPES.sub("", part) if i % 2 == 0 else part
                   for i, part in enumerate(re.split(f"({COLOURS.pattern})", text)))


def one_line(text: str) -> str:
    """``text`` fit for a part of a status: one line, no terminal escapes, no '; ', at most 120
    characters."""
    return " ".join(no_escapes(text).split()).replace("; ", ", ")[:120]


def _error(ename: str, evalue: str):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                  traceback=[f"{ename}: {evalue}"])


def _notebook_error(cell) -> str:
    """The first line of the cell's last error (``ename: evalue``)."""
    errors = [f"{o.get('ename', '')}: {o.get('evalue', '')}".strip(": ")
              for o in cell.outputs if o.output_type == "error"]
    return one_line((errors[-1].splitlines() or [""])[0] if errors else "no error shown")


class FreshInputCheck(NbGraderPreprocessor):
    """Verify the submission out of process; write each disagreement into its grade cell."""
    sandboxed = Bool(True, help="run the submission's code under bubblewrap").tag(config=True)
    timeout = Float(60, help="seconds a verification probe may run").tag(config=True)

    def preprocess(self, nb, resources):
        ids = resources["nbgrader"]
        coursedir = CourseDirectory(config=self.config)
        name = f"{ids['notebook']}.ipynb"
        release = os.path.join(coursedir.format_path(coursedir.release_directory, ".",
                                                     ids["assignment"]), name)
        submitted = os.path.join(coursedir.format_path(coursedir.submitted_directory,
                                                       ids["student"], ids["assignment"]), name)
        verdicts = verify.verify(ids["assignment"], release, submitted, sandboxed=self.sandboxed,
                                 timeout=self.timeout)
        cells = {}
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                if output.output_type == "error" and output.get("ename") in VERDICTS:
                    output.ename += " (raised by the submission)"  # only this step names a verdict
            cells[cell.metadata.get("nbgrader", {}).get("grade_id")] = cell
        for item, verdict in verdicts.items():
            cell = cells.get(f"test_{item}")
            if cell is None:
                if not verdict:  # after the answer, where the test cell was
                    answer = nb.cells.index(cells[item]) + 1 if item in cells else len(nb.cells)
                    nb.cells.insert(answer, self._deleted_test(release, item))
                continue
            score, points = determine_grade(cell, self.log)
            if verdict and score:  # first, so no earlier output can earn the points back
                tests = "passed" if score >= points else "partly passed"
                cell.outputs.insert(0, _error(FRESH_FAILED, f"notebook tests {tests}, fresh-input "
                                                            f"check failed ({one_line(verdict)})"))
            elif not verdict and score < points:
                tests = "partly passed" if score else f"failed ({_notebook_error(cell)})"
                cell.outputs.append(_error(FRESH_PASSED,
                                           f"notebook tests {tests}, fresh-input check passed"))
        return nb, resources

    @staticmethod
    def _deleted_test(release: str, item: str):
        """The grade cell of ``item`` that the submission deleted: its tests did not run."""
        cell = next(c for c in nbformat.read(release, as_version=4).cells
                    if c.metadata.get("nbgrader", {}).get("grade_id") == f"test_{item}")
        return nbformat.v4.new_code_cell(
            "# The submission deleted this test cell.", metadata=cell.metadata,
            outputs=[_error(FRESH_PASSED, "notebook tests failed (the test cell was deleted), "
                                          "fresh-input check passed")])


def flags(notebook) -> list[str]:
    """Where the autograded ``notebook``'s two checks disagree: '<item> <which failed on what>'."""
    return [f"{cell.metadata['nbgrader']['grade_id'].removeprefix('test_')} {output.evalue}"
            for cell in notebook.cells if cell.metadata.get("nbgrader", {}).get("grade")
            for output in cell.get("outputs", [])
            if output.output_type == "error" and output.ename in VERDICTS]
