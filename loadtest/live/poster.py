"""The poster process: awards at a fixed rate, straight into Valkey with the real member script.

``python -m loadtest.live.poster --redis-url URL --prefix P --members-file F --rate R ...``
applies one award a message, to a random connected member, with what the service itself runs
(``parse_event``, ``plan_award``, ``store.member_call``), RESP-encoded by ``hiredis`` and
pipelined a burst a tick on one raw socket. The feed node is measured alone, as in production,
where ingest nodes and feed nodes are separate processes and the fan-out between them is Redis
pub/sub. Each award's event id carries its due time (``stamps.event_id``): the latency the
subscriber measures includes any lateness of the poster.

It reports ``ready`` (the window) and ``done`` (what the window's replies said) as JSON lines.
"""

from __future__ import annotations

import argparse
import gc
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hiredis
import orjson

from loadtest.live.options import CONFIG
from loadtest.live.pipe import emit
from loadtest.live.stamps import event_id
from loadtest.live.ticks import SendLog, Ticks
from loadtest.processes import BenchError


class RawRedis:
    """One socket to Valkey: commands written as they come, replies read only when asked."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()
        if parsed.password:
            self.call("AUTH", *([parsed.username] if parsed.username else []), parsed.password)

    def call(self, *parts: Any) -> Any:
        """One command and its reply."""
        self.sock.sendall(hiredis.pack_command(parts))
        return self.read(1)[0]

    def read(self, n: int, block: bool = True) -> list[Any]:
        """Up to ``n`` replies; without ``block``, only those already arrived."""
        out: list[Any] = []
        while len(out) < n:
            reply = self.reader.gets()
            if reply is False:
                try:
                    chunk = self.sock.recv(1 << 20, 0 if block else socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if not chunk:
                    raise BenchError("Redis closed the connection")
                self.reader.feed(chunk)
                continue
            out.append(reply)
        return out


def post(args: argparse.Namespace) -> int:
    from engine.awards import plan_award
    from engine.config import load_program
    from engine.events import parse_event
    from engine.keys import Keys
    from engine.scripts import Scripts
    from engine.store import OpStatus, decode_reply, member_call

    program = load_program(args.config)
    scripts = Scripts()
    keys_of = Keys(args.prefix)
    sha = scripts.member.sha
    members = orjson.loads(Path(args.members_file).read_bytes())
    rng = random.Random(args.seed)

    redis = RawRedis(args.redis_url)
    if redis.call("SCRIPT", "LOAD", scripts.member.source).decode() != sha:
        raise BenchError("the server hashes member.lua differently")

    ticks = Ticks(args.rate, args.warmup, args.duration, args.tick_ms)
    emit(ticks.ready())
    window = SendLog(ticks.tick_s)
    seq = 0
    applied = not_applied = errors = 0
    first_error = ""
    # Replies are read between ticks, never waited for: a slow reply must not delay the next send.
    # Those of the measured window (after ``pending_warm`` warm-up replies) are tallied.
    pending_warm = pending = 0

    def tally(replies: list[Any]) -> None:
        nonlocal pending_warm, applied, not_applied, errors, first_error
        for reply in replies:
            if pending_warm:
                pending_warm -= 1
            elif isinstance(reply, Exception):
                errors += 1
                first_error = first_error or str(reply)
            elif decode_reply(reply).status is OpStatus.APPLIED:
                applied += 1
            else:
                not_applied += 1

    gc.collect()
    gc.freeze()
    gc.disable()  # nothing here makes reference cycles; a collection would only add jitter
    for burst in ticks:
        stamp = burst.scheduled_ns  # the burst is sent at this time or (see send lag) later
        now_ms = stamp // 1_000_000
        first_seq = seq + 1
        parts = []
        for _ in range(burst.size):
            seq += 1
            idx = rng.choice(members)
            event = parse_event({"id": event_id(stamp, seq, idx), "member": f"m-{idx}", "type": "tap"}, program, now_ms)
            keys, argv = member_call(keys_of, plan_award(program, event, now_ms), program)
            parts.append(hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *argv)))
        payload = b"".join(parts)
        wait = (stamp - time.time_ns()) / 1e9
        if wait > 0:
            time.sleep(wait)
        sent_at = time.time_ns()
        redis.sock.sendall(payload)
        pending += burst.size
        if burst.measured:
            window.burst(burst, first_seq, sent_at)
        else:
            pending_warm += burst.size
        replies = redis.read(pending, block=False)
        pending -= len(replies)
        tally(replies)
    redis.sock.settimeout(60)
    tally(redis.read(pending))
    redis.sock.close()
    emit(window.done(applied=applied, not_applied=not_applied, errors=errors, first_error=first_error))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.live.poster")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--members-file", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--tick-ms", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    return post(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
