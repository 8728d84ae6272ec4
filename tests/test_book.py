"""The book builds with `make book`, every chapter executed, and shows no secrets."""
import html as html_module
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from solutions import norms, resnet
from tests.conftest import make_book  # the `html` fixture (the built book) is in conftest too
from tests.test_autograder import solution_lines

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.xdist_group("book")


def test_chapters_and_exercise_pages_are_built(html):
    for page in ["book/intro.html", "book/norms.html", "exercises/norms.html",
                 "book/resnet.html", "exercises/resnet.html", "book/atrous.html",
                 "exercises/atrous.html", "book/deformable.html", "exercises/deformable.html",
                 "book/roi.html", "exercises/roi.html", "book/gan.html", "exercises/gan.html",
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
    assert "residual: final loss falls with depth" in text, \
        "the prose claims the deeper residual nets reach the lower training loss (paper's Figure 6, middle)"
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


def test_deformable_chapter_ran_its_experiments(html):
    page = (html / "book/deformable.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 4, "figures drawn by code are missing"
    assert "Traceback" not in page, "a cell printed a traceback"
    text = visible_text(page)
    runs = {name: [float(v) for v in values] for name, *values in re.findall(
        r"^(plain|plain, width \d+|deformable)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$",
        text, re.M)}
    assert len(runs) == 3 and "deformable" in runs, "the accuracy table is missing"
    deformable = runs.pop("deformable")
    plain, wide = runs.pop("plain"), runs.popitem()[1]
    assert min(deformable[:3]) > max(plain[:3] + wide[:3]), \
        "the prose claims every deformable run beats every plain run"
    assert deformable[3] - max(plain[3], wide[3]) >= 3, "the prose claims a gap of several points"
    assert 0 < wide[3] - plain[3] < deformable[3] - wide[3], \
        "the prose claims width helps the plain net, but much less than deformable layers"
    assert deformable[4] / plain[4] >= 2, "the prose claims the deformable net costs several times as long"
    ink = {name: (float(a), float(b)) for name, a, b in re.findall(
        r"^(regular grid|learned, image average|learned, per image)\s+([\d.]+)\s+([\d.]+)$", text, re.M)}
    assert len(ink) == 3, "the sampling-pattern table is missing"
    regular, average, per_image = ink["regular grid"], ink["learned, image average"], ink["learned, per image"]
    assert 1.5 <= per_image[0] / regular[0] <= 2.5, "the prose claims about twice the ink of the grid"
    assert abs(average[0] - per_image[0]) <= 0.15 * per_image[0], \
        "the prose claims the image-averaged pattern reads about as much ink"
    assert per_image[1] - average[1] >= 15 and regular[1] <= 20, \
        "the prose claims the net needs its per-image offsets, and fails on the regular grid"
    spread = {name: [float(v) for v in values] for name, *values in re.findall(
        r"^(smallest third|largest third)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", text, re.M)}
    assert len(spread) == 2, "the spread table is missing"
    small, large = spread["smallest third"], spread["largest third"]
    scale = large[0] / small[0]
    assert 1.3 <= scale <= 1.5 and abs(large[1] / small[1] - 1) < (scale - 1) / 2, \
        "the prose claims digits 1.4 times larger get nearly the same spread"
    assert min(small[1], large[1]) > 1.3 * small[2], "the prose claims a much wider spread than the grid"
    assert 'href="../exercises/deformable.html"' in page
    for term in ["可变形卷积", "偏移", "双线性插值", "调制"]:
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


def test_gan_chapter_trained_its_dcgan(html):
    page = (html / "book/gan.html").read_text()
    assert len(re.findall(r"<img [^>]*src=", page)) >= 5, "figures drawn by code are missing"
    assert "Traceback" not in page, "a cell printed a traceback"
    text = visible_text(page)
    for count in ["3,576,704", "2,765,568"]:
        assert count in text, f"the DCGAN layer table lacks {count}"
    rows = {name: [float(v) for v in values] for name, *values in re.findall(
        r"^(real digits|DCGAN, epoch \d+|DCGAN|no BN in G|no BN in G or D|ReLU instead of LeakyReLU in D)"
        r"\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)$", text, re.M)}
    unseen = re.search(r"^real digits, not seen\s+([\d.]+)\s+([\d.]+)$", text, re.M)
    assert len(rows) == 6 and unseen, "the sample-quality tables are missing"
    final = next(values for name, values in rows.items() if name.startswith("DCGAN, epoch"))
    real, short, relu = rows["real digits"], rows["DCGAN"], rows["ReLU instead of LeakyReLU in D"]
    collapsed, partial = rows["no BN in G"], rows["no BN in G or D"]
    # columns: confidence, share >= 0.9, score, classes, diversity
    assert final[3] == 10 and 1 < final[2] < real[2], \
        "the prose claims the DCGAN draws all ten classes, with a score between 1 and the real digits'"
    assert final[0] < float(unseen[1]) and 0.3 <= final[1] <= 0.7, \
        "the prose claims a confidence below unseen real digits', and about half confident samples"
    assert collapsed[3] == 1 and collapsed[2] < 1.1 and collapsed[4] < 0.1, \
        "the prose claims G without BN collapses to one image"
    assert partial[3] < 10 and partial[2] < short[2] and 0.3 < partial[4] / real[4] < 0.7, \
        "the prose claims partial collapse without BN: few classes, a low score, about half the diversity"
    assert partial[0] >= short[0], "the prose claims those samples are not worse one at a time"
    assert relu[3] == 10 and abs(relu[2] - short[2]) < 1 and abs(relu[0] - short[0]) < 0.05, \
        "the prose claims ReLU in D makes little difference"
    assert 'href="../exercises/gan.html"' in page
    for term in ["生成对抗网络", "生成器", "判别器", "转置卷积", "模式崩溃"]:
        assert term in page


@pytest.mark.parametrize("assignment", ["norms", "resnet", "atrous", "deformable", "roi", "gan"])
def test_exercise_page_is_the_student_version(html, assignment):
    page = (html / f"exercises/{assignment}.html").read_text()
    assert "NotImplementedError" in page
    assert "run_graded" in page


def visible_text(page: str) -> str:
    return html_module.unescape(re.sub(r"<[^>]+>", "", page))


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


def test_resnet_chapter_cites_each_panel_of_figure_6_for_what_it_shows():
    text = prose("resnet")
    middle, right = sentences_with(text, r"Figure 6, middle"), sentences_with(text, r"Figure 6, right")
    assert middle and all("lower" in s for s in middle), \
        "Figure 6, middle (ResNet-20 to 110) is where deeper residual nets reach the lower training error"
    assert right and all("1202" in s and "overfitting" in s and "lower" not in s for s in right), \
        "Figure 6, right compares ResNet-110 with ResNet-1202: similar training error, worse test error"


def test_norms_chapter_lets_only_batchnorm_with_fixed_statistics_undo_itself():
    text = prose("norms")
    undo = sentences_with(text, r"undo itself")
    assert undo and all("BatchNorm" in s and "population statistics" in s for s in undo), \
        "only BatchNorm with fixed (population) statistics can undo itself (Ioffe and Szegedy, section 3)"
    assert sentences_with(text, r"LayerNorm, InstanceNorm and GroupNorm cannot undo"), \
        "the chapter should say that the per-sample norms cannot undo themselves"
    x = 2 + 3 * torch.randn(6, 4, 5, 5, dtype=torch.float64)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    undone = norms.batch_norm(x, mean, var, torch.sqrt(var + 1e-5), mean, training=False, eps=1e-5)
    torch.testing.assert_close(undone, x)
    # two inputs that differ by a per-sample scale and shift give one output: no later map can undo both
    other = x * torch.arange(1, 7, dtype=x.dtype).view(-1, 1, 1, 1) - 5
    for name, norm in [("LayerNorm", lambda t: norms.layer_norm(t, t.shape[1:], eps=0)),
                       ("InstanceNorm", lambda t: norms.instance_norm(t, eps=0)),
                       ("GroupNorm", lambda t: norms.group_norm(t, 2, eps=0))]:
        torch.testing.assert_close(norm(other), norm(x), msg=name)


def test_norms_chapter_credits_the_re_estimation_remedy_to_hendrycks_and_gimpel():
    entry = bib_entries()["hendrycks2016adjusting"]
    assert entry["author"] == "Hendrycks, Dan and Gimpel, Kevin" and "1607.02488" in entry["journal"]
    remedy = sentences_with(prose("norms"), r"re-estimating BatchNorm's statistics with Dropout")
    assert remedy and all("hendrycks2016adjusting" in s for s in remedy), \
        "re-estimating BN's statistics with Dropout off is Hendrycks and Gimpel's remedy: cite it"


def test_deformable_chapter_states_the_papers_layer_counts_and_learning_rates():
    text = prose("deformable")
    saturation = r"saturated at three deformable layers for DeepLab and at six for the detectors"
    assert sentences_with(text, saturation), \
        "DCN v1 (Table 1): gains saturate at 3 deformable layers for DeepLab, at 6 for the detectors"
    counts = r"(\d+) layers by the paper's count \(a standard ResNet-50 has (\d+) \$3 \\times 3\$ convolutions"
    stated = re.search(counts, text)
    assert stated and stated[1] == "12", "DCN v2 counts 12 deformable layers in conv3 to conv5"
    model = resnet.resnet50()
    convs = [m for stage in (model.layer2, model.layer3, model.layer4) for m in stage.modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert int(stated[2]) == len(convs), f"ResNet-50 has {len(convs)} 3x3 convolutions in conv3 to conv5"
    rate = sentences_with(text, r"0\.1 times the learning rate")
    assert rate and all("convolutional" in s for s in rate), "DCN v2's 0.1x rate is for the added conv layers"
    assert sentences_with(text, r"fully connected layers, and those keep the normal learning rate"), \
        "DCN v2 (section 3.2): the fc layers of modulated deformable RoI pooling keep the normal rate"
    warp = sentences_with(text, r"spatial transformer network")
    assert warp and any("affine, projective or a thin-plate spline" in s for s in warp) \
        and not any("one affine transformation" in s for s in warp), \
        "a spatial transformer predicts a parametric warp: affine, projective or thin-plate spline"


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


def test_each_chapter_states_its_cpu_budget():
    """Each chapter states what running it costs (`make book` runs the longest first by it).
    Whether a chapter keeps it is a measurement, not a test: `python bench/book.py --cells`
    prints each chapter's time against its statement; under the suite's load it means nothing."""
    for chapter in ["norms", "resnet", "atrous", "deformable", "roi", "gan"]:
        assert re.search(r"Running this page's code takes about (\d+) s",
                         (ROOT / "book" / f"{chapter}.md").read_text()), \
            f"book/{chapter}.md does not state its CPU budget"


def test_book_bench_quick_prints_a_ratio_of_its_own_times():
    result = subprocess.run([sys.executable, "bench/book.py", "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    clean, rebuild = (float(m) for m in re.findall(r"^(?:clean|cached).*?\s(\d+\.\d)\s+\d+$",
                                                   result.stdout, re.M))
    ratio = float(re.search(r"rebuild / clean: (\d+\.\d+)", result.stdout).group(1))
    assert ratio == pytest.approx(rebuild / clean, rel=0.05)  # the times print rounded
