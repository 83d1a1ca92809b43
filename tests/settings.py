"""Django settings for the in-process tests (pytest-django).

Redis-backed settings point at the throw-away server of the ``redis_server`` fixture through
the ``ws_settings`` fixture; nothing here reaches a server by itself.
"""

SECRET_KEY = "tests-only"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "ws4redis",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
USE_TZ = True
