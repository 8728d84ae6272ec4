"""The course's chapters: the one list, read from ``_toc.yml`` and each chapter's own files.

A chapter ``<m>`` is its ``_toc.yml`` entry (a page ``book/<m>`` whose section is the
exercise ``exercises/<m>``) and these files, which nothing else names:

    solutions/<m>.py              the reference module
    autograder/templates/<m>.md   the exercise source: its ``#| tests <item> points=<n>``
                                  cells are the graded items
    autograder/probes/<m>.py      the fresh-input checks of each item
    book/<m>.md                   the page, which states "Running this page's code takes
                                  about <N> s": its CPU budget
    tests/test_<m>.py             the reference's own tests and the classic mistakes
    exercises/<m>.ipynb           the student notebook (generated)

The Makefile, the grader, the tests and the benchmarks take the chapters from here.
``python -m autograder.chapters pages [BOOK_ROOT]`` prints the book's pages that run code,
longest stated budget first (the Makefile's pre-run); ``problems()`` names every missing
piece (``python -m autograder check``).
"""
import ast
import re
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUDGET = re.compile(r"Running this page's code takes about (\d+) s")
ITEM = re.compile(r"^#\| tests (\w+) points=(\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class Chapter:
    name: str
    title: str

    def __str__(self) -> str:
        return self.name

    @property
    def files(self) -> dict[str, Path]:
        """Each piece of the chapter, by what it is."""
        m = self.name
        return {"reference module": ROOT / "solutions" / f"{m}.py",
                "exercise source": ROOT / "autograder" / "templates" / f"{m}.md",
                "probes": ROOT / "autograder" / "probes" / f"{m}.py",
                "book page": ROOT / "book" / f"{m}.md",
                "unit tests": ROOT / "tests" / f"test_{m}.py",
                "student notebook": ROOT / "exercises" / f"{m}.ipynb"}

    @property
    def page(self) -> Path:
        return self.files["book page"]

    @property
    def template(self) -> Path:
        return self.files["exercise source"]

    @property
    def exercise(self) -> Path:
        return self.files["student notebook"]

    @property
    def reference(self) -> str:
        """The reference module's import name."""
        return f"solutions.{self.name}"

    @property
    def reference_files(self) -> list[Path]:
        """The reference module and every module of ``solutions`` it imports, directly or not:
        what the reference computes depends on exactly these."""
        found, todo = [], [self.files["reference module"]]
        while todo:
            path = todo.pop()
            if path in found or not path.is_file():
                continue
            found.append(path)
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.level == 1 or node.module
                                                         and node.module.startswith("solutions")):
                    module = (node.module or "").removeprefix("solutions").lstrip(".")
                    names = [module] if module else [alias.name for alias in node.names]
                    todo += [ROOT / "solutions" / f"{name}.py" for name in names]
        return sorted(found)

    @cached_property
    def items(self) -> dict[str, int]:
        """Each graded item's points, in the exercise's order."""
        return {item: int(points) for item, points in ITEM.findall(self.template.read_text())}

    @cached_property
    def trains(self) -> bool:
        """Whether the exercise's tests or probes step a ``torch.optim`` optimizer."""
        return any("torch.optim" in self.files[piece].read_text() for piece in ("exercise source", "probes"))

    @property
    def points(self) -> int:
        return sum(self.items.values())

    @cached_property
    def budget(self) -> int | None:
        return stated_budget(self.page)


def stated_budget(page: Path) -> int | None:
    """Seconds the page says its code takes on 2 cores (None if it does not say)."""
    match = BUDGET.search(page.read_text()) if page.is_file() else None
    return int(match[1]) if match else None


def _toc_entries(toc: dict) -> list[tuple[str, dict]]:
    """(part caption, entry) of every chapter entry of a parsed ``_toc.yml``."""
    return [(part.get("caption", ""), entry) for part in toc.get("parts", [])
            for entry in part.get("chapters", [])]


def _read_toc(root: Path) -> dict:
    return yaml.safe_load((root / "_toc.yml").read_text())


def _toc_chapters() -> list[Chapter]:
    chapters = []
    for caption, entry in _toc_entries(_read_toc(ROOT)):
        exercises = [s["file"] for s in entry.get("sections", []) if s["file"].startswith("exercises/")]
        if exercises:
            chapters.append(Chapter(Path(exercises[0]).name, caption))
    return chapters


def pages_with_code(root: Path = ROOT) -> list[Path]:
    """The book's MyST pages that run code, the longest budget they state first."""
    toc = _read_toc(root)
    files = [toc["root"]]
    for _, entry in _toc_entries(toc):
        files += [entry["file"]] + [s["file"] for s in entry.get("sections", [])]
    pages = [root / f"{f}.md" for f in files if (root / f"{f}.md").is_file()]
    pages = [page for page in pages if "```{code-cell}" in page.read_text()]
    return sorted(pages, key=lambda page: -(stated_budget(page) or 0))


CHAPTERS: list[Chapter] = _toc_chapters()
NAMES: list[str] = [chapter.name for chapter in CHAPTERS]


def get(name: str) -> Chapter:
    return CHAPTERS[NAMES.index(name)]


def problems() -> list[str]:
    """Every piece a chapter lacks, and every exercise source no chapter lists."""
    found = []
    for chapter in CHAPTERS:
        for what, path in chapter.files.items():
            if not path.is_file():
                found.append(f"chapter {chapter.name}: its {what} {path.relative_to(ROOT)} is missing")
        if chapter.template.is_file() and not chapter.items:
            found.append(f"chapter {chapter.name}: {chapter.template.relative_to(ROOT)} has no "
                         "graded item (a code cell opening with '#| tests <item> points=<n>')")
        if chapter.page.is_file() and chapter.budget is None:
            found.append(f"chapter {chapter.name}: {chapter.page.relative_to(ROOT)} does not state "
                         "its CPU budget (\"Running this page's code takes about <N> s\")")
    for template in sorted((ROOT / "autograder" / "templates").glob("*.md")):
        if template.stem not in NAMES:
            found.append(f"{template.relative_to(ROOT)} has no chapter in _toc.yml "
                         f"(a page book/{template.stem} with the section exercises/{template.stem})")
    return found


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[1] != "pages":
        sys.exit("usage: python -m autograder.chapters pages [BOOK_ROOT]")
    print("\n".join(str(page) for page in pages_with_code(Path(sys.argv[2] if sys.argv[2:] else ROOT))))
