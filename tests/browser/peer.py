"""A WebSocket server that closes every connection with a chosen code, for client tests.

ws4redis closes connections with 1001 only when it goes away, which a test cannot ask of a
running server; this peer does it on demand.  It speaks RFC 6455 through ``wsproto`` on a real
loopback socket, in a thread: it completes the opening handshake, sends a close frame with
``close_code`` and waits for the client's answering close frame.  The first ``refuse_first``
connections are dropped before the handshake instead, as a server that is not up yet would.
"""

from __future__ import annotations

import socket
import threading

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request

TIMEOUT = 5.0


class ClosingPeer:
    """Accepts WebSockets on ``127.0.0.1:port`` and closes each with ``close_code``."""

    def __init__(self, close_code: int = 1001, reason: str = "going away", refuse_first: int = 0):
        self.close_code = close_code
        self.reason = reason
        self.refuse_first = refuse_first
        self.connections = 0  # TCP connections accepted
        self.handshakes = 0  # WebSocket handshakes completed
        self.close_replies = 0  # close frames received back from the client
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="closing-peer", daemon=True)

    def start(self) -> ClosingPeer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(TIMEOUT)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                if self.connections > self.refuse_first:
                    conn.settimeout(TIMEOUT)
                    try:
                        self._handle(conn)
                    except OSError:
                        pass

    def _handle(self, conn: socket.socket) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        while True:
            data = conn.recv(65536)
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Request):
                    conn.sendall(ws.send(AcceptConnection()))
                    self.handshakes += 1
                    conn.sendall(ws.send(CloseConnection(self.close_code, self.reason)))
                elif isinstance(event, CloseConnection):
                    self.close_replies += 1
                    return
