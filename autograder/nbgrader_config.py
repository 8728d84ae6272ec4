"""nbgrader settings of the course; `nbgrader ...` run in autograder/ and
`python -m autograder ...` both read this file."""
import os

import bleach

c = get_config()  # noqa: F821 (defined by nbgrader's config loader)

c.CourseDirectory.course_id = "dlbb"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "__pycache__", "*.pyc"]
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
# The default 30 s per cell is tight for gradchecks on a loaded 2-core machine.
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True
# Feedback goes to students: keep the hidden tests out of it (nbgrader shows them
# verbatim by default).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
# Feedback shows what the submission displayed and wrote: sanitised, so that no
# script in it runs in the browser of the instructor who opens the page. nbconvert
# sanitises the outputs; feedback.html.j2 (nbgrader's feedback template, with its
# markdown-cell block passed through `sanitise`) the markdown cells.
c.HTMLExporter.sanitize_html = True
c.HTMLExporter.template_file = os.path.join(os.path.dirname(__file__), "feedback.html.j2")


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


c.HTMLExporter.filters = {"sanitise": sanitise}
