"""The book builds with `make book`, every chapter executed, and shows no secrets."""
import html as html_module
import re
import subprocess
from pathlib import Path

import pytest

from tests.test_autograder import solution_lines

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.xdist_group("book")


def make_book(src: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "book", f"BOOK_SRC={src}", f"BOOK_OUT={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    result = make_book(ROOT, out)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return out / "_build" / "html"


def test_chapters_and_exercise_pages_are_built(html):
    for page in ["book/intro.html", "book/norms.html", "exercises/norms.html",
                 "book/resnet.html", "exercises/resnet.html", "book/atrous.html",
                 "exercises/atrous.html", "book/roi.html", "exercises/roi.html",
                 "book/references.html"]:
        assert (html / page).is_file(), page


def test_norms_chapter_ran_its_experiments(html):
    page = (html / "book/norms.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 3, "figures drawn by code are missing"
    assert "Traceback" not in page, "a cell printed a traceback"
    text = visible_text(page)
    assert "BN test error (%)" in text and "GN test error (%)" in text, "experiment 1 did not print"
    assert "running_var" in text and "eval var" in text, "experiment 2 did not print its table"
    assert 'href="../exercises/norms.html"' in page
    for term in ["批归一化", "层归一化", "实例归一化", "组归一化", "方差偏移"]:
        assert term in page


def test_resnet_chapter_reproduces_the_degradation_problem(html):
    page = (html / "book/resnet.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 3, "figures drawn by code are missing"
    assert "Traceback" not in page, "a cell printed a traceback"
    text = visible_text(page)
    for count in ["11,689,512", "21,797,672", "25,557,032"]:
        assert count in text, f"the cost table lacks {count}"
    rows = {int(layers): (float(plain), float(residual)) for layers, plain, residual in re.findall(
        r"^\s*(\d+)\s+([\d.]+)\s+[\d.]+%\s+([\d.]+)\s+[\d.]+%$", text, re.M)}
    assert set(rows) == {20, 32, 56}, "the experiment's table is missing"
    assert rows[56][0] > rows[20][0], "the prose claims the deep plain net trains worse"
    assert rows[56][1] < rows[56][0], "the prose claims the residual twin trains better"
    assert 'href="../exercises/resnet.html"' in page
    for term in ["残差网络", "残差块", "退化问题", "瓶颈结构"]:
        assert term in page


def test_atrous_chapter_ran_its_experiments(html):
    page = (html / "book/atrous.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 4, "figures drawn by code are missing"
    assert "Traceback" not in page, "a cell printed a traceback"
    text = visible_text(page)
    assert "15,535,104" in text, "the ASPP parameter count is missing"
    rows = {name: [float(v) for v in (error + values).split()] for name, error, values in re.findall(
        r"^(bilinear|DUC)\s+([\d.]+)%((?:\s+[\d.]+){3})$", text, re.M)}
    assert set(rows) == {"bilinear", "DUC"}, "the DUC experiment's table is missing"
    duc, bilinear = rows["DUC"], rows["bilinear"]
    assert duc[0] < bilinear[0] and all(d > b for d, b in zip(duc[1:], bilinear[1:])), \
        "the prose claims DUC has the lower pixel error and a higher IoU for every class"
    assert 'href="../exercises/atrous.html"' in page
    for term in ["空洞卷积", "感受野", "网格效应", "空洞空间金字塔池化", "深度可分离卷积"]:
        assert term in page


def test_roi_chapter_measures_the_misalignment(html):
    page = (html / "book/roi.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 4, "figures drawn by code are missing"
    assert "Traceback" not in page, "a cell printed a traceback"
    text = visible_text(page)
    ious = {int(size): (float(a), float(b)) for size, a, b in re.findall(
        r"^\s*(16|32|64|128|256)\s+(0\.\d\d)\s+(0\.\d\d)$", text, re.M)}
    assert sorted(ious) == [16, 32, 64, 128, 256], "the IoU table is missing"
    assert max(ious[32]) < 0.5 and min(ious[256]) > 0.85, \
        "the prose claims RoI Pool's region has IoU < 0.5 at 32 px and > 0.85 at 256 px"
    errors = {}
    for model, size, pool, unaligned, aligned in re.findall(
            r"^(16j\+8|16j)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", text, re.M):
        errors.setdefault(model, {})[int(size)] = (float(pool), float(unaligned), float(aligned))
    assert set(errors) == {"16j+8", "16j"} and all(len(rows) == 5 for rows in errors.values()), \
        "the error table is missing"
    for model, matching in [("16j+8", 2), ("16j", 1)]:
        rows = [errors[model][size] for size in sorted(errors[model], reverse=True)]
        for op in range(3):
            column = [row[op] for row in rows]
            assert column == sorted(column), f"the prose claims every error grows as objects shrink ({model})"
        assert all(row[0] > row[matching] for row in rows), \
            f"the prose claims RoI Pool's error exceeds the matching RoI Align's at every size ({model})"
    shares = dict(re.findall(r"^(RoI Pool|RoI Align)\s+output unchanged by a 1-pixel shift in ([\d.]+)%",
                             text, re.M))
    assert 80 <= float(shares["RoI Pool"]) <= 95 and float(shares["RoI Align"]) == 0, \
        "the prose claims about seven in eight 1-pixel shifts leave RoI Pool unchanged, none RoI Align"
    assert 'href="../exercises/roi.html"' in page
    for term in ["感兴趣区域池化", "量化误差", "双线性插值", "不对齐"]:
        assert term in page


@pytest.mark.parametrize("assignment", ["norms", "resnet", "atrous", "roi"])
def test_exercise_page_is_the_student_version(html, assignment):
    page = (html / f"exercises/{assignment}.html").read_text()
    assert "NotImplementedError" in page
    assert "run_graded" in page


def visible_text(page: str) -> str:
    return html_module.unescape(re.sub(r"<[^>]+>", "", page))


def test_built_html_holds_no_solution_or_hidden_test(html):
    assert not (html / "_sources").exists(), "html_copy_source must stay off"
    lines = [line for module in sorted((ROOT / "solutions").glob("*.py"))
             for line in solution_lines(module)]
    for path in html.rglob("*"):
        if path.suffix not in {".html", ".txt", ".js", ".ipynb", ".md", ".py"}:
            continue
        text = path.read_text(errors="ignore")
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text, path
        if path.suffix == ".html":
            shown = visible_text(text)
            leaked = [line for line in lines if line in shown]
            assert not leaked, f"{path}: {leaked[:3]}"


def test_a_failing_cell_fails_the_build(tmp_path):
    (tmp_path / "_config.yml").write_text("title: t\nexecute:\n  execute_notebooks: force\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    (tmp_path / "page.md").write_text(
        "---\njupytext:\n  text_representation:\n    format_name: myst\n"
        "kernelspec:\n  name: python3\n  display_name: Python 3\n---\n"
        "# Page\n\n```{code-cell}\nraise ValueError('boom')\n```\n")
    result = make_book(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "boom" in (tmp_path / "_build/html/reports/page.err.log").read_text()
