"""The live-feed benchmark's baseline: a bare ``websockets`` broadcast server, no Redis.

The ``websockets`` library's asyncio server on uvloop accepts the same URLs as ``/v1/live``
(``?token=`` a member token, checked with the same secret), and on command pushes frames shaped
like the service's (``{"id", "type": "xp", "data": {..., "event": "b-<ns>-<seq>-<member>"}}``) to
random connected sockets at a fixed rate, in ticks, each with ``broadcast`` (a synchronous write,
no per-socket task). It is the floor of "Python pushing to WebSockets on this machine".

Driven by ``loadtest.bench_live`` (``loadtest/live/orchestrate.py``) through stdin, one command
a line, answering JSON lines: ``count`` -> ``{"event": "count", "connections"}``;
``push <rate> <warmup s> <duration s> <tick ms>`` -> ``ready`` (the window) then ``done`` (what was
sent, as ``loadtest.live.ticks`` reports it); ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve

from loadtest.live.pipe import emit, stdin_lines
from loadtest.live.stamps import event_id
from loadtest.live.ticks import SendLog, Ticks
from loadtest.processes import raise_nofile


class Sockets:
    """Connected sockets with their member index; O(1) add, remove and random pick."""

    def __init__(self) -> None:
        self.slots: list[tuple[ServerConnection, int]] = []
        self._where: dict[ServerConnection, int] = {}

    def __len__(self) -> int:
        return len(self.slots)

    def add(self, ws: ServerConnection, member_index: int) -> None:
        self._where[ws] = len(self.slots)
        self.slots.append((ws, member_index))

    def remove(self, ws: ServerConnection) -> None:
        pos = self._where.pop(ws, None)
        if pos is None:
            return
        last = self.slots.pop()
        if pos < len(self.slots):
            self.slots[pos] = last
            self._where[last[0]] = pos


async def push(sockets: Sockets, rate: float, warmup: float, duration: float, tick_ms: float, seed: int = 2) -> None:
    rng = random.Random(seed)
    ticks = Ticks(rate, warmup, duration, tick_ms)
    emit(ticks.ready())
    window = SendLog(ticks.tick_s)
    seq = 0
    for burst in ticks:
        delay = (burst.scheduled_ns - time.time_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        stamp = time.time_ns()  # frames are built after this, so the stamp never flatters
        first_seq = seq + 1
        ms = stamp // 1_000_000
        for _ in range(burst.size):
            seq += 1
            ws, idx = rng.choice(sockets.slots)
            frame = orjson.dumps(
                {
                    "id": f"{ms}-{seq}",
                    "type": "xp",
                    "data": {"amount": 1, "total": seq, "reason": "tap_xp", "event": event_id(stamp, seq, idx)},
                }
            )
            broadcast((ws,), frame, text=True)
        if burst.measured:
            window.burst(burst, first_seq, stamp)
    emit(window.done())


async def run(port: int) -> int:
    raise_nofile()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    secret = os.environ["BENCH_TOKEN_SECRET"]
    sockets = Sockets()

    async def handler(ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
        try:
            claims = jwt.decode(query["token"][0], secret, algorithms=["HS256"], options={"require": ["sub", "exp"]})
            member = str(claims["sub"])
            index = int(member[2:]) if member.startswith("m-") and member[2:].isdigit() else -1
        except (KeyError, IndexError, jwt.InvalidTokenError):
            await ws.close(4401, "member token is invalid")
            return
        sockets.add(ws, index)
        try:
            await ws.wait_closed()
        finally:
            sockets.remove(ws)

    loop = asyncio.get_running_loop()
    commands = stdin_lines(loop)
    async with serve(handler, "127.0.0.1", port, backlog=2048, subprotocols=["rekindle.json"]):  # type: ignore[list-item]
        emit({"event": "listening", "port": port})
        while True:
            command = (await commands.get()).split()
            if not command:
                continue
            if command[0] == "count":
                emit({"event": "count", "connections": len(sockets)})
            elif command[0] == "push":
                rate, warmup, duration, tick_ms = map(float, command[1:5])
                await push(sockets, rate, warmup, duration, tick_ms)
            elif command[0] in ("quit", "close"):
                return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.live_baseline")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import uvloop

    return uvloop.run(run(args.port))


if __name__ == "__main__":
    sys.exit(main())
