"""Every error ws4redis raises on purpose, under one root.

::

    WebSocketError                      root of everything below
    ├── HandshakeError                  refuse the opening handshake: carries HTTP status,
    │   │                               one-line reason and extra response headers
    │   ├── UpgradeRequiredError        426, unsupported Sec-WebSocket-Version
    │   ├── ForbiddenError              403, Origin not allowed or the hooks said no
    │   └── ServiceUnavailableError     503 with Retry-After
    │       ├── RedisUnavailableError       Redis cannot be reached
    │       └── TooManyConnectionsError     WS4REDIS_MAX_CONNECTIONS reached
    └── ProtocolError                   fail an open connection: carries the close code
        ├── InvalidUTF8Error            1007
        └── MessageTooBigError          1009

Bindings turn these into replies from their data alone: ``status``, ``reason`` and ``headers``
for a handshake error, ``close_code`` and ``reason`` for a protocol error.  Reasons are short,
fixed strings chosen by ws4redis: they never carry exception text or client input.
"""

from __future__ import annotations


class WebSocketError(Exception):
    """Root of every exception ws4redis raises on purpose."""


class HandshakeError(WebSocketError):
    """The opening handshake is refused with ``status`` and a one-line ``reason``."""

    status: int = 400
    default_reason = "Bad Request"

    def __init__(
        self,
        reason: str | None = None,
        *,
        status: int | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.reason = reason or self.default_reason
        if status is not None:
            self.status = status
        self.headers = list(headers or [])
        super().__init__(self.reason)

    @property
    def status_line(self) -> str:
        """The status for WSGI's ``start_response``, such as ``"403 Forbidden"``."""
        return f"{self.status} {_STATUS_PHRASES.get(self.status, 'Error')}"


class UpgradeRequiredError(HandshakeError):
    """The client asked for a WebSocket version other than 13 (HTTP 426)."""

    status = 426
    default_reason = "Unsupported WebSocket version; this server speaks version 13"

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason, headers=[("Sec-WebSocket-Version", "13")])


class ForbiddenError(HandshakeError):
    """The handshake is not allowed: a foreign Origin or a ``PermissionDenied`` (HTTP 403)."""

    status = 403
    default_reason = "Forbidden"


class ServiceUnavailableError(HandshakeError):
    """The server cannot take the WebSocket now (HTTP 503 with ``Retry-After``)."""

    status = 503
    default_reason = "Service unavailable; try again later"

    def __init__(self, reason: str | None = None, retry_after: int = 5) -> None:
        super().__init__(reason, headers=[("Retry-After", str(retry_after))])


class RedisUnavailableError(ServiceUnavailableError):
    """Redis cannot be reached, so no subscription can be made (HTTP 503)."""

    default_reason = "Redis is unavailable; try again later"


class TooManyConnectionsError(ServiceUnavailableError):
    """The worker holds ``WS4REDIS_MAX_CONNECTIONS`` WebSockets already (HTTP 503)."""

    default_reason = "Too many WebSocket connections on this server; try again later"


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455 or a limit: fail the connection with ``close_code``."""

    close_code: int = 1002

    def __init__(self, reason: str = "protocol error", close_code: int | None = None) -> None:
        if close_code is not None:
            self.close_code = close_code
        self.reason = reason
        super().__init__(f"{self.close_code} {reason}")


class InvalidUTF8Error(ProtocolError):
    """A text message or close reason is not valid UTF-8 (close code 1007)."""

    close_code = 1007

    def __init__(self, reason: str = "invalid UTF-8 in text") -> None:
        super().__init__(reason)


class MessageTooBigError(ProtocolError):
    """A message is larger than the configured limit (close code 1009)."""

    close_code = 1009

    def __init__(self, reason: str = "message too big") -> None:
        super().__init__(reason)


_STATUS_PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
