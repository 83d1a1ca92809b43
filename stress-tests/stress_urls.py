"""URLs of the stress-test server's Django loop (``wsgi_django.py``)."""

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import path

from ws4redis.publisher import RedisPublisher
from ws4redis.redis_store import RedisMessage


def publish(request: HttpRequest, facility: str) -> HttpResponse:
    """Broadcast the request body to the WebSocket clients of ``facility``."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    RedisPublisher(facility=facility, broadcast=True).publish_message(RedisMessage(request.body))
    return HttpResponse(status=204)


urlpatterns = [path("publish/<str:facility>/", publish)]
