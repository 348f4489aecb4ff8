"""One side of the live bench after the other: its processes, in order, and its figures.

The service side: ``rekindle serve --workers 1`` on the embedded Valkey, a warm-up socket, the
subscriber's N sockets (and every channel subscribed in Redis), the idle memory, then the poster
at the rate, CPU measured over the poster's window, the subscriber's report, ``/metrics``. The
baseline side: the same with ``loadtest/live_baseline.py``, which pushes the frames itself.
"""

from __future__ import annotations

import math
import re
import secrets
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from loadtest.live.options import CONFIG, Options
from loadtest.processes import BenchError, Child, Processes, child_env, cpu_seconds, free_port, rss_kib, wait_healthy


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


def _http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _mint(secret: str, member: str, ttl_s: int) -> str:
    from realtime.auth import Auth

    token, _ = Auth(frozenset(), frozenset(), secret).mint(member, int(time.time() * 1000), ttl_s)  # type: ignore[arg-type]
    return token


def _warm_socket(port: int, token: str, deflate: bool) -> None:
    """One connection opened and closed, so lazy imports and first-use caches are not counted as
    the idle sockets' memory."""
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{port}/v1/live?token={token}&since=0-0"
    with connect(url, open_timeout=10, compression="deflate" if deflate else None, subprotocols=["rekindle.json"]):  # type: ignore[list-item]
        time.sleep(0.2)
    time.sleep(0.3)


def _start_subscriber(procs: Processes, opts: Options, port: int, secret: str, name: str) -> Child:
    argv = [sys.executable, "-m", "loadtest.live.subscriber", "--port", str(port), "--n", str(opts.subscribers),
            "--concurrency", str(opts.concurrency)]
    if opts.deflate:
        argv.append("--deflate")
    return procs.start(name, argv, child_env(BENCH_TOKEN_SECRET=secret), reports=True, commands=True)


def _connect(result: SideResult, subscriber: Child, opts: Options) -> dict[str, Any]:
    """Wait for the subscriber's sockets; record how many connected and how long it took."""
    connected = subscriber.expect("connected", 60 + opts.subscribers / 50)
    result.connections, result.connect_failed, result.connect_s = connected["connected"], len(connected["failed"]), connected["seconds"]
    if result.connect_failed:
        result.notes.append(f"{result.connect_failed} sockets failed to connect: {connected['errors']}")
    return connected


def _fill_send(result: SideResult, done: dict[str, Any], opts: Options, sender: str) -> None:
    """The sender's ``done`` report: its window, its rate, its lateness."""
    result.window_s = done["window_s"]
    result.pushes_per_s = done["achieved_rate"]
    result.send_lag_p99_ms, result.send_lag_max_ms = done["send_lag_p99_ms"], done["send_lag_max_ms"]
    if result.pushes_per_s < 0.98 * opts.rate:
        result.notes.append(f"the {sender} could not hold {opts.rate:.0f}/s: it sent {result.pushes_per_s:.0f}/s")


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


def _wait_subscribed(redis_url: str, prefix: str, members: int, service: Child, timeout_s: float) -> None:
    """Until Redis knows a channel for every connected member, so no award is published to nobody."""
    import redis as redis_sync

    client = redis_sync.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            # Sharded channels (the hub SSUBSCRIBEs): PUBSUB SHARDCHANNELS, not PUBSUB CHANNELS.
            channels = len(client.execute_command("PUBSUB", "SHARDCHANNELS", f"{prefix}:*"))
            if channels >= members:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"only {channels} of {members} channels subscribed{service.tail()}")
            time.sleep(0.2)
    finally:
        client.close()


def run_service(opts: Options, redis_url: str, valkey_pid: int | None, tmp: Path, procs: Processes) -> SideResult:
    result = SideResult("service")
    secret = secrets.token_urlsafe(24)
    prefix = "bl" + secrets.token_hex(4)
    port = free_port()
    env = child_env(
        REKINDLE_API_KEYS="bench-" + secrets.token_urlsafe(16),
        REKINDLE_ADMIN_KEYS="bench-admin-" + secrets.token_urlsafe(16),
        REKINDLE_TOKEN_SECRET=secret,
        REKINDLE_KEY_PREFIX=prefix,
        REKINDLE_DATA_DIR=str(tmp / "service"),
        REKINDLE_MAX_INFLIGHT="0",  # 10,000 sockets opening at once: capacity, not shedding, is measured
    )
    service = procs.start(
        "service",
        [sys.executable, "-m", "realtime.cli", "serve", "--redis-url", redis_url, "--port", str(port), "--workers", "1",
         "--config", str(CONFIG), "--data-dir", str(tmp / "service")],
        env,
    )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(service, port, 60)

    _warm_socket(port, _mint(secret, "m-warm", 600), opts.deflate)
    result.rss_before_kib = rss_kib(service.pid)

    subscriber = _start_subscriber(procs, opts, port, secret, "service-subscriber")
    connected = _connect(result, subscriber, opts)
    if not result.connections:
        raise BenchError(f"no subscriber could connect to the service: {connected['errors']}{subscriber.tail()}")
    failed = set(connected["failed"])
    members = [i for i in range(opts.subscribers) if i not in failed]

    # Connected is not yet subscribed: the hub subscribes after the handshake.
    _wait_subscribed(redis_url, prefix, len(members), service, 60 + opts.subscribers / 200)
    time.sleep(1.0)
    result.rss_idle_kib = rss_kib(service.pid)
    result.kib_per_idle_conn = (result.rss_idle_kib - result.rss_before_kib) / result.connections

    members_file = tmp / "members.json"
    members_file.write_bytes(orjson.dumps(members))
    poster = procs.start(
        "poster",
        [sys.executable, "-m", "loadtest.live.poster", "--redis-url", redis_url, "--prefix", prefix,
         "--config", str(CONFIG), "--members-file", str(members_file), "--rate", str(opts.rate),
         "--warmup", str(opts.warmup), "--duration", str(opts.duration), "--tick-ms", str(opts.tick_ms)],
        child_env(),
        reports=True,
    )
    ready = poster.expect("ready", 60)
    t0, t1 = ready["t0_ns"], ready["t1_ns"]
    gc_before = _gc_collections(base)
    if opts.py_spy is not None:
        _profile(procs, opts, service.pid, t0)
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
    _fill_send(result, done, opts, "poster")

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


def _profile(procs: Processes, opts: Options, pid: int, t0_ns: int) -> Child:
    """py-spy sampling the service over the measured window (collapsed stacks, for reading)."""
    out = Path(f"bench-live-service-{time.strftime('%Y%m%d-%H%M%S')}.txt").resolve()
    argv = [str(opts.py_spy), "record", "--pid", str(pid), "--format", "raw", "--nonblocking", "--rate", "250",
            "--duration", str(max(1, round(opts.duration))), "--output", str(out)]
    wait = (t0_ns - time.time_ns()) / 1e9
    if wait > 0:
        time.sleep(wait)
    print(f"  profiling the service with py-spy into {out}", flush=True)
    return procs.start("py-spy", argv, child_env())


def run_baseline(opts: Options, procs: Processes) -> SideResult:
    result = SideResult("baseline")
    secret = secrets.token_urlsafe(24)
    port = free_port()
    server = procs.start(
        "baseline",
        [sys.executable, "-m", "loadtest.live_baseline", "--port", str(port)],
        child_env(BENCH_TOKEN_SECRET=secret),
        reports=True,
        commands=True,
    )
    server.expect("listening", 60)
    _warm_socket(port, _mint(secret, "m-warm", 600), opts.deflate)
    result.rss_before_kib = rss_kib(server.pid)

    subscriber = _start_subscriber(procs, opts, port, secret, "baseline-subscriber")
    _connect(result, subscriber, opts)
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
    result.cpu_pct = _cpu_window({"baseline server": server.pid, "subscriber": subscriber.pid}, ready["t0_ns"], ready["t1_ns"])
    done = server.expect("done", opts.warmup + opts.duration + 120)
    result.sent = done["sent"]
    _fill_send(result, done, opts, "baseline")
    subscriber.send(f"report {done['seq_lo']} {done['seq_hi']} {result.sent} 3")
    _fill_report(result, subscriber.expect("report", 120), result.sent)
    result.rss_after_kib = rss_kib(server.pid)
    subscriber.send("close")
    subscriber.expect("closed", 60)
    subscriber.stop()
    server.send("quit")
    server.stop()
    return result
