"""What several test modules share: the chapters, submissions built from the released
notebooks, each chapter's classic mistakes, and small numeric helpers.

Nothing here names a chapter: a test that needs one picks it by the item it exercises
(``chapter_of("box_iou")``), or takes every chapter from ``autograder/chapters.py``.
"""
import html
import importlib
import json
import inspect
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from autograder import course, verify
from autograder.template import render
from autograder.worker import _flatten
from autograder.chapters import CHAPTERS, ROOT, Chapter, get  # noqa: F401  (re-exported)


def chapter_of(item: str) -> Chapter:
    """The one chapter that grades ``item``."""
    owners = [chapter for chapter in CHAPTERS if item in chapter.items]
    assert len(owners) == 1, f"{len(owners)} chapters grade {item!r}: this test needs exactly one"
    return owners[0]


def reference(chapter: str, item: str) -> str:
    """The reference source of ``item``, as the instructor notebook's answer cell holds it."""
    return inspect.getsource(getattr(importlib.import_module(f"solutions.{chapter}"), item))


def released(chapter: str):
    return get(chapter).exercise


@dataclass(frozen=True)
class Edit:
    """The reference answer with each ``old`` replaced by ``new`` (each must occur)."""
    pairs: tuple[tuple[str, str], ...]

    def apply(self, chapter: str, item: str) -> str:
        source = reference(chapter, item)
        for old, new in self.pairs:
            assert old in source, f"mistake out of date: {old!r} is not in the reference {item}"
            source = source.replace(old, new)
        return source


def edit(*old_new: str) -> Edit:
    """``edit(old, new, old2, new2, ...)``."""
    return Edit(tuple(zip(old_new[::2], old_new[1::2])))


@dataclass(frozen=True)
class Mistake:
    """A classic wrong answer, graded as a student of the fixture class.

    ``answers`` maps items to their answer cells (source, or an ``Edit`` of the
    reference); the other items are answered with the reference. The submission
    must lose exactly the points of ``loses``, the feedback must contain
    ``diagnosis``, and the CSV must flag exactly ``flagged`` (where the notebook's tests
    and the fresh-input check disagree, or an answer reaches into the interpreter)."""
    student: str
    answers: dict
    loses: frozenset
    diagnosis: str = ""
    flagged: frozenset = field(default_factory=frozenset)

    def __post_init__(self):
        object.__setattr__(self, "loses", frozenset(self.loses))
        object.__setattr__(self, "flagged", frozenset(self.flagged))


def mistakes(chapter: Chapter) -> list[Mistake]:
    """The chapter's classic mistakes (``MISTAKES`` in its tests/test_<m>.py), after the
    two every chapter has: the reference answers, and the untouched release."""
    own = importlib.import_module(f"tests.test_{chapter.name}").MISTAKES
    return [Mistake("reference", {}, set()), Mistake("untouched", None, set(chapter.items))] + own


def submission(chapter: str, answers: dict | None) -> nbformat.NotebookNode:
    """The released notebook answered with ``answers`` ({} means every answer the
    reference's; None leaves every stub)."""
    if answers is None:
        return course.answered(chapter, None)
    return course.answered(chapter, {item: a.apply(chapter, item) if isinstance(a, Edit) else a
                                     for item, a in answers.items()})


def points_per_item(chapter: str) -> dict[str, int]:
    """Each item's points as the released notebook's grade cells give them."""
    return {cell.metadata["nbgrader"]["grade_id"].removeprefix("test_"):
            cell.metadata["nbgrader"]["points"]
            for cell in nbformat.read(released(chapter), as_version=4).cells
            if cell.metadata.get("nbgrader", {}).get("grade")}


def total(chapter: str) -> float:
    return sum(points_per_item(chapter).values())


def flagged(status: str) -> set[str]:
    """The items a CSV status flags as disagreeing with verification."""
    return {part.split(" ")[0] for part in status.partition("; flagged: ")[2].split("; ") if part}


def hidden_lines(chapter: Chapter, grade_id: str | None = None) -> set[str]:
    """The lines of the chapter's hidden tests (of one grade cell if given) that its student
    notebook does not hold: what feedback must never show."""
    visible = released(chapter.name).read_text()
    lines = set()
    for cell in render(chapter.template).cells:
        if grade_id and cell.metadata["nbgrader"]["grade_id"] != grade_id:
            continue
        for block in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", cell.source, re.S):
            lines |= {line.strip() for line in block.splitlines()}
    return {line for line in lines if len(line) > 3 and json.dumps(line)[1:-1] not in visible}


# -- the book's sources and pages ----------------------------------------------

def solution_lines(module_path: Path) -> list[str]:
    """The distinctive lines of every BEGIN/END SOLUTION body in a reference module."""
    bodies = re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", module_path.read_text(), re.S)
    return [line.strip() for body in bodies for line in body.splitlines()
            if len(line.strip()) > 30]



def visible_text(page: str) -> str:
    """An HTML page's text, tags dropped and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def prose(chapter: str) -> str:
    """book/<chapter>.md with its line breaks and indentation collapsed to single spaces."""
    return " ".join((ROOT / "book" / f"{chapter}.md").read_text().split())


def sentences_with(text: str, pattern: str) -> list[str]:
    return [s for s in re.split(r"(?<=\.)\s+(?=[A-Z*(])", text) if re.search(pattern, s)]


def bib_entries() -> dict[str, dict[str, str]]:
    """book/references.bib as {key: {field: value}}, for its one-field-a-line layout."""
    entries = {}
    bib = (ROOT / "book/references.bib").read_text()
    for kind, key, body in re.findall(r"^@(\w+)\{([^,\s]+),\n(.*?)^\}", bib, re.M | re.S):
        fields = dict(re.findall(r"^\s*(\w+)\s*=\s*\{(.*)\},?\s*$", body, re.M))
        entries[key] = {"type": kind, **fields}
    return entries


# -- numbers -------------------------------------------------------------------

def rand(*shape, seed=0, dtype=torch.float64, low=None, high=None):
    """Standard normal values (uniform in [low, high) if given), drawn in float64 from
    ``seed`` and then cast, so a float32 tensor holds the float64 one's values rounded."""
    g = torch.Generator().manual_seed(seed)
    if low is None:
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    return (low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)).to(dtype)


def tol(dtype, float64=(1e-10, 1e-10), float32=(1e-5, 2e-5)):
    """``assert_close``'s ``rtol`` and ``atol`` for ``dtype``: a pair for each precision."""
    rtol, atol = float64 if dtype == torch.float64 else float32
    return dict(rtol=rtol, atol=atol)


def close(actual, expected, what="", tol=1e-10, rtol=None):
    """``assert_close`` with atol ``tol`` and rtol ``rtol`` (``tol`` if not given), naming ``what``."""
    torch.testing.assert_close(actual, expected, rtol=tol if rtol is None else rtol, atol=tol,
                               msg=lambda m: f"{what}: {m}")


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def random_rois(K, N, H, W, seed=0, dtype=torch.float64, quarter=False, scale=1.0):
    """(K, 5) rois for an N x H x W map seen at ``scale``: boxes of width and height in
    [-1, 9) (a few reversed, some under a pixel), corners from 3 pixels before the
    image to 2 past it. ``quarter``: coordinates on a 0.25 grid, so samples and
    rounded corners land exactly on pixel edges, -1, H and .5."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(K, 2, generator=g, dtype=torch.float64) * torch.tensor([W + 5.0, H + 5.0]) - 3
    wh = torch.rand(K, 2, generator=g, dtype=torch.float64) * 10 - 1
    boxes = torch.cat([xy, xy + wh], 1) / scale
    if quarter:
        boxes = (boxes * 4).round() / 4
    batch = torch.randint(0, N, (K, 1), generator=g).to(torch.float64)
    return torch.cat([batch, boxes], 1).to(dtype)


class OpRecorder(TorchDispatchMode):
    """Records every aten op dispatched while active (forward and backward): for tests of
    vectorisation and forbidden ops."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def python(script: str, *args: str) -> str:
    """Standard output of ``script`` run by a fresh interpreter of this venv in the repository
    (``args`` its sys.argv[1:]), failing the test with its standard error if it fails."""
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def printed_ratio(ratio: float, a_ms: float, b_ms: float) -> bool:
    """Whether a benchmark row's ``ratio`` is ``a_ms / b_ms`` as far as printing allows: times
    to 3 decimals (a ratio of sub-millisecond times moves with the last digit), the ratio to 3
    significant digits."""
    low = (a_ms - 5e-4) / (b_ms + 5e-4)
    high = (a_ms + 5e-4) / max(b_ms - 5e-4, 1e-9)
    return 0.99 * low <= ratio <= 1.01 * high


def quick_rows(script: str) -> tuple[dict, str]:
    """``({(row, pass): (ms_a, ms_b, ratio, rel_diff)}, stdout)`` of ``script --quick``:
    the benchmarks' smoke tests."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, script, "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {(name, mode): tuple(map(float, values)) for name, mode, *values in re.findall(
        r"^(\w+)\s+(fwd|fwd\+bwd)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", proc.stdout, re.M)}
    return rows, proc.stdout


# -- probes as the reference's unit tests ---------------------------------------

def probe_cases(chapter, seeds=(0, 1)):
    """pytest params ``(probe, seed)`` for every probe of every item of ``chapter``
    (autograder/probes/<chapter>.py), ids ``<item>-<probe index>-seed<seed>``."""
    return [pytest.param(probe, seed, id=f"{item}-{index}-seed{seed}")
            for item, item_probes in verify.probes(chapter).items()
            for index, probe in enumerate(item_probes) for seed in seeds]


def run_probe(probe, namespace, seed):
    """What ``probe``'s code sets ``result`` to, run in a copy of ``namespace`` on the inputs
    it draws with ``seed`` (arrays as tensors), as verification runs it: ``[(where, array)]``."""
    scope = dict(namespace)
    scope.update({k: torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v
                  for k, v in probe.inputs(np.random.default_rng(seed)).items()})
    exec(compile(probe.code, "<probe>", "exec"), scope)
    return _flatten(scope["result"])


def check_probe(probe, seed, reference, counterparts):
    """The reference module and the independent ``counterparts`` (names the probe's code
    reads) agree on ``probe`` within its tolerances."""
    expected = run_probe(probe, vars(reference), seed)
    actual = run_probe(probe, {"torch": torch, **counterparts}, seed)
    problem = verify.compare([array for _, array in actual], expected, probe)
    assert problem is None, problem
