"""Grade a class of fixture submissions and check every row exactly.

The submissions are the released student notebooks with answer cells filled
in: the reference solution, nothing, or a typical mistake. The expected score
of each is the assignment's total minus the points of the items the mistake
breaks, read from the notebook's own grade cells (not copied from a run).
"""
import csv
import html
import importlib
import inspect
import os
import subprocess
import sys
import textwrap
import zipfile

import nbformat
import pytest

from autograder import course
from autograder.template import ROOT

pytestmark = pytest.mark.xdist_group("grading")


def released(assignment):
    return course.EXERCISES / f"{assignment}.ipynb"


def reference(assignment, name):
    return inspect.getsource(getattr(importlib.import_module(f"solutions.{assignment}"), name))


def edited(assignment, name, old, new):
    source = reference(assignment, name)
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

# Hard-codes 4-D input: right on (N, C, H, W), wrong on every other rank the hidden
# tests and the probes use; an honest bug, so it must not read as a guard bypass.
FOUR_D_BATCH_NORM_BACKWARD = textwrap.dedent('''
    def batch_norm_backward(grad_out, x, weight=None, eps=1e-5):
        C = x.shape[1]
        m = x.numel() // C
        mean = x.mean((0, 2, 3), keepdim=True)
        inv_std = torch.rsqrt(x.var((0, 2, 3), unbiased=False, keepdim=True) + eps)
        x_hat = (x - mean) * inv_std
        grad_bias = grad_out.sum((0, 2, 3))
        grad_weight = (grad_out * x_hat).sum((0, 2, 3))
        scale = inv_std if weight is None else inv_std * weight.view(1, C, 1, 1)
        grad_input = scale / m * (m * grad_out - grad_bias.view(1, C, 1, 1)
                                  - x_hat * grad_weight.view(1, C, 1, 1))
        return grad_input, grad_weight, grad_bias
''')

GRID_SAMPLE_BILINEAR = """\
    N, C, H, W = input.shape
    grid = torch.stack([2 * x / (W - 1) - 1, 2 * y / (H - 1) - 1], -1).reshape(N, -1, 1, 2)
    sampled = torch.nn.functional.grid_sample(input, grid, align_corners=True)
    return sampled.reshape(N, C, *y.shape[1:])
"""

# assignment -> student -> (answer cells, items whose points the submission must lose).
# "reference" and "untouched" submit every assignment; each mistake only its own. Every
# item is tested with the course's versions of the other items it calls, so a mistake
# costs its own item's points only.
FIXTURES = {
    "norms": {
        "reference": ({}, set()),
        "untouched": (None, {"batch_norm", "layer_norm", "instance_norm", "group_norm",
                             "BatchNorm2d", "batch_norm_backward"}),
        "wrong_axes": ({"batch_norm": WRONG_AXES_BATCH_NORM}, {"batch_norm"}),
        "biased_running_var": (
            {"batch_norm": edited("norms", "batch_norm", "var * n / (n - 1)", "var")},
            {"batch_norm"}),
        "four_d_only": ({"batch_norm_backward": FOUR_D_BATCH_NORM_BACKWARD}, {"batch_norm_backward"}),
        "eps_outside_sqrt": (
            {"group_norm": edited("norms", "group_norm", "torch.rsqrt(var + eps)",
                                  "1 / (var.sqrt() + eps)")},
            {"group_norm"}),
        "calls_builtin": (
            {"group_norm": edited("norms", "group_norm", "    ### BEGIN SOLUTION\n",
                                  "    return F.group_norm(input, num_groups, weight, bias, eps)\n")},
            {"group_norm"}),
        "correct_but_warns": (
            {"layer_norm": edited("norms", "layer_norm", "    ### BEGIN SOLUTION\n",
                                  "    import sys, warnings\n"
                                  "    warnings.warn('a student warning')\n"
                                  "    print('debug output', file=sys.stderr)\n")},
            set()),
    },
    "resnet": {
        "reference": ({}, set()),
        "untouched": (None, {"BasicBlock", "Bottleneck", "make_layer", "ResNet",
                             "count_parameters"}),
        "relu_before_add": (
            {"BasicBlock": edited("resnet", "BasicBlock", "return self.relu(out + identity)",
                                  "return self.relu(out) + identity")},
            {"BasicBlock"}),
        "stride_on_1x1": (
            {"Bottleneck": edited("resnet", "Bottleneck", "conv1x1(inplanes, planes)",
                                  "conv1x1(inplanes, planes, stride)").replace(
                                      "conv3x3(planes, planes, stride)", "conv3x3(planes, planes)")},
            {"Bottleneck"}),
        "no_relu_after_sum": (
            {"Bottleneck": edited("resnet", "Bottleneck", "return self.relu(out + identity)",
                                  "return out + identity")},
            {"Bottleneck"}),
        "no_projection_when_widening": (
            {"make_layer": edited("resnet", "make_layer", "if stride != 1 or inplanes != width:",
                                  "if stride != 1:")},
            {"make_layer"}),
        "counts_buffers": (
            {"count_parameters": edited(
                "resnet", "count_parameters",
                "return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)",
                "return sum(t.numel() for t in model.state_dict().values())")},
            {"count_parameters"}),
        "imports_reference": (
            {"BasicBlock": "from solutions.resnet import BasicBlock\n"},
            {"BasicBlock"}),
        "always_zero_init": (
            {"ResNet": edited("resnet", "ResNet", "        if zero_init_residual:\n",
                              "        if True:\n")},
            {"ResNet"}),
    },
    "atrous": {
        "reference": ({}, set()),
        "untouched": (None, {"conv2d", "receptive_field", "coverage", "DepthwiseSeparableConv2d",
                             "ASPP", "DUC"}),
        "flipped_kernel": (
            {"conv2d": edited("atrous", "conv2d", "w = weight.reshape(", "w = weight.flip(-1, -2).reshape(")},
            {"conv2d"}),
        "calls_conv2d": (
            {"conv2d": edited("atrous", "conv2d", "    ### BEGIN SOLUTION\n",
                              "    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)\n")},
            {"conv2d"}),
        "reach_not_paths": (
            {"coverage": edited("atrous", "coverage", "return counts[:, None] * counts[None, :]",
                                "return (counts[:, None] * counts[None, :] > 0).long()")},
            {"coverage"}),
        "swapped_subpixels": (
            {"DUC": edited("atrous", "DUC", "return self.pixel_shuffle(self.conv(x))",
                           "y, r = self.conv(x), self.pixel_shuffle.upscale_factor\n"
                           "        N, C, H, W = y.shape\n"
                           "        return y.view(N, C // (r * r), r, r, H, W).permute(0, 1, 4, 3, 5, 2)"
                           ".reshape(N, C // (r * r), H * r, W * r)")},
            {"DUC"}),
    },
    "deformable": {
        "reference": ({}, set()),
        "untouched": (None, {"bilinear_interpolate", "deform_conv2d", "DeformConv2d",
                             "deform_roi_pool"}),
        "dy_dx_swapped": (
            {"deform_conv2d": edited("deformable", "deform_conv2d", "y = (base_y + off[:, :, :, 0])",
                                     "y = (base_y + off[:, :, :, 1])")
             .replace("x = (base_x + off[:, :, :, 1])", "x = (base_x + off[:, :, :, 0])")},
            {"deform_conv2d"}),
        "mask_sigmoid_twice": (
            {"deform_conv2d": edited("deformable", "deform_conv2d", "cols * mask.reshape(",
                                     "cols * mask.sigmoid().reshape(")},
            {"deform_conv2d"}),
        "unnormalised_bin_offsets": (
            {"deform_roi_pool": edited("deformable", "deform_roi_pool", "v(gamma * roi_h) * dy", "dy")
             .replace("v(gamma * roi_w) * dx", "dx")},
            {"deform_roi_pool"}),
        "calls_grid_sample": (
            {"bilinear_interpolate": edited("deformable", "bilinear_interpolate",
                                            "    ### BEGIN SOLUTION\n",
                                            GRID_SAMPLE_BILINEAR)},
            {"bilinear_interpolate"}),
    },
    "gan": {
        "reference": ({}, set()),
        "untouched": (None, {"discriminator_loss", "generator_loss", "generator_loss_saturating",
                             "Generator", "Discriminator", "weights_init", "train_step"}),
        "average_not_sum": (
            {"discriminator_loss": edited(
                "gan", "discriminator_loss",
                "return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()",
                "return (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()) / 2")},
            {"discriminator_loss"}),
        "swapped_labels": (
            {"discriminator_loss": edited(
                "gan", "discriminator_loss",
                "return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()",
                "return F.softplus(real_logits).mean() + F.softplus(-fake_logits).mean()")},
            {"discriminator_loss"}),
        "saturating_generator_loss": (
            {"generator_loss": edited("gan", "generator_loss", "return F.softplus(-fake_logits).mean()",
                                      "return -F.softplus(fake_logits).mean()")},
            {"generator_loss"}),
        "calls_bce": (
            {"discriminator_loss": edited(
                "gan", "discriminator_loss", "    ### BEGIN SOLUTION\n",
                "    ones, zeros = torch.ones_like(real_logits), torch.zeros_like(fake_logits)\n"
                "    return (F.binary_cross_entropy_with_logits(real_logits, ones)\n"
                "            + F.binary_cross_entropy_with_logits(fake_logits, zeros))\n")},
            {"discriminator_loss"}),
        "log_of_sigmoid": (
            {"generator_loss": edited("gan", "generator_loss", "return F.softplus(-fake_logits).mean()",
                                      "return -torch.log(torch.sigmoid(fake_logits)).mean()")},
            {"generator_loss"}),
        "sigmoid_left_in": (
            {"Discriminator": edited("gan", "Discriminator", "nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),",
                                     "nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),")},
            {"Discriminator"}),
        "one_d_pass": (
            {"train_step": edited("gan", "train_step",
                                  "    loss_d = discriminator_loss(D(real), D(fake.detach()))\n",
                                  "    both = D(torch.cat([real, fake.detach()]))\n"
                                  "    loss_d = discriminator_loss(both[:len(real)], both[len(real):])\n")},
            {"train_step"}),
        "generator_against_old_d": (
            {"train_step": edited("gan", "train_step", "    loss_d.backward()\n    opt_d.step()\n",
                                  "    loss_d.backward()\n    loss_g = generator_loss(D(fake))\n"
                                  "    opt_d.step()\n").replace(
                                      "    loss_g = generator_loss(D(fake))\n    loss_g.backward()",
                                      "    loss_g.backward()")},
            {"train_step"}),
        "detached_fakes_for_g": (
            {"train_step": edited("gan", "train_step", "loss_g = generator_loss(D(fake))",
                                  "loss_g = generator_loss(D(fake.detach()))")},
            {"train_step"}),
    },
    # The RoI items are independent: no item's hidden tests call another answer.
    "roi": {
        "reference": ({}, set()),
        "untouched": (None, {"roi_pool", "roi_align", "box_iou"}),
        "half_to_even": (
            {"roi_pool": edited("roi", "roi_pool", "torch.where((v - t).abs() >= 0.5, t + v.sign(), t)",
                                "torch.round(v)")},
            {"roi_pool"}),
        # right at +0.5, wrong at -0.5: a visible test has a corner at -0.5
        "round_half_up": (
            {"roi_pool": edited("roi", "roi_pool", "torch.where((v - t).abs() >= 0.5, t + v.sign(), t)",
                                "torch.floor(v + 0.5)")},
            {"roi_pool"}),
        "unclamped_intersection": (
            {"box_iou": edited("roi", "box_iou", "wh = upcast(rb - lt).clamp(min=0)", "wh = upcast(rb - lt)")},
            {"box_iou"}),
        "sub_cell_corners": (
            {"roi_align": edited("roi", "roi_align", "(i + 0.5) * bin_size / n", "i * bin_size / n")},
            {"roi_align"}),
        "shared_sample_grid": (
            {"roi_align": edited("roi", "roi_align",
                                 "grid_w, grid_h = bin_w.ceil().long(), bin_h.ceil().long()",
                                 "grid_w = grid_h = bin_w.ceil().long().max().expand(K)")},
            {"roi_align"}),
        "imports_reference": (
            {"box_iou": "from solutions.roi import box_iou\n"},
            {"box_iou"}),
    },
}
STUDENTS = sorted({student for fixtures in FIXTURES.values() for student in fixtures})
# Answers that compute the right values with a forbidden op fail in the notebook (the
# guard) and pass out-of-process verification: the CSV flags them, the score stays lost.
FLAGGED = {
    ("norms", "calls_builtin"): {"group_norm"},
    ("atrous", "calls_conv2d"): {"conv2d"},
    ("deformable", "calls_grid_sample"): {"bilinear_interpolate"},
    ("gan", "calls_bce"): {"discriminator_loss"},
}


def flagged(status):
    """The items a CSV status flags as disagreeing with verification."""
    return {part.split(" ")[0] for part in status.partition("; flagged: ")[2].split("; ") if part}


def submission(assignment, answers):
    """The student notebook with answer cells replaced: {} means all reference."""
    notebook = nbformat.read(released(assignment), as_version=4)
    if answers is None:
        return notebook
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = answers.get(grade_id, reference(assignment, grade_id))
    return notebook


def points_per_item(assignment):
    return {cell.metadata["nbgrader"]["grade_id"].removeprefix("test_"):
            cell.metadata["nbgrader"]["points"]
            for cell in nbformat.read(released(assignment), as_version=4).cells
            if cell.metadata.get("nbgrader", {}).get("grade")}


def total(assignment):
    return sum(points_per_item(assignment).values())


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    submissions = root / "submissions"
    for assignment, fixtures in FIXTURES.items():
        for student, (answers, _) in fixtures.items():
            path = submissions / student / assignment / f"{assignment}.ipynb"
            path.parent.mkdir(parents=True)
            nbformat.write(submission(assignment, answers), path)
    corrupt = submissions / "corrupt" / "norms" / "norms.ipynb"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text(released("norms").read_text()[:5000])  # truncated upload
    (submissions / "no_notebook" / "norms").mkdir(parents=True)
    out = root / "out" / "grades.csv"
    # as under `make grade`: the course's packages are importable by the grader (a
    # sandboxed submission still cannot see them)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(submissions), "--out", str(out),
         "--course-dir", str(root / "course")],
        capture_output=True, text=True, timeout=1500, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as handle:
        rows = {(row["student_id"], row["assignment"]): row for row in csv.DictReader(handle)}
    return rows, out.parent


@pytest.mark.parametrize("assignment, student", [
    (assignment, student) for assignment, fixtures in FIXTURES.items() for student in fixtures])
def test_fixture_scores_exactly(graded, assignment, student):
    rows, _ = graded
    points = points_per_item(assignment)
    lost = FIXTURES[assignment][student][1]
    row = rows[student, assignment]
    assert row["status"].startswith("graded")
    assert flagged(row["status"]) == FLAGGED.get((assignment, student), set()), row["status"]
    assert float(row["max_score"]) == total(assignment)
    assert float(row["score"]) == total(assignment) - sum(points[item] for item in lost)


def test_every_student_gets_a_row_per_assignment(graded):
    rows, _ = graded
    assert set(rows) == {(student, assignment) for student in STUDENTS + ["corrupt", "no_notebook"]
                         for assignment in FIXTURES}


def test_missing_assignments_get_zero_rows(graded):
    rows, _ = graded
    for assignment, fixtures in FIXTURES.items():
        for student in set(STUDENTS) - set(fixtures):
            row = rows[student, assignment]
            assert row["status"].startswith("missing notebook:"), (student, assignment)
            assert float(row["score"]) == 0 and float(row["max_score"]) == total(assignment)


def test_corrupt_and_missing_notebooks_get_error_rows(graded):
    rows, _ = graded
    assert rows["corrupt", "norms"]["status"].startswith("corrupt notebook:")
    assert rows["no_notebook", "norms"]["status"].startswith("missing notebook:")
    for student in ("corrupt", "no_notebook"):
        assert float(rows[student, "norms"]["score"]) == 0
        assert float(rows[student, "norms"]["max_score"]) == total("norms")


def test_feedback_per_student_without_hidden_tests(graded):
    rows, out_dir = graded
    for (student, assignment), row in rows.items():
        page = out_dir / "feedback" / student / f"{assignment}.html"
        assert page.is_file() == row["status"].startswith("graded"), (student, assignment)
    for student, assignment, hidden_line in [
            ("calls_builtin", "norms", "for shape in [(8, 5)"),
            ("relu_before_add", "resnet", "def reference_block")]:
        text = (out_dir / "feedback" / student / f"{assignment}.html").read_text()
        assert "HIDDEN TESTS" not in text and hidden_line not in text


@pytest.mark.parametrize("student, assignment, diagnosis", [
    ("wrong_axes", "norms", "that is LayerNorm"),
    ("biased_running_var", "norms", "running_var uses the UNBIASED batch variance"),
    ("eps_outside_sqrt", "norms", "you added eps outside the square root"),
    ("calls_builtin", "norms", "group_norm calls torch.nn.functional.group_norm"),
    ("relu_before_add", "resnet", "ReLU the sum: relu(F(x) + x), not relu(F(x)) + x."),
    ("stride_on_1x1", "resnet", "the stride belongs to conv2, the 3x3 convolution"),
    ("no_projection_when_widening", "resnet", "8 -> 16 channels needs a projection"),
    ("counts_buffers", "resnet", "you counted BN's buffers"),
    ("imports_reference", "resnet", "No module named 'solutions'"),
    ("flipped_kernel", "atrous", "you flipped the kernel: F.conv2d is a cross-correlation"),
    ("calls_conv2d", "atrous", "conv2d calls torch.conv2d"),
    ("reach_not_paths", "atrous", "count the paths, not just whether a pixel is reached"),
    ("swapped_subpixels", "atrous", "you swapped i and j"),
    ("dy_dx_swapped", "deformable", "you swapped dy and dx"),
    ("mask_sigmoid_twice", "deformable", "the mask is used as given"),
    ("unnormalised_bin_offsets", "deformable", "the offsets are normalised"),
    ("calls_grid_sample", "deformable", "calls torch.nn.functional.grid_sample"),
    ("average_not_sum", "gan", "the loss is the SUM of the two means"),
    ("calls_bce", "gan", "calls torch.nn.functional.binary_cross_entropy_with_logits"),
    ("log_of_sigmoid", "gan", "use softplus"),
    ("sigmoid_left_in", "gan", "leave out the example's final Sigmoid"),
    ("one_d_pass", "gan", "you ran D once on real and fakes together"),
    ("swapped_labels", "gan", "you swapped them"),
    ("saturating_generator_loss", "gan", "that is the saturating minimax loss"),
    ("detached_fakes_for_g", "gan", "no gradient reached G: are the fakes detached"),
    ("no_relu_after_sum", "resnet", "the block ends with a ReLU after adding the shortcut"),
    ("half_to_even", "roi", "you rounded half to even"),
    ("round_half_up", "roi", "a corner at -0.5 became 0"),
    ("unclamped_intersection", "roi", "negative overlap: clamp the intersection width/height at 0"),
    ("sub_cell_corners", "roi", "samples sit at the centres of the sub-cells"),
    ("shared_sample_grid", "roi", "each RoI has its own grid"),
    ("imports_reference", "roi", "No module named 'solutions'"),
])
def test_feedback_names_the_mistake(graded, student, assignment, diagnosis):
    _, out_dir = graded
    page = (out_dir / "feedback" / student / f"{assignment}.html").read_text()
    assert diagnosis in html.unescape(page)


def test_zip_of_submissions(tmp_path):
    archive = tmp_path / "lms.zip"
    reference_nb = nbformat.writes(submission("norms", {}))
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("s1/norms/norms.ipynb", reference_nb)
        handle.writestr("s2/norms/norms.ipynb", "not a notebook")
        # two attempts renamed by the LMS: only the upload dates say the complete one is newer
        handle.writestr(zipfile.ZipInfo("s3/week 2/norms-attempt2.ipynb", (2026, 3, 2, 9, 0, 0)),
                        nbformat.writes(submission("norms", None)))
        handle.writestr(zipfile.ZipInfo("s3/Norms (1).ipynb", (2026, 3, 2, 23, 59, 0)),
                        reference_nb)
    from autograder.grade import grade
    rows = grade(archive, tmp_path / "grades.csv", course_dir=tmp_path / "course")
    assert [(r["student_id"], r["status"].split(":")[0]) for r in rows] == [
        ("s1", "graded"), ("s2", "corrupt notebook"), ("s3", "graded")]
    assert rows[0]["score"] == rows[0]["max_score"] == rows[2]["score"] == total("norms")
    assert (rows[2]["notebook"], rows[2]["notebooks_found"]) == ("Norms (1).ipynb", 2)
    assert (rows[0]["notebook"], rows[0]["notebooks_found"]) == ("norms/norms.ipynb", 1)


def test_not_a_zip_is_a_clear_error(tmp_path):
    bogus = tmp_path / "submissions.zip"
    bogus.write_text("nope")
    result = subprocess.run([sys.executable, "-m", "autograder", "grade", str(bogus),
                             "--out", str(tmp_path / "g.csv")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "not a folder nor a valid zip" in result.stderr
    assert "Traceback" not in result.stderr
