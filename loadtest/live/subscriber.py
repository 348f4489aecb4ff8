"""The subscriber process: N WebSocket sockets on ``/v1/live``, one member each, every frame recorded.

``python -m loadtest.live.subscriber --port P --n N`` (the member token secret in
``BENCH_TOKEN_SECRET``) opens the sockets, ``concurrency`` handshakes at a time, then answers the
parent's commands on stdin, one a line:

- ``report <lo> <hi> <expected> <quiet s>``: waits until ``expected`` frames of sequence numbers
  ``lo``..``hi`` arrived (or none arrived for ``quiet s``, or a minute passed) and reports the
  recorder's figures plus the sockets the server closed, by close code;
- ``close``: closes every socket with the closing handshake and exits.

It runs on uvloop with one ``WsClient`` per socket (no task per socket), so that the measuring
side costs as little CPU as possible next to the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import sys
import time

from loadtest.live.pipe import emit, stdin_lines
from loadtest.live.recorder import Recorder
from loadtest.live.wsclient import HandshakeError, WsClient
from loadtest.processes import raise_nofile

SUBPROTOCOL = "rekindle.json"
#: Beyond this many sockets, source addresses spread over 127.0.0.x (a port range per address).
PER_SOURCE_ADDRESS = 20_000


async def subscribe(args: argparse.Namespace) -> int:
    from realtime.auth import Auth

    raise_nofile()
    loop = asyncio.get_running_loop()
    commands = stdin_lines(loop)
    auth = Auth(frozenset(), frozenset(), os.environ["BENCH_TOKEN_SECRET"])
    now_ms = int(time.time() * 1000)
    recorder = Recorder()
    clients: list[WsClient | None] = [None] * args.n
    failures: dict[str, int] = {}
    failed: list[int] = []
    gate = asyncio.Semaphore(args.concurrency)

    async def open_one(i: int) -> None:
        token, _ = auth.mint(f"m-{i}", now_ms, 3600)  # type: ignore[arg-type]
        uri = f"ws://{args.host}:{args.port}/v1/live?token={token}&since=0-0"
        local = (f"127.0.0.{2 + i // PER_SOURCE_ADDRESS}", 0) if i >= PER_SOURCE_ADDRESS else None
        on_message = functools.partial(recorder.on_message, i)
        error = "?"
        async with gate:
            for attempt in range(4):
                transport: asyncio.BaseTransport | None = None
                try:
                    transport, client = await loop.create_connection(
                        lambda: WsClient(uri, on_message, subprotocol=SUBPROTOCOL, deflate=args.deflate),
                        args.host,
                        args.port,
                        local_addr=local,
                    )
                    await asyncio.wait_for(client.opened, 30)
                    clients[i] = client
                    return
                except (OSError, asyncio.TimeoutError, HandshakeError) as exc:
                    error = f"{type(exc).__name__}: {exc}"[:120]
                    if transport is not None:
                        transport.abort()
                    await asyncio.sleep(0.1 * (attempt + 1))
        failures[error] = failures.get(error, 0) + 1
        failed.append(i)

    started = time.perf_counter()
    await asyncio.gather(*(open_one(i) for i in range(args.n)))
    connected = [c for c in clients if c is not None]
    gc.collect()
    gc.freeze()  # the sockets live to the end: keep them out of every later collection
    # And no collection at all from here: each frame replaces a few objects per socket inside the
    # protocol (its parser's generator, the last frame, two lists), which makes no cycle but, over
    # 10,000 sockets, keeps tens of thousands of young objects that a collection would walk,
    # stalling every socket for 20-30 ms at a time (measured). The poster does the same.
    gc.disable()
    emit(
        {
            "event": "connected",
            "connected": len(connected),
            "failed": sorted(failed),
            "errors": failures,
            "seconds": round(time.perf_counter() - started, 2),
        }
    )

    while True:
        command = (await commands.get()).split()
        if not command:
            continue
        if command[0] == "report":
            lo, hi, expected, quiet_s = int(command[1]), int(command[2]), int(command[3]), float(command[4])
            await _settle(recorder, lo, hi, expected, quiet_s)
            closed: dict[str, int] = {}
            for c in connected:
                if c.close_code is not None:
                    closed[str(c.close_code)] = closed.get(str(c.close_code), 0) + 1
            emit({"event": "report", **recorder.report(lo, hi), "closed_by_server": closed})
        elif command[0] == "close":
            await _close_all(connected)
            emit({"event": "closed"})
            return 0


async def _settle(recorder: Recorder, lo: int, hi: int, expected: int, quiet_s: float) -> None:
    """Until every expected frame arrived, or none did for ``quiet_s``, or a minute passed."""
    deadline = time.monotonic() + 60
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        have = recorder.count_in(lo, hi)
        if have >= expected:
            return
        if have != last:
            last, last_change = have, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return
        await asyncio.sleep(0.2)


async def _close_all(connected: list[WsClient]) -> None:
    """The closing handshake on every socket; those the server has not dropped in 10 s are aborted."""
    for c in connected:
        c.close()
    waiting = [c.done for c in connected if not c.done.done()]
    if waiting:
        await asyncio.wait(waiting, timeout=10)
    for c in connected:
        if c.transport is not None and not c.transport.is_closing():
            c.transport.abort()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.live.subscriber")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args(argv)
    import uvloop

    return uvloop.run(subscribe(args))


if __name__ == "__main__":
    sys.exit(main())
