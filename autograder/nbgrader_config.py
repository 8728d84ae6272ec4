"""nbgrader settings of the course; `nbgrader ...` run in autograder/ and
`python -m autograder ...` both read this file."""
import functools
import os
import re
import sys

import bleach
from jinja2 import BytecodeCache
from nbconvert.exporters import HTMLExporter, TemplateExporter
from nbconvert.filters.highlight import Highlight2HTML
from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter
from nbgrader.preprocessors import NbGraderPreprocessor

c = get_config()  # noqa: F821 (defined by nbgrader's config loader)
HERE = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.course_id = "dlbb"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "__pycache__", "*.pyc"]
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
# The default 30 s per cell is tight for gradchecks on a loaded 2-core machine.
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True
# A notebook's kernel is killed once its last cell has run, not asked to shut down: nothing
# it does afterwards counts, and the polite request costs a second per notebook.
c.Execute.shutdown_kernel = "immediate"
# The exchange (release_assignment, list, collect) lives in the course, git-ignored,
# so that `nbgrader list` and friends work without a system-wide /srv/nbgrader.
c.Exchange.root = os.path.join(HERE, "exchange")
os.makedirs(c.Exchange.root, exist_ok=True)


class OneLineTestErrors(NbGraderPreprocessor):
    """A failing grade cell that holds hidden tests shows ``ename: evalue`` only.

    IPython's traceback prints the lines around the failing one, hidden tests
    included; the assertion's message says what is wrong without them.
    """

    def preprocess_cell(self, cell, resources, index):
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade") and \
                "BEGIN HIDDEN TESTS" in cell.get("source", ""):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    line = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
                    output["traceback"] = [line.strip().rstrip(":")]
        return cell, resources


class NoTerminalEscapes(NbGraderPreprocessor):
    """Outputs without the terminal escapes nbconvert passes through (titles, clipboard
    writes, links, 8-bit controls): colours only, which it turns into HTML."""

    def preprocess_cell(self, cell, resources, index):
        from autograder.verdict import no_escapes
        clean = functools.partial(no_escapes, keep_colours=True)
        for output in cell.get("outputs", []):
            for key in ("text", "ename", "evalue"):
                if key in output:
                    output[key] = clean(output[key])
            if "traceback" in output:
                output["traceback"] = [clean(line) for line in output["traceback"]]
            if "text/plain" in output.get("data", {}):
                output["data"]["text/plain"] = clean(output["data"]["text/plain"])
        return cell, resources


# Feedback goes to students: keep the hidden tests out of it (nbgrader shows them
# verbatim by default, in the cell and in tracebacks).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    OneLineTestErrors,
    NoTerminalEscapes,
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
# Feedback shows what the submission displayed and wrote: sanitised, so that no
# script in it runs in the browser of the instructor who opens the page. nbconvert
# sanitises the outputs; feedback.html.j2 (nbgrader's feedback template, with its
# markdown-cell block passed through `sanitise`) the markdown cells.
c.HTMLExporter.sanitize_html = True
c.HTMLExporter.template_file = os.path.join(HERE, "feedback.html.j2")
# Maths renders offline, with the MathJax the book ships: `python -m autograder grade`
# puts it beside the feedback/ it writes, `nbgrader generate_feedback` in feedback/.
MATHJAX = "../../mathjax/tex-chtml.js"


def sanitise(html):
    """``html`` with only what rendered markdown and nbgrader's cell panels are made of;
    anything else (script, style, iframe, form, svg, event handlers, javascript: links)
    is escaped into text."""
    return bleach.clean(
        str(html), strip_comments=True,
        tags={"a", "abbr", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2",
              "h3", "h4", "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre", "span",
              "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul"},
        attributes={"*": ["class", "id"], "a": ["href", "title"], "img": ["src", "alt", "title"]})


def offline_mathjax(html):
    """``html`` (the page header) with nbconvert's MathJax 2 from a CDN replaced by the
    local MathJax 3, configured for the same delimiters."""
    local = ('<script>window.MathJax = {tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], '
             'displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]], processEscapes: true, '
             'processEnvironments: true, tags: "ams"}};</script>\n'
             f'<script id="MathJax-script" src="{MATHJAX}"></script>')
    replaced, count = re.subn(r"<!-- Load mathjax -->.*<!-- End of mathjax configuration -->",
                              lambda _: local, str(html), flags=re.S)
    if count != 1:
        raise ValueError("feedback.html.j2: nbconvert's MathJax block was not found")
    return replaced


c.HTMLExporter.filters = {"sanitise": sanitise, "offline_mathjax": offline_mathjax}


@functools.lru_cache(maxsize=4096)
def _highlighted(source: str, language: str, magics_language: str | None) -> str:
    metadata = {"magics_language": magics_language} if magics_language else None
    return Highlight2HTML(pygments_lexer=language)(source, metadata=metadata)


class CompiledTemplates(BytecodeCache):
    """Jinja's compiled templates, kept in memory for the grading process (nbgrader makes an
    exporter, and so compiles its ten templates, for every page). Jinja checks each against
    its template's source before use."""

    def __init__(self):
        self.compiled = {}

    def load_bytecode(self, bucket):
        if bucket.key in self.compiled:
            bucket.bytecode_from_string(self.compiled[bucket.key])

    def dump_bytecode(self, bucket):
        self.compiled[bucket.key] = bucket.bytecode_to_string()


class FeedbackExporter(HTMLExporter):
    """nbconvert's HTMLExporter (7.x) that colours each distinct cell once per grading
    process (most cells are the same in every submission), without its last step, a pass
    of the page through BeautifulSoup. The two took three quarters of a feedback page's
    time. That pass makes JupyterLab's cells focusable (this page is the classic template,
    which has none) and gives an image without alt text a stock one."""

    def from_notebook_node(self, nb, resources=None, **kw):
        language = nb.metadata.get("language_info", {})
        lexer = language.get("pygments_lexer", language.get("name")) or "ipython3"
        resources = self._init_resources(resources)
        self.register_filter("highlight_code", lambda source, language=None, metadata=None:
                             _highlighted(source, language or lexer,
                                          (metadata or {}).get("magics_language")))
        self.register_filter("filter_data_type", WidgetsDataTypeFilter(
            notebook_metadata=self._nb_metadata, parent=self, resources=resources))
        return TemplateExporter.from_notebook_node(self, nb, resources, **kw)

    def _create_environment(self):
        environment = super()._create_environment()
        environment.bytecode_cache = COMPILED_TEMPLATES
        return environment


COMPILED_TEMPLATES = CompiledTemplates()


c.GenerateFeedback.exporter_class = FeedbackExporter

# The nbgrader commands run in this folder find what they read: source/ rendered from the
# templates when it is missing (a fresh clone) or older than what it is made from (after
# a pull); MathJax in feedback/ for the pages that generate_feedback writes.
COMMAND = sys.argv[1] if os.path.basename(sys.argv[0]) == "nbgrader" and len(sys.argv) > 1 else None
if COMMAND in ("generate_assignment", "assign", "generate_solution", "generate_feedback"):
    sys.path.insert(0, os.path.dirname(HERE))
    from autograder import course

    if COMMAND == "generate_feedback":
        course.copy_mathjax(os.path.join(HERE, "feedback"))
    else:
        course.refresh_sources(HERE)
