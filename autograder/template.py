"""Render an exercise template into the instructor notebook.

A template (``autograder/templates/<assignment>.md``) is a MyST-markdown
notebook whose code cells may open with one directive line:

    #| setup                      locked cell, run before any student code
    #| solution solutions.norms:batch_norm
                                  graded answer: the reference's source, whose
                                  BEGIN/END SOLUTION body nbgrader clears
    #| solution solutions.norms:_Normalize,batch_norm
                                  one answer cell holding several objects, in
                                  this order: the last is the graded one (its name
                                  is the grade id), those before it helpers that it
                                  and later answers may call. Each named object
                                  needs a BEGIN/END SOLUTION region: the student
                                  sees only the helpers' signatures and docstrings.
                                  (``course.answered`` answers the graded object
                                  alone and keeps the helpers' reference source
                                  before it; ``answer_objects`` lists each cell's.)
    #| tests batch_norm points=3  locked autograded test cell (grade_id test_batch_norm)

and, anywhere in a cell, lines that pull in code from its single source:

    #| include autograder/checks.py          the file, without its docstring
    #| source solutions.norms:_check_input   the named objects' source

Markdown cells are locked too, so a submission cannot drop the instructions.
"""
import ast
import importlib
import re
from pathlib import Path

import jupytext
import nbformat

from .chapters import ROOT
DIRECTIVE = re.compile(r"^#\| (\w+)(?: (.*))?$")


class TemplateError(ValueError):
    pass


def _objects(spec: str) -> dict:
    """Name -> object for each name of ``<module>:<name>,<name>...``, in its order."""
    module_name, _, names = spec.partition(":")
    module = importlib.import_module(module_name)
    return {name: getattr(module, name) for name in names.split(",")}


def _sources(spec: str) -> dict[str, str]:
    """Name -> source of each function or class that ``<module>:<name>,<name>...`` names, in
    its order, read from the module's file: rendering imports no reference (nor torch)."""
    module_name, _, names = spec.partition(":")
    text = (ROOT / Path(*module_name.split("."))).with_suffix(".py").read_text()
    lines = text.splitlines()
    defined = {node.name: node for node in ast.parse(text).body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    sources = {}
    for name in names.split(","):
        if name not in defined:
            raise TemplateError(f"{spec}: {module_name} defines no function or class {name}")
        node = defined[name]
        start, end = min([node.lineno] + [d.lineno for d in node.decorator_list]), node.end_lineno
        while end < len(lines) and (not lines[end].strip() or lines[end][0].isspace()):
            end += 1  # indented comments after the last statement (### END SOLUTION) belong to it
        sources[name] = "\n".join(lines[start - 1:end]).rstrip()
    return sources


def _joined(sources: dict[str, str]) -> str:
    return "\n\n\n".join(sources.values())


def _file_source(relative_path: str) -> str:
    text = (ROOT / relative_path).read_text()
    body = ast.parse(text).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        text = "\n".join(text.splitlines()[body[0].end_lineno:])
    return text.strip()


def _expand(source: str) -> str:
    lines = []
    for line in source.splitlines():
        match = DIRECTIVE.match(line)
        if match and match[1] == "include":
            lines.append(_file_source(match[2]))
        elif match and match[1] == "source":
            lines.append(_joined(_sources(match[2])))
        else:
            lines.append(line)
    return "\n".join(lines).strip()


def _nbgrader(grade_id, *, solution=False, grade=False, locked=False, points=None):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked,
            "schema_version": 3, "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return meta


def _render_code_cell(cell, index):
    first, _, rest = cell.source.partition("\n")
    match = DIRECTIVE.match(first)
    kind = match[1] if match else None
    if kind == "setup":
        cell.source = _expand(rest)
        cell.metadata["nbgrader"] = _nbgrader("setup", locked=True)
        cell.metadata["tags"] = ["hide-input"]  # collapsed on the book's exercise page
    elif kind == "solution":
        if not match[2] or ":" not in match[2]:
            raise TemplateError(f"cell {index}: write '#| solution <module>:<name>' "
                                "(or '<module>:<helper>,...,<name>')")
        sources = _sources(match[2])
        for name, source in sources.items():
            if "### BEGIN SOLUTION" not in source:
                raise TemplateError(f"{match[2]}: {name} has no BEGIN SOLUTION region")
        cell.source = _expand(f"{_joined(sources)}\n{rest}")
        cell.metadata["nbgrader"] = _nbgrader(list(sources)[-1], solution=True)
    elif kind == "tests":
        item, _, points = (match[2] or "").partition(" points=")
        if not item or not points.isdigit():
            raise TemplateError(f"cell {index}: write '#| tests <item> points=<n>'")
        cell.source = _expand(rest)
        cell.metadata["nbgrader"] = _nbgrader(f"test_{item}", grade=True, locked=True,
                                              points=int(points))
    elif kind in (None, "include", "source"):
        cell.source = _expand(cell.source)
    else:
        raise TemplateError(f"cell {index}: unknown directive {first!r}")
    cell.id = cell.metadata.get("nbgrader", {}).get("grade_id", f"cell-{index}")


def answer_objects(template: Path) -> dict[str, list]:
    """Each answer cell's grade id -> the objects its ``#| solution`` line names, the
    graded one last."""
    cells = {}
    for cell in jupytext.read(template, fmt="md:myst").cells:
        match = DIRECTIVE.match(cell.source.partition("\n")[0])
        if cell.cell_type == "code" and match and match[1] == "solution":
            objects = _objects(match[2])
            cells[list(objects)[-1]] = list(objects.values())
    return cells


def render(template: Path) -> nbformat.NotebookNode:
    """Return the instructor notebook (solutions and hidden tests in place)."""
    notebook = jupytext.read(template, fmt="md:myst")
    for index, cell in enumerate(notebook.cells):
        cell.metadata.pop("lines_to_next_cell", None)
        if cell.cell_type == "code":
            _render_code_cell(cell, index)
        else:
            cell.id = f"cell-{index}"
            cell.metadata["nbgrader"] = _nbgrader(f"cell-{index}", locked=True)
    notebook.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    nbformat.validate(notebook)
    return notebook
