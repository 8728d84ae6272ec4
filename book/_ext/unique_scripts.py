"""List each inline script that Sphinx 7.4 lists twice only once.

An inline script that an extension registers after the HTML builder's init
(sphinx-thebe's configuration, at env-before-read-docs) reaches the builder
twice: directly, with filename None, and again before writing, when Sphinx
re-adds every registered asset with filename "". Every page then declared
``const THEBE_JS_URL`` twice, a SyntaxError in the browser's console. Only
such a pair is merged: a script listed twice on purpose is kept.
"""


def _key(script):
    return tuple(sorted(script.attributes.items())), script.priority


def _drop_readded_inline_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files", [])
    direct = {_key(script) for script in scripts if getattr(script, "filename", "") is None}
    context["script_files"] = [
        script for script in scripts
        if getattr(script, "filename", None) != "" or _key(script) not in direct]


def setup(app):
    app.connect("html-page-context", _drop_readded_inline_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
