"""Checks the exercise notebooks' tests use; the build inlines this file into each
notebook's locked setup cell, so a notebook stays self-contained.

`run_graded` calls a student's function under a guard that records every call
into a forbidden built-in (the op being re-implemented, or the course's own
`solutions` package) and fails the item naming that call. `check_close`
compares with the expected tensor and, on a mismatch, names the known mistake
the answer matches. `check_layout` compares a module's state_dict keys and
shapes with the expected layout. `stand_ins` lets a test run one answer with
the course's versions of the other items it calls, so one mistake costs one
item.

Runs on Python 3.9 and later, as the notebooks do.
"""
import contextlib
import sys
import warnings

import torch

warnings.filterwarnings("ignore")  # stderr in a test cell would score it 0
_allclose = torch.allclose  # bound before any student code runs

# Names of torch and torchvision functions (under torch.*, torch.nn.functional.*,
# torch.ops.aten.*, torchvision.ops.*, module methods...) a graded answer may not call.
NORM_OPS = frozenset({
    "batch_norm", "native_batch_norm", "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training", "_batch_norm_impl_index", "batch_norm_stats",
    "layer_norm", "native_layer_norm", "group_norm", "native_group_norm",
    "instance_norm", "rms_norm", "normalize", "local_response_norm",
})
CONV_OPS = frozenset({
    "conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "conv_tbc", "_conv_depthwise2d", "slow_conv2d",
    "_slow_conv2d_forward", "thnn_conv2d", "mkldnn_convolution", "cudnn_convolution",
    "miopen_convolution", "_nnpack_spatial_convolution", "slow_conv_dilated2d", "slow_conv_dilated3d",
})
# Bilinear samplers and RoI ops, torch's and torchvision's (torchvision.ops.*, torch.ops.torchvision.*).
SAMPLING_OPS = frozenset({
    "grid_sample", "grid_sampler", "grid_sampler_2d", "_grid_sampler_2d_cpu_fallback",
    "deform_conv2d", "roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool",
    "multi_scale_roi_align", "box_iou", "_box_inter_union",
})
BCE_OPS = frozenset({"binary_cross_entropy", "binary_cross_entropy_with_logits"})
AUTOGRAD_OPS = frozenset({"grad", "backward", "run_backward", "vjp", "jvp", "jacobian",
                          "vmap", "functional_call"})


class ForbiddenCallError(AssertionError):
    pass


def _qualified_name(frame, event, arg):
    if event == "call":
        code = frame.f_code  # co_qualname is Python 3.11+; co_name ends the same way
        return f"{frame.f_globals.get('__name__', '')}.{getattr(code, 'co_qualname', code.co_name)}"
    if event == "c_call":
        return f"{getattr(arg, '__module__', None) or ''}.{getattr(arg, '__name__', '')}"
    return None


def _is_forbidden(name, forbidden):
    return name.startswith("solutions.") or (
        name.startswith(("torch.", "torchvision.")) and name.rsplit(".", 1)[-1] in forbidden)


_active_stand_ins = []  # the course's functions that the open stand_ins blocks bound


def _stand_in(function):
    def stand_in(*args, **kwargs):
        return function(*args, **kwargs)
    return stand_in


_STAND_IN_CODE = _stand_in(None).__code__


@contextlib.contextmanager
def bound(namespace, replacements):
    """Within the block ``namespace`` binds each name of ``replacements`` to its value;
    after it, to what it was bound to before (or to nothing)."""
    saved = {name: namespace[name] for name in replacements if name in namespace}
    namespace.update(replacements)
    try:
        yield
    finally:
        for name in replacements:
            namespace.pop(name, None)
        namespace.update(saved)


@contextlib.contextmanager
def stand_ins(namespace, **replacements):
    """Within the block, bind each name in ``namespace`` to the course's version of
    that item, so the test of another answer that calls it does not depend on the
    student's version. The guard does not count what a function stand-in calls (a class
    stand-in's calls are guarded)."""
    opened = len(_active_stand_ins)
    _active_stand_ins.extend(replacements.values())
    try:
        with bound(namespace, {name: value if isinstance(value, type) else _stand_in(value)
                               for name, value in replacements.items()}):
            yield
    finally:
        del _active_stand_ins[opened:]


def _in_stand_in(frame):
    return frame.f_code is _STAND_IN_CODE and any(
        frame.f_locals.get("function") is f for f in _active_stand_ins)


def run_graded(fn, *args, forbidden=frozenset(), **kwargs):
    """Call ``fn(*args, **kwargs)``; fail if it calls ``solutions`` or any op in ``forbidden``.

    What ``fn`` writes to stderr goes to stdout: nbgrader scores a test cell 0
    for any stderr output, which would punish a correct answer's debug print.
    """
    calls, depth = [], 0

    def profile(frame, event, arg):
        nonlocal depth
        if event in ("call", "return") and _in_stand_in(frame):
            depth += 1 if event == "call" else -1
            return
        if depth:
            return
        name = _qualified_name(frame, event, arg)
        if name and _is_forbidden(name, forbidden):
            calls.append(name)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        with contextlib.redirect_stderr(sys.stdout):  # a stray debug print is not a failure
            result = fn(*args, **kwargs)
    finally:
        sys.setprofile(previous)
    if calls:
        raise ForbiddenCallError(
            f"{getattr(fn, '__name__', fn)} calls {calls[0]}, an existing implementation of "
            f"what this exercise asks you to write: compute it from basic tensor operations.")
    return result


def check_close(actual, expected, what, mistakes=(), atol=1e-6, rtol=1e-5):
    """Assert ``actual`` equals ``expected`` within tolerance.

    ``mistakes`` lists ``(wrong_tensor, explanation)`` pairs: when the answer
    matches a wrong tensor, the explanation is the message.
    """
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(actual).__name__}")
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)}, "
                             f"expected {tuple(expected.shape)}")
    if actual.dtype != expected.dtype:
        raise AssertionError(f"{what}: dtype {actual.dtype}, expected {expected.dtype}")
    actual, expected = actual.detach(), expected.detach()
    if _allclose(actual, expected, rtol=rtol, atol=atol):
        return
    for wrong, explanation in mistakes:
        if wrong.shape == actual.shape and _allclose(actual, wrong.detach(), rtol=rtol, atol=atol):
            raise AssertionError(f"{what}: {explanation}")
    error = (actual - expected).abs().max().item()
    raise AssertionError(f"{what}: wrong values, max abs error {error:.3g}")


def check_layout(module, expected, what, against=""):
    """Assert that ``module.state_dict()`` has exactly the keys and shapes ``expected``;
    ``against`` names where the layout comes from (e.g. "torchvision's")."""
    got = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    missing = [key for key in expected if key not in got]
    unexpected = [key for key in got if key not in expected]
    source = f" from {against}" if against else ""
    assert not missing and not unexpected, (
        f"{what}: state_dict keys differ{source}: missing {missing[:5]}, "
        f"unexpected {unexpected[:5]}")
    wrong = [f"{key} {got[key]} (expected {expected[key]})" for key in expected
             if got[key] != expected[key]]
    assert not wrong, f"{what}: wrong shapes: {'; '.join(wrong[:4])}"
