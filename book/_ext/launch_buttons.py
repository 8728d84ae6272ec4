"""Colab buttons only once the book has a published repository.

`repository.url` in _config.yml is the one setting: Colab opens a page's notebook
from there. While it is empty no page gets a launch button, since a link into a
repository nobody published leads nowhere.
"""


def _launch_buttons_need_a_repository(app, config):
    options = config.html_theme_options
    if not options.get("repository_url"):
        options.pop("launch_buttons", None)


def setup(app):
    app.connect("config-inited", _launch_buttons_need_a_repository)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
