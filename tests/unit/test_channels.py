"""Channel keys, audiences and SELF, messages, URL flags, Origin checks, template context, and
the session data that the WebSocket loop reads instead of the database.  No Redis needed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User
from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.http import HttpRequest
from django.test import Client, RequestFactory
from django.utils.safestring import SafeString
from pytest_django import Settings

from ws4redis.auth import SessionUser, default_process_request, session_user
from ws4redis.context_processors import default as context_processor
from ws4redis.redis_store import SELF, RedisMessage, audience_channels, channel_key
from ws4redis.wsgi_server import origin_allowed, parse_channels

SESSION_KEY = "wnqd0gbw5obpnj50zwh6yaq2yz4o8g9x"


def make_request(
    user: Any = None,
    session_key: str | None = SESSION_KEY,
    session_data: dict[str, Any] | None = None,
) -> HttpRequest:
    """A request as a view sees it: ``.user`` and ``.session`` attached."""
    request = RequestFactory().get("/chat/")
    request.user = user if user is not None else AnonymousUser()
    request.session = SessionStore(session_key)
    for key, value in (session_data or {}).items():
        request.session[key] = value
    return request


def john_request(groups: list[str] | None = None, session_key: str | None = SESSION_KEY):
    """John, logged in, member of ``groups`` (as the login signal stored them)."""
    groups = ["chatters", "admins"] if groups is None else groups
    return make_request(
        SessionUser(7, "john", groups, {}),
        session_key,
        {"_auth_user_id": "7", "ws4redis:username": "john", "ws4redis:memberof": groups},
    )


class TestChannelKey:
    @pytest.mark.parametrize(
        ("audience", "name", "expected"),
        [
            ("broadcast", None, "broadcast:foobar"),
            ("user", "john", "user:john:foobar"),
            ("group", "chatters", "group:chatters:foobar"),
            ("session", SESSION_KEY, f"session:{SESSION_KEY}:foobar"),
        ],
    )
    def test_without_prefix(self, audience: str, name: str | None, expected: str) -> None:
        assert channel_key(audience, "foobar", name) == expected

    @pytest.mark.parametrize(
        ("audience", "name", "expected"),
        [
            ("broadcast", None, "ws:broadcast:foobar"),
            ("user", "john", "ws:user:john:foobar"),
            ("group", "chatters", "ws:group:chatters:foobar"),
            ("session", SESSION_KEY, f"ws:session:{SESSION_KEY}:foobar"),
        ],
    )
    def test_with_prefix(self, audience: str, name: str | None, expected: str) -> None:
        assert channel_key(audience, "foobar", name, prefix="ws") == expected

    def test_unknown_audience(self) -> None:
        with pytest.raises(ValueError, match="audience"):
            channel_key("everybody", "foobar")

    def test_broadcast_takes_no_name(self) -> None:
        with pytest.raises(ValueError):
            channel_key("broadcast", "foobar", "john")

    @pytest.mark.parametrize("audience", ["user", "group", "session"])
    def test_named_audience_needs_a_name(self, audience: str) -> None:
        with pytest.raises(ValueError):
            channel_key(audience, "foobar")


class TestAudienceChannels:
    def test_every_audience_in_order(self) -> None:
        keys = audience_channels(
            "foobar",
            broadcast=True,
            users=["john", "mary"],
            groups=["chatters"],
            sessions=[SESSION_KEY],
        )
        assert keys == [
            "broadcast:foobar",
            "user:john:foobar",
            "user:mary:foobar",
            "group:chatters:foobar",
            f"session:{SESSION_KEY}:foobar",
        ]

    def test_nothing_requested_gives_no_channel(self) -> None:
        assert audience_channels("foobar") == []

    def test_prefix_from_settings(self, settings: Settings) -> None:
        settings.WS4REDIS_PREFIX = "ws"
        assert audience_channels("foobar", broadcast=True, users=["john"]) == [
            "ws:broadcast:foobar",
            "ws:user:john:foobar",
        ]

    def test_explicit_prefix_wins(self, settings: Settings) -> None:
        settings.WS4REDIS_PREFIX = "ws"
        assert audience_channels("foobar", broadcast=True, prefix="") == ["broadcast:foobar"]

    def test_self_user_is_the_logged_in_user(self) -> None:
        keys = audience_channels("foobar", users=[SELF], request=john_request())
        assert keys == ["user:john:foobar"]

    def test_self_next_to_names_without_duplicates(self) -> None:
        keys = audience_channels("foobar", users=["mary", SELF, "john"], request=john_request())
        assert keys == ["user:mary:foobar", "user:john:foobar"]

    def test_self_groups_come_from_the_session(self) -> None:
        keys = audience_channels("foobar", groups=[SELF], request=john_request())
        assert keys == ["group:chatters:foobar", "group:admins:foobar"]

    def test_self_groups_of_a_user_in_no_group(self) -> None:
        assert audience_channels("foobar", groups=[SELF], request=john_request([])) == []

    def test_self_session_is_the_session_key(self) -> None:
        keys = audience_channels("foobar", sessions=[SELF], request=john_request())
        assert keys == [f"session:{SESSION_KEY}:foobar"]

    def test_self_session_of_an_anonymous_visitor(self) -> None:
        keys = audience_channels("foobar", sessions=[SELF], request=make_request())
        assert keys == [f"session:{SESSION_KEY}:foobar"]

    def test_self_all_audiences_with_prefix(self, settings: Settings) -> None:
        settings.WS4REDIS_PREFIX = "ws"
        keys = audience_channels(
            "foobar", users=SELF, groups=SELF, sessions=SELF, request=john_request(["chatters"])
        )
        assert keys == [
            "ws:user:john:foobar",
            "ws:group:chatters:foobar",
            f"ws:session:{SESSION_KEY}:foobar",
        ]

    def test_self_user_of_anonymous_request_gives_no_channel(self) -> None:
        assert audience_channels("foobar", users=[SELF], request=make_request()) == []

    def test_self_user_of_anonymous_request_keeps_named_users(self) -> None:
        keys = audience_channels("foobar", users=[SELF, "mary"], request=make_request())
        assert keys == ["user:mary:foobar"]

    def test_self_groups_of_anonymous_request_ignore_stale_session_data(self) -> None:
        request = make_request(session_data={"ws4redis:memberof": ["chatters"]})
        assert audience_channels("foobar", groups=[SELF], request=request) == []

    def test_self_without_request_gives_no_channel(self) -> None:
        keys = audience_channels("foobar", users=[SELF], groups=[SELF], sessions=[SELF])
        assert keys == []

    def test_self_session_without_session_key_gives_no_channel(self) -> None:
        request = make_request(session_key=None)
        assert audience_channels("foobar", sessions=[SELF], request=request) == []

    def test_self_never_becomes_a_shared_channel(self) -> None:
        request = make_request(session_key=None)
        keys = audience_channels(
            "foobar", users=[SELF], groups=[SELF], sessions=[SELF], request=request
        )
        assert keys == []
        for bogus in ("SELF", "None", "", "AnonymousUser"):
            for audience in ("user", "group", "session"):
                assert f"{audience}:{bogus}:foobar" not in keys

    @pytest.mark.parametrize("argument", ["users", "groups", "sessions"])
    def test_single_name_string_is_one_name(self, argument: str) -> None:
        one = audience_channels("foobar", **{argument: "john"})
        assert one == audience_channels("foobar", **{argument: ["john"]})
        assert len(one) == 1
        assert one[0].endswith(":john:foobar")

    @pytest.mark.parametrize("argument", ["users", "groups", "sessions"])
    def test_tuple_and_set_work_like_lists(self, argument: str) -> None:
        assert audience_channels("foobar", **{argument: ("john",)}) == audience_channels(
            "foobar", **{argument: {"john"}}
        )

    @pytest.mark.parametrize("argument", ["users", "groups", "sessions"])
    def test_non_iterable_is_a_clear_type_error(self, argument: str) -> None:
        with pytest.raises(TypeError, match=f"{argument} must be a list of names"):
            audience_channels("foobar", **{argument: 5})

    def test_none_means_nobody(self) -> None:
        assert audience_channels("foobar", users=None, groups=None, sessions=None) == []


class TestRedisMessage:
    def test_from_str_is_utf8_bytes(self) -> None:
        message = RedisMessage("Hello Wörld")
        assert isinstance(message, bytes)
        assert message == "Hello Wörld".encode()

    def test_from_bytes(self) -> None:
        assert RedisMessage(b"\xff\x00binary") == b"\xff\x00binary"

    def test_from_pubsub_message(self) -> None:
        assert RedisMessage([b"message", b"broadcast:foobar", b"Hello"]) == b"Hello"
        assert RedisMessage(["message", "broadcast:foobar", "Hello"]) == b"Hello"

    def test_pubsub_response_that_is_not_a_message(self) -> None:
        assert RedisMessage([b"subscribe", b"broadcast:foobar", 1]) is None
        assert RedisMessage([b"message", b"broadcast:foobar"]) is None

    def test_other_types_are_refused(self) -> None:
        with pytest.raises(TypeError):
            RedisMessage(5)  # type: ignore[arg-type]

    def test_heartbeat_is_not_a_message(self, settings: Settings) -> None:
        settings.WS4REDIS_HEARTBEAT = "--heartbeat--"
        assert RedisMessage("--heartbeat--") is None
        assert RedisMessage(b"--heartbeat--") is None
        assert RedisMessage([b"message", b"broadcast:foobar", b"--heartbeat--"]) is None
        assert RedisMessage("--heartbeat-- ") == b"--heartbeat-- "

    def test_heartbeat_text_is_a_message_when_heartbeats_are_off(self, settings: Settings) -> None:
        settings.WS4REDIS_HEARTBEAT = None
        assert RedisMessage("--heartbeat--") == b"--heartbeat--"


class TestParseChannels:
    def test_dash_spelling(self) -> None:
        assert parse_channels("subscribe-broadcast&publish-user&echo") == [
            "subscribe-broadcast",
            "publish-user",
            "echo",
        ]

    def test_equals_spelling(self) -> None:
        assert parse_channels("subscribe=broadcast,user&publish=user") == [
            "subscribe-broadcast",
            "subscribe-user",
            "publish-user",
        ]

    def test_every_known_flag(self) -> None:
        query = "&".join(
            f"{kind}-{audience}"
            for kind in ("subscribe", "publish")
            for audience in ("broadcast", "user", "group", "session")
        )
        assert parse_channels(query + "&echo") == [*query.split("&"), "echo"]

    def test_unknown_flags_are_dropped(self) -> None:
        query = "subscribe-everything&publish=world,user&foo=bar&listen-user&subscribe-user"
        assert parse_channels(query) == ["publish-user", "subscribe-user"]

    def test_no_duplicates(self) -> None:
        query = "subscribe-user&subscribe=user,broadcast,user&subscribe-broadcast&echo&echo"
        assert parse_channels(query) == ["subscribe-user", "subscribe-broadcast", "echo"]

    def test_empty_query(self) -> None:
        assert parse_channels("") == []


class TestOriginAllowed:
    def test_no_origin_is_allowed(self) -> None:
        assert origin_allowed(None, "chat.example.com") is True

    def test_same_host_is_allowed(self) -> None:
        assert origin_allowed("https://chat.example.com", "chat.example.com") is True
        assert origin_allowed("http://localhost:8000", "localhost:8000") is True

    def test_same_host_is_case_insensitive(self) -> None:
        assert origin_allowed("https://Chat.Example.com", "chat.example.COM") is True

    def test_foreign_origin_is_refused(self) -> None:
        assert origin_allowed("https://evil.example.net", "chat.example.com") is False

    def test_other_port_is_another_origin(self) -> None:
        assert origin_allowed("http://localhost:9000", "localhost:8000") is False

    def test_null_origin_is_refused(self) -> None:
        assert origin_allowed("null", "chat.example.com") is False

    def test_star_allows_every_origin(self, settings: Settings) -> None:
        settings.WS4REDIS_ALLOWED_ORIGINS = ["*"]
        assert origin_allowed("https://evil.example.net", "chat.example.com") is True
        assert origin_allowed("null", "chat.example.com") is True

    def test_listed_origin_is_allowed(self, settings: Settings) -> None:
        settings.WS4REDIS_ALLOWED_ORIGINS = ["https://www.example.org"]
        assert origin_allowed("https://www.example.org", "ws.example.com") is True
        assert origin_allowed("https://other.example.org", "ws.example.com") is False

    def test_explicit_list_replaces_csrf_trusted_origins(self, settings: Settings) -> None:
        settings.CSRF_TRUSTED_ORIGINS = ["https://www.example.org"]
        settings.WS4REDIS_ALLOWED_ORIGINS = ["https://app.example.org"]
        assert origin_allowed("https://www.example.org", "ws.example.com") is False
        assert origin_allowed("https://app.example.org", "ws.example.com") is True

    def test_default_comes_from_csrf_trusted_origins(self, settings: Settings) -> None:
        settings.CSRF_TRUSTED_ORIGINS = ["https://www.example.org"]
        assert origin_allowed("https://www.example.org", "ws.example.com") is True
        assert origin_allowed("https://www.example.net", "ws.example.com") is False

    def test_wildcard_csrf_trusted_origin(self, settings: Settings) -> None:
        settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com"]
        assert origin_allowed("https://chat.example.com", "ws.other.net") is True
        assert origin_allowed("https://a.b.example.com", "ws.other.net") is True
        assert origin_allowed("https://example.com", "ws.other.net") is True
        assert origin_allowed("https://evilexample.com", "ws.other.net") is False
        assert origin_allowed("https://example.com.evil.net", "ws.other.net") is False

    def test_scheme_must_match(self, settings: Settings) -> None:
        settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com", "https://www.example.org"]
        assert origin_allowed("http://chat.example.com", "ws.other.net") is False
        assert origin_allowed("http://www.example.org", "ws.other.net") is False

    def test_nothing_trusted_refuses_foreign_origins(self, settings: Settings) -> None:
        settings.CSRF_TRUSTED_ORIGINS = []
        assert origin_allowed("https://www.example.org", "ws.example.com") is False


class TestContextProcessor:
    def test_websocket_uri_plain(self) -> None:
        context = context_processor(RequestFactory().get("/chat/"))
        assert context["WEBSOCKET_URI"] == "ws://testserver/ws/"

    def test_websocket_uri_secure(self) -> None:
        context = context_processor(RequestFactory().get("/chat/", secure=True))
        assert context["WEBSOCKET_URI"] == "wss://testserver/ws/"

    def test_websocket_uri_uses_host_and_websocket_url(self, settings: Settings) -> None:
        settings.WEBSOCKET_URL = "/websocket/"
        request = RequestFactory().get("/chat/", HTTP_HOST="localhost:8000")
        assert context_processor(request)["WEBSOCKET_URI"] == "ws://localhost:8000/websocket/"

    def test_heartbeat_null_by_default(self) -> None:
        context = context_processor(RequestFactory().get("/"))
        assert context["WS4REDIS_HEARTBEAT"] == "null"
        assert isinstance(context["WS4REDIS_HEARTBEAT"], SafeString)

    def test_heartbeat_is_a_quoted_js_string(self, settings: Settings) -> None:
        settings.WS4REDIS_HEARTBEAT = "--heartbeat--"
        context = context_processor(RequestFactory().get("/"))
        assert context["WS4REDIS_HEARTBEAT"] == '"--heartbeat--"'
        assert isinstance(context["WS4REDIS_HEARTBEAT"], SafeString)

    def test_heartbeat_cannot_close_the_script_element(self, settings: Settings) -> None:
        heartbeat = '</script><script>alert("&")</script>'
        settings.WS4REDIS_HEARTBEAT = heartbeat
        literal = context_processor(RequestFactory().get("/"))["WS4REDIS_HEARTBEAT"]
        assert literal == (
            '"\\u003c/script\\u003e\\u003cscript\\u003ealert(\\"\\u0026\\")\\u003c/script\\u003e"'
        )
        for unsafe in "<>&":
            assert unsafe not in literal
        assert json.loads(literal) == heartbeat


class TestSessionUser:
    def test_empty_session_is_anonymous(self) -> None:
        user = session_user(SessionStore())
        assert isinstance(user, AnonymousUser)
        assert user.is_authenticated is False

    def test_stored_keys_give_a_session_user(self) -> None:
        session = SessionStore()
        session.update(
            {
                "_auth_user_id": "7",
                "ws4redis:username": "john",
                "ws4redis:memberof": ["chatters", "admins"],
                "ws4redis:flags": {"is_staff": True, "is_superuser": False},
            }
        )
        user = session_user(session)
        assert isinstance(user, SessionUser)
        assert user.is_authenticated is True
        assert user.is_anonymous is False
        assert user.pk == "7"
        assert user.get_username() == "john"
        assert str(user) == "john"
        assert user.group_names == ["chatters", "admins"]
        assert (user.is_staff, user.is_superuser) == (True, False)

    def test_missing_groups_and_flags(self) -> None:
        session = SessionStore()
        session.update({"_auth_user_id": "7", "ws4redis:username": "john"})
        user = session_user(session)
        assert user.get_username() == "john"
        assert user.group_names == []
        assert (user.is_staff, user.is_superuser) == (False, False)

    def test_logged_in_before_ws4redis_was_installed(self) -> None:
        session = SessionStore()
        session["_auth_user_id"] = "7"
        assert isinstance(session_user(session), AnonymousUser)

    def test_username_without_login_is_anonymous(self) -> None:
        session = SessionStore()
        session["ws4redis:username"] = "john"
        assert isinstance(session_user(session), AnonymousUser)


@pytest.mark.django_db
class TestLoginStoresUserInSession:
    @pytest.fixture
    def john(self) -> User:
        user = User.objects.create_user("john", password="secret")
        user.groups.add(Group.objects.create(name="chatters"), Group.objects.create(name="admins"))
        return user

    def test_login_stores_username_and_group_names(self, john: User) -> None:
        client = Client()
        assert client.login(username="john", password="secret") is True
        session = client.session
        assert session["ws4redis:username"] == "john"
        assert sorted(session["ws4redis:memberof"]) == ["admins", "chatters"]
        assert session["ws4redis:flags"] == {"is_staff": False, "is_superuser": False}

    def test_user_without_groups(self) -> None:
        User.objects.create_user("mary", password="secret", is_staff=True)
        client = Client()
        assert client.login(username="mary", password="secret") is True
        assert client.session["ws4redis:username"] == "mary"
        assert client.session["ws4redis:memberof"] == []
        assert client.session["ws4redis:flags"] == {"is_staff": True, "is_superuser": False}

    def test_websocket_loop_reads_the_login_without_the_database(self, john: User) -> None:
        client = Client()
        client.login(username="john", password="secret")
        request = RequestFactory().get("/ws/foobar")
        request.COOKIES["sessionid"] = client.cookies["sessionid"].value
        default_process_request(request)
        assert isinstance(request.user, SessionUser)
        assert request.user.get_username() == "john"
        assert request.user.pk == str(john.pk)
        assert sorted(request.user.group_names) == ["admins", "chatters"]
        keys = audience_channels("foobar", users=[SELF], groups=[SELF], request=request)
        assert keys[0] == "user:john:foobar"
        assert sorted(keys[1:]) == ["group:admins:foobar", "group:chatters:foobar"]

    def test_no_cookie_is_anonymous(self) -> None:
        request = RequestFactory().get("/ws/foobar")
        default_process_request(request)
        assert isinstance(request.user, AnonymousUser)
        assert audience_channels("foobar", users=[SELF], request=request) == []
