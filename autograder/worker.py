"""The sandboxed side of out-of-process verification, forked by the fork server (``forkserver.py``).

Protocol: JSON lines on stdin, JSON lines on stdout, arrays as ``.npy`` files
(never pickle): inputs in the read-only folder given as the argument, outputs
in the working directory. The first request is
``{"cells": [source, ...], "forbidden": [name, ...]}``: first every operator whose
name contains one of ``forbidden`` is refused at torch's dispatcher
(``dispatcher_guard``), for the rest of the worker's life; then the notebook's
code runs in one namespace, each cell on its own so one broken cell does not
hide the rest. Every later request is ``{"id": k, "code": source, "scalars":
{...}, "arrays": [name, ...]}``: the worker loads ``in-k-<name>.npy`` as tensors,
runs ``code`` in a copy of the namespace and writes the flattened ``result`` as
``out-k-<i>.npy``. No request lifts a refusal: whatever the submission does to
the code that reads them (``json``, the builtins), the refused ops stay refused.

Whatever the submission prints goes to /dev/null; the protocol has its own
file descriptors.
"""
import json
import os
import sys
import traceback
import warnings

import numpy as np
import torch


def _flatten(value, path: str = "result") -> list[tuple[str, np.ndarray]]:
    """Every tensor or number in ``value``, in a fixed order, with where it sits."""
    if isinstance(value, torch.Tensor):
        return [(path, value.detach().cpu().resolve_conj().numpy())]
    if isinstance(value, (bool, int, float)):
        return [(path, np.asarray(value))]
    if isinstance(value, (tuple, list)):
        return [pair for i, item in enumerate(value) for pair in _flatten(item, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [pair for key in sorted(value) for pair in _flatten(value[key], f"{path}[{key!r}]")]
    raise TypeError(f"{path} is a {type(value).__name__}, not tensors or numbers")


def _error() -> str:
    kind, value, _ = sys.exc_info()
    return f"{kind.__name__}: {str(value).strip()[:300]}"


def matches(op: str, names) -> bool:
    """Whether ``names`` forbid operator ``op`` ("aten::native_layer_norm.out"): its name,
    namespace and overload aside, contains one of them (so do its native, fused and backward
    variants)."""
    base = op.partition("::")[2].partition(".")[0]
    for name in names:  # a loop, not any(): this runs for each of torch's 3,600 operators
        if name in base:
            return True
    return False


def _refusal(op: str):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"the exercise forbids {op}")
    return refuse


def dispatcher_guard():
    """``forbid(names)``: from now on every operator (any namespace, every overload) whose
    name contains one of ``names`` raises when called, whatever Python path reaches it, and
    what the previous call forbade is allowed again (a worker calls it once, before the
    submission's first line).

    The refusal is registered at every dispatch key where the operator has a kernel (its
    backends, autograd, composite and batching kernels...), over the kernel it hides;
    resetting the registration brings that kernel back. Which keys those are is read here,
    once: the fork server makes the guard, and every worker forks with it (an operator
    registered since, e.g. by the server's optimizer step, is looked up when forbidden; one
    that the submission's own imports register afterwards is not refused). Every function
    it uses is bound here, and the registrations live only in this closure: a submission
    would need torch's registration machinery or the interpreter's frames to reach them,
    and an answer that names those is flagged for review."""
    op_names, library = torch._C._dispatch_get_all_op_names, torch._C._dispatch_library
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    is_forbidden, refusal = matches, _refusal
    catch_warnings, simplefilter = warnings.catch_warnings, warnings.simplefilter
    keys, kernels = [], {op: [] for op in op_names()}  # operator -> the keys it has a kernel at
    for key in torch._C.DispatchKey.__members__:
        try:  # some members only mark ranges of keys
            ops = torch._C._dispatch_get_registrations_for_dispatch_key(key)
        except RuntimeError:
            continue
        keys.append(key)
        for op in ops:
            kernels.setdefault(op, []).append(key)
    registered = []

    def forbid(names: frozenset[str]) -> None:
        while registered:
            registered.pop().reset()
        libraries = {}
        with catch_warnings():  # each registration warns that it hides a kernel
            simplefilter("ignore")
            for op in op_names():
                if not is_forbidden(op, names):
                    continue
                namespace, _, name = op.partition("::")
                for key in kernels[op] if op in kernels else [k for k in keys if has_kernel(op, k)]:
                    if namespace not in libraries:
                        libraries[namespace] = library("IMPL", namespace, "", "<guard>", 0)
                        registered.append(libraries[namespace])
                    libraries[namespace].impl(name, key, refusal(op), False)
    return forbid


def main(forbid) -> None:
    """Serve one submission, the ops the first request names refused by ``forbid`` (a
    ``dispatcher_guard()``)."""
    inbox = sys.argv[1]
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    first = json.loads(requests.readline())
    forbid(frozenset(first["forbidden"]))  # before the submission's first line
    namespace = {"__name__": "__main__"}
    errors = {}
    for index, source in enumerate(first["cells"]):
        try:
            exec(compile(source, f"<cell {index}>", "exec"), namespace)
        except BaseException:  # a submission may raise anything, SystemExit included
            errors[index] = _error()
    reply({"ready": True, "errors": errors})

    for line in requests:
        request = json.loads(line)
        k = request["id"]
        scope = dict(namespace)
        scope.update(request["scalars"])
        for name in request["arrays"]:
            scope[name] = torch.from_numpy(np.load(os.path.join(inbox, f"in-{k}-{name}.npy"),
                                                   allow_pickle=False))
        try:
            exec(compile(request["code"], f"<probe {k}>", "exec"), scope)
            arrays = _flatten(scope["result"])
            for i, (_, array) in enumerate(arrays):
                np.save(f"out-{k}-{i}.npy", array, allow_pickle=False)
            reply({"id": k, "outputs": len(arrays)})
        except BaseException:
            reply({"id": k, "error": _error()})
            traceback.clear_frames(sys.exc_info()[2])

