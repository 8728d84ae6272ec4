"""Include each script once per page.

With jupyter-book 1.0.4, sphinx-thebe's inline configuration script reached
every page twice: ``const THEBE_JS_URL`` declared twice is a SyntaxError in the
browser's console.
"""


def _unique_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # the same inline script arrives once with filename None and once with ""
        key = (getattr(script, "filename", script) or "",
               tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _unique_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
