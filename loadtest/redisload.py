"""Baseline (b): the real award script with real plans, pipelined straight into the server.

The fastest the server can apply awards: every event is validated, planned and turned into the
KEYS/ARGV the service would send (``store.member_call``), then RESP-encoded by
``hiredis.pack_command`` *before* the clock starts. Timed: writing the commands over one raw
socket in pipelines of ``depth`` (two in flight, so the server never waits for the client) and
reading the replies with ``hiredis.Reader``. This is what ``redis-benchmark -P 1000`` measures,
for our own script.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import hiredis

from engine.awards import plan_award
from engine.config import CompiledProgram
from engine.events import parse_event
from engine.keys import Keys
from engine.scripts import Scripts
from engine.store import OpStatus, decode_reply, member_call


def purchase_events(run_id: str, count: int, members: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` distinct purchase events spread over ``members`` member ids."""
    rng = random.Random(seed)
    return [
        {
            "id": f"{run_id}-{i}",
            "member": f"m{(i * 2_654_435_761) % members}",
            "type": "purchase",
            "data": {"amount": rng.randrange(100, 50_000)},
        }
        for i in range(count)
    ]


def award_commands(program: CompiledProgram, prefix: str, raw_events: Sequence[dict[str, Any]], now_ms: int) -> list[bytes]:
    """The EVALSHA of member.lua the service would send for each event, RESP-encoded."""
    keys_of = Keys(prefix)
    sha = Scripts().member.sha
    commands = []
    for raw in raw_events:
        plan = plan_award(program, parse_event(raw, program, now_ms), now_ms)
        keys, args = member_call(keys_of, plan, program)
        commands.append(hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args)))
    return commands


@dataclass
class PipelineResult:
    replies: int
    seconds: float
    errors: int
    sampled: int  # replies decoded to check them
    applied: int  # of those, how many say "applied"
    error_samples: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.replies / self.seconds if self.seconds else 0.0


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379


def run_pipelined(
    url: str, commands: Sequence[bytes], depth: int = 1000, in_flight: int = 2, sample_every: int = 97
) -> PipelineResult:
    """Send ``commands`` in pipelines of ``depth``; time from the first write to the last reply.

    Every ``sample_every``-th reply is decoded as an member.lua reply (0: none are).
    """
    chunks = [b"".join(commands[i : i + depth]) for i in range(0, len(commands), depth)]
    sizes = [min(depth, len(commands) - i) for i in range(0, len(commands), depth)]
    reader = hiredis.Reader()
    errors = sampled = applied = 0
    error_samples: list[str] = []
    with socket.create_connection(host_port(url)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        recv = sock.recv
        started = time.perf_counter()
        for chunk in chunks[:in_flight]:
            sock.sendall(chunk)
        n = 0
        for i, size in enumerate(sizes):
            got = 0
            while got < size:
                reply = reader.gets()
                if reply is False:
                    data = recv(1 << 20)
                    if not data:
                        raise ConnectionError("the server closed the connection mid-pipeline")
                    reader.feed(data)
                    continue
                got += 1
                n += 1
                if isinstance(reply, Exception):
                    errors += 1
                    if len(error_samples) < 5:
                        error_samples.append(str(reply))
                elif sample_every and n % sample_every == 0:
                    sampled += 1
                    if decode_reply(reply).status is OpStatus.APPLIED:
                        applied += 1
            if i + in_flight < len(chunks):
                sock.sendall(chunks[i + in_flight])
        seconds = time.perf_counter() - started
    return PipelineResult(n, seconds, errors, sampled, applied, error_samples)
