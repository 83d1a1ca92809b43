"""The example project, unchanged, under a settings module of its own for the autoreload test.

``tests/integration/test_devserver.py`` starts ``manage.py runserver`` with the autoreloader on
and this module as ``DJANGO_SETTINGS_MODULE``, then touches this file (content unchanged): the
autoreloader watches every imported module, so the server restarts, and its open WebSockets
must be closed with 1001.
"""

from chatserver.settings import *  # noqa: F403
