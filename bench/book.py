"""Time a clean build of the book and a cached rebuild after one page changed.

    PYTHONPATH=. python bench/book.py            # the whole book, as `make book` builds it
    PYTHONPATH=. python bench/book.py --quick    # a one-cell page alone (smoke test)
    PYTHONPATH=. python bench/book.py --cells    # each chapter's slowest cells, for its stated CPU budget

The book's sources are copied to a temporary folder and built there with
`make book` (execution cache and all), so the repository's own _build is not
touched. The clean build starts with no _build at all; then one sentence is
appended to a chapter's prose and the book is rebuilt, which must re-render that
page without running any notebook again. Targets on a 2-core machine: clean
under 3 minutes, rebuild under 30 seconds. The ratio is rebuild / clean, from
this one run.

``--cells`` runs each chapter in a fresh kernel with nbclient instead and
prints its total time and every cell over 3 s: the numbers behind each
chapter's statement of what its experiments cost.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from autograder.chapters import CHAPTERS, ROOT

SOURCES = ["_config.yml", "_toc.yml", "book", "exercises"]
QUICK_PAGE = """---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  name: python3
  display_name: Python 3
---
# One cell

Running this page's code takes about 1 s.

```{code-cell} ipython3
sum(range(10))
```
"""
TARGETS = {"clean build": 180.0, "cached rebuild, one page changed": 30.0}


def build(src: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(["make", "-s", "book", f"BOOK_SRC={src}", f"BOOK_OUT={src}"],
                            cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"the build failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return seconds


def cell_times(chapter: Path) -> list[tuple[float, str]]:
    """(seconds, first line) of every code cell of ``chapter``, run top to bottom."""
    import jupytext
    from nbclient import NotebookClient
    notebook = jupytext.read(chapter)
    NotebookClient(notebook, timeout=900, record_timing=True,
                   resources={"metadata": {"path": str(chapter.parent)}}).execute()
    times = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            run = cell.metadata["execution"]
            start, end = (datetime.fromisoformat(run[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            times.append(((end - start).total_seconds(), cell.source.strip().split("\n")[0]))
    return times


def print_cell_times() -> None:
    os.environ["PYTHONPATH"] = str(ROOT)
    for chapter in CHAPTERS:
        times = cell_times(chapter.page)
        total = sum(t for t, _ in times)
        budget = f" (states {chapter.budget} s: {total / chapter.budget:.2f} of it)" if chapter.budget else ""
        print(f"{chapter.name}: {total:.1f} s in {len(times)} cells{budget}")
        for seconds, line in times:
            if seconds > 3:
                print(f"  {seconds:6.1f} s  {line[:70]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a one-cell page alone")
    parser.add_argument("--cells", action="store_true", help="time each chapter's cells")
    args = parser.parse_args()
    if args.cells:
        return print_cell_times()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        for name in SOURCES:
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile)(ROOT / name, src / name)
        page = src / CHAPTERS[0].page.relative_to(ROOT)
        if args.quick:
            for chapter in (src / "book").glob("*.md"):
                chapter.unlink()
            page = src / "book" / "quick.md"
            page.write_text(QUICK_PAGE)
            (src / "_toc.yml").write_text("format: jb-book\nroot: book/quick\n")
        print(f"building {'a one-cell page' if args.quick else 'the book'} on "
              f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.2f})")
        clean = build(src)
        with open(page, "a") as handle:
            handle.write("\nOne more sentence, to change the page.\n")
        rebuild = build(src)
    print(f"{'build':<36} {'seconds':>8} {'target':>8}")
    for name, seconds in zip(TARGETS, (clean, rebuild)):
        print(f"{name:<36} {seconds:8.1f} {TARGETS[name]:8.0f}")
    print(f"rebuild / clean: {rebuild / clean:.3f}")


if __name__ == "__main__":
    main()
