"""The chapter registry (autograder/chapters.py): one place per chapter, and nothing
else naming it."""
import json
import re
import subprocess
import sys
from pathlib import Path

from autograder import chapters, course
from tests.helpers import CHAPTERS, ROOT, python

# Files that list every chapter by design: the book's table of contents, and the back
# matter every chapter adds its entries to.
SHARED = {"_toc.yml", "book/references.bib", "book/glossary.md"}


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    return [name for name in listed if name and (ROOT / name).is_file()]


def test_no_file_outside_a_chapter_names_it():
    """Adding or removing a chapter touches its own files and SHARED only: elsewhere a
    chapter's name as a quoted string is a hard-coded chapter list."""
    named, own = {}, {chapter.name: {str(p.relative_to(ROOT)) for p in chapter.files.values()}
                      for chapter in CHAPTERS}
    for name in tracked_files():
        path = ROOT / name
        if name in SHARED or path.suffix not in {".py", ".md", ".yml", ".sh", ".j2", ""}:
            continue
        text = path.read_text(errors="ignore")
        for chapter in CHAPTERS:
            if name not in own[chapter.name] and re.search(rf"[\"']{chapter.name}[\"']", text):
                named.setdefault(chapter.name, []).append(name)
    assert not named, f"files outside a chapter's own that name it: {named}"


def test_every_chapter_has_every_piece():
    assert chapters.problems() == []


def test_a_missing_piece_is_named_and_stops_the_check(monkeypatch):
    absent = chapters.Chapter("absent", "Absent")
    monkeypatch.setattr(chapters, "CHAPTERS", CHAPTERS + [absent])
    problems = course.check()  # returns before building anything
    assert problems == [f"chapter absent: its {what} {path.relative_to(ROOT)} is missing"
                        for what, path in absent.files.items()]


def test_a_template_without_a_chapter_is_named(monkeypatch):
    orphan = CHAPTERS[-1]
    monkeypatch.setattr(chapters, "CHAPTERS", CHAPTERS[:-1])
    monkeypatch.setattr(chapters, "NAMES", [c.name for c in CHAPTERS[:-1]])
    assert chapters.problems() == [
        f"autograder/templates/{orphan.name}.md has no chapter in _toc.yml "
        f"(a page book/{orphan.name} with the section exercises/{orphan.name})"]


def test_make_runs_every_page_with_code_longest_budget_first():
    listed = subprocess.run([sys.executable, "-m", "autograder.chapters", "pages"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    assert "autograder.chapters pages" in (ROOT / "Makefile").read_text()
    assert {str(chapter.page) for chapter in CHAPTERS} <= set(listed), \
        "a chapter's page is not run before the build"
    budgets = [chapters.stated_budget(Path(page)) or 0 for page in listed]
    assert budgets == sorted(budgets, reverse=True)


def test_reference_files_are_what_importing_the_reference_loads():
    """The re-grade hash covers a chapter's reference_files: exactly the course's modules
    that importing its reference loads."""
    # one fresh interpreter, the course's modules forgotten before each reference is imported
    show = ("import importlib, json, sys\n"
            "ours = lambda: [n for n in sys.modules if n.startswith('solutions.')]\n"
            "loaded = {}\n"
            "for name in sys.argv[1:]:\n"
            "    for n in ours(): del sys.modules[n]\n"
            "    importlib.import_module(name)\n"
            "    loaded[name] = [sys.modules[n].__file__ for n in ours()]\n"
            "print(json.dumps(loaded))")
    loaded = json.loads(python(show, *(c.reference for c in CHAPTERS)))
    for chapter in CHAPTERS:
        assert sorted(map(Path, loaded[chapter.reference])) == chapter.reference_files, chapter.name
