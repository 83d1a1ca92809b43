"""Views of the example project: a home page and three chat rooms.

Each room is one page.  ``GET`` renders it; the page opens a WebSocket with ``ws4redis.js`` and
sends what the user types back to the same URL with an Ajax ``POST``.  The ``POST`` handler
checks the input and publishes a JSON message with ``RedisPublisher`` to the room's audience,
which receives it through Redis and the WebSocket loop.  Messages are JSON objects::

    {"id": "…", "from": "john", "text": "Hello", "at": "2026-01-01T12:00:00+00:00", …}

plus ``"to"`` (user chat), ``"group"`` (group chat) or ``"via"`` (broadcast chat).
"""

from __future__ import annotations

import json
import uuid

from django.contrib.auth import get_user_model
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.generic import TemplateView

from ws4redis.publisher import RedisPublisher
from ws4redis.redis_store import SELF, RedisMessage

#: The facility (the WebSocket URL path after ``WEBSOCKET_URL``) of each room.
BROADCAST_FACILITY = "chat"
USER_FACILITY = "userchat"
GROUP_FACILITY = "groupchat"
#: Longest message text accepted, in characters.
MAX_TEXT_LENGTH = 2000


class HomeView(TemplateView):
    """Who is logged in, and the way to the chat rooms."""

    template_name = "chatserver/home.html"


class ChatView(TemplateView):
    """A chat room: ``GET`` renders the page, an Ajax ``POST`` publishes a message."""

    facility = ""

    def get_context_data(self, **kwargs):  # noqa: ANN003, ANN201
        context = super().get_context_data(**kwargs)
        context["facility"] = self.facility
        context["max_text_length"] = MAX_TEXT_LENGTH
        return context

    def post(self, request: HttpRequest) -> JsonResponse:
        text = request.POST.get("text", "").strip()
        if not text:
            return error("Type a message first.")
        if len(text) > MAX_TEXT_LENGTH:
            return error(f"A message has at most {MAX_TEXT_LENGTH} characters.")
        message = {
            "id": uuid.uuid4().hex,
            "from": sender(request),
            "text": text,
            "at": timezone.now().isoformat(timespec="seconds"),
        }
        return self.publish(request, message)

    def publish(self, request: HttpRequest, message: dict) -> JsonResponse:
        raise NotImplementedError


class BroadcastChatView(ChatView):
    """Everybody on the page sees every message, logged in or not."""

    template_name = "chatserver/broadcast_chat.html"
    facility = BROADCAST_FACILITY

    def publish(self, request: HttpRequest, message: dict) -> JsonResponse:
        message["via"] = "django"
        RedisPublisher(facility=self.facility, broadcast=True).publish_message(as_redis(message))
        return sent(message)


class UserChatView(LoginRequiredMixin, ChatView):
    """Messages to one chosen user; the sender sees them too."""

    template_name = "chatserver/user_chat.html"
    facility = USER_FACILITY

    def get_context_data(self, **kwargs):  # noqa: ANN003, ANN201
        context = super().get_context_data(**kwargs)
        users = get_user_model().objects.filter(is_active=True).order_by("username")
        context["usernames"] = [user.get_username() for user in users]
        others = [name for name in context["usernames"] if name != self.request.user.get_username()]
        context["default_recipient"] = others[0] if others else None
        return context

    def publish(self, request: HttpRequest, message: dict) -> JsonResponse:
        recipient = request.POST.get("to", "")
        user_model = get_user_model()
        if not user_model.objects.filter(
            **{user_model.USERNAME_FIELD: recipient, "is_active": True}
        ).exists():
            return error("Choose who gets the message.")
        message["to"] = recipient
        publisher = RedisPublisher(facility=self.facility, users=[recipient, SELF], request=request)
        publisher.publish_message(as_redis(message))
        return sent(message)


class GroupChatView(LoginRequiredMixin, ChatView):
    """Messages to the members of one of the sender's groups.

    Everyone else on the page learns only that somebody wrote to that group: the view also
    broadcasts a notice without the text, published *after* the message.
    """

    template_name = "chatserver/group_chat.html"
    facility = GROUP_FACILITY

    def get_context_data(self, **kwargs):  # noqa: ANN003, ANN201
        context = super().get_context_data(**kwargs)
        context["groups"] = own_groups(self.request)
        return context

    def publish(self, request: HttpRequest, message: dict) -> JsonResponse:
        group = request.POST.get("group", "")
        if group not in own_groups(request):
            return error("You can only write to a group you belong to.", status=403)
        message["group"] = group
        RedisPublisher(facility=self.facility, groups=[group]).publish_message(as_redis(message))
        notice = {"id": message["id"], "from": message["from"], "group": group, "notice": True}
        RedisPublisher(facility=self.facility, broadcast=True).publish_message(as_redis(notice))
        return sent(message)


def sender(request: HttpRequest) -> str:
    """The name shown for the author of a message."""
    return request.user.get_username() if request.user.is_authenticated else "anonymous"


def own_groups(request: HttpRequest) -> list[str]:
    """The names of the groups of the request's user."""
    return sorted(request.user.groups.values_list("name", flat=True))


def as_redis(message: dict) -> RedisMessage:
    """A message as the JSON text the pages read."""
    return RedisMessage(json.dumps(message))


def sent(message: dict) -> JsonResponse:
    return JsonResponse({"ok": True, "id": message["id"]})


def error(text: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"ok": False, "error": text}, status=status)
