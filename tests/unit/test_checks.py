"""System checks: each id fires exactly when its problem is there."""

import os
import subprocess
import sys

from django.test import SimpleTestCase, override_settings

from tests.conftest import EXAMPLE_SETTINGS, server_env
from tools.servers import EXAMPLES
from ws4redis.checks import check_deployment, check_settings


def ids(messages):
    return [message.id for message in messages]


class SettingsChecks(SimpleTestCase):
    def test_defaults_are_clean(self):
        assert ids(check_settings()) == []

    @override_settings(WEBSOCKET_URL="/ws")
    def test_url_without_trailing_slash_is_an_error(self):
        assert ids(check_settings()) == ["ws4redis.E001"]

    @override_settings(WEBSOCKET_URL="ws/")
    def test_url_without_leading_slash_is_an_error(self):
        assert ids(check_settings()) == ["ws4redis.E001"]

    @override_settings(WS4REDIS_CONNECTION="http://localhost:6379")
    def test_connection_url_with_a_foreign_scheme_is_an_error(self):
        assert ids(check_settings()) == ["ws4redis.E002"]

    @override_settings(WS4REDIS_CONNECTION={"hots": "localhost"})
    def test_connection_dict_with_an_unknown_key_is_an_error(self):
        messages = check_settings()
        assert ids(messages) == ["ws4redis.E002"]
        assert "hots" in messages[0].msg

    @override_settings(WS4REDIS_ALLOWED_CHANNELS="myapp.nowhere.get_allowed_channels")
    def test_allowed_channels_that_does_not_import_is_an_error(self):
        messages = check_settings()
        assert ids(messages) == ["ws4redis.E003"]
        assert "WS4REDIS_ALLOWED_CHANNELS" in messages[0].msg

    @override_settings(WS4REDIS_PROCESS_REQUEST="ws4redis.auth.no_such_function")
    def test_process_request_that_does_not_import_is_an_error(self):
        assert ids(check_settings()) == ["ws4redis.E003"]

    @override_settings(WS4REDIS_SUBSCRIBER="nowhere.Subscriber")
    def test_subscriber_that_does_not_import_is_an_error(self):
        assert ids(check_settings()) == ["ws4redis.E003"]

    @override_settings(WS4REDIS_EXPIRE=-1)
    def test_other_invalid_setting_is_an_error(self):
        messages = check_settings()
        assert ids(messages) == ["ws4redis.E004"]
        assert "WS4REDIS_EXPIRE" in messages[0].msg

    @override_settings(SESSION_ENGINE="django.contrib.sessions.backends.db")
    def test_database_sessions_are_a_warning(self):
        assert ids(check_settings()) == ["ws4redis.W001"]

    @override_settings(SESSION_ENGINE="django.contrib.sessions.backends.cached_db")
    def test_cached_database_sessions_are_a_warning(self):
        assert ids(check_settings()) == ["ws4redis.W001"]

    @override_settings(SESSION_ENGINE="django.contrib.sessions.backends.cache")
    def test_cache_sessions_are_fine(self):
        assert ids(check_settings()) == []

    @override_settings(
        WSGI_APPLICATION="ws4redis.django_runserver.application",
        INSTALLED_APPS=["django.contrib.staticfiles", "ws4redis"],
    )
    def test_ws4redis_after_staticfiles_under_runserver_is_a_warning(self):
        messages = check_settings()
        assert ids(messages) == ["ws4redis.W004"]
        assert messages[0].hint

    @override_settings(
        WSGI_APPLICATION="ws4redis.django_runserver.application",
        INSTALLED_APPS=["ws4redis", "django.contrib.staticfiles"],
    )
    def test_ws4redis_before_staticfiles_is_fine(self):
        assert ids(check_settings()) == []


class DeployChecks(SimpleTestCase):
    @override_settings(WS4REDIS_ALLOWED_ORIGINS=["*"], WS4REDIS_CONNECTION="redis://127.0.0.1:1/0")
    def test_origin_checking_off_and_redis_unreachable_are_warnings(self):
        messages = check_deployment()
        assert ids(messages) == ["ws4redis.W002", "ws4redis.W003"]
        assert all(message.hint for message in messages)


def test_reachable_redis_passes_the_deploy_check(ws_settings):
    assert ids(check_deployment()) == []


def test_manage_py_check_reports_by_id(redis_server, tmp_path):
    env = {
        **os.environ,
        **server_env(redis_server, tmp_path / "db.sqlite3", "tests.sites.checks_broken"),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ws4redis.E001" in result.stderr
    assert "ws4redis.W001" in result.stderr
    env["DJANGO_SETTINGS_MODULE"] = EXAMPLE_SETTINGS
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ws4redis." not in result.stdout + result.stderr
