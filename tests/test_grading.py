"""Grade a class of fixture submissions and check every row exactly.

The submissions are the released student notebook with answer cells filled
in: the reference solution, nothing, or a typical mistake. The expected score
of each is the assignment's total minus the points of the items the mistake
breaks, read from the notebook's own grade cells (not copied from a run).
"""
import csv
import inspect
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import course
from solutions import norms

pytestmark = pytest.mark.xdist_group("grading")
RELEASE = course.EXERCISES / "norms.ipynb"


def reference(name):
    return inspect.getsource(getattr(norms, name))


def edited(name, old, new):
    source = reference(name)
    assert old in source, f"fixture out of date: {old!r} not in reference {name}"
    return source.replace(old, new)


WRONG_AXES_BATCH_NORM = textwrap.dedent('''
    def batch_norm(input, running_mean, running_var, weight=None, bias=None,
                   training=False, momentum=0.1, eps=1e-5):
        shape = (1, -1) + (1,) * (input.dim() - 2)
        if training:
            dims = tuple(range(1, input.dim()))          # (C, H, W): LayerNorm's set
            mean = input.mean(dims, keepdim=True)
            var = input.var(dims, unbiased=False, keepdim=True)
        else:
            mean, var = running_mean.view(shape), running_var.view(shape)
        out = (input - mean) / torch.sqrt(var + eps)
        if weight is not None:
            out = out * weight.view(shape)
        if bias is not None:
            out = out + bias.view(shape)
        return out
''')

# answer cells per fixture, and the items whose points the fixture must lose
FIXTURES = {
    "reference": ({}, set()),
    "untouched": (None, {"batch_norm", "layer_norm", "instance_norm", "group_norm",
                         "BatchNorm2d", "batch_norm_backward"}),
    # BatchNorm2d calls the student's batch_norm, so a wrong batch_norm costs both
    "wrong_axes": ({"batch_norm": WRONG_AXES_BATCH_NORM}, {"batch_norm", "BatchNorm2d"}),
    "biased_running_var": (
        {"batch_norm": edited("batch_norm", "var * n / (n - 1)", "var")},
        {"batch_norm", "BatchNorm2d"}),
    "eps_outside_sqrt": (
        {"group_norm": edited("group_norm", "torch.rsqrt(var + eps)", "1 / (var.sqrt() + eps)")},
        {"group_norm"}),
    "calls_builtin": (
        {"group_norm": edited("group_norm", "    ### BEGIN SOLUTION\n",
                              "    return F.group_norm(input, num_groups, weight, bias, eps)\n")},
        {"group_norm"}),
    "correct_but_warns": (
        {"layer_norm": edited("layer_norm", "    ### BEGIN SOLUTION\n",
                              "    import sys, warnings\n"
                              "    warnings.warn('a student warning')\n"
                              "    print('debug output', file=sys.stderr)\n")},
        set()),
}


def submission(answers):
    """The student notebook with answer cells replaced: {} means all reference."""
    notebook = nbformat.read(RELEASE, as_version=4)
    if answers is None:
        return notebook
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = answers.get(grade_id, reference(grade_id))
    return notebook


def points_per_item():
    return {cell.metadata["nbgrader"]["grade_id"].removeprefix("test_"):
            cell.metadata["nbgrader"]["points"]
            for cell in nbformat.read(RELEASE, as_version=4).cells
            if cell.metadata.get("nbgrader", {}).get("grade")}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    submissions = root / "submissions"
    for student, (answers, _) in FIXTURES.items():
        path = submissions / student / "norms" / "norms.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(submission(answers), path)
    corrupt = submissions / "corrupt" / "norms" / "norms.ipynb"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text(RELEASE.read_text()[:5000])  # truncated upload
    (submissions / "no_notebook" / "norms").mkdir(parents=True)
    out = root / "out" / "grades.csv"
    result = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(submissions), "--out", str(out),
         "--course-dir", str(root / "course")],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    return rows, out.parent


@pytest.mark.parametrize("student", FIXTURES)
def test_fixture_scores_exactly(graded, student):
    rows, _ = graded
    points = points_per_item()
    lost = FIXTURES[student][1]
    row = rows[student]
    assert row["status"] == "graded"
    assert float(row["max_score"]) == sum(points.values())
    assert float(row["score"]) == sum(points.values()) - sum(points[item] for item in lost)


def test_every_submission_has_a_row(graded):
    rows, _ = graded
    assert set(rows) == set(FIXTURES) | {"corrupt", "no_notebook"}
    assert all(row["assignment"] == "norms" for row in rows.values())


def test_corrupt_and_missing_notebooks_get_error_rows(graded):
    rows, _ = graded
    assert rows["corrupt"]["status"].startswith("corrupt notebook:")
    assert rows["no_notebook"]["status"].startswith("missing notebook:")
    for student in ("corrupt", "no_notebook"):
        assert float(rows[student]["score"]) == 0
        assert float(rows[student]["max_score"]) == sum(points_per_item().values())


def test_feedback_per_student_without_hidden_tests(graded):
    rows, out_dir = graded
    for student, row in rows.items():
        html = out_dir / "feedback" / student / "norms.html"
        assert html.is_file() == (row["status"] == "graded"), student
    text = (out_dir / "feedback" / "calls_builtin" / "norms.html").read_text()
    assert "HIDDEN TESTS" not in text and "for shape in [(8, 5)" not in text


@pytest.mark.parametrize("student, diagnosis", [
    ("wrong_axes", "that is LayerNorm"),
    ("biased_running_var", "running_var uses the UNBIASED batch variance"),
    ("eps_outside_sqrt", "you added eps outside the square root"),
    ("calls_builtin", "group_norm calls torch.nn.functional.group_norm"),
])
def test_feedback_names_the_mistake(graded, student, diagnosis):
    _, out_dir = graded
    assert diagnosis in (out_dir / "feedback" / student / "norms.html").read_text()


def test_zip_of_submissions(tmp_path):
    archive = tmp_path / "lms.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("s1/norms/norms.ipynb", nbformat.writes(submission({})))
        handle.writestr("s2/norms/norms.ipynb", "not a notebook")
    from autograder.grade import grade
    rows = grade(archive, tmp_path / "grades.csv", course_dir=tmp_path / "course")
    assert [(r["student_id"], r["status"].split(":")[0]) for r in rows] == [
        ("s1", "graded"), ("s2", "corrupt notebook")]
    assert rows[0]["score"] == rows[0]["max_score"] == sum(points_per_item().values())


def test_not_a_zip_is_a_clear_error(tmp_path):
    bogus = tmp_path / "submissions.zip"
    bogus.write_text("nope")
    result = subprocess.run([sys.executable, "-m", "autograder", "grade", str(bogus),
                             "--out", str(tmp_path / "g.csv")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "not a folder nor a valid zip" in result.stderr
    assert "Traceback" not in result.stderr
