"""The built book in a real browser (Debian's headless Chromium), as a reader sees it.

The book is served from ``_build/html`` by a local web server (not file://), and every page
in _toc.yml is opened once: it loads with no console error, MathJax rendered its maths,
every image loaded, every same-site link (and #anchor) resolves, and no solution or hidden
test shows. Search finds a chapter, and each exercise page's download button delivers the
student notebook. A full-page screenshot of every page goes to ``_build/screenshots``.

The browser reaches only 127.0.0.1: the book must read offline (MathJax ships with it), and
the result must not depend on the network of the machine running the tests.

Uses the book built once per session (the `html` fixture in conftest.py); to run it alone
against a book built earlier: ``DLBB_BUILT_BOOK=_build/html .venv/bin/python -m pytest
tests/test_browser.py``.
"""
import base64
import contextlib
import functools
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers import CHAPTERS, ROOT

pytestmark = pytest.mark.xdist_group("book")

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's chromium, chromium-driver
SOLUTION_MARKERS = ["### BEGIN SOLUTION", "### END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"]


def toc_pages() -> list[str]:
    """Every page of _toc.yml, in reading order: ["book/intro", "book/norms", "exercises/norms", ...]."""
    def files(entry):
        if isinstance(entry, dict):
            if "file" in entry:
                yield entry["file"]
            for key in ("parts", "chapters", "sections"):
                for child in entry.get(key, []):
                    yield from files(child)

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"], *files(toc)]


PAGES = toc_pages()
EXERCISES = [page for page in PAGES if page.startswith("exercises/")]


# ------------------------------------------------------------------ the server and the browser

@contextlib.contextmanager
def serve(directory: Path):
    """Serve ``directory`` at http://127.0.0.1:<free port>/ from a background thread.

    Like a reader's web server: files only, no directory listings (a link to a folder is
    broken unless the folder has an index.html)."""
    class Handler(SimpleHTTPRequestHandler):
        def list_directory(self, path):
            self.send_error(HTTPStatus.NOT_FOUND, "No directory listings")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def chromium() -> webdriver.Chrome:
    """Headless Chromium driven by the system chromedriver (so Selenium Manager never looks
    anything up), keeping the console log, with every host but 127.0.0.1 unresolvable."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,1400",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(20)
    return driver


@functools.cache
def fetch(url: str) -> tuple[int, bytes]:
    """(HTTP status, body) of ``url``, as a reader's browser would download it (asked once)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.anchors = set()

    def handle_starttag(self, tag, attrs):
        self.anchors.update(value for name, value in attrs if name == "id" or (tag == "a" and name == "name"))


@functools.cache
def anchors(url: str) -> frozenset[str]:
    """The ids (and <a name>s) a #fragment can point to in the page at ``url``."""
    parser = _Anchors()
    parser.feed(fetch(url)[1].decode(errors="replace"))
    return frozenset(parser.anchors)


# ------------------------------------------------------------------ opening a page

# Resolves once MathJax has typeset the page (MathJax.startup.promise), or says why not.
WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1], start = Date.now();
(function poll() {
  const startup = window.MathJax && window.MathJax.startup;
  if (startup && startup.promise) startup.promise.then(() => done(null), e => done('MathJax failed: ' + e));
  else if (Date.now() - start > 15000) done('MathJax did not start within 15 s');
  else setTimeout(poll, 50);
})();
"""

# Everything the checks need from the rendered page, in one round trip.
READ_PAGE = r"""
const raw = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let node; (node = walker.nextNode());) {
  if (node.parentElement.closest('pre, code, script, style, textarea, mjx-container')) continue;
  if (/\$\$|\\\(|\\\[|\\begin\{/.test(node.textContent)) raw.push(node.textContent.trim().slice(0, 100));
}
const math = [...document.querySelectorAll('.math')];
return {
  math: math.length,
  typeset: document.querySelectorAll('mjx-container').length,
  untypeset: math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.trim().slice(0, 100)),
  mathErrors: [...document.querySelectorAll('mjx-merror')]
              .map(e => e.getAttribute('data-mjx-error') || e.textContent),
  raw: raw,
  brokenImages: [...document.images].filter(img => !(img.complete && img.naturalWidth > 0))
                                   .map(img => img.getAttribute('src')),
  links: [...document.querySelectorAll('a[href]')].map(a => [a.getAttribute('href'), a.href]),
  downloads: [...document.querySelectorAll('.dropdown-download-buttons a')]
             .filter(a => a.textContent.trim().endsWith('.ipynb')).map(a => [a.getAttribute('href'), a.href]),
  text: document.body.innerText,
};
"""


@dataclass(repr=False)
class Page:
    name: str  # "book/norms"
    console_errors: list[str]
    mathjax: str | None  # None: MathJax finished (or the page has no maths); else what went wrong
    math: int  # .math elements Sphinx wrote for MathJax
    typeset: int  # mjx-container elements MathJax made
    untypeset: list[str]
    math_errors: list[str]
    raw: list[str]  # prose that still holds TeX delimiters
    broken_images: list[str]
    links: list[list[str]]  # [href as written, absolute URL]
    downloads: list[list[str]]
    text: str  # document.body.innerText
    screenshot: Path

    def __repr__(self):
        return f"<{self.name}.html>"


def open_page(driver, site: str, name: str, screenshots: Path) -> Page:
    # Every page is judged as a first visit (a reader may land on any page from a search engine).
    driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": site.rstrip("/"), "storageTypes": "all"})
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(f"{site}{name}.html")
    uses_mathjax = driver.execute_script(
        "return document.querySelector('.math, script[src*=\"mathjax\" i]') !== null")
    mathjax = driver.execute_async_script(WAIT_FOR_MATHJAX) if uses_mathjax else None
    seen = driver.execute_script(READ_PAGE)
    screenshot = screenshots / f"{name.replace('/', '-')}.png"
    full_page(driver, screenshot)
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
              # Chrome asks every server for /favicon.ico on its own; the page did not.
              and not entry["message"].startswith(f"{site}favicon.ico ")]
    return Page(name, errors, mathjax, seen["math"], seen["typeset"], seen["untypeset"],
                seen["mathErrors"], seen["raw"], seen["brokenImages"], seen["links"], seen["downloads"],
                seen["text"], screenshot)


def full_page(driver, path: Path):
    """A PNG of the whole page, 1100 px wide: the viewport is made as tall as the page."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1100, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def site(html):
    with serve(html) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    assert not missing, f"{' and '.join(missing)} missing: `make test` run as root installs them"
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(html):
    folder = html.parent / "screenshots"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def visit(browser, site, screenshots):
    """visit("book/norms") -> Page: each page is opened once, whichever tests ask for it.

    A page the server does not have fails every test that asks for it."""
    opened = functools.cache(lambda name: open_page(browser, site, name, screenshots))

    def visit(name: str) -> Page:
        status = fetch(f"{site}{name}.html")[0]
        assert status == 200, f"{name}.html: the server answers HTTP {status}: the page is not in the built book"
        return opened(name)

    return visit


# ------------------------------------------------------------------ every page

@pytest.mark.parametrize("name", PAGES)
def test_page_loads_without_console_errors(visit, name):
    errors = visit(name).console_errors
    assert not errors, f"{name}.html: the browser console shows errors:\n" + "\n".join(errors)


@pytest.mark.parametrize("name", PAGES)
def test_math_is_rendered_by_mathjax(visit, name):
    page = visit(name)
    assert page.mathjax is None, f"{name}.html: {page.mathjax}"
    if page.math:
        assert page.typeset, f"{name}.html: {page.math} formulas, but MathJax rendered none"
    assert not page.untypeset, f"{name}.html: MathJax left {len(page.untypeset)} formulas unrendered: " \
                               f"{page.untypeset[:5]}"
    assert not page.math_errors, f"{name}.html: MathJax could not typeset: {page.math_errors[:5]}"
    assert not page.raw, f"{name}.html: TeX left as raw text, not turned into maths: {page.raw[:5]}"


@pytest.mark.parametrize("name", PAGES)
def test_every_image_loaded(visit, name):
    broken = visit(name).broken_images
    assert not broken, f"{name}.html: images that did not load (src): {broken}"


@pytest.mark.parametrize("name", PAGES)
def test_every_internal_link_resolves(visit, site, name):
    page = visit(name)
    broken = []
    for href, url in page.links:
        if not url.startswith(site):
            continue  # another site, or mailto: and the like
        target, fragment = urldefrag(url)
        status = fetch(target)[0]
        if status != 200:
            broken.append(f'href="{href}": {target[len(site) - 1:]} answers HTTP {status}')
        elif fragment and unquote(fragment) not in anchors(target):
            broken.append(f'href="{href}": {urlsplit(target).path} has no id "{unquote(fragment)}"')
    assert not broken, f"{name}.html: {len(broken)} broken links:\n" + "\n".join(dict.fromkeys(broken))


REPOSITORY = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
# Where the book may send a reader: the papers' homes and Colab, plus the repository's host once
# `repository.url` in _config.yml names the published repository. A link elsewhere is an
# address someone made up, or a new host to review and add here.
LINK_HOSTS = {"arxiv.org", "doi.org", "proceedings.mlr.press", "jmlr.org", "distill.pub",
              "colab.research.google.com"} | ({urlsplit(REPOSITORY).hostname} if REPOSITORY else set())


@pytest.mark.parametrize("name", PAGES)
def test_every_external_link_goes_to_a_known_host(visit, site, name):
    foreign = sorted({url for _, url in visit(name).links
                      if urlsplit(url).scheme in ("http", "https") and not url.startswith(site)
                      and urlsplit(url).hostname not in LINK_HOSTS})
    assert not foreign, f"{name}.html links to hosts outside the allow-list: {foreign}"


@pytest.mark.parametrize("name", PAGES)
def test_colab_buttons_only_for_the_published_repository(visit, name):
    launches = [url for _, url in visit(name).links if url.startswith("https://colab.research.google.com/github/")]
    if not REPOSITORY:
        assert not launches, f"{name}.html: Colab buttons, but _config.yml names no repository: {launches}"
    else:
        assert launches or name not in EXERCISES, f"{name}.html: no Colab button for {REPOSITORY}"
        repository = urlsplit(REPOSITORY).path.strip("/")
        wrong = [url for url in launches if not url.startswith(f"https://colab.research.google.com/github/{repository}/")]
        assert not wrong, f"{name}.html: Colab buttons that do not open {REPOSITORY}: {wrong}"


@pytest.mark.parametrize("name", PAGES)
def test_no_solution_text_shows(visit, name):
    page = visit(name)
    shown = [line.strip() for line in page.text.splitlines() if any(m in line for m in SOLUTION_MARKERS)]
    assert not shown, f"{name}.html shows solution or hidden-test markers: {shown[:5]}"


def test_screenshots_of_every_page(visit, html, screenshots, record_property):
    built = [name for name in PAGES if (html / f"{name}.html").is_file()]  # the others fail above
    missing = [name for name in built if visit(name).screenshot.stat().st_size == 0]
    assert not missing, f"no screenshot of {missing}"
    record_property("screenshots", str(screenshots))  # conftest.py prints it after the run
    print(f"Screenshots of {len(built)} pages: {screenshots}")


def test_chinese_terms_render_as_glyphs(browser, site):
    """The glossary's Chinese names show as characters, not as the empty boxes of a missing font:
    two different characters drawn in the page's font must differ."""
    browser.get(f"{site}book/glossary.html")
    same = browser.execute_script("""
        const draw = (text) => {
          const canvas = document.createElement('canvas');
          canvas.width = canvas.height = 48;
          const context = canvas.getContext('2d');
          context.font = '40px ' + getComputedStyle(document.body).fontFamily;
          context.fillText(text, 2, 42);
          return canvas.toDataURL();
        };
        return draw('像') === draw('素');""")
    assert not same, "book/glossary.html: Chinese characters render as identical boxes: no CJK font " \
                     "(`make test` as root installs fonts-noto-cjk)"


# ------------------------------------------------------------------ search and downloads

@pytest.mark.parametrize("chapter", CHAPTERS, ids=str)
def test_search_finds_the_chapter(browser, site, chapter):
    """The first word of the chapter's title finds its page."""
    term, chapter = chapter.title.split()[0], f"book/{chapter.name}"
    browser.get(f"{site}search.html?q={term}")
    summary = WebDriverWait(browser, 20).until(lambda driver: driver.execute_script(
        "const s = document.querySelector('#search-results .search-summary');"
        "return s && /finished|did not match/i.test(s.textContent) && s.textContent.trim();"),
        f"search.html?q={term}: the search did not finish within 20 s")
    found = [urlsplit(href).path.lstrip("/") for href in browser.execute_script(
        "return [...document.querySelectorAll('#search-results ul.search li a')].map(a => a.href)")]
    assert f"{chapter}.html" in found, \
        f"search.html?q={term}: no result links to {chapter}.html ({summary!r}; results: {found})"


@pytest.mark.parametrize("name", EXERCISES)
def test_download_button_delivers_the_student_notebook(visit, name):
    page = visit(name)
    assert page.downloads, f"{name}.html: the download dropdown has no .ipynb link"
    href, url = page.downloads[0]
    link = f'{name}.html: the download button\'s .ipynb link (href="{href}")'
    status, delivered = fetch(url)
    assert status == 200, f"{link} answers HTTP {status}, not the notebook"
    notebook = (ROOT / f"{name}.ipynb").read_bytes()
    assert delivered == notebook, \
        f"{link} delivers {len(delivered)} bytes that are not {name}.ipynb ({len(notebook)} bytes)"
