"""Shared by the whole suite.

- One thread per test process: the tensors in these tests are tiny, `make test` runs two
  xdist workers on two cores, and more threads than cores made some tests ten times slower.
- The built book (`html`): one `make book` per test session, shared by test_book.py,
  test_browser.py and the chapters' page tests (all in xdist group "book", so in the same
  worker), sharing the checkout's execution cache with `make book`.
- No skips: a test skipped for any reason (a missing component, a `pytest.skip` left in) is
  reported as failed. A case that does not apply is not generated.
"""
import os
import subprocess
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

from autograder.chapters import ROOT

torch.set_num_threads(1)
threadpool_limits(1)  # scikit-learn's BLAS and OpenMP pools

BUILT_BOOK = "DLBB_BUILT_BOOK"


def make_book(src: Path, out: Path) -> subprocess.CompletedProcess:
    """`make book`, one chapter at a time: the suite's other tests use the second core, and
    two chapters beside them would stretch each past its stated CPU budget."""
    return subprocess.run(["make", "-s", "book", f"BOOK_SRC={src}", f"BOOK_OUT={out}", "BOOK_JOBS=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1500)


def shared_cache() -> Path:
    """The checkout's execution cache (`make book`'s), made if missing."""
    cache = ROOT / "_build" / ".jupyter_cache"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def html(tmp_path_factory):
    """The book built by `make book` into a temporary folder: its ``_build/html``.

    Rendered afresh once per test session (about a minute), so every warning of every page
    is seen; the pages' executed outputs come from the checkout's execution cache, which
    `make book` fills too: a page whose code and inputs did not change since either command
    last ran it is not run again (running them all takes minutes).

    To test a book built earlier instead, set ``DLBB_BUILT_BOOK`` to its ``_build/html``;
    nothing is built then. For example, to run the browser test alone against the book
    `make book` left in the checkout::

        DLBB_BUILT_BOOK=_build/html .venv/bin/python -m pytest tests/test_browser.py

    The tests then check that build, however stale it is.
    """
    if os.environ.get(BUILT_BOOK):
        built = Path(os.environ[BUILT_BOOK]).resolve()
        assert (built / "index.html").is_file(), f"{BUILT_BOOK}={built}: no built book there (no index.html)"
        return built
    out = tmp_path_factory.mktemp("book")
    (out / "_build").mkdir()
    (out / "_build" / ".jupyter_cache").symlink_to(shared_cache())
    result = make_book(ROOT, out)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return out / "_build" / "html"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped ({reason}), and this suite allows no skips: install what is " \
                          f"missing (`make test` as root does) or stop generating the case"


def pytest_terminal_summary(terminalreporter):
    """Say where test_browser.py saved its screenshots (its report carries the folder, so
    this works under xdist too)."""
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        for name, value in getattr(report, "user_properties", ()):
            if name == "screenshots":
                terminalreporter.write_line(f"Screenshots of the built book: {value}")
                return
