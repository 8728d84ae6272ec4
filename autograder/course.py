"""The nbgrader course: render sources, release student notebooks, validate.

A course directory is nbgrader's standard layout (``source/``, ``release/``,
``submitted/``, ``autograded/``, ``feedback/``, the gradebook); ``autograder/``
itself is one, and the tests and the drift check use throwaway copies.
"""
import functools
import importlib.metadata
import inspect
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import nbgrader.api
from alembic.script import ScriptDirectory
from nbconvert.filters import strip_ansi
from nbgrader.apps import NbGraderAPI
from nbgrader.validator import Validator
from traitlets.config.loader import PyFileConfigLoader

from . import chapters, sandbox
from .chapters import NAMES, ROOT
from .template import answer_objects, render

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
EXERCISES = ROOT / "exercises"
# The book's offline MathJax (sphinx-mathjax-offline). A feedback page two folders down
# from where copy_mathjax put it loads it: nbgrader_config.py's MATHJAX.
MATHJAX = Path(importlib.metadata.distribution("sphinx-mathjax-offline").locate_file(
    "sphinx-mathjax-offline/static/mathjax"))


class CourseError(RuntimeError):
    pass


def use_this_environment() -> None:
    """Put this environment's bin/ first on PATH: kernels start as `python`, and nbgrader's
    commands shell out to `alembic`; both must be this environment's, also when it was not
    activated. A new gradebook asks `alembic heads` for its schema version, a subprocess
    taking seconds: this process reads it from nbgrader's migration scripts instead.
    Whoever runs nbgrader calls it first (``config`` does)."""
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    nbgrader.api.get_alembic_version = alembic_head


@functools.cache
def alembic_head() -> str:
    """The revision `alembic heads` prints for nbgrader's migrations (there is one head)."""
    return ScriptDirectory(str(Path(nbgrader.__file__).parent / "alembic")).get_current_head()


def config(course_dir: Path, db_url: str | None = None):
    """The course's nbgrader_config.py, rooted at ``course_dir``."""
    use_this_environment()
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(HERE)).load_config()
    cfg.CourseDirectory.root = str(Path(course_dir).resolve())
    if db_url:
        cfg.CourseDirectory.db_url = db_url
    return cfg


def api(course_dir: Path, db_url: str | None = None) -> NbGraderAPI:
    return NbGraderAPI(config=config(course_dir, db_url))


def answered(assignment: str, answers: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """The released student notebook with each answer cell holding the reference's
    source, or ``answers[item]`` where given; ``answers=None`` leaves every stub.

    ``answers[item]`` answers the graded object alone: in a cell that also holds
    helpers (``#| solution <module>:<helper>,<item>``) the helpers' reference source
    comes first, as the reference's other items may call them."""
    notebook = nbformat.read(EXERCISES / f"{assignment}.ipynb", as_version=4)
    if answers is None:
        return notebook
    objects = answer_objects(TEMPLATES / f"{assignment}.md")
    for cell in notebook.cells:
        item = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            *helpers, graded = objects[item]
            cell.source = "\n\n".join([*map(inspect.getsource, helpers),
                                        answers[item] if item in answers else inspect.getsource(graded)])
    return notebook


def copy_mathjax(folder: Path) -> None:
    """Put MathJax in ``folder``: for the feedback pages in its grandchildren's folders
    (``<folder>/feedback/<student>/<a>.html``, or nbgrader's own
    ``<folder>/<student>/<a>/<a>.html`` when ``folder`` is the course's feedback/)."""
    shutil.copytree(MATHJAX, Path(folder) / "mathjax", dirs_exist_ok=True)


def notebook_path(course_dir: Path, stage: str, assignment: str, student: str | None = None):
    parts = [stage] + ([student] if student else []) + [assignment, f"{assignment}.ipynb"]
    return Path(course_dir).joinpath(*parts)


def write_source(course_dir: Path, assignment: str) -> Path:
    """Render the template into ``source/<assignment>/<assignment>.ipynb``."""
    path = notebook_path(course_dir, "source", assignment)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(render(TEMPLATES / f"{assignment}.md"), path)
    return path


def refresh_sources(course_dir: Path) -> list[Path]:
    """Render the templates whose ``source/`` notebook in ``course_dir`` is missing or
    older than anything a source is made from (templates, solutions, autograder code)."""
    inputs = [p for folder in (TEMPLATES, ROOT / "solutions", HERE, HERE / "oracles")
              for p in folder.iterdir() if p.suffix in (".md", ".py")]
    newest = max(p.stat().st_mtime for p in inputs)
    return [write_source(course_dir, a) for a in NAMES
            if not notebook_path(course_dir, "source", a).is_file()
            or notebook_path(course_dir, "source", a).stat().st_mtime < newest]


def release(course_dir: Path, assignment: str, db_url: str | None = None) -> Path:
    """Render the source and run nbgrader's generate_assignment on it."""
    write_source(course_dir, assignment)
    return generate(course_dir, assignment, db_url)


def generate(course_dir: Path, assignment: str, db_url: str | None = None) -> Path:
    """Run nbgrader's generate_assignment on the source already rendered (``write_source``)."""
    result = api(course_dir, db_url).generate_assignment(assignment, force=True)
    if not result["success"]:
        raise CourseError(f"generate_assignment {assignment} failed:\n"
                          f"{result.get('error') or result.get('log')}")
    return notebook_path(course_dir, "release", assignment)


def build(exercises_dir: Path = EXERCISES) -> list[Path]:
    """Regenerate ``autograder/source/`` and the student notebooks in ``exercises_dir``.

    Releasing happens in a throwaway course, so the instructor's gradebook is
    never touched by a build.
    """
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for assignment in NAMES:
            write_source(HERE, assignment)
            target = Path(exercises_dir) / f"{assignment}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(release(Path(tmp), assignment), target)
            written.append(target)
    return written


def validate(notebook: Path) -> dict:
    """nbgrader's Validator result for ``notebook``: ``{}`` when every test passes. The
    course's own notebooks run in kernels forked, unconfined, from one with torch imported."""
    cfg = config(Path(notebook).parent)
    cfg.Execute.kernel_manager_class = sandbox.SandboxedKernelManager
    cfg.SandboxedKernelManager.confined = False
    return Validator(config=cfg).validate(str(notebook))


def drift(exercises_dir: Path = EXERCISES) -> list[str]:
    """How ``exercises_dir`` differs from what ``build`` regenerates; empty when current."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        build(fresh)
        expected = {path.name for path in fresh.glob("*.ipynb")}
        committed = {path.name for path in Path(exercises_dir).glob("*.ipynb")}
        for name in sorted(expected | committed):
            if name not in committed:
                problems.append(f"exercises/{name} is missing: run `python -m autograder build`")
            elif name not in expected:
                problems.append(f"exercises/{name} has no template in autograder/templates/")
            elif (fresh / name).read_bytes() != (Path(exercises_dir) / name).read_bytes():
                problems.append(f"exercises/{name} is stale: run `python -m autograder build`")
    return problems


def check() -> list[str]:
    """Problems with the committed exercises and the reference; empty when all is well.

    - every chapter has all its pieces (``chapters.problems``; nothing else is checked
      while one lacks a piece);
    - every ``exercises/<a>.ipynb`` is exactly what ``build`` regenerates;
    - the instructor notebook (reference solutions) passes every test;
    - the student notebook passes none: each test fails with NotImplementedError.
    """
    problems = chapters.problems()
    if problems:
        return problems
    problems = drift()
    for assignment in NAMES:
        problems += _check_instructor(write_source(HERE, assignment))
        problems += _check_student(EXERCISES / f"{assignment}.ipynb")
    return problems


def _check_instructor(notebook: Path) -> list[str]:
    result = validate(notebook)
    problems = [f"{notebook.name} (instructor): the Validator reports {key}: {value}"
                for key, value in result.items() if key != "failed"]
    return problems + [
        f"{notebook.name} (instructor): a test fails with the reference solution:\n"
        f"{cell['source'][:200]}\n{strip_ansi(cell['raw_error'])[-2000:]}"
        for cell in result.get("failed", [])]


def _check_student(notebook: Path) -> list[str]:
    result = validate(notebook)
    failed = {cell["source"]: strip_ansi(cell["raw_error"]) for cell in result.get("failed", [])}
    sources = {cell.metadata["nbgrader"]["grade_id"]: cell.source.strip()
               for cell in nbformat.read(notebook, as_version=4).cells
               if cell.metadata.get("nbgrader", {}).get("grade")}
    problems = []
    for grade_id, source in sources.items():
        if source not in failed:
            problems.append(f"{notebook.name} (student): test {grade_id} passes on the stub")
        elif "NotImplementedError" not in failed[source]:
            problems.append(f"{notebook.name} (student): test {grade_id} fails with something "
                            f"other than NotImplementedError:\n{failed[source][-1000:]}")
    return problems
