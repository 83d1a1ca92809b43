"""The benchmark's publisher: a process of its own that publishes the timed messages.

run.py starts it with the bench virtualenv's Python and sends one JSON command per line:

``{"op": "one", "seq": k}``
    publish message ``k`` now;
``{"op": "rate", "first": k, "count": c, "rate": r}``
    publish messages ``k .. k+c-1`` at ``r`` per second (paced against the clock).

Each command is answered by one JSON line.  How each system receives the publish:

``--mode redis`` (ws4redis and the ceiling)
    ``PUBLISH broadcast:FACILITY payload`` — what ``RedisPublisher(facility=…,
    broadcast=True).publish_message()`` sends when ``WS4REDIS_EXPIRE`` is 0;
``--mode channels`` (both Channels setups)
    ``channel_layer.group_send("bench", {"type": "broadcast.message", "text": payload})`` with
    the server's own layer class and options — what a Django view of a Channels project calls.

A message is ASCII ``"SEQ T_US xxxx…"`` padded to ``--size`` bytes; ``T_US`` is the wall-clock
time in microseconds taken right before the publish call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time


def payload(seq: int, size: int) -> str:
    head = f"{seq} {time.time_ns() // 1000} "
    return head + "x" * max(0, size - len(head))


async def make_publish(args: argparse.Namespace):  # noqa: ANN201
    if args.mode == "redis":
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(args.url)
        await client.ping()

        async def publish(seq: int) -> None:
            await client.publish(args.channel, payload(seq, args.size))

        return publish
    os.environ["BENCH_REDIS_URL"] = args.url
    os.environ["BENCH_CHANNEL_LAYER"] = args.layer
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_channels.settings")
    import django

    django.setup()
    from channels.layers import get_channel_layer

    layer = get_channel_layer()

    async def publish(seq: int) -> None:
        await layer.group_send(
            "bench", {"type": "broadcast.message", "text": payload(seq, args.size)}
        )

    return publish


async def serve(args: argparse.Namespace) -> None:
    publish = await make_publish(args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    while line := await reader.readline():
        command = json.loads(line)
        if command["op"] == "one":
            await publish(command["seq"])
            answer = {"sent": 1}
        elif command["op"] == "rate":
            answer = await paced(publish, command["first"], command["count"], command["rate"])
        else:
            answer = {"error": f"unknown op {command['op']}"}
        print(json.dumps(answer), flush=True)


async def paced(publish, first: int, count: int, rate: float) -> dict[str, float]:  # noqa: ANN001
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await publish(first + i)
    elapsed = time.monotonic() - start
    return {"sent": count, "seconds": elapsed, "achieved_rate": count / max(elapsed, 1e-9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("redis", "channels"), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--channel", default="broadcast:bench")
    parser.add_argument("--layer", choices=("pubsub", "core"), default="pubsub")
    parser.add_argument("--size", type=int, default=100)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
