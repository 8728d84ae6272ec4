"""Out-of-process verification: the score that counts does not come from the
student's kernel alone (``autograder/verdict.py`` runs this within autograde).

The submission's code (the released notebook's provided cells and the
student's answer cells, no tests) runs in a sandboxed worker
(``autograder/worker.py``). This trusted process sends it fresh random inputs,
receives the outputs as ``.npy`` arrays loaded without pickle, and compares
them with what ``solutions`` computes on the same inputs. Each item's probes
live in ``autograder/probes/<assignment>.py``: a snippet of code that sets
``result`` from named inputs, run once in the worker's namespace and once in
the reference module's.

The no-built-in rule holds in the worker where the submission cannot switch it
off: the operators that an item's notebook tests forbid (``forbidden_ops``) raise
at torch's dispatcher in the worker that checks the item, from before the
submission's first line to the worker's end (items that forbid other ops get a
worker of their own). So no probe hands an answer a stand-in built on such an op
(the notebook's tests may: their guard does not count the course's code).
"""
import ast
import functools
import importlib
import itertools
import json
import os
import secrets
import select
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat
import numpy as np

from . import sandbox

MAX_REPLY = 1 << 16
MAX_ARRAY_BYTES = 256 << 20


@dataclass(frozen=True)
class Probe:
    """``code`` sets ``result`` from the inputs that ``inputs(rng)`` draws: numpy
    arrays arrive as tensors, anything else as the JSON value it is."""
    code: str
    inputs: Callable[[np.random.Generator], dict]
    rtol: float = 1e-5
    atol: float = 1e-6


def probes(assignment: str) -> dict[str, list[Probe]]:
    return importlib.import_module(f"autograder.probes.{assignment}").PROBES


def _per_version(read):
    """``read(path)``, kept for each version of the file (its modification time and size): a
    grading worker reads the same release for every submission of an assignment."""
    cached = functools.lru_cache(maxsize=32)(lambda path, _version: read(path))

    @functools.wraps(read)
    def read_once(path: Path):
        info = os.stat(path)
        return cached(Path(path), (info.st_mtime_ns, info.st_size))
    return read_once


@_per_version
def _released_cells(release: Path) -> list:
    return nbformat.read(release, as_version=4).cells


def notebook_code(release: Path, submitted: Path) -> list[str]:
    """The code cells a submission runs, tests left out: the released notebook's
    cells, with each answer cell taken from the submission (by its grade id)."""
    answers = {}
    for cell in nbformat.read(submitted, as_version=4).cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.get("cell_type") == "code" and grade_id:
            answers[grade_id] = cell.get("source", "")
    code = []
    for cell in _released_cells(release):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("grade"):
            continue
        code.append(answers.get(meta["grade_id"], "") if meta.get("solution") else cell.source)
    return code


def _ops(node: ast.expr, known: dict[str, frozenset[str]]) -> frozenset[str]:
    """The value of a forbidden-ops expression: a set's name, ``frozenset({"op", ...})``, ``a | b``."""
    if isinstance(node, ast.Name) and node.id in known:
        return known[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _ops(node.left, known) | _ops(node.right, known)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "frozenset"
            and not node.keywords and len(node.args) == 1
            and isinstance(node.args[0], (ast.Set, ast.List, ast.Tuple))
            and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.args[0].elts)):
        return frozenset(e.value for e in node.args[0].elts)
    raise ValueError(f"cannot read the forbidden ops {ast.unparse(node)!r}")


@_per_version
def forbidden_ops(release: Path) -> dict[str, frozenset[str]]:
    """By item, the names of the ops its notebook tests forbid the answer to call: the
    ``forbidden`` of each ``run_graded`` call in its grade cell, or the default that the
    setup binds (``run_graded = functools.partial(run_graded, forbidden=...)``). The sets
    are read from the released notebook's code, where they are defined (``*_OPS = ...``).
    Autograd's entry points (``AUTOGRAD_OPS``) are left out: no operator computes them (and
    every backward kernel's name contains "backward")."""
    known, default, tests = {}, frozenset(), {}
    for cell in _released_cells(release):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if cell.metadata.get("nbgrader", {}).get("grade") and grade_id.startswith("test_"):
            tests[grade_id.removeprefix("test_")] = tree
            continue
        for node in tree.body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)):
                continue
            if node.targets[0].id.endswith("_OPS"):
                known[node.targets[0].id] = _ops(node.value, known)
            elif node.targets[0].id == "run_graded" and isinstance(node.value, ast.Call):
                default = next((_ops(k.value, known) for k in node.value.keywords
                                if k.arg == "forbidden"), default)
    autograd = known.get("AUTOGRAD_OPS", frozenset())
    return {item: frozenset().union(*(
                next((_ops(k.value, known) for k in call.keywords if k.arg == "forbidden"), default)
                for call in ast.walk(tree) if isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name) and call.func.id == "run_graded")) - autograd
            for item, tree in tests.items()}


def _split(inputs: dict) -> tuple[dict, dict]:
    arrays = {k: v for k, v in inputs.items() if isinstance(v, np.ndarray)}
    return arrays, {k: v for k, v in inputs.items() if k not in arrays}


def expected(assignment: str, probe: Probe, inputs: dict) -> list[tuple[str, np.ndarray]]:
    """What the reference computes for ``probe`` on ``inputs``: (where in ``result``, array)."""
    import torch

    from .worker import _flatten
    arrays, scalars = _split(inputs)
    scope = dict(vars(importlib.import_module(f"solutions.{assignment}")))
    scope.update(scalars)
    scope.update({k: torch.from_numpy(v.copy()) for k, v in arrays.items()})
    exec(compile(probe.code, "<probe>", "exec"), scope)
    return _flatten(scope["result"])


def compare(actual: list[np.ndarray], wanted: list[tuple[str, np.ndarray]],
            probe: Probe) -> str | None:
    """Why ``actual`` is not ``wanted``, or None when it is."""
    if len(actual) != len(wanted):
        return f"returned {len(actual)} tensors, expected {len(wanted)}"
    for a, (name, w) in zip(actual, wanted):
        if a.shape != w.shape or a.dtype != w.dtype:
            return f"{name}: {a.dtype}{list(a.shape)}, expected {w.dtype}{list(w.shape)}"
        if not np.allclose(a, w, rtol=probe.rtol, atol=probe.atol, equal_nan=True):
            return f"{name}: wrong values"
    return None


class WorkerError(RuntimeError):
    """The worker died, hung or broke the protocol: it has to be replaced."""


class ProbeError(RuntimeError):
    """The submission's code raised on a probe: the worker is fine."""


class Worker:
    """One sandboxed worker process holding one submission's code, forked by the
    grading process's fork server.

    Inputs go to ``inbox/``, which the sandbox sees read-only; outputs come
    back through ``outbox/``, the only folder it may write, and are opened
    without following symlinks. Requests and replies travel on two pipes.
    """

    def __init__(self, cells: list[str], forbidden: frozenset[str] = frozenset(), *, uid: int,
                 sandboxed: bool, timeout: float):
        self.timeout = timeout
        requests, self.requests = os.pipe()
        self.replies, replies = os.pipe()
        try:
            server = sandbox.fork_server(uid, sandboxed)
            server.empty()
            self.inbox, self.outbox = server.folder(readonly=True), server.folder()
            self.process = server.worker([str(self.inbox)], self.outbox, requests, replies)
        except sandbox.ForkServerError as error:
            self._close_pipes()
            raise WorkerError(str(error)) from None
        finally:
            os.close(requests)
            os.close(replies)
        try:
            self._send({"cells": cells, "forbidden": sorted(forbidden)})
            self._receive()
        except (WorkerError, ValueError):
            self.close()
            raise

    def _send(self, message: dict) -> None:
        try:
            data = (json.dumps(message) + "\n").encode()
            while data:
                data = data[os.write(self.requests, data):]
        except OSError:
            raise WorkerError("the worker exited") from None

    def _receive(self) -> dict:
        deadline, line = time.monotonic() + self.timeout, b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"no answer within {self.timeout:g} s")
            if select.select([self.replies], [], [], left)[0]:
                chunk = os.read(self.replies, MAX_REPLY)
                if not chunk:
                    raise WorkerError("the worker exited")
                line += chunk
                if len(line) > MAX_REPLY:
                    raise WorkerError("the worker's reply is too long")
        return json.loads(line)

    def run(self, k: int, probe: Probe, inputs: dict) -> list[np.ndarray]:
        """``probe``'s outputs on ``inputs``."""
        arrays, scalars = _split(inputs)
        for name, array in arrays.items():
            np.save(self.inbox / f"in-{k}-{name}.npy", array, allow_pickle=False)
        self._send({"id": k, "code": probe.code, "scalars": scalars, "arrays": sorted(arrays)})
        answer = self._receive()
        if "error" in answer:
            raise ProbeError(answer["error"])
        return [self._output(f"out-{k}-{i}.npy") for i in range(int(answer["outputs"]))]

    def _output(self, name: str) -> np.ndarray:
        try:
            fd = os.open(self.outbox / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            raise WorkerError(f"{name} is missing or not a plain file") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ARRAY_BYTES:
                raise WorkerError(f"{name} is not a plain file of at most {MAX_ARRAY_BYTES} bytes")
            return np.load(handle, allow_pickle=False)

    def close(self) -> None:
        self.process.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        os.close(self.requests)
        os.close(self.replies)


def verify(assignment: str, release: Path, submitted: Path, *, uid: int | None = None,
           sandboxed: bool = True, timeout: float = 60) -> dict[str, str | None]:
    """For each item: None when the submission's answer matches the reference on
    fresh random inputs, else what went wrong."""
    cells, uid = notebook_code(release, submitted), uid or sandbox.own_uid()
    forbidden, items = forbidden_ops(release), probes(assignment)
    rng = np.random.default_rng(secrets.randbits(64))
    verdicts, ids, by_forbidden = dict.fromkeys(items), itertools.count(), {}
    for item in items:
        by_forbidden.setdefault(forbidden.get(item, frozenset()), []).append(item)
    for names, group in by_forbidden.items():  # a worker for each set of forbidden ops
        worker = None
        try:
            for item in group:
                for probe in items[item]:
                    k, inputs = next(ids), probe.inputs(rng)
                    wanted = expected(assignment, probe, inputs)
                    try:
                        worker = worker or Worker(cells, names, uid=uid, sandboxed=sandboxed,
                                                  timeout=timeout)
                        verdicts[item] = compare(worker.run(k, probe, inputs), wanted, probe)
                    except ProbeError as error:
                        verdicts[item] = str(error)
                    except (WorkerError, ValueError) as error:  # ValueError: bad JSON or .npy
                        verdicts[item] = str(error)
                        if worker:
                            worker.close()
                        worker = None
                    if verdicts[item]:
                        break
        finally:
            if worker:
                worker.close()
    return verdicts
