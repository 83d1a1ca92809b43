"""ws4redis: WebSockets for Django through Redis pub/sub."""

__version__ = "1.0.0.dev0"
