"""The exercise pipeline: one source, generated notebooks, the guard, secrecy."""
import ast
import importlib
import inspect
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import sqlalchemy as sa
import torch
import torch.nn.functional as F

from autograder import checks, course
from autograder.template import TemplateError, answer_objects, render
from solutions import norms
from tests.helpers import CHAPTERS, ROOT, solution_lines

A = CHAPTERS[0]  # any chapter, for what does not depend on its content


def test_check_command_passes():
    """exercises/ is current, the reference passes every test, the stubs pass none."""
    result = subprocess.run([sys.executable, "-m", "autograder", "check"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "check: ok" in result.stdout


def test_a_new_gradebook_records_the_schema_version_alembic_prints(tmp_path):
    """course.use_this_environment reads it in process instead of running `alembic heads`."""
    from nbgrader.api import Gradebook
    from nbgrader.dbutil import _temp_alembic_ini
    with _temp_alembic_ini(f"sqlite:///{tmp_path / 'unused.db'}") as ini:
        printed = subprocess.check_output([Path(sys.executable).parent / "alembic", "-c", ini,
                                           "heads"], text=True)
    course.use_this_environment()
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        recorded = gradebook.db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert recorded == printed.split()[0]


def test_drift_is_detected(tmp_path):
    shutil.copytree(course.EXERCISES, tmp_path, dirs_exist_ok=True)
    notebook = nbformat.read(tmp_path / A.exercise.name, as_version=4)
    notebook.cells[0].source += "\nAn edit made by hand."
    nbformat.write(notebook, tmp_path / A.exercise.name)
    (tmp_path / "orphan.ipynb").write_text("{}")
    problems = course.drift(tmp_path)
    assert any(f"{A.exercise.name} is stale" in p for p in problems)
    assert any("orphan.ipynb has no template" in p for p in problems)


def test_build_is_deterministic(tmp_path):
    course.build(tmp_path / "a")
    course.build(tmp_path / "b")
    for chapter in CHAPTERS:
        name = chapter.exercise.name
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("notebook", sorted(course.EXERCISES.glob("*.ipynb")), ids=str)
def test_exercises_hold_no_solution_or_hidden_test(notebook):
    text = notebook.read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
        assert marker not in text
    sources = "\n".join(cell.source for cell in nbformat.read(notebook, as_version=4).cells)
    leaked = [line for line in solution_lines(ROOT / "solutions" / f"{notebook.stem}.py")
              if line in sources]
    assert not leaked, f"reference lines in {notebook.name}: {leaked[:3]}"


def test_solution_lines_are_found():
    """The secrecy test above would see a leak: the instructor notebook has them all."""
    for chapter in CHAPTERS:
        lines = solution_lines(chapter.files["reference module"])
        instructor = "\n".join(c.source for c in render(chapter.template).cells)
        assert len(lines) > 5 and all(line in instructor for line in lines), chapter.name


@pytest.mark.parametrize("chapter", CHAPTERS, ids=str)
def test_student_notebook_items_and_points(chapter):
    """The released notebook grades the template's items, each with its points, and the
    exercise's introduction states the total it grades."""
    cells = nbformat.read(chapter.exercise, as_version=4).cells
    meta = [c.metadata["nbgrader"] for c in cells if "nbgrader" in c.metadata]
    answers = [m["grade_id"] for m in meta if m["solution"]]
    tests = {m["grade_id"]: m["points"] for m in meta if m["grade"]}
    assert answers == list(chapter.items)
    assert tests == {f"test_{item}": points for item, points in chapter.items.items()}
    stated = re.search(r"Points: (\d+)\s+in all", " ".join(c.source for c in cells))
    assert stated and int(stated[1]) == chapter.points, "the introduction states another total"
    # an answer cell holds the graded object and, before it, any helpers it names
    objects = answer_objects(chapter.template)
    stubs = [c.source for c in cells if c.metadata.get("nbgrader", {}).get("solution")]
    for stub, name in zip(stubs, answers):
        assert objects[name][-1] is getattr(importlib.import_module(chapter.reference), name)
        for obj in objects[name]:
            assert obj.__doc__.strip().splitlines()[0] in stub, f"{obj.__name__} lost its docstring"
            assert re.search(rf"^(def|class) {obj.__name__}\b", stub, re.M), f"{obj.__name__} is missing"
        regions = sum(inspect.getsource(obj).count("### BEGIN SOLUTION") for obj in objects[name])
        assert stub.count("raise NotImplementedError()") == regions, f"{name}: a body is not a stub"


def test_template_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_text("```{code-cell}\n#| solutoin solutions.norms:batch_norm\n```\n")
    with pytest.raises(TemplateError, match="unknown directive"):
        render(bad)
    bad.write_text("```{code-cell}\n#| tests batch_norm\nassert True\n```\n")
    with pytest.raises(TemplateError, match="points="):
        render(bad)
    bad.write_text("```{code-cell}\n#| solution solutions.common:check_tensor\n```\n")
    with pytest.raises(TemplateError, match="no BEGIN SOLUTION"):
        render(bad)
    bad.write_text("```{code-cell}\n#| solution batch_norm\n```\n")
    with pytest.raises(TemplateError, match="<module>:<name>"):
        render(bad)


def test_instructor_check_does_not_read_other_validator_answers_as_a_pass(monkeypatch):
    monkeypatch.setattr(course, "validate", lambda notebook: {"changed": [{"source": "x"}]})
    problems = course._check_instructor(Path("norms.ipynb"))
    assert problems and "reports changed" in problems[0]


# -- the guard ---------------------------------------------------------------

def own_group_norm(x, groups):
    g = x.reshape(x.shape[0], groups, -1)
    return ((g - g.mean(-1, keepdim=True)) / (g.var(-1, unbiased=False, keepdim=True)
                                              + 1e-5).sqrt()).view_as(x)


X = torch.randn(2, 4, 3, 3)


def test_guard_lets_an_own_implementation_through():
    out = checks.run_graded(own_group_norm, X, 2, forbidden=checks.NORM_OPS)
    assert torch.allclose(out, F.group_norm(X, 2), atol=1e-6)
    assert sys.getprofile() is None


@pytest.mark.parametrize("cheat, called", [
    (lambda x, g: F.group_norm(x, g), "torch.nn.functional.group_norm"),
    (lambda x, g: torch.group_norm(x, g), "torch.group_norm"),
    (lambda x, g: torch.ops.aten.native_group_norm(x, None, None, 2, 4, 9, g, 1e-5)[0],
     "native_group_norm"),
    (lambda x, g: torch.nn.GroupNorm(g, 4, affine=False)(x), "group_norm"),
    (lambda x, g: F.layer_norm(x, x.shape[1:]), "layer_norm"),
    (lambda x, g: norms.group_norm(x, g), "solutions.norms.group_norm"),
])
def test_guard_catches_calls_to_existing_implementations(cheat, called):
    with pytest.raises(checks.ForbiddenCallError, match=re.escape(called)):
        checks.run_graded(cheat, X, 2, forbidden=checks.NORM_OPS)
    assert sys.getprofile() is None


def test_guard_forbids_only_solutions_by_default():
    checks.run_graded(F.group_norm, X, 2)
    with pytest.raises(checks.ForbiddenCallError, match="solutions.norms.group_norm"):
        checks.run_graded(norms.group_norm, X, 2)


def test_guard_catches_torchvision_ops():
    """torchvision is not installed here; a stand-in module has its names."""
    ops = types.ModuleType("torchvision.ops.roi_align")
    exec("def roi_align(x):\n    return x", ops.__dict__)
    with pytest.raises(checks.ForbiddenCallError, match=r"torchvision\.ops\.roi_align\.roi_align"):
        checks.run_graded(ops.roi_align, X, forbidden=checks.SAMPLING_OPS)
    checks.run_graded(ops.roi_align, X)


def test_guard_catches_an_alias_bound_before_the_call():
    alias = F.group_norm
    with pytest.raises(checks.ForbiddenCallError, match="group_norm"):
        checks.run_graded(lambda: alias(X, 2), forbidden=checks.NORM_OPS)


def test_guard_forbids_autograd_only_when_asked():
    def by_autograd(x):
        x = x.clone().requires_grad_()
        return torch.autograd.grad(own_group_norm(x, 2).sum(), x)[0]
    checks.run_graded(by_autograd, X, forbidden=checks.NORM_OPS)
    with pytest.raises(checks.ForbiddenCallError, match="torch.autograd.grad"):
        checks.run_graded(by_autograd, X, forbidden=checks.NORM_OPS | checks.AUTOGRAD_OPS)


def test_guard_restores_profile_after_an_exception():
    def fails():
        raise NotImplementedError()
    with pytest.raises(NotImplementedError):
        checks.run_graded(fails)
    assert sys.getprofile() is None


def test_guard_keeps_stderr_out_of_the_test_cell(capsys):
    checks.run_graded(lambda: print("debug", file=sys.stderr))
    captured = capsys.readouterr()
    assert captured.err == "" and "debug" in captured.out


def test_check_close_messages():
    a = torch.zeros(2, 3)
    with pytest.raises(AssertionError, match=r"out: shape \(3, 2\), expected \(2, 3\)"):
        checks.check_close(torch.zeros(3, 2), a, "out")
    with pytest.raises(AssertionError, match="dtype torch.float64"):
        checks.check_close(a.double(), a, "out")
    with pytest.raises(AssertionError, match="that is LayerNorm"):
        checks.check_close(a + 1, a, "out", mistakes=[(a + 2, "no"), (a + 1, "that is LayerNorm")])
    with pytest.raises(AssertionError, match="max abs error 5"):
        checks.check_close(a + 5, a, "out", mistakes=[(a + 1, "no")])
    with pytest.raises(AssertionError, match="expected a tensor, got list"):
        checks.check_close([0.0], a, "out")
    checks.check_close(a + 1e-9, a, "out")


# -- Python 3.9 to 3.13, as the notebooks promise --------------------------------

def test_guard_names_calls_without_co_qualname():
    """Code objects before Python 3.11 have no co_qualname: the guard uses co_name."""
    frame = types.SimpleNamespace(f_code=types.SimpleNamespace(co_name="group_norm"),
                                  f_globals={"__name__": "torch.nn.functional"})
    assert checks._qualified_name(frame, "call", None) == "torch.nn.functional.group_norm"


@pytest.mark.parametrize("notebook", sorted(course.EXERCISES.glob("*.ipynb")), ids=str)
def test_notebook_code_parses_as_python_3_9(notebook):
    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "code":
            ast.parse(cell.source, feature_version=(3, 9))


# checks.py under an older interpreter, with a stand-in torch module (no torch wheel there)
OLD_PYTHON_GUARD = """
import sys, types
torch = types.ModuleType("torch")
torch.allclose, torch.Tensor = (lambda *args, **kwargs: True), object
sys.modules["torch"] = torch
checks = types.ModuleType("checks")
exec(open(sys.argv[1]).read(), checks.__dict__)
functional = types.ModuleType("torch.nn.functional")
exec("def group_norm(x):\\n    return x", functional.__dict__)
try:
    checks.run_graded(lambda x: functional.group_norm(x), 1, forbidden=checks.NORM_OPS)
    raise SystemExit("the forbidden call went through")
except checks.ForbiddenCallError as error:
    assert "calls torch.nn.functional.group_norm" in str(error), error
namespace = {"group_norm": None}
with checks.stand_ins(namespace, group_norm=functional.group_norm):
    assert checks.run_graded(lambda x: namespace["group_norm"](x), 2, forbidden=checks.NORM_OPS) == 2
print("ok", sys.version_info[:2])
"""


def _interpreter(minor):
    """A Python 3.<minor> on this machine (pyenv's shims run only the selected version)."""
    found = sorted(Path.home().glob(f".pyenv/versions/3.{minor}.*/bin/python"))
    on_path = shutil.which(f"python3.{minor}")
    return str(found[-1]) if found else on_path if on_path and "shims" not in on_path else None


OLD_PYTHONS = [python for python in map(_interpreter, (9, 10)) if python]


@pytest.mark.parametrize("python", OLD_PYTHONS)
def test_guard_runs_on_older_pythons(python):
    result = subprocess.run([python, "-c", OLD_PYTHON_GUARD, str(ROOT / "autograder" / "checks.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-2000:]


def test_stand_ins_bind_restore_and_keep_the_guard_on_the_answer():
    namespace = {"batch_norm": "the student's"}

    def forward(x):  # an answer that calls another item, as BatchNorm2d calls batch_norm
        return namespace["batch_norm"](x, None, None, training=True)

    with checks.stand_ins(namespace, batch_norm=F.batch_norm):
        out = checks.run_graded(forward, X, forbidden=checks.NORM_OPS)
        with pytest.raises(checks.ForbiddenCallError, match="torch.nn.functional.batch_norm"):
            checks.run_graded(lambda x: F.batch_norm(x, None, None, training=True), X,
                              forbidden=checks.NORM_OPS)
    assert namespace == {"batch_norm": "the student's"}
    assert torch.allclose(out, F.batch_norm(X, None, None, training=True))
    with pytest.raises(checks.ForbiddenCallError):  # outside the block, no exemption
        checks.run_graded(lambda x: checks._stand_in(F.batch_norm)(x, None, None, training=True), X,
                          forbidden=checks.NORM_OPS)


def test_an_empty_stand_ins_block_keeps_the_enclosing_ones():
    namespace = {"batch_norm": "the student's"}
    with checks.stand_ins(namespace, batch_norm=F.batch_norm):
        with checks.stand_ins(namespace):
            pass
        checks.run_graded(lambda x: namespace["batch_norm"](x, None, None, training=True), X,
                          forbidden=checks.NORM_OPS)
