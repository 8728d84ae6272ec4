"""The book builds with `make book`, every chapter executed, and shows no secrets.

What a chapter's page must show (its experiments, its terms) is tested in the chapter's
own tests/test_<chapter>.py; here, what every page must have."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import make_book  # the `html` fixture (the built book) is in conftest too
from tests.helpers import CHAPTERS, ROOT, bib_entries, solution_lines, visible_text

pytestmark = pytest.mark.xdist_group("book")


def test_make_book_runs_no_page_the_suite_ran(html):
    """The suite renders its book from the checkout's execution cache, `make book`'s own:
    after either command, the other runs no page again."""
    result = subprocess.run(["make", "-s", "book-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "succeeded:\n- " not in result.stdout, f"make book ran pages again:\n{result.stdout}"


def test_front_and_back_matter_are_built(html):
    for page in ["book/intro.html", "book/notation.html", "book/glossary.html", "book/references.html",
                 "book/build-report.html"]:
        assert (html / page).is_file(), page


@pytest.mark.parametrize("chapter", CHAPTERS, ids=str)
def test_chapter_page_ran_and_links_its_exercise(html, chapter):
    page = (html / f"book/{chapter.name}.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 3, "figures drawn by code are missing"
    assert "Traceback" not in page, "a cell printed a traceback"
    assert f'href="../exercises/{chapter.name}.html"' in page, "the page does not link its exercise"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=str)
def test_exercise_page_is_the_student_version(html, chapter):
    page = (html / f"exercises/{chapter.name}.html").read_text()
    assert "NotImplementedError" in page
    assert "run_graded" in page


def test_built_html_holds_no_solution_or_hidden_test(html):
    lines = [line for module in sorted((ROOT / "solutions").glob("*.py"))
             for line in solution_lines(module)]
    for path in html.rglob("*"):
        if path.suffix not in {".html", ".txt", ".js", ".ipynb", ".md", ".py"}:
            continue
        text = path.read_text(errors="ignore")
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text, path
        if path.suffix in {".html", ".md", ".ipynb"}:  # pages and their downloadable sources
            shown = visible_text(text) if path.suffix == ".html" else text
            leaked = [line for line in lines if line in shown]
            assert not leaked, f"{path}: {leaked[:3]}"


def test_bibliography_pages_and_venues_are_consistent():
    entries = bib_entries()
    for key, cvf_pages in [("he2017mask", "2961--2969"), ("lin2017feature", "2117--2125"),
                           ("yu2017dilated", "472--480")]:
        assert entries[key].get("pages") == cvf_pages, f"{key}: the CVF open-access pages are {cvf_pages}"
        assert not entries[key].get("doi", "").startswith("10.1109/"), \
            f"{key}: an IEEE DOI with CVF pages (IEEE Xplore numbers its pages differently)"
    assert entries["holschneider1989real"].get("pages") == "286--297", \
        "Holschneider et al. (1989) span pages 286-297 of the Springer volume"
    for key, entry in entries.items():
        in_a_volume = entry["type"] in {"inproceedings", "incollection"}
        if in_a_volume and "Learning Representations" not in entry["booktitle"]:  # ICLR papers have no pages
            assert "pages" in entry, f"{key} has no pages"
        if "Neural Information Processing Systems" in entry.get("booktitle", ""):
            venue = "(NIPS)" if int(entry["year"]) <= 2017 else "(NeurIPS)"
            assert entry["booktitle"].endswith(venue), f"{key}: {entry['year']}'s proceedings are {venue}"


def test_glossary_gives_pixel_shuffle_its_own_chinese_term():
    entry = re.search(r"^pixel shuffle\n  \*\*(.+?)\*\*", (ROOT / "book/glossary.md").read_text(), re.M)
    assert entry and entry[1] == "像素重排", \
        "亚像素卷积 names the convolution-plus-shuffle layer (ESPCN), not the shuffle"


def test_a_failing_cell_fails_the_build(tmp_path):
    """The chapter fails where `make book` runs it into the cache, and again in the build."""
    (tmp_path / "_config.yml").write_text(
        "title: t\nexecute:\n  execute_notebooks: cache\n  timeout: 60\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/page\n")
    (tmp_path / "book").mkdir()
    (tmp_path / "book/page.md").write_text(
        "---\njupytext:\n  text_representation:\n    format_name: myst\n"
        "kernelspec:\n  name: python3\n  display_name: Python 3\n---\n"
        "# Page\n\nRunning this page's code takes about 1 s.\n\n"
        "```{code-cell}\nraise ValueError('boom')\n```\n")
    result = make_book(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "excepted:\n- " in result.stdout, "make book did not run the page before the build"
    assert "boom" in (tmp_path / "_build/html/reports/book/page.err.log").read_text()


def test_cached_outputs_go_when_what_the_pages_import_changes(tmp_path):
    """The execution cache is keyed on each page's code; `make book` also drops it when the
    reference modules (BOOK_INPUTS, solutions/*.py by default) or the pinned packages change."""
    (tmp_path / "_config.yml").write_text("title: t\nexecute:\n  execute_notebooks: cache\n  timeout: 60\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/page\n")
    (tmp_path / "book").mkdir()
    (tmp_path / "book/page.md").write_text(
        "---\njupytext:\n  text_representation:\n    format_name: myst\n"
        "kernelspec:\n  name: python3\n  display_name: Python 3\n---\n"
        "# Page\n\n```{code-cell}\nprint(42)\n```\n")
    dep = tmp_path / "dep.py"

    def executed(source):
        dep.write_text(source)
        result = subprocess.run(["make", "-s", "book-cache", f"BOOK_SRC={tmp_path}", f"BOOK_OUT={tmp_path}",
                                 f"BOOK_INPUTS={dep}", "BOOK_JOBS=1"], cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return "succeeded:\n- " in result.stdout

    assert executed("x = 1")
    assert not executed("x = 1"), "an unchanged page ran again"
    assert executed("x = 2"), "the page kept outputs computed with the old module"


def test_book_bench_quick_prints_a_ratio_of_its_own_times():
    result = subprocess.run([sys.executable, "bench/book.py", "--quick"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    clean, rebuild = (float(m) for m in re.findall(r"^(?:clean|cached).*?\s(\d+\.\d)\s+\d+$",
                                                   result.stdout, re.M))
    ratio = float(re.search(r"rebuild / clean: (\d+\.\d+)", result.stdout).group(1))
    assert ratio == pytest.approx(rebuild / clean, rel=0.05)  # the times print rounded
