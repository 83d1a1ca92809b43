"""``pip install`` of a built wheel into a fresh virtualenv gives a working Django app."""

import subprocess
import sys
import textwrap

from tools.servers import ROOT


def run(*args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_wheel_installs_into_a_fresh_virtualenv(tmp_path):
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT))
    (wheel,) = wheels.glob("django_websocket_redis-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    run(str(python), "-m", "pip", "install", "-q", str(wheel))
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
