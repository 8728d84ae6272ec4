"""Every item's out-of-process probes cover the inputs its notebook tests use.

Verification sends an answer fresh inputs and flags it when its verdict differs from
the notebook's. If the notebook's tests (visible and hidden) used inputs of a rank or
dtype that no probe sends, an honest bug on those inputs (a batch_norm_backward that
hard-codes 4-D input) would fail the notebook, pass the probes and read as a guard
bypass. So: the instructor notebook runs with each graded function, and each graded
module's forward, recording every call that returns (each tensor argument's rank and
dtype, by parameter name); then every probe runs once, as in one verification,
recorded the same way. What the tests use must be a subset of what one verification
sends, for every draw (checked on a few seeds).
"""
import inspect

import numpy as np
import pytest
import torch

from autograder import verify
from autograder.chapters import NAMES, get
from autograder.template import render

SEEDS = range(3)

# Defined inside the notebook's namespace, so a wrapped function keeps the notebook as
# its globals (the probes' stand_in finds the names an answer reads through them).
RECORDER = '''
def _recording(item, function):
    def recorded(*args, **kwargs):
        out = function(*args, **kwargs)
        if _recording_item[0] == item:
            _recorded.setdefault(item, set()).update(_features(function, args, kwargs))
        return out
    return recorded
'''


def _features(function, args, kwargs):
    """(parameter, rank, dtype) of every tensor argument; a list of tensors as rank "list"."""
    try:
        bound = inspect.signature(function).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return set()
    found = set()
    for name, value in bound.items():
        if isinstance(value, torch.Tensor):
            found.add((name, value.dim(), value.dtype))
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, torch.Tensor) for v in value):
            found.add((name, f"list of {value[0].dim()}-D", value[0].dtype))
    return found


def _record(namespace, item):
    """Wrap the graded function ``item`` (a module: its forward) in ``namespace``."""
    target = namespace[item]
    if isinstance(target, type):
        target.forward = namespace["_recording"](item, target.forward)
    else:
        namespace[item] = namespace["_recording"](item, target)


def _run_notebook(assignment):
    """Run the instructor notebook; return its namespace and what each item's tests used."""
    notebook = render(get(assignment).template)
    namespace = {"__name__": "__main__", "_features": _features, "_recorded": {},
                 "_recording_item": [None]}
    exec(RECORDER, namespace)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        item = meta["grade_id"].removeprefix("test_") if meta.get("grade") else None
        namespace["_recording_item"][0] = item
        exec(compile(cell.source, meta.get("grade_id", "cell"), "exec"), namespace)
        if meta.get("solution"):
            _record(namespace, meta["grade_id"])
    namespace["_recording_item"][0] = None
    return namespace, dict(namespace["_recorded"])


def _run_probes(namespace, assignment, item, seed):
    """What one verification sends ``item``: each of its probes once."""
    namespace["_recorded"].pop(item, None)
    namespace["_recording_item"][0] = item
    rng = np.random.default_rng(seed)
    for probe in verify.probes(assignment)[item]:
        scope = dict(namespace)
        for name, value in probe.inputs(rng).items():
            scope[name] = torch.from_numpy(value.copy()) if isinstance(value, np.ndarray) else value
        exec(compile(probe.code, "<probe>", "exec"), scope)
    namespace["_recording_item"][0] = None
    return namespace["_recorded"].get(item, set())


@pytest.mark.parametrize("assignment", NAMES)
def test_probes_cover_the_inputs_of_the_tests(assignment):
    namespace, tested = _run_notebook(assignment)
    assert set(tested) == set(get(assignment).items), \
        f"no graded call was recorded for {set(get(assignment).items) - set(tested)}"
    uncovered = {}
    for item, used in tested.items():
        for seed in SEEDS:
            missing = used - _run_probes(namespace, assignment, item, seed)
            if missing:
                uncovered[f"{item}, seed {seed}"] = sorted(missing, key=str)
    assert not uncovered, f"inputs the tests use and no probe sends: {uncovered}"
