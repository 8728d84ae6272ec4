"""The no-built-in rule at torch's dispatcher, in the verification worker (autograder/worker.py):
an answer that switches the notebook's guard off still cannot call the op it re-implements."""
import importlib
import itertools
import textwrap

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autograder import sandbox, verify
from autograder import worker as worker_module
from autograder.checks import CONV_OPS, NORM_OPS
from autograder.worker import matches
from tests.helpers import CHAPTERS, chapter_of, reference, released, submission

UID = sandbox.own_uid()
LAYER_NORM = frozenset({"layer_norm", "native_layer_norm"})
X = np.linspace(-2, 3, 24).reshape(2, 3, 4)

# an answer cell that switches the notebook's guard off first
SWITCHED_OFF = """
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.setprofile(None)
sys.settrace(None)


def answer(x):
    return {call}


def own_layer_norm(x):
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)
"""


class Sandboxed:
    """A verification worker holding ``cells``, with the ops named by ``forbidden`` refused;
    ``run(code)`` is ``result`` on the input ``x``."""

    def __init__(self, *cells: str, forbidden=frozenset()):
        self.worker = verify.Worker([textwrap.dedent(c) for c in cells], forbidden, uid=UID,
                                    sandboxed=True, timeout=60)
        self.k = 0

    def run(self, code):
        self.k += 1
        return self.worker.run(self.k, verify.Probe(code, None), {"x": X})

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.worker.close()


@pytest.mark.parametrize("call, op", [
    ("F.layer_norm(x, x.shape[-1:])", "aten::layer_norm"),
    ("torch.layer_norm(x, [x.shape[-1]])", "aten::layer_norm"),
    ("torch.ops.aten.native_layer_norm.default(x, [x.shape[-1]], None, None, 1e-5)[0]",
     "aten::native_layer_norm"),
    ("torch.ops.aten.native_layer_norm(x, [x.shape[-1]], None, None, 1e-5)[0]",
     "aten::native_layer_norm"),
    ("nn.LayerNorm(x.shape[-1]).double()(x)", "aten::layer_norm"),
    ("torch.vmap(lambda row: F.layer_norm(row, row.shape[-1:]))(x)", "aten::layer_norm"),
    ("torch.inference_mode()(lambda: F.layer_norm(x.clone(), x.shape[-1:]))()", "aten::layer_norm"),
    ("torch.autograd.grad(F.layer_norm(x.requires_grad_(), x.shape[-1:]).sum(), x)[0]",
     "aten::layer_norm"),
])
def test_a_forbidden_op_raises_however_it_is_reached(call, op):
    with Sandboxed(SWITCHED_OFF.format(call=call), forbidden=LAYER_NORM) as worker:
        with pytest.raises(verify.ProbeError, match=f"RuntimeError: the exercise forbids {op}$"):
            worker.run("result = answer(x)")


def test_allowed_ops_work_beside_the_refused_ones():
    x = torch.from_numpy(X)
    expected = F.layer_norm(x, x.shape[-1:]).numpy()
    with Sandboxed(SWITCHED_OFF.format(call="F.layer_norm(x, x.shape[-1:])"),
                   forbidden=LAYER_NORM) as worker:
        own, = worker.run("result = own_layer_norm(x)")
        np.testing.assert_allclose(own, expected, atol=1e-12)
        other, = worker.run("result = F.batch_norm(x, None, None, training=True)")
        np.testing.assert_allclose(other, F.batch_norm(x, None, None, training=True).numpy())
        for _ in range(2):
            with pytest.raises(verify.ProbeError, match="forbids aten::layer_norm"):
                worker.run("result = answer(x)")
    # the worker of an item that forbids nothing
    with Sandboxed(SWITCHED_OFF.format(call="F.layer_norm(x, x.shape[-1:])")) as worker:
        np.testing.assert_allclose(worker.run("result = answer(x)")[0], expected)



def test_the_guard_reads_the_dispatchers_tables_once_and_looks_up_an_operator_added_since(monkeypatch):
    """Which dispatch keys each operator has a kernel at is read when the guard is made (in
    the fork server, once for every worker), not for every forbidden set; an operator
    registered afterwards (by a submission's import) is looked up then, and refused too."""
    lookups = []

    def has_kernel(op, key, original=torch._C._dispatch_has_kernel_for_dispatch_key):
        lookups.append(op)
        return original(op, key)

    monkeypatch.setattr(torch._C, "_dispatch_has_kernel_for_dispatch_key", has_kernel)
    forbid = worker_module.dispatcher_guard()
    library = torch.library.Library("dlbb_guard_test", "DEF")
    library.define("own_layer_norm(Tensor x) -> Tensor")
    library.impl("own_layer_norm", lambda x: x, "CPU")
    x = torch.ones(2, 3)
    try:
        forbid(LAYER_NORM)
        assert {op for op in lookups if op.startswith("aten::")} == set()
        assert set(lookups) == {"dlbb_guard_test::own_layer_norm"}
        for call, op in [(lambda: F.layer_norm(x, (3,)), "aten::layer_norm"),
                         (lambda: torch.ops.dlbb_guard_test.own_layer_norm(x),
                          "dlbb_guard_test::own_layer_norm")]:
            with pytest.raises(RuntimeError, match=f"the exercise forbids {op}$"):
                call()
    finally:
        forbid(frozenset())
        library._destroy()
    assert torch.equal(F.layer_norm(x, (3,)), torch.zeros(2, 3))

UNDOES = """
import sys

import torch
import torch.library

# what the worker's own code might look the guard up with, made useless
torch._C._dispatch_get_all_op_names = lambda: []
torch._C._dispatch_has_kernel_for_dispatch_key = lambda *args: False
torch._C._dispatch_library = lambda *args: None
torch.library.Library = None
for module in list(sys.modules.values()):
    if hasattr(module, "dispatcher_guard"):  # the worker's own module
        module.matches = lambda op, names: False
        module._refusal = lambda op: lambda *args, **kwargs: None


def undo():
    # every registration in reach without the interpreter's frames or the collector (which
    # get an answer flagged): module globals, one level into them, the answer's own namespace
    found = [value for module in list(sys.modules.values())
             for value in list(getattr(module, "__dict__", {}).values())] + list(globals().values())
    found += [item for value in found if isinstance(value, (list, tuple, set, dict))
              for item in (value.values() if isinstance(value, dict) else value)]
    for value in found:
        if type(value).__name__ == "_DispatchModule":
            value.reset()
        if type(value).__name__ == "Library":
            value._destroy()
        if type(value).__name__ == "function" and value.__name__ == "dispatcher_guard":
            value()(frozenset())  # a guard of its own, lifted
    torch.library._impls.clear()
    return torch.nn.functional.layer_norm
"""


def test_the_guard_cannot_be_switched_off_from_the_submission():
    with Sandboxed(SWITCHED_OFF.format(call="undo()(x, x.shape[-1:])"), UNDOES,
                   forbidden=LAYER_NORM) as worker:
        with pytest.raises(verify.ProbeError, match="forbids aten::layer_norm"):
            worker.run("result = answer(x)")


# what the worker reads its requests with, rewritten so that every request forbids nothing
REWRITES_REQUESTS = """
import builtins
import json

_loads = json.loads
json.loads = lambda line, *args, **kwargs: {**_loads(line, *args, **kwargs), "forbidden": []}
builtins.any = lambda iterable: False
"""


def test_no_request_lifts_the_guard():
    """The refusals are in place before the submission's first line and no later request
    changes them, so rewriting the code that reads requests (json, the builtins) lifts none."""
    with Sandboxed(SWITCHED_OFF.format(call="F.layer_norm(x, x.shape[-1:])"), REWRITES_REQUESTS,
                   forbidden=LAYER_NORM) as worker:
        with pytest.raises(verify.ProbeError, match="forbids aten::layer_norm"):
            worker.run("result = answer(x)")


def test_verification_fails_an_answer_that_switches_the_notebook_guard_off(tmp_path):
    norms = chapter_of("layer_norm").name
    cheat = reference(norms, "layer_norm").replace("    ### BEGIN SOLUTION\n", """\
    import sys
    sys.setprofile(None)
    return torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)
""")
    path = tmp_path / f"{norms}.ipynb"
    nbformat.write(submission(norms, {"layer_norm": cheat}), path)
    verdicts = verify.verify(norms, released(norms), path, uid=UID)
    assert verdicts.pop("layer_norm") == "RuntimeError: the exercise forbids aten::layer_norm"
    assert not any(verdicts.values()), verdicts


def test_forbidden_ops_are_read_per_item_from_the_notebook_tests():
    atrous = verify.forbidden_ops(released(chapter_of("ASPP").name))
    assert {"conv2d", "convolution", "mkldnn_convolution"} <= atrous["conv2d"]
    assert atrous["ASPP"] == atrous["DUC"] == frozenset()  # they build on nn.Conv2d
    norms = verify.forbidden_ops(released(chapter_of("batch_norm_backward").name))
    assert norms["batch_norm"] == norms["batch_norm_backward"]  # autograd's entry points left out
    assert {"batch_norm", "native_layer_norm", "group_norm"} <= norms["batch_norm"]
    suppression = verify.forbidden_ops(released(chapter_of("soft_nms").name))
    assert {"batched_nms", "soft_nms", "roi_align"} <= suppression["soft_nms"]  # the setup's set



def test_a_grading_worker_reads_each_version_of_a_release_once(tmp_path, monkeypatch):
    """Every submission of an assignment is verified against the same release: its cells and
    forbidden ops are read once, and again when the release changes."""
    release = tmp_path / "norms.ipynb"
    notebook = nbformat.read(released(chapter_of("layer_norm").name), as_version=4)
    nbformat.write(notebook, release)
    reads, read = [], nbformat.read
    monkeypatch.setattr(verify.nbformat, "read", lambda path, **kw: reads.append(path) or read(path, **kw))
    for _ in range(2):
        before = verify.forbidden_ops(release)
        verify.notebook_code(release, release)
    assert reads.count(release) == 3  # once as the release, twice as the submission
    test = next(cell for cell in notebook.cells if cell.metadata.get("nbgrader", {}).get("grade_id")
                == "test_layer_norm")
    test.source += "\nrun_graded(layer_norm, X, forbidden=frozenset({'sqrt'}))"
    nbformat.write(notebook, release)
    assert verify.forbidden_ops(release)["layer_norm"] == before["layer_norm"] | {"sqrt"}
    assert reads.count(release) == 4

@pytest.mark.parametrize("chapter", CHAPTERS, ids=str)
def test_every_reference_answer_passes_under_the_guard(chapter, tmp_path):
    path = tmp_path / f"{chapter.name}.ipynb"
    nbformat.write(submission(chapter.name, {}), path)
    verdicts = verify.verify(chapter.name, released(chapter.name), path, uid=UID)
    assert not any(verdicts.values()), verdicts


# what a built-in reaches that computes nothing of the op: memory, views, copies, queries
LAYOUT = {"aten::_nnpack_available", "aten::as_strided_", "aten::cat", "aten::clone",
          "aten::contiguous", "aten::detach", "aten::resize_as_", "aten::squeeze",
          "aten::unsqueeze", "aten::zero_"}


def _reached(run):
    """The operators ``run()`` calls, nested and backward ones included."""
    with torch.autograd.profiler_legacy.profile() as calls:
        run()
    return {event.name for event in calls.function_events if event.name.startswith("aten::")}


def _convolutions():
    """(a torch convolution, the course's conv2d where it has one) on each configuration."""
    atrous = importlib.import_module(chapter_of("conv2d").reference)
    for dtype, dims, (stride, dilation, groups) in itertools.product(
            (torch.float32, torch.float64), (1, 2, 3), [(1, 1, 1), (2, 1, 2), (1, 2, 1), (2, 2, 4)]):
        x = torch.randn(2, 4, *[7] * dims, dtype=dtype, requires_grad=True)
        w = torch.randn(4, 4 // groups, *[3] * dims, dtype=dtype, requires_grad=True)
        conv, transposed = getattr(F, f"conv{dims}d"), getattr(F, f"conv_transpose{dims}d")
        course = (lambda: atrous.conv2d(x, w, None, stride, 1, dilation, groups).sum().backward()) \
            if dims == 2 else (lambda: None)
        yield lambda: conv(x, w, None, stride, 1, dilation, groups).sum().backward(), course
        yield lambda: transposed(x, w, None, stride, 1, 0, groups, dilation).sum().backward(), course


def _norms():
    norms = importlib.import_module(chapter_of("group_norm").reference)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    stats = torch.zeros(4, dtype=x.dtype), torch.ones(4, dtype=x.dtype)
    for call in (lambda f: f.batch_norm(x, *stats, None, None, True), lambda f: f.layer_norm(x, (5, 6)),
                 lambda f: f.group_norm(x, 2), lambda f: f.instance_norm(x)):
        yield lambda: call(F).sum().backward(), lambda: call(norms).sum().backward()


@pytest.mark.parametrize("cases, forbidden", [(_convolutions, CONV_OPS), (_norms, NORM_OPS)],
                         ids=["convolution", "normalisation"])
def test_the_forbidden_names_cover_every_kernel_a_builtin_reaches(cases, forbidden):
    """Whatever torch's function reaches (fused, backend and backward kernels), the course's
    own version does not, and is not layout work, is refused under the chapter's names."""
    builtin, course = set(), set()
    for run_builtin, run_course in cases():
        builtin |= _reached(run_builtin)
        course |= _reached(run_course)
    assert {op for op in builtin - course - LAYOUT if not matches(op, forbidden)} == set()
