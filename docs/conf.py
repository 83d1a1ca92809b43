"""Sphinx configuration of the ws4redis documentation.

Build it from the repository root with warnings as errors and every reference checked::

    .venv/bin/sphinx-build -W --keep-going -n -b html docs docs/_build/html

The build works offline: there is no intersphinx, so the few external names that appear in
type hints (Django's request, redis-py's classes, ``collections.abc``) are listed in
``nitpick_ignore`` instead of being linked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# autodoc imports the modules, which read Django settings: give Django a minimal project.
import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    settings.configure(
        SECRET_KEY="docs-only",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "ws4redis",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        USE_TZ=True,
    )
django.setup()

import ws4redis  # noqa: E402

# -- Project -----------------------------------------------------------------------------------

project = "django-websocket-redis"
author = "the ws4redis contributors"
copyright = "the ws4redis contributors"  # noqa: A001 - the name Sphinx reads
release = ws4redis.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------------------------

extensions = ["sphinx.ext.autodoc"]
root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list[str] = []
nitpicky = True
default_role = "literal"
pygments_style = "sphinx"

# -- autodoc -----------------------------------------------------------------------------------

autodoc_mock_imports = ["uwsgi"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True

# Names in type hints that cannot be linked without intersphinx.  Keep this list short: every
# entry is an external type, never a ws4redis name.
nitpick_ignore = [
    # Django's request, imported only for type checking, so some hints keep the short name.
    ("py:class", "HttpRequest"),
    ("py:class", "django.http.request.HttpRequest"),
    ("py:class", "django.utils.safestring.SafeString"),
    # redis-py
    ("py:class", "redis.Redis"),
    ("py:class", "redis.client.Redis"),
    ("py:class", "redis.connection.Connection"),
    # the standard library's collections used in annotations
    ("py:class", "collections.Counter"),
    ("py:class", "collections.abc.Callable"),
    ("py:class", "collections.abc.Iterable"),
    ("py:class", "collections.abc.Mapping"),
    ("py:class", "collections.abc.Sequence"),
]

# -- HTML --------------------------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"ws4redis {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "WebSockets for Django through Redis pub/sub",
    "fixed_sidebar": False,
}


def setup(app):  # noqa: ANN001, ANN201 - Sphinx's extension hook
    """Add a ``setting`` object type, so ``:setting:`WS4REDIS_EXPIRE``` links are checked."""
    app.add_object_type(
        "setting",
        "setting",
        indextemplate="pair: %s; setting",
    )
    return {"parallel_read_safe": True}
