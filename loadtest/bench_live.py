"""``make bench-live``: the live feed under load, against a bare ``websockets`` broadcast baseline.

One go, on loopback, every process started here and stopped here:

1. an embedded Valkey in a temporary folder;
2. the service, ``rekindle serve --workers 1`` with ``loadtest/bench_live.toml`` (one event type,
   one rule granting 1 XP, no cap, one tier: one award is exactly one frame);
3. a subscriber process (asyncio + uvloop, a minimal WebSocket client of its own, so that the
   measuring side costs as little CPU as possible on a 2-core machine) opens N sockets, one
   member each, and records, for every frame, receive time minus the send time the sender put
   into the event id (``b-<ns>-<seq>-<member>``);
4. a poster process applies awards at a fixed rate with the real ``member.lua`` (``parse_event``,
   ``plan_award``, ``store.member_call``), pipelined on a raw socket straight into Valkey. The
   feed node is measured alone, as in production, where ingest nodes and feed nodes are separate
   processes and the fan-out between them is Redis pub/sub;
5. the baseline, ``loadtest/live_baseline.py``: the ``websockets`` library's asyncio server
   pushing frames of the same shape at the same rate to random sockets, measured by the same
   subscriber code. No Redis: the floor of "Python pushing to WebSockets on this machine".

Memory per idle connection is the server's RSS with N idle sockets minus its RSS before, over N.
It is a report: it exits 0 when the target is missed, 2 when something failed to run, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import math
import os
import platform
import queue
import random
import re
import resource
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).resolve().parent / "bench_live.toml"

TARGET_SUBSCRIBERS = 10_000
TARGET_RATE = 5_000
TARGET_P99_MS = 50.0

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class BenchError(RuntimeError):
    """Something the benchmark needs did not run (a server did not start, a child failed)."""


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def event_id(stamp_ns: int, seq: int, member_index: int) -> str:
    """The id every pushed frame carries: send time, sequence number, the member it is for."""
    return f"b-{stamp_ns}-{seq}-{member_index}"


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by the children started after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far; 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def emit(message: dict[str, Any]) -> None:
    """A child's report to the parent: one JSON object per stdout line."""
    sys.stdout.write(orjson.dumps(message).decode() + "\n")
    sys.stdout.flush()


def stdin_lines(loop: asyncio.AbstractEventLoop) -> "asyncio.Queue[str]":
    """The parent's commands, one a line, read by a thread (EOF arrives as "close")."""
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "close")

    threading.Thread(target=read, daemon=True).start()
    return lines


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank of an ascending list."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --------------------------------------------------------------------------------------------
# The subscriber process: N sockets, a minimal RFC 6455 client each
# --------------------------------------------------------------------------------------------


class HandshakeError(Exception):
    pass


class Recorder:
    """Every frame that carries a bench event id: its send and receive times, seq, member."""

    def __init__(self) -> None:
        self.send_ns = array("q")
        self.recv_ns = array("q")
        self.seq = array("q")
        self.misrouted = 0  # a frame for member i arrived on member j's socket
        self.other: dict[str, int] = {}  # frames without a bench id, by type (pong, reset, error)

    def on_message(self, member_index: int, payload: bytes, recv_ns: int) -> None:
        try:
            frame = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.other["undecodable"] = self.other.get("undecodable", 0) + 1
            return
        data = frame.get("data") if isinstance(frame, dict) else None
        ev = data.get("event") if isinstance(data, dict) else None
        parts = ev.split("-") if isinstance(ev, str) else []
        if len(parts) != 4 or parts[0] != "b":
            kind = str(frame.get("type")) if isinstance(frame, dict) else "not an object"
            self.other[kind] = self.other.get(kind, 0) + 1
            return
        self.send_ns.append(int(parts[1]))
        self.recv_ns.append(recv_ns)
        self.seq.append(int(parts[2]))
        if int(parts[3]) != member_index:
            self.misrouted += 1

    def count_in(self, lo: int, hi: int) -> int:
        return sum(1 for q in self.seq if lo <= q <= hi)

    def report(self, lo: int, hi: int) -> dict[str, Any]:
        """Figures for the frames of the measured window: sequence numbers ``lo``..``hi``."""
        latencies: list[float] = []
        seqs: set[int] = set()
        frames = 0
        for s, r, q in zip(self.send_ns, self.recv_ns, self.seq, strict=True):
            if lo <= q <= hi:
                frames += 1
                latencies.append((r - s) / 1e6)
                seqs.add(q)
        latencies.sort()
        return {
            "frames": frames,
            "delivered": len(seqs),
            "duplicates": frames - len(seqs),
            "misrouted": self.misrouted,
            "other_frames": self.other,
            "p50_ms": percentile(latencies, 0.50),
            "p90_ms": percentile(latencies, 0.90),
            "p99_ms": percentile(latencies, 0.99),
            "p999_ms": percentile(latencies, 0.999),
            "max_ms": latencies[-1] if latencies else math.nan,
            "mean_ms": sum(latencies) / len(latencies) if latencies else math.nan,
        }


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    return key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


class WsClient(asyncio.Protocol):
    """One client socket: HTTP upgrade, then frames in (unmasked) and control frames out (masked)."""

    def __init__(self, index: int, request: bytes, accept: str, recorder: Recorder, deflate: bool) -> None:
        loop = asyncio.get_running_loop()
        self.index = index
        self._request = request
        self._accept = accept
        self._recorder = recorder
        self._offer_deflate = deflate
        self._inflate: Any = None  # zlib decompressor when the server accepted permessage-deflate
        self._inflate_reset = False
        self._buf = b""
        self._open = False
        self._fragments: list[bytes] | None = None
        self._fragment_compressed = False
        self._close_sent = False
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self._request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeError("closed during the handshake"))
        if not self.done.done():
            self.done.set_result(None)
        if self.close_code is None:
            self.close_code = 1006

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self._buf + data if self._buf else data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            self._handshake(buf[:end].decode("latin-1"))
            if not self._open:
                return
            buf = buf[end + 4 :]
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80:
                self.close(1002)  # servers must not mask their frames
                return
            if n - pos < head + length:
                break
            payload = buf[pos + head : pos + head + length]
            pos += head + length
            self._frame(b0, payload, now)
        self._buf = buf[pos:] if pos < n else b""

    def _handshake(self, head: str) -> None:
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if not lines[0].startswith("HTTP/1.1 101") or headers.get("sec-websocket-accept") != self._accept:
            self.opened.set_exception(HandshakeError(lines[0]))
            assert self.transport is not None
            self.transport.close()
            return
        extensions = headers.get("sec-websocket-extensions", "")
        if "permessage-deflate" in extensions:
            self._inflate = zlib.decompressobj(-15)
            self._inflate_reset = "server_no_context_takeover" in extensions
        self._open = True
        self.opened.set_result(None)

    def _frame(self, b0: int, payload: bytes, now: int) -> None:
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode in (1, 2):
            if fin:
                self._message(payload, bool(b0 & 0x40), now)
            else:
                self._fragments, self._fragment_compressed = [payload], bool(b0 & 0x40)
        elif opcode == 0 and self._fragments is not None:
            self._fragments.append(payload)
            if fin:
                whole, self._fragments = b"".join(self._fragments), None
                self._message(whole, self._fragment_compressed, now)
        elif opcode == 9:  # ping: pong with the same payload
            self._send(0xA, payload)
        elif opcode == 8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self._close_sent:
                self._send(0x8, payload[:2])
                self._close_sent = True
            assert self.transport is not None
            self.transport.close()

    def _message(self, payload: bytes, compressed: bool, now: int) -> None:
        if compressed and self._inflate is not None:
            if self._inflate_reset:
                self._inflate = zlib.decompressobj(-15)
            payload = self._inflate.decompress(payload + b"\x00\x00\xff\xff")
        self._recorder.on_message(self.index, payload, now)

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + _mask(payload))

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the server replies and drops the connection."""
        if self._close_sent or self.transport is None or self.transport.is_closing():
            return
        self._close_sent = True
        self._send(0x8, code.to_bytes(2, "big"))


def _request(host: str, port: int, token: str, deflate: bool) -> tuple[bytes, str]:
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    lines = [
        f"GET /v1/live?token={token}&since=0-0 HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: rekindle.json",
    ]
    if deflate:  # what browsers offer
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), accept


async def _subscriber(args: argparse.Namespace) -> int:
    from realtime.auth import Auth

    raise_nofile()
    loop = asyncio.get_running_loop()
    commands = stdin_lines(loop)
    secret = os.environ["BENCH_TOKEN_SECRET"]
    auth = Auth(frozenset(), frozenset(), secret)
    now_ms = int(time.time() * 1000)
    recorder = Recorder()
    clients: list[WsClient | None] = [None] * args.n
    failures: dict[str, int] = {}
    failed: list[int] = []
    gate = asyncio.Semaphore(args.concurrency)
    per_address = 20_000  # beyond this many sockets, spread source addresses over 127.0.0.x

    async def open_one(i: int) -> None:
        token, _ = auth.mint(f"m-{i}", now_ms, 3600)  # type: ignore[arg-type]
        local = (f"127.0.0.{2 + i // per_address}", 0) if i >= per_address else None
        error = "?"
        async with gate:
            for attempt in range(4):
                request, accept = _request(args.host, args.port, token, args.deflate)
                transport: asyncio.BaseTransport | None = None
                try:
                    transport, client = await loop.create_connection(
                        lambda r=request, a=accept: WsClient(i, r, a, recorder, args.deflate),  # type: ignore[misc]
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
            deadline = time.monotonic() + 60
            last, last_change = -1, time.monotonic()
            while time.monotonic() < deadline:
                have = recorder.count_in(lo, hi)
                if have >= expected:
                    break
                if have != last:
                    last, last_change = have, time.monotonic()
                elif time.monotonic() - last_change > quiet_s:
                    break
                await asyncio.sleep(0.2)
            closed: dict[str, int] = {}
            for c in connected:
                if c.close_code is not None:
                    closed[str(c.close_code)] = closed.get(str(c.close_code), 0) + 1
            emit({"event": "report", **recorder.report(lo, hi), "closed_by_server": closed})
        elif command[0] == "close":
            for c in connected:
                c.close()
            waiting = [c.done for c in connected if not c.done.done()]
            if waiting:
                await asyncio.wait(waiting, timeout=10)
            for c in connected:
                if c.transport is not None and not c.transport.is_closing():
                    c.transport.abort()
            emit({"event": "closed"})
            return 0


# --------------------------------------------------------------------------------------------
# The poster process: awards at a fixed rate, straight into Redis with the real award script
# --------------------------------------------------------------------------------------------


def _poster(args: argparse.Namespace) -> int:
    from urllib.parse import urlparse

    import hiredis

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

    url = urlparse(args.redis_url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hiredis.Reader()

    def call(*parts: Any) -> Any:
        sock.sendall(hiredis.pack_command(parts))
        return read(1)[0]

    def read(n: int, block: bool = True) -> list[Any]:
        """Up to ``n`` replies; without ``block``, only those already arrived."""
        out: list[Any] = []
        while len(out) < n:
            reply = reader.gets()
            if reply is False:
                try:
                    chunk = sock.recv(1 << 20, 0 if block else socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if not chunk:
                    raise BenchError("Redis closed the connection")
                reader.feed(chunk)
                continue
            out.append(reply)
        return out

    if url.password:
        call("AUTH", *([url.username] if url.username else []), url.password)
    if call("SCRIPT", "LOAD", scripts.member.source).decode() != sha:
        raise BenchError("the server hashes member.lua differently")

    tick_ns = int(args.tick_ms * 1e6)
    tick_s = tick_ns / 1e9
    warm_ticks = round(args.warmup / tick_s)
    total_ticks = warm_ticks + round(args.duration / tick_s)
    start_ns = time.time_ns() + 200_000_000  # time to build the first batch
    t0_ns = start_ns + warm_ticks * tick_ns
    t1_ns = start_ns + total_ticks * tick_ns
    emit({"event": "ready", "start_ns": start_ns, "t0_ns": t0_ns, "t1_ns": t1_ns})

    seq = first_seq = 0
    carry = 0.0
    measured = applied = not_applied = errors = 0
    first_error = ""
    lags: list[float] = []
    first_send = last_send = 0
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
    for k in range(total_ticks):
        carry += args.rate * tick_s
        n = int(carry)
        carry -= n
        if n == 0:
            continue
        stamp = start_ns + k * tick_ns  # the batch is sent at this time or (see send lag) later
        if k >= warm_ticks and not first_seq:
            first_seq = seq + 1
        now_ms = stamp // 1_000_000
        parts = []
        for _ in range(n):
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
        sock.sendall(payload)
        pending += n
        if k < warm_ticks:
            pending_warm += n
        else:
            lags.append((sent_at - stamp) / 1e6)
            first_send = first_send or sent_at
            last_send = sent_at
            measured += n
        replies = read(pending, block=False)
        pending -= len(replies)
        tally(replies)
    sock.settimeout(60)
    tally(read(pending))
    sock.close()
    lags.sort()
    span_s = (last_send - first_send) / 1e9 + tick_s
    emit(
        {
            "event": "done",
            "sent": measured,
            "seq_lo": first_seq,
            "seq_hi": seq,
            "applied": applied,
            "not_applied": not_applied,
            "errors": errors,
            "first_error": first_error,
            "window_s": span_s,
            "achieved_rate": measured / span_s if span_s > 0 else 0.0,
            "send_lag_p50_ms": percentile(lags, 0.5),
            "send_lag_p99_ms": percentile(lags, 0.99),
            "send_lag_max_ms": lags[-1] if lags else math.nan,
        }
    )
    return 0


# --------------------------------------------------------------------------------------------
# The parent: processes, in order, and the report
# --------------------------------------------------------------------------------------------


class Child:
    """A child process that reports JSON lines on stdout; stderr goes to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, commands: bool = False) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if commands else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"{self.name} exited early{self.tail()}") from None

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no {event!r} report within {timeout:.0f} s{self.tail()}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(5)
                raise BenchError(f"{self.name} exited ({self.proc.returncode}) before reporting {event!r}{self.tail()}")
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # something else printed to stdout (a banner)
            if isinstance(message, dict) and message.get("event") == event:
                return message

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return ("\n  " + "\n  ".join(text)) if text else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._log.close()


@dataclass(frozen=True)
class Options:
    subscribers: int
    rate: float
    duration: float
    warmup: float
    tick_ms: float
    concurrency: int
    deflate: bool
    skip_baseline: bool
    py_spy: Path | None
    quick: bool
    json_path: Path | None


@dataclass
class SideResult:
    name: str
    connections: int = 0
    connect_failed: int = 0
    connect_s: float = 0.0
    sent: int = 0
    window_s: float = 0.0
    pushes_per_s: float = 0.0
    delivered: int = 0
    delivered_per_s: float = 0.0
    lost: int = 0
    duplicates: int = 0
    misrouted: int = 0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    max_ms: float = math.nan
    rss_before_kib: int = 0
    rss_idle_kib: int = 0
    rss_after_kib: int = 0
    kib_per_idle_conn: float = math.nan
    send_lag_p99_ms: float = math.nan
    send_lag_max_ms: float = math.nan
    cpu_pct: dict[str, float] = field(default_factory=dict)
    closed_by_server: dict[str, int] = field(default_factory=dict)
    other_frames: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    gc_collections: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _wait_http(url: str, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited ({child.proc.returncode}) during start-up{child.tail()}")
        try:
            _http_get(url, timeout=2)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise BenchError(f"{child.name} did not answer {url} within {timeout:.0f} s{child.tail()}")


def _warm_socket(port: int, token: str, deflate: bool) -> None:
    """One connection opened and closed, so lazy imports and first-use caches are not counted as
    the idle sockets' memory."""
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{port}/v1/live?token={token}&since=0-0"
    with connect(url, open_timeout=10, compression="deflate" if deflate else None, subprotocols=["rekindle.json"]):  # type: ignore[list-item]
        time.sleep(0.2)
    time.sleep(0.3)


def _subscriber_child(opts: Options, port: int, secret: str, log_dir: Path, name: str) -> Child:
    argv = [sys.executable, "-m", "loadtest.bench_live", "_subscriber", "--port", str(port), "--n", str(opts.subscribers),
            "--concurrency", str(opts.concurrency)]
    if opts.deflate:
        argv.append("--deflate")
    return Child(name, argv, _env(BENCH_TOKEN_SECRET=secret), log_dir, commands=True)


def _connect_timeout(n: int) -> float:
    return 60 + n / 50


def _fill_report(result: SideResult, report: dict[str, Any], expected: int) -> None:
    result.delivered = report["delivered"]
    result.duplicates = report["duplicates"]
    result.misrouted = report["misrouted"]
    result.lost = expected - report["delivered"]
    for key in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"):
        value = report[key]
        setattr(result, key, math.nan if value is None else float(value))
    result.closed_by_server = report["closed_by_server"]
    result.other_frames = report["other_frames"]
    result.delivered_per_s = result.delivered / result.window_s if result.window_s else 0.0


def _cpu_window(pids: dict[str, int | None], t0_ns: int, t1_ns: int) -> dict[str, float]:
    """CPU % of each process over [t0, t1] (the parent sleeps until each edge)."""
    time.sleep(max(0.0, (t0_ns - time.time_ns()) / 1e9))
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    wall0 = time.monotonic()
    time.sleep(max(0.0, (t1_ns - time.time_ns()) / 1e9))
    wall = time.monotonic() - wall0
    return {k: round(100 * (cpu_seconds(p) - before[k]) / wall, 1) if wall > 0 else 0.0 for k, p in pids.items()}


def run_service(opts: Options, redis_url: str, valkey_pid: int | None, tmp: Path, children: list[Child]) -> SideResult:
    import redis as redis_sync

    result = SideResult("service")
    secret = secrets.token_urlsafe(24)
    prefix = "bl" + secrets.token_hex(4)
    port = free_port()
    env = _env(
        REKINDLE_API_KEYS="bench-" + secrets.token_urlsafe(16),
        REKINDLE_ADMIN_KEYS="bench-admin-" + secrets.token_urlsafe(16),
        REKINDLE_TOKEN_SECRET=secret,
        REKINDLE_KEY_PREFIX=prefix,
        REKINDLE_DATA_DIR=str(tmp / "service"),
    )
    service = Child(
        "service",
        [sys.executable, "-m", "realtime.cli", "serve", "--redis-url", redis_url, "--port", str(port), "--workers", "1",
         "--config", str(CONFIG), "--data-dir", str(tmp / "service")],
        env,
        tmp,
    )
    children.append(service)
    base = f"http://127.0.0.1:{port}"
    _wait_http(f"{base}/healthz", service, 60)

    from realtime.auth import Auth

    warm_token, _ = Auth(frozenset(), frozenset(), secret).mint("m-warm", int(time.time() * 1000), 600)  # type: ignore[arg-type]
    _warm_socket(port, warm_token, opts.deflate)
    result.rss_before_kib = rss_kib(service.pid)

    subscriber = _subscriber_child(opts, port, secret, tmp, "service-subscriber")
    children.append(subscriber)
    connected = subscriber.expect("connected", _connect_timeout(opts.subscribers))
    result.connections, result.connect_failed, result.connect_s = connected["connected"], len(connected["failed"]), connected["seconds"]
    if result.connect_failed:
        result.notes.append(f"{result.connect_failed} sockets failed to connect: {connected['errors']}")
    if not result.connections:
        raise BenchError(f"no subscriber could connect to the service: {connected['errors']}{subscriber.tail()}")
    failed = set(connected["failed"])
    members = [i for i in range(opts.subscribers) if i not in failed]

    # Connected is not yet subscribed: the hub subscribes after the handshake. Wait until Redis
    # knows every channel, so no award is published to nobody.
    client = redis_sync.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 60 + opts.subscribers / 200
        while True:
            channels = len(client.pubsub_channels(f"{prefix}:*"))
            if channels >= len(members):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"only {channels} of {len(members)} channels subscribed{service.tail()}")
            time.sleep(0.2)
    finally:
        client.close()
    time.sleep(1.0)
    result.rss_idle_kib = rss_kib(service.pid)
    result.kib_per_idle_conn = (result.rss_idle_kib - result.rss_before_kib) / result.connections

    members_file = tmp / "members.json"
    members_file.write_bytes(orjson.dumps(members))
    poster = Child(
        "poster",
        [sys.executable, "-m", "loadtest.bench_live", "_poster", "--redis-url", redis_url, "--prefix", prefix,
         "--config", str(CONFIG), "--members-file", str(members_file), "--rate", str(opts.rate),
         "--warmup", str(opts.warmup), "--duration", str(opts.duration), "--tick-ms", str(opts.tick_ms)],
        _env(),
        tmp,
    )
    children.append(poster)
    ready = poster.expect("ready", 60)
    t0, t1 = ready["t0_ns"], ready["t1_ns"]
    gc_before = _gc_collections(base)
    if opts.py_spy is not None:
        children.append(_profile(opts, service.pid, t0, tmp))
    result.cpu_pct = _cpu_window(
        {"service": service.pid, "valkey": valkey_pid, "poster": poster.pid, "subscriber": subscriber.pid}, t0, t1
    )
    done = poster.expect("done", opts.warmup + opts.duration + 120)
    gc_after = _gc_collections(base)
    result.gc_collections = {gen: int(gc_after[gen] - gc_before.get(gen, 0)) for gen in gc_after}
    result.sent = done["applied"]
    result.errors = done["errors"] + done["not_applied"]
    if result.errors:
        result.notes.append(f"{done['errors']} script errors ({done['first_error']}), {done['not_applied']} not applied")
    result.window_s = done["window_s"]
    result.pushes_per_s = done["achieved_rate"]
    result.send_lag_p99_ms, result.send_lag_max_ms = done["send_lag_p99_ms"], done["send_lag_max_ms"]
    if result.pushes_per_s < 0.98 * opts.rate:
        result.notes.append(f"the poster could not hold {opts.rate:.0f}/s: it sent {result.pushes_per_s:.0f}/s")

    subscriber.send(f"report {done['seq_lo']} {done['seq_hi']} {result.sent} 3")
    _fill_report(result, subscriber.expect("report", 120), result.sent)
    result.rss_after_kib = rss_kib(service.pid)
    subscriber.send("close")
    subscriber.expect("closed", 60)

    try:
        text = _http_get(f"{base}/metrics").decode()
        for name in ("rekindle_live_frames_sent_total", "rekindle_live_slow_consumer_disconnects_total"):
            match = re.search(rf"^{name}\s+(\S+)$", text, re.M)
            if match:
                result.metrics[name] = float(match[1])
    except (urllib.error.URLError, OSError) as exc:
        result.notes.append(f"/metrics unreadable: {exc}")
    subscriber.stop()
    poster.stop()
    service.stop(signal.SIGINT)
    return result


def _gc_collections(base: str) -> dict[str, float]:
    """The service's cyclic-GC collections so far, by generation (prometheus_client's default)."""
    try:
        text = _http_get(f"{base}/metrics").decode()
    except (urllib.error.URLError, OSError):
        return {}
    found = re.findall(r'^python_gc_collections_total\{generation="(\d)"\}\s+(\S+)$', text, re.M)
    return {gen: float(value) for gen, value in found}


def _profile(opts: Options, pid: int, t0_ns: int, tmp: Path) -> Child:
    """py-spy sampling the service over the measured window (collapsed stacks, for reading)."""
    out = Path(f"bench-live-service-{time.strftime('%Y%m%d-%H%M%S')}.txt").resolve()
    argv = [str(opts.py_spy), "record", "--pid", str(pid), "--format", "raw", "--nonblocking", "--rate", "250",
            "--duration", str(max(1, round(opts.duration))), "--output", str(out)]
    wait = (t0_ns - time.time_ns()) / 1e9
    if wait > 0:
        time.sleep(wait)
    print(f"  profiling the service with py-spy into {out}", flush=True)
    return Child("py-spy", argv, _env(), tmp)


def run_baseline(opts: Options, tmp: Path, children: list[Child]) -> SideResult:
    from realtime.auth import Auth

    result = SideResult("baseline")
    secret = secrets.token_urlsafe(24)
    port = free_port()
    server = Child(
        "baseline", [sys.executable, "-m", "loadtest.live_baseline", "--port", str(port)], _env(BENCH_TOKEN_SECRET=secret), tmp,
        commands=True,
    )
    children.append(server)
    server.expect("listening", 60)
    warm_token, _ = Auth(frozenset(), frozenset(), secret).mint("m-warm", int(time.time() * 1000), 600)  # type: ignore[arg-type]
    _warm_socket(port, warm_token, opts.deflate)
    result.rss_before_kib = rss_kib(server.pid)

    subscriber = _subscriber_child(opts, port, secret, tmp, "baseline-subscriber")
    children.append(subscriber)
    connected = subscriber.expect("connected", _connect_timeout(opts.subscribers))
    result.connections, result.connect_failed, result.connect_s = connected["connected"], len(connected["failed"]), connected["seconds"]
    if result.connect_failed:
        result.notes.append(f"{result.connect_failed} sockets failed to connect: {connected['errors']}")
    deadline = time.monotonic() + 30
    while True:
        server.send("count")
        if server.expect("count", 10)["connections"] >= result.connections:
            break
        if time.monotonic() > deadline:
            raise BenchError("the baseline server does not see every subscriber")
        time.sleep(0.2)
    time.sleep(1.0)
    result.rss_idle_kib = rss_kib(server.pid)
    result.kib_per_idle_conn = (result.rss_idle_kib - result.rss_before_kib) / max(1, result.connections)

    server.send(f"push {opts.rate} {opts.warmup} {opts.duration} {opts.tick_ms}")
    ready = server.expect("ready", 30)
    t0, t1 = ready["t0_ns"], ready["t1_ns"]
    result.cpu_pct = _cpu_window({"baseline server": server.pid, "subscriber": subscriber.pid}, t0, t1)
    done = server.expect("done", opts.warmup + opts.duration + 120)
    result.sent = done["sent"]
    result.window_s = done["window_s"]
    result.pushes_per_s = done["achieved_rate"]
    result.send_lag_p99_ms, result.send_lag_max_ms = done["send_lag_p99_ms"], done["send_lag_max_ms"]
    if result.pushes_per_s < 0.98 * opts.rate:
        result.notes.append(f"the baseline could not hold {opts.rate:.0f}/s: it sent {result.pushes_per_s:.0f}/s")
    subscriber.send(f"report {done['seq_lo']} {done['seq_hi']} {result.sent} 3")
    _fill_report(result, subscriber.expect("report", 120), result.sent)
    result.rss_after_kib = rss_kib(server.pid)
    subscriber.send("close")
    subscriber.expect("closed", 60)
    subscriber.stop()
    server.send("quit")
    server.stop()
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _ratio(a: float, b: float) -> str:
    if not b or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.2f}x"


def verdict(opts: Options, svc: SideResult) -> tuple[str, str]:
    if opts.subscribers < TARGET_SUBSCRIBERS or opts.rate < TARGET_RATE:
        return "NOT ASSESSED", f"this run is smaller than the target ({opts.subscribers:,} subscribers at {opts.rate:,.0f}/s)"
    reasons = []
    if svc.connections < TARGET_SUBSCRIBERS:
        reasons.append(f"only {svc.connections:,} subscribers connected")
    if svc.pushes_per_s < 0.98 * TARGET_RATE:
        reasons.append(f"pushes held at {svc.pushes_per_s:,.0f}/s only")
    if not svc.p99_ms < TARGET_P99_MS:
        reasons.append(f"p99 {_fmt(svc.p99_ms)} ms")
    if svc.lost:
        reasons.append(f"{svc.lost:,} frames lost")
    if reasons:
        return "MISSED", "; ".join(reasons)
    return "MET", f"p99 {_fmt(svc.p99_ms)} ms with {svc.connections:,} subscribers at {svc.pushes_per_s:,.0f} pushes/s"


def print_report(opts: Options, svc: SideResult, base: SideResult | None) -> None:
    sides = [svc] + ([base] if base else [])
    header = f"{'':34}{'service':>14}" + (f"{'baseline':>14}{'service/baseline':>18}" if base else "")
    print()
    print(header)
    rows: list[tuple[str, str, int, bool]] = [
        ("connections", "connections", 0, False),
        ("pushes/s sent", "pushes_per_s", 0, True),
        ("delivered/s", "delivered_per_s", 0, True),
        ("latency p50 (ms)", "p50_ms", 2, True),
        ("latency p90 (ms)", "p90_ms", 2, True),
        ("latency p99 (ms)", "p99_ms", 2, True),
        ("latency p99.9 (ms)", "p999_ms", 2, True),
        ("latency max (ms)", "max_ms", 2, True),
        ("sent (measured window)", "sent", 0, False),
        ("lost (sent - delivered)", "lost", 0, False),
        ("duplicates", "duplicates", 0, False),
        ("misrouted", "misrouted", 0, False),
        ("memory per idle connection (KiB)", "kib_per_idle_conn", 1, True),
        ("RSS idle / after run (MiB)", "", 0, False),
        ("connect time (s)", "connect_s", 1, False),
        ("sender lag p99/max (ms)", "", 0, False),
    ]
    for label, attr, digits, ratio in rows:
        if label.startswith("RSS"):
            cells = [f"{s.rss_idle_kib / 1024:.0f} / {s.rss_after_kib / 1024:.0f}" for s in sides]
        elif label.startswith("sender lag"):
            cells = [f"{_fmt(s.send_lag_p99_ms, 2)} / {_fmt(s.send_lag_max_ms, 2)}" for s in sides]
        else:
            cells = [_fmt(float(getattr(s, attr)), digits) for s in sides]
        line = f"{label:34}" + "".join(f"{c:>14}" for c in cells)
        if base and ratio:
            line += f"{_ratio(float(getattr(svc, attr)), float(getattr(base, attr))):>18}"
        print(line)
    print()
    for s in sides:
        cpu = ", ".join(f"{k} {v:.0f}%" for k, v in s.cpu_pct.items())
        print(f"CPU during the {s.name} window (100% = one core of {os.cpu_count()}): {cpu}")
    for s in sides:
        if s.closed_by_server:
            print(f"{s.name}: sockets closed by the server, by code: {s.closed_by_server}")
        if s.other_frames:
            print(f"{s.name}: frames without a bench id, by type: {s.other_frames}")
        for note in s.notes:
            print(f"{s.name}: NOTE: {note}")
    if svc.gc_collections:
        print(
            "service cyclic-GC collections during warm-up + window: "
            + ", ".join(f"gen{gen} {n:,}" for gen, n in sorted(svc.gc_collections.items()))
            + " (the service freezes long-lived objects, so gen2 here scans only recent ones;"
            " its full collection runs on a schedule, hourly by default: realtime/gcpacer.py)"
        )
    print(
        "service /metrics: "
        + ", ".join(f"{k}={v:,.0f}" for k, v in svc.metrics.items())
        + " (whole run, warm-up included)"
    )
    status, why = verdict(opts, svc)
    print(
        f"target ({TARGET_SUBSCRIBERS:,} subscribers, p99 < {TARGET_P99_MS:.0f} ms at {TARGET_RATE:,} pushes/s): "
        f"{status} ({why})"
    )


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_live", description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=None, help=f"sockets (default {TARGET_SUBSCRIBERS:,})")
    parser.add_argument("--rate", type=float, default=None, help=f"pushes per second (default {TARGET_RATE:,})")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring (default 2)")
    parser.add_argument("--tick-ms", type=float, default=10.0, help="pushes go out in a burst every tick (default 10)")
    parser.add_argument("--concurrency", type=int, default=200, help="connection attempts in flight (default 200)")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate, as browsers do")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--py-spy", type=Path, metavar="BIN", help="profile the service over the measured window with this py-spy")
    parser.add_argument("--quick", action="store_true", help="200 subscribers, 500/s, 2 s (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    a = parser.parse_args(argv)
    quick = {"subscribers": 200, "rate": 500.0, "duration": 2.0, "warmup": 1.0}
    full = {"subscribers": TARGET_SUBSCRIBERS, "rate": float(TARGET_RATE), "duration": 10.0, "warmup": 2.0}
    d = quick if a.quick else full
    opts = Options(
        subscribers=a.subscribers if a.subscribers is not None else int(d["subscribers"]),
        rate=a.rate if a.rate is not None else d["rate"],
        duration=a.duration if a.duration is not None else d["duration"],
        warmup=a.warmup if a.warmup is not None else d["warmup"],
        tick_ms=a.tick_ms,
        concurrency=a.concurrency,
        deflate=a.deflate,
        skip_baseline=a.skip_baseline,
        py_spy=a.py_spy,
        quick=a.quick,
        json_path=a.json,
    )
    if opts.subscribers < 1 or opts.rate <= 0 or opts.duration <= 0 or opts.warmup < 0 or opts.tick_ms <= 0:
        parser.error("--subscribers, --rate, --duration and --tick-ms must be positive, --warmup not negative")
    return opts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_subscriber", "_poster"):
        return _child_main(argv)
    opts = parse_args(argv)
    limit = raise_nofile()
    print("rekindle live-feed benchmark (make bench-live)")
    print(f"command: {shlex.join([Path(sys.executable).name, '-m', 'loadtest.bench_live', *argv])}")
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, open files {limit}; everything on loopback;"
        f" load average before the run {_loadavg()}"
    )
    print(
        f"run: {opts.subscribers:,} subscribers (one member each, a separate process), {opts.rate:,.0f} pushes/s in "
        f"{opts.tick_ms:g} ms ticks, {opts.warmup:g} s warm-up + {opts.duration:g} s measured"
        + (", permessage-deflate offered" if opts.deflate else ", no compression")
    )
    print(
        "topology: awards are applied by a separate poster process straight into Valkey with the real member.lua\n"
        "  (parse_event, plan_award, member_call; pipelined EVALSHA). Ingest CPU stays off the feed node\n"
        "  being measured, as in production, where ingest and feed nodes are separate processes and fan-out\n"
        "  between them is Redis pub/sub. Latency = frame received - award sent to Valkey (stamped in the event id)."
    )
    print(
        "baseline: loadtest/live_baseline.py, the websockets library's asyncio server broadcasting frames of the same\n"
        "  shape to random sockets at the same rate (no Redis): the floor of Python pushing to WebSockets here."
    )
    sys.stdout.flush()

    from realtime.embedded import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="rekindle-bench-live-"))
    children: list[Child] = []
    valkey: EmbeddedValkey | None = None
    try:
        valkey = EmbeddedValkey(tmp / "valkey")
        valkey.start()
        print(f"\n[1/2] service: {opts.subscribers:,} sockets on `rekindle serve --workers 1` ...", flush=True)
        svc = run_service(opts, valkey.url, valkey.pid, tmp, children)
        base = None
        if not opts.skip_baseline:
            print(f"[2/2] baseline: {opts.subscribers:,} sockets on a bare websockets server ...", flush=True)
            base = run_baseline(opts, tmp, children)
        print_report(opts, svc, base)
        if opts.json_path is not None:
            status, why = verdict(opts, svc)
            opts.json_path.write_bytes(
                orjson.dumps(
                    {
                        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
                        "service": asdict(svc),
                        "baseline": asdict(base) if base else None,
                        "target": {"status": status, "detail": why},
                    },
                    option=orjson.OPT_INDENT_2,
                )
            )
        return 0
    except BenchError as exc:
        print(f"bench-live: FAILED: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench-live: interrupted", file=sys.stderr)
        return 130
    finally:
        for child in reversed(children):
            try:
                child.stop(timeout=10)
            except Exception as exc:  # keep cleaning up the rest
                print(f"bench-live: stopping {child.name}: {exc}", file=sys.stderr)
        if valkey is not None:
            try:
                valkey.stop()
            except Exception as exc:
                print(f"bench-live: stopping valkey: {exc}", file=sys.stderr)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="loadtest.bench_live " + argv[0])
    if argv[0] == "_subscriber":
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--n", type=int, required=True)
        parser.add_argument("--concurrency", type=int, default=200)
        parser.add_argument("--deflate", action="store_true")
        args = parser.parse_args(argv[1:])
        import uvloop

        return uvloop.run(_subscriber(args))
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--members-file", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--tick-ms", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    return _poster(parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
