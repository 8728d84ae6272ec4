"""nbgrader settings of the course; `nbgrader ...` run in autograder/ and
`python -m autograder ...` both read this file."""
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
