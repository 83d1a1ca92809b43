"""Slow consumers: a client that stops reading is closed, and the other clients do not notice.

Two identical uWSGI workers run the example with ``tests/sites/small_queue.py`` (at most
``QUEUE`` messages wait for a client), each with ``HEALTHY`` clients that read everything (all
in one ``epoll`` thread of this process).  One of them also holds ``STALLED`` clients (raw
sockets with a small ``SO_RCVBUF``) that completed the handshake and never read again; the
other is the baseline.  The test publishes ``RATE`` broadcasts a second of ``MESSAGE_SIZE``
bytes for ``RUN_SECONDS`` on the channel all healthy clients of both workers listen to, so the
baseline is measured at the same time as the run with stalled clients: whatever else the
machine does (one slow second dominates a p99) hits both alike.  Each broadcast carries its
sequence number and the time it was published, so every healthy client measures the delivery
latency of every message.

The rate: a delivery costs the worker about 23 µs and this test's reader about as much, so
10,000 deliveries a second keep both well inside a 2-core machine; at 50,000 the latencies
would measure CPU starvation, not the slow-consumer policy.

Filling the kernel first: a server socket's send buffer grows up to ``net.ipv4.tcp_wmem``'s
maximum (4 MiB; about 2.8 MB of payload, measured on loopback) before a write to a client that
does not read blocks; at ``RATE`` × ``MESSAGE_SIZE`` that would take over a minute.  So the
stalled clients also subscribe to their user's channel, where only they listen; before the run
the test publishes one message of that maximum plus 1 MiB there and waits until the send
buffers of their connections stay full.  From then on their writers are blocked, and the
broadcasts wait in their queues until broadcast ``QUEUE`` overflows them, ``QUEUE / RATE`` s
into the run.

A stalled client cannot be watched without reading from it, so the server's end of each
stalled connection is watched through the kernel's ``sock_diag`` interface: the connection has
ended once that end leaves ESTABLISHED (FIN_WAIT1 while the bytes the client never read are
still queued).  After the run the stalled clients read what they were sent: the stream must
stop there, with a 1008 close frame or with the end of the connection alone (a frame the
server could not finish is cut off).
"""

from __future__ import annotations

import base64
import os
import selectors
import socket
import statistics
import struct
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.conftest import login
from tests.sites import small_queue
from tools.servers import RedisServer, UwsgiServer, raise_fd_limit, wait_until

HEALTHY = 1000
STALLED = 10
RATE = 10  # broadcasts a second
MESSAGE_SIZE = 4096
RUN_SECONDS = 10.0
QUEUE = small_queue.WS4REDIS_SEND_QUEUE_SIZE
STALLED_RCVBUF = 4096
#: Seconds from a stalled client's queue overflowing to the end of its TCP connection.  Its
#: writer is stuck, so the close frame cannot go out; a loop may still give it a grace of up to
#: twice ``wsgi_server.CLOSE_TIMEOUT`` (4 s) before ending the connection, plus 2 s of slack.
#: On a machine so busy that messages reach the baseline worker's clients late, timers fire
#: late too: the worst latency seen there during the run is added to the bound.
CLOSE_BOUND = 6.0
#: The healthy clients' p99 latency with stalled clients, at most this many times the baseline.
LATENCY_RATIO = 2.0
#: Growth of the worker's RSS allowed between the middle and the end of the run with stalled
#: clients.  Queues hold references to the frames all clients share, so even unbounded queues
#: would add only 200 KB in those 5 s; a copy of the data kept per stalled client would add
#: 2 MB (10 clients × 10 messages × 4 KiB a second).
RSS_GROWTH_BOUND = 1024 * 1024
BASELINE = "baseline"  # the worker without stalled clients
WITH_STALLED = "with stalled clients"
PREFIX = "ws"  # the example's WS4REDIS_PREFIX
HEARTBEAT = b"--heartbeat--"
USER = "john"
TIMEOUT = 10.0
SAMPLE_INTERVAL = 0.1
#: Seconds a send buffer must stay unchanged to count as full (its writer blocked).
FULL_FOR = 0.3
CLOSE = 8
TEXT = 1
SERVER_ARGS = ["--gevent", str(HEALTHY + STALLED + 100), "--http-websockets", "--module", "wsgi"]


# -- clients ----------------------------------------------------------------------------------


def handshake(
    port: int, path: str, *, cookie: str | None = None, rcvbuf: int | None = None
) -> tuple[socket.socket, bytes]:
    """Open a WebSocket on a raw socket; returns it and the bytes that came after the 101."""
    sock = socket.socket()
    if rcvbuf is not None:  # before connect(): the window scale is agreed in the SYN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        headers = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *([f"Cookie: {cookie}"] if cookie else []),
        ]
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"connection closed during the handshake: {received!r}")
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return sock, rest
    except BaseException:
        sock.close()
        raise


def split_frames(buffer: bytes | bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """The complete server frames at the start of ``buffer`` as ``(opcode, payload)``, and how
    many bytes they took.  Server frames are unmasked and, from ws4redis, never fragmented."""
    frames, position, size = [], 0, len(buffer)
    while size - position >= 2:
        opcode, length = buffer[position] & 0x0F, buffer[position + 1] & 0x7F
        start = position + 2
        if length == 126:
            start += 2
            length = int.from_bytes(buffer[position + 2 : start], "big")
        elif length == 127:
            start += 8
            length = int.from_bytes(buffer[position + 2 : start], "big")
        if size < start + length:
            break
        frames.append((opcode, bytes(buffer[start : start + length])))
        position = start + length
    return frames, position


def message(seq: int, sent: float, size: int = MESSAGE_SIZE) -> bytes:
    """A broadcast: its sequence number and publication time (``time.monotonic()``), padded."""
    return f"{seq:08d} {sent:.6f} ".encode().ljust(size, b".")


def parse_message(payload: bytes) -> tuple[int, float]:
    seq, sent, _ = payload.split(b" ", 2)
    return int(seq), float(sent)


@dataclass
class HealthyClient:
    """One client that reads everything; the reader thread updates it."""

    sock: socket.socket
    buffer: bytearray
    group: str
    next_seq: int = 0
    disorder: list[str] = field(default_factory=list)
    ended: str | None = None


class Readers(threading.Thread):
    """Reads every healthy client in one thread (``epoll``), recording each delivery."""

    def __init__(self, clients: list[HealthyClient]) -> None:
        super().__init__(daemon=True)
        self.selector = selectors.DefaultSelector()
        for client in clients:
            client.sock.setblocking(False)
            self.selector.register(client.sock, selectors.EVENT_READ, client)
        self.seqs = {client.group: array("q") for client in clients}
        self.latencies = {client.group: array("d") for client in clients}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(SAMPLE_INTERVAL):
                self.read(key.data)

    def read(self, client: HealthyClient) -> None:
        try:
            data = client.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError as exc:
            data, client.ended = b"", repr(exc)
        now = time.monotonic()
        if not data:
            client.ended = client.ended or "end of the connection"
            self.selector.unregister(client.sock)
            return
        client.buffer += data
        frames, used = split_frames(client.buffer)
        del client.buffer[:used]
        for opcode, payload in frames:
            if opcode == CLOSE:
                client.ended = f"close frame {payload[:2].hex()} {payload[2:]!r}"
            elif opcode == TEXT and payload != HEARTBEAT:
                seq, sent = parse_message(payload)
                if seq != client.next_seq:
                    client.disorder.append(f"got {seq} when {client.next_seq} was due")
                client.next_seq = seq + 1
                self.seqs[client.group].append(seq)
                self.latencies[client.group].append(now - sent)

    def latencies_of(self, group: str, first: int, end: int) -> list[float]:
        """The latencies of the deliveries of messages ``first`` … ``end - 1`` to the clients of
        ``group``, in seconds."""
        pairs = zip(self.seqs[group], self.latencies[group], strict=True)
        return [latency for seq, latency in pairs if first <= seq < end]

    def first_arrivals(self, group: str, sent: list[float]) -> list[float]:
        """When each message first reached a client of ``group``: when its worker's hub
        dispatched it, give or take one fan-out."""
        earliest = [float("inf")] * len(sent)
        for seq, latency in zip(self.seqs[group], self.latencies[group], strict=True):
            earliest[seq] = min(earliest[seq], sent[seq] + latency)
        return earliest

    def stop(self) -> None:
        self.stopping.set()
        self.join(TIMEOUT)
        self.selector.close()


# -- the server's side ------------------------------------------------------------------------


def worker_pid(server: UwsgiServer) -> int:
    """The pid of the uWSGI worker: without ``--master`` the server process is the worker."""
    assert server.process is not None
    pid = server.process.pid
    children = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _parent(entry) == pid
    ]
    assert not children, f"expected a single uWSGI process, found workers {children}"
    return pid


def _parent(entry: Path) -> int | None:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def rss_bytes(pid: int) -> int:
    """``VmRSS`` of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
TCP_ESTABLISHED = 1
LOOPBACK = socket.inet_aton("127.0.0.1") + bytes(12)


class SocketDiag:
    """Asks the kernel (``sock_diag`` netlink) about one TCP connection at a time.

    Cheap enough to ask ten times every 0.1 s, unlike reading ``/proc/net/tcp``, which walks
    every socket of the machine (70 ms of CPU each time with a few thousand of them).
    """

    def __init__(self) -> None:
        self.netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        self.netlink.settimeout(TIMEOUT)

    def state(self, local_port: int, remote_port: int) -> tuple[int, int] | None:
        """``(TCP state, bytes in the send queue)`` of the loopback socket from ``local_port``
        to ``remote_port``, or ``None`` once it is gone."""
        sockid = (
            struct.pack("!HH", local_port, remote_port)
            + LOOPBACK
            + LOOPBACK
            + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # any interface, no cookie
        )
        request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        body = request + sockid
        header = struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 0, 0)
        self.netlink.send(header + body)
        reply = self.netlink.recv(65536)
        if struct.unpack_from("=H", reply, 4)[0] == NLMSG_ERROR:
            return None  # no such socket
        state = reply[17]
        found_remote = struct.unpack_from("!H", reply, 22)[0]
        if found_remote != remote_port:
            return None  # the lookup fell back to the listening socket
        send_queue = struct.unpack_from("=I", reply, 16 + 4 + 48 + 8)[0]
        return state, send_queue

    def close(self) -> None:
        self.netlink.close()


class Monitor(threading.Thread):
    """Samples the worker's RSS and the server's end of every stalled connection."""

    def __init__(self, pid: int, server_port: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.server_port = server_port
        self.diag = SocketDiag()
        self.rss: list[tuple[float, int]] = []
        self.client_ports: set[int] = set()
        #: When the server's end of each stalled connection left ESTABLISHED.
        self.ended_at: dict[int, float] = {}
        #: The most bytes ever waiting in the server's send buffer, per stalled connection.
        self.send_queue: dict[int, int] = {}
        self.stopping = threading.Event()

    def watch(self, client_ports: set[int]) -> None:
        """Watch the server's end of the connections from these client ports from now on."""
        self.send_queue.update(dict.fromkeys(client_ports, 0))
        self.client_ports = set(client_ports)

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_INTERVAL):
            now = time.monotonic()
            self.rss.append((now, rss_bytes(self.pid)))
            for port in self.client_ports - set(self.ended_at):
                found = self.diag.state(self.server_port, port)
                if found is None or found[0] != TCP_ESTABLISHED:
                    self.ended_at[port] = now
                if found is not None:
                    self.send_queue[port] = max(self.send_queue[port], found[1])

    def stop(self) -> None:
        self.stopping.set()
        if self.ident is not None:  # started
            self.join(TIMEOUT)
        self.diag.close()


# -- the scenario -----------------------------------------------------------------------------


@dataclass
class StalledOutcome:
    """What one stalled client saw once it read, and when the server ended its connection."""

    port: int
    frames: list[tuple[int, bytes]]
    cut_off: int  # bytes of a frame the server did not finish
    ending: str  # "eof", "reset" or "still open"
    last_seq: int | None
    overflow_seq: int
    ended_at: float | None
    overflowed_at: float | None
    send_queue: int


@dataclass
class Outcome:
    """Everything the run measured, on both workers."""

    baseline: list[float]
    with_stalled: list[float]
    baseline_during_overflow: list[float]
    during_overflow: list[float]
    overflow_window: tuple[int, int]
    healthy: list[HealthyClient]
    total: int
    stalled: list[StalledOutcome]
    rss: list[tuple[float, int]]
    run_start: float
    run_end: float
    watched_until: float  # when the test stopped watching the stalled connections


def publish_run(client: redis.Redis, channel: str, count: int) -> list[float]:
    """Publish broadcasts 0 … ``count - 1`` at ``RATE`` a second; their publication times."""
    times = []
    start = time.monotonic()
    for index in range(count):
        delay = start + index / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the publisher, not waiting for a condition
        sent = time.monotonic()
        client.publish(channel, message(index, sent))
        times.append(sent)
    return times


def wait_delivered(clients: list[HealthyClient], end: int) -> None:
    """Wait until every healthy client has message ``end - 1`` (or has been closed)."""
    wait_until(
        lambda: all(c.next_seq >= end or c.ended for c in clients),
        RUN_SECONDS + TIMEOUT,
        f"every healthy client to receive message {end - 1}",
    )


def fill_kernel_buffers(
    client: redis.Redis, channel: str, server_port: int, client_ports: set[int]
) -> None:
    """Block the writers of the stalled clients: publish one message larger than a socket's
    send buffer can grow on a channel only they hear, and wait until the server's send buffers
    of their connections stay full."""
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    client.publish(channel, b"filler ".ljust(wmem_max + (1 << 20), b"f"))
    diag = SocketDiag()
    changed: dict[int, tuple[int, float]] = {}  # bytes queued, when that last changed

    def blocked() -> bool:
        now = time.monotonic()
        for port in client_ports:
            found = diag.state(server_port, port)
            queued = found[1] if found else 0
            if changed.get(port, (None,))[0] != queued:
                changed[port] = (queued, now)
        return all(queued and now - since >= FULL_FOR for queued, since in changed.values())

    try:
        wait_until(blocked, TIMEOUT, "the stalled clients' send buffers to be full")
    finally:
        diag.close()


def read_to_end(sock: socket.socket, first: bytes, deadline: float) -> tuple[bytes, str]:
    """Read ``sock`` until the connection ends or ``deadline``; the bytes and how it stopped."""
    data = bytearray(first)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(data), "still open"
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            return bytes(data), "still open"
        except ConnectionResetError:
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), "eof"
        data += chunk


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def describe(name: str, latencies: list[float]) -> str:
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    return (
        f"{name}: {len(latencies)} deliveries, latency p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )


def connect_healthy(server: UwsgiServer, path: str, group: str) -> list[HealthyClient]:
    """``HEALTHY`` clients of ``server``, a few handshakes at a time."""
    with ThreadPoolExecutor(32) as pool:
        opened = list(pool.map(lambda _: handshake(server.port, path), range(HEALTHY)))
    return [HealthyClient(sock, bytearray(rest), group) for sock, rest in opened]


@pytest.fixture(scope="module")
def outcome(
    start_uwsgi: Callable[..., UwsgiServer], redis_server: RedisServer
) -> Iterator[Outcome]:
    """Run the scenario once for all tests of this module."""
    raise_fd_limit(2 * HEALTHY + STALLED + 1024)  # this process, and the servers it starts
    servers = {
        group: start_uwsgi("tests.sites.small_queue", args=SERVER_ARGS)
        for group in (BASELINE, WITH_STALLED)
    }
    server = servers[WITH_STALLED]
    facility = f"slow-consumers-{uuid.uuid4().hex[:8]}"
    path = f"/ws/{facility}?subscribe-broadcast"
    publisher = redis_server.client()
    cookie = login(server.port, USER)
    healthy: list[HealthyClient] = []
    stalled: list[tuple[socket.socket, bytes]] = []
    readers: Readers | None = None
    monitor = Monitor(worker_pid(server), server.port)
    try:
        for group, group_server in servers.items():
            healthy += connect_healthy(group_server, path, group)
        readers = Readers(healthy)
        readers.start()
        monitor.start()
        for _ in range(STALLED):
            stalled.append(
                handshake(
                    server.port, f"{path}&subscribe-user", cookie=cookie, rcvbuf=STALLED_RCVBUF
                )
            )
        monitor.watch({sock.getsockname()[1] for sock, _ in stalled})
        fill_kernel_buffers(
            publisher, f"{PREFIX}:user:{USER}:{facility}", server.port, monitor.client_ports
        )
        count = int(RUN_SECONDS * RATE)
        run_start = time.monotonic()
        sent = publish_run(publisher, f"{PREFIX}:broadcast:{facility}", count)
        run_end = time.monotonic()
        wait_delivered(healthy, count)
        # the last moment the bound allows, if the queues overflowed where they should have
        lateness = max(readers.latencies_of(BASELINE, 0, count))
        deadline = run_start + QUEUE / RATE + CLOSE_BOUND + lateness
        try:
            wait_until(
                lambda: len(monitor.ended_at) == len(stalled),
                max(0.0, deadline - time.monotonic()),
                "the server to end the stalled connections",
            )
        except TimeoutError:
            pass  # test_every_stalled_client_overflows_and_is_closed_soon_after says how late
        monitor.stop()
        watched_until = time.monotonic()

        dispatched = readers.first_arrivals(WITH_STALLED, sent)
        outcomes = [stalled_outcome(sock, rest, monitor, dispatched) for sock, rest in stalled]
        first, end = overflow_window(outcomes, dispatched)
        result = Outcome(
            baseline=readers.latencies_of(BASELINE, 0, count),
            with_stalled=readers.latencies_of(WITH_STALLED, 0, count),
            baseline_during_overflow=readers.latencies_of(BASELINE, first, end),
            during_overflow=readers.latencies_of(WITH_STALLED, first, end),
            overflow_window=(first, end),
            healthy=healthy,
            total=count,
            stalled=outcomes,
            rss=[(t, rss) for t, rss in monitor.rss if run_start <= t <= run_end],
            run_start=run_start,
            run_end=run_end,
            watched_until=watched_until,
        )
        print(f"\n{describe(f'{HEALTHY} healthy clients alone', result.baseline)}")
        print(describe(f"{HEALTHY} healthy clients with {STALLED} stalled", result.with_stalled))
        yield result
    finally:
        monitor.stop()
        if readers is not None:
            readers.stop()
        for sock in [client.sock for client in healthy] + [sock for sock, _ in stalled]:
            sock.close()
        publisher.close()
        for group_server in servers.values():
            group_server.stop()


def overflow_window(outcomes: list[StalledOutcome], dispatched: list[float]) -> tuple[int, int]:
    """The broadcasts dispatched from the first overflow until the last stalled client was
    closed (or until the end of the run, if one never was), and at least for a second, as
    ``(first, end)`` numbers."""
    first = min(o.overflow_seq for o in outcomes)
    ends = [o.ended_at for o in outcomes]
    if first >= len(dispatched) or None in ends:
        return first, len(dispatched)
    closed = max(e for e in ends if e is not None)
    end = max(first + RATE, sum(1 for t in dispatched if t <= closed))
    return first, min(end, len(dispatched))


def stalled_outcome(
    sock: socket.socket, rest: bytes, monitor: Monitor, dispatched: list[float]
) -> StalledOutcome:
    """Read what a stalled client was sent, and work out when its queue overflowed.

    Its writer blocked on a chunk that ended with broadcast ``k`` (-1 when it blocked on the
    filler); broadcasts ``k + 1`` … ``k + QUEUE`` then filled its queue, and
    ``k + QUEUE + 1`` overflowed it.  Once the client reads, it gets its queue followed by the
    close frame (so ``k + QUEUE`` is the last broadcast it sees), or, when the server ended the
    connection instead, at most what it had written up to ``k``.  Either way the estimate names
    a broadcast no later than the one that overflowed the queue; the time is when the worker's
    healthy clients first received that broadcast, that is when its hub dispatched it.
    """
    port = sock.getsockname()[1]
    data, ending = read_to_end(sock, rest, time.monotonic() + TIMEOUT)
    frames, used = split_frames(data)
    seqs = [
        parse_message(payload)[0]
        for opcode, payload in frames
        if opcode == TEXT and not payload.startswith((b"filler", HEARTBEAT))
    ]
    last = max(seqs) if seqs else -1
    closed = any(opcode == CLOSE for opcode, _ in frames)
    overflow_index = last + 1 + (0 if closed else QUEUE)
    return StalledOutcome(
        port=port,
        frames=frames,
        cut_off=len(data) - used,
        ending=ending,
        last_seq=seqs[-1] if seqs else None,
        ended_at=monitor.ended_at.get(port),
        overflow_seq=overflow_index,
        overflowed_at=dispatched[overflow_index] if overflow_index < len(dispatched) else None,
        send_queue=monitor.send_queue[port],
    )


# -- the tests --------------------------------------------------------------------------------


def test_every_stalled_client_overflows_and_is_closed_soon_after(outcome: Outcome) -> None:
    for stalled in outcome.stalled:
        print(
            f"stalled client :{stalled.port}: up to {stalled.send_queue} bytes queued in the "
            f"server's kernel; queue overflowed "
            + (
                f"{stalled.overflowed_at - outcome.run_start:.2f} s into the run"
                if stalled.overflowed_at
                else "never"
            )
            + "; connection ended "
            + (
                f"{stalled.ended_at - outcome.run_start:.2f} s into the run"
                if stalled.ended_at
                else "never while it did not read"
            )
        )
    bound = CLOSE_BOUND + max(outcome.baseline)
    print(f"bound: {bound:.1f} s from overflow to the end of the connection")
    for stalled in outcome.stalled:
        assert stalled.overflowed_at is not None, (
            f"the queue of stalled client :{stalled.port} cannot have overflowed: it received "
            f"broadcasts up to {stalled.last_seq}; publish more or shorten the queue"
        )
        assert stalled.ended_at is not None, (
            f"stalled client :{stalled.port} still connected "
            f"{outcome.watched_until - stalled.overflowed_at:.1f} s after its queue overflowed, "
            f"when the test stopped watching (bound: {bound:.1f} s)"
        )
        assert stalled.ended_at - stalled.overflowed_at <= bound, (
            f"stalled client :{stalled.port} closed {stalled.ended_at - stalled.overflowed_at:.1f}"
            f" s after its queue overflowed (bound: {bound:.1f} s)"
        )


def test_stalled_streams_end_with_1008_or_with_the_connection(outcome: Outcome) -> None:
    for stalled in outcome.stalled:
        assert stalled.ending in ("eof", "reset"), (
            f"stalled client :{stalled.port}: the connection was still open after reading "
            f"{len(stalled.frames)} frames"
        )
        closes = [i for i, (opcode, _) in enumerate(stalled.frames) if opcode == CLOSE]
        if closes:
            assert closes == [len(stalled.frames) - 1] and not stalled.cut_off, (
                f"stalled client :{stalled.port}: frames after the close frame"
            )
            code = struct.unpack("!H", stalled.frames[-1][1][:2])[0]
            assert code == 1008, f"stalled client :{stalled.port} closed with {code}"


def test_healthy_clients_receive_everything_in_order_and_stay_open(outcome: Outcome) -> None:
    for client in outcome.healthy:
        assert client.ended is None, f"a healthy client was closed: {client.ended}"
        assert not client.disorder, client.disorder[:3]
        assert client.next_seq == outcome.total


def test_healthy_latency_p99_stays_within_twice_the_baseline(outcome: Outcome) -> None:
    baseline = percentile(outcome.baseline, 0.99)
    with_stalled = percentile(outcome.with_stalled, 0.99)
    print(
        f"healthy clients' p99: {baseline * 1000:.1f} ms alone, {with_stalled * 1000:.1f} ms "
        f"with {STALLED} stalled clients"
    )
    assert len(outcome.baseline) == len(outcome.with_stalled) == HEALTHY * outcome.total
    assert with_stalled <= LATENCY_RATIO * baseline


def test_hub_kept_delivering_while_stalled_clients_overflowed(outcome: Outcome) -> None:
    first, end = outcome.overflow_window
    assert end > first, "no broadcast was published while stalled clients overflowed"
    window = f"broadcasts {first}-{end - 1} (dispatched while stalled clients overflowed)"
    print(describe(f"{window}, baseline", outcome.baseline_during_overflow))
    print(describe(f"{window}, with stalled clients", outcome.during_overflow))
    assert len(outcome.during_overflow) == HEALTHY * (end - first)
    during = percentile(outcome.during_overflow, 0.99)
    assert during <= LATENCY_RATIO * percentile(outcome.baseline_during_overflow, 0.99)


def test_worker_rss_stays_flat(outcome: Outcome) -> None:
    middle = outcome.run_start + (outcome.run_end - outcome.run_start) / 2
    samples = [(t, rss) for t, rss in outcome.rss if t <= outcome.run_end]
    at_middle = next(rss for t, rss in samples if t >= middle)
    at_end = samples[-1][1]
    print(
        f"worker RSS: {samples[0][1] / 2**20:.1f} MiB at the start of the run, "
        f"{at_middle / 2**20:.1f} MiB in the middle, {at_end / 2**20:.1f} MiB at the end"
    )
    assert at_end - at_middle < RSS_GROWTH_BOUND
