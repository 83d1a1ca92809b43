"""The machine's floor for a fan-out: the CPU cost of one small ``send()`` on loopback TCP.

A server that pushes one message to N clients makes at least N ``send()`` calls, and on
loopback each also runs the receiving side of TCP and wakes the reader, inside the sender's
system call.  This measures it without any server framework: ``COUNT`` loopback connections,
a child process reading them all, and the parent writing one 102-byte WebSocket frame to each,
five times; the median CPU time per ``send()`` is the floor of every system's fan-out on this
machine.

    .venv/bin/python stress-tests/benchmark/sendfloor.py [COUNT]
"""

from __future__ import annotations

import os
import select
import signal
import socket
import statistics
import sys
import time

FRAME = b"\x81\x64" + b"x" * 100
ROUNDS = 5


def _reader(port: int, count: int, seconds: float) -> None:
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    poll = select.epoll()
    by_fd = {}
    for client in clients:
        client.setblocking(False)
        poll.register(client.fileno(), select.EPOLLIN)
        by_fd[client.fileno()] = client
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for fd, _ in poll.poll(0.5):
            try:
                by_fd[fd].recv(65536)
            except BlockingIOError:
                pass


def send_cost_us(count: int = 1000) -> dict[str, float]:
    """Median wall and CPU microseconds per ``send()`` to ``count`` idle loopback readers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:  # the reader: bounded in time, exits by itself
        listener.close()
        try:
            _reader(port, count, 30.0)
        finally:
            os._exit(0)
    try:
        listener.settimeout(10)
        servers = []
        for _ in range(count):
            sock, _ = listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            servers.append(sock)
        time.sleep(0.5)
        wall, cpu = [], []
        for _ in range(ROUNDS):
            t0, c0 = time.perf_counter(), time.process_time()
            for sock in servers:
                sock.send(FRAME)
            wall.append((time.perf_counter() - t0) / count * 1e6)
            cpu.append((time.process_time() - c0) / count * 1e6)
            time.sleep(0.2)
        for sock in servers:
            sock.close()
        return {"wall_us": statistics.median(wall), "cpu_us": statistics.median(cpu)}
    finally:
        listener.close()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    result = send_cost_us(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    print(f"one send() of {len(FRAME)} bytes on loopback TCP: {result['cpu_us']:.1f} µs CPU")
