"""The Django loop, for a uWSGI instance of its own (behind NGINX, or the emperor)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatserver.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
