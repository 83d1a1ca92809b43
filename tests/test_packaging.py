"""``pip install`` of a built wheel into a fresh virtualenv gives a working Django app."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.servers import ROOT


def run(*args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A new virtualenv with only the built wheel (and its dependencies) installed in it."""
    tmp_path = tmp_path_factory.mktemp("packaging")
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT))
    (wheel,) = wheels.glob("django_websocket_redis-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel))
    return venv


def test_wheel_installs_into_a_fresh_virtualenv(fresh_venv, tmp_path):
    python = fresh_venv / "bin" / "python"
    project = tmp_path / "project"
    project.mkdir()
    (project / "site_settings.py").write_text(
        textwrap.dedent("""
        SECRET_KEY = "x"
        INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "ws4redis"]
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
        WS4REDIS_CONNECTION = "redis://127.0.0.1:1/0"
    """)
    )
    probe = textwrap.dedent("""
        import django, importlib
        django.setup()
        for name in ("publisher", "redis_store", "subscriber", "wsgi_server", "websocket",
                     "hub", "context_processors", "settings", "uwsgi_runserver"):
            importlib.import_module("ws4redis." + name)
        from ws4redis.publisher import RedisPublisher
        from ws4redis.redis_store import SELF, RedisMessage
        from ws4redis.uwsgi_runserver import uWSGIWebSocketServer, uWSGIWebsocketServer
        assert uWSGIWebSocketServer is uWSGIWebsocketServer
        publisher = RedisPublisher(facility="f", broadcast=True)
        print(publisher.publish_channels, RedisMessage("hi"))
    """)
    out = run(
        str(python),
        "-c",
        probe,
        cwd=project,
        env={"DJANGO_SETTINGS_MODULE": "site_settings", "PYTHONPATH": str(project)},
    )
    assert out.strip() == "['broadcast:f'] b'hi'"


def test_wheel_ships_the_javascript_client_to_the_staticfiles_finders(fresh_venv, tmp_path):
    """After a plain ``pip install`` of the wheel, ``{% static 'js/ws4redis.js' %}`` works."""
    python = fresh_venv / "bin" / "python"
    project = tmp_path / "project"
    project.mkdir()
    (project / "static_settings.py").write_text(
        textwrap.dedent("""
        SECRET_KEY = "x"
        INSTALLED_APPS = ["django.contrib.staticfiles", "ws4redis"]
        STATIC_URL = "/static/"
        TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates"}]
    """)
    )
    probe = textwrap.dedent("""
        import django
        django.setup()
        from django.contrib.staticfiles import finders
        from django.template import engines
        import ws4redis
        found = finders.find("js/ws4redis.js")
        print(found)
        print(found.startswith(ws4redis.__path__[0]))
        print(engines["django"].from_string("{% load static %}{% static 'js/ws4redis.js' %}")
              .render({}))
    """)
    out = run(
        str(python),
        "-c",
        probe,
        cwd=project,
        env={"DJANGO_SETTINGS_MODULE": "static_settings", "PYTHONPATH": str(project)},
    )
    found, inside_package, url = out.strip().splitlines()
    assert inside_package == "True", found
    assert found.startswith(str(fresh_venv)), found  # the installed copy, not this checkout's
    assert Path(found).read_bytes() == (ROOT / "ws4redis/static/js/ws4redis.js").read_bytes()
    assert url == "/static/js/ws4redis.js"
