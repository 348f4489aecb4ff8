"""The live feed across processes: fan-out between services and workers, slow consumers, restarts.

Every test here starts service processes of its own (``start_service``) beside the session's, on
the session's Valkey: a second service and a two-worker service on the session's key prefix (so
an event posted to one reaches sockets on the others), a service whose programme keeps a long
feed (so a slow consumer's backlog is still there to resume from), and one to SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import psutil
import pytest
import redis
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from realtime.client import LiveClient
from tests.realtime.conftest import EXAMPLE_CONFIG, Service, new_prefix, purchase, start_service, unique
from tests.realtime.test_live import (
    WAIT_S,
    expect_frames,
    feed_ids,
    frames_of,
    ids,
    live_url,
    member_token,
    post,
    reading,
    until_pong,
    ws_base,
)

SLOW_METRIC = "rekindle_live_slow_consumer_disconnects_total"
MAX_QUEUE = 1024  # realtime/live.py: frames a socket may fall behind before it is closed 4408


@pytest.fixture(scope="module")
def twin(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A second service, with two worker processes, on the session service's Valkey and key prefix."""
    svc = start_service(service.redis_url, service.prefix, tmp_path_factory.mktemp("twin"), workers=2)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def long_feed(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service whose programme keeps 5,000 feed entries per member (the example keeps 500)."""
    folder = tmp_path_factory.mktemp("long-feed")
    config = folder / "long_feed.toml"
    source = EXAMPLE_CONFIG.read_text()
    assert "feed_length = 500 " in source
    config.write_text(source.replace("feed_length = 500 ", "feed_length = 5000 "))
    svc = start_service(redis_url, new_prefix(), folder / "serve", config=config)
    try:
        yield svc
    finally:
        svc.stop()


def metric(client: httpx.Client, name: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} is not in /metrics")


def worker_of(service: Service, client_port: int) -> int:
    """The pid of the worker process that holds the server side of this client connection."""
    port = int(urlsplit(service.base_url).port or 0)
    for worker in psutil.Process(service.process.pid).children(recursive=True):
        for conn in worker.net_connections(kind="tcp"):
            if conn.laddr.port == port and conn.raddr and conn.raddr.port == client_port:
                return int(worker.pid)
    raise AssertionError(f"no worker of {service.base_url} holds the connection from port {client_port}")


def post_sync(shop: httpx.Client, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = shop.post("/v1/events", json={"events": events})
    assert response.status_code == 200, response.text[:500]
    results: list[dict[str, Any]] = response.json()["results"]
    assert {r["status"] for r in results} == {"applied"}
    return results


class RawClient:
    """A WebSocket client on a blocking socket (websockets' sans-I/O protocol) that reads only when told.

    Between reads nothing drains the socket, so the server's send buffer fills as a stalled
    phone's would.
    """

    def __init__(self, url: str) -> None:
        uri = parse_uri(url)
        self.protocol = ClientProtocol(uri, max_size=None)
        self.sock = socket.create_connection((uri.host, uri.port), timeout=WAIT_S)
        self._pending: list[Any] = []
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        response = self._next_event()
        assert isinstance(response, Response) and response.status_code == 101, response

    def close(self) -> None:
        self.sock.close()

    def send_op(self, op: dict[str, Any]) -> None:
        self.protocol.send_text(orjson.dumps(op))
        self._flush()

    def next_message(self) -> dict[str, Any]:
        event = self._next_event()
        assert event.opcode is Opcode.TEXT, event
        return orjson.loads(event.data)  # type: ignore[no-any-return]

    def read_to_close(self) -> tuple[list[dict[str, Any]], int, str]:
        """Every frame still on its way, then the close code and reason."""
        frames = []
        while True:
            event = self._next_event()
            if event.opcode is Opcode.TEXT:
                frames.append(orjson.loads(event.data))
            elif event.opcode is Opcode.CLOSE:
                close = self.protocol.close_rcvd
                assert close is not None
                return frames, close.code, close.reason

    def _next_event(self) -> Any:
        while not self._pending:
            data = self.sock.recv(1 << 16)  # bounded by the socket timeout (WAIT_S)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            control = (Opcode.PING, Opcode.PONG)  # answered by the protocol itself
            self._pending += [e for e in self.protocol.events_received() if getattr(e, "opcode", None) not in control]
            self._flush()  # pongs to the server's pings, our half of a close
            if not data and not self._pending:
                raise AssertionError("the server closed the TCP connection without a close frame")
        return self._pending.pop(0)

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.sock.sendall(chunk)


# --- fan-out across processes ------------------------------------------------------------------------------


def test_sockets_receive_events_posted_to_another_process(service: Service, twin: Service) -> None:
    """A socket on one service process receives the effects of events posted to another, both ways."""
    on_first, on_twin = unique("m"), unique("m")

    async def main() -> None:
        async with service.async_client() as first_http, twin.async_client() as twin_http, websockets.connect(
            live_url(service, token=member_token(on_first), since="0-0")
        ) as first_ws, websockets.connect(live_url(twin, token=member_token(on_twin), since="0-0")) as twin_ws:
            assert await until_pong(first_ws) == []
            assert await until_pong(twin_ws) == []
            posted_to_twin = frames_of(await post(twin_http, purchase(on_first, 19900)))
            posted_to_first = frames_of(await post(first_http, purchase(on_twin, 19900)))
            await expect_frames(first_ws, posted_to_twin)
            await expect_frames(twin_ws, posted_to_first)

    asyncio.run(main())


def test_every_socket_on_every_worker_receives_every_frame(service: Service, twin: Service, sync_redis: redis.Redis) -> None:
    """Sockets of one member spread over two workers each receive every frame once, wherever the event was posted."""
    member = unique("m")
    token = member_token(member)

    async def main() -> set[int]:
        async with service.async_client() as first_http, twin.async_client() as twin_http:
            sockets: list[Any] = []
            workers: set[int] = set()
            try:
                while len(workers) < 2:  # the kernel picks the worker: open sockets until both hold some
                    assert len(sockets) < 32, f"every connection landed on worker(s) {workers}"
                    ws = await websockets.connect(live_url(twin, token=token, since="0-0"))
                    sockets.append(ws)
                    assert await until_pong(ws) == []
                    workers.add(worker_of(twin, ws.local_address[1]))
                sockets.append(await websockets.connect(live_url(service, token=token, since="0-0")))
                assert await until_pong(sockets[-1]) == []
                expected = frames_of(await post(twin_http, purchase(member, 19900)))
                expected += frames_of(await post(first_http, purchase(member, 300)))
                for ws in sockets:
                    await expect_frames(ws, expected)
                assert ids(expected) == feed_ids(sync_redis, service.prefix, member)
            finally:
                for ws in sockets:
                    await ws.close()
            return workers

    assert len(asyncio.run(main())) == 2


# --- slow consumers ---------------------------------------------------------------------------------------------


def test_slow_consumer_is_closed_4408_and_resumes_without_loss(long_feed: Service) -> None:
    """A socket that stops reading is closed 4408 (seen once it reads) and counted; resuming from its last id loses nothing."""
    member = unique("m")
    shop = long_feed.client()
    before = metric(shop, SLOW_METRIC)
    posted: list[dict[str, Any]] = []
    raw = RawClient(live_url(long_feed, token=member_token(member), since="0-0"))
    try:
        raw.send_op({"op": "ping"})
        assert raw.next_message() == {"type": "pong"}  # live; from here on it reads nothing
        # Long event ids make long frames, so fewer fill the server's socket buffer and its queue.
        for _ in range(60):
            events = [purchase(member, 100, event_id=f"{unique('slow')}-{'x' * 100}") for _ in range(1000)]
            posted += frames_of(post_sync(shop, events))
            if metric(shop, SLOW_METRIC) > before:
                break
        else:
            raise AssertionError(f"{len(posted)} frames behind and still not closed")
        received, code, reason = raw.read_to_close()
    finally:
        raw.close()
    assert (code, bool(reason)) == (4408, True)
    assert received == posted[: len(received)]  # what it got came in order, with no gap
    assert len(posted) - len(received) > MAX_QUEUE
    assert shop.get("/healthz").status_code == 200
    assert metric(shop, SLOW_METRIC) >= before + 1

    async def resume() -> tuple[list[dict[str, Any]], LiveClient]:
        client = LiveClient(ws_base(long_feed), member_token(member), since=received[-1]["id"], backoff_min_s=0.02)
        async with reading(client) as feed:
            try:
                return await feed.until(posted[-1]["id"]), client
            except TimeoutError:
                raise AssertionError(
                    f"no frame within {WAIT_S} s of resuming {len(posted) - len(received)} frames behind; "
                    f"{client.connects} connections closed with {sorted(set(client.close_codes))}"
                ) from None

    got, client = asyncio.run(resume())
    assert got == posted[len(received) :]


def test_resume_longer_than_the_queue_is_replayed_not_evicted(long_feed: Service) -> None:
    """A resume with more entries to replay than the 1024-frame queue holds (the feed keeps them) gets them all."""
    member = unique("m")
    shop = long_feed.client()
    posted = frames_of(post_sync(shop, [purchase(member, 100) for _ in range(700)]))
    assert MAX_QUEUE < len(posted) < 5000

    async def replay() -> tuple[list[dict[str, Any]], int | None]:
        async with websockets.connect(live_url(long_feed, token=member_token(member), since="0-0")) as ws:
            try:
                return await until_pong(ws), None
            except ConnectionClosed as exc:
                return [], exc.rcvd.code if exc.rcvd else 1006

    frames, closed = asyncio.run(replay())
    assert closed is None, f"closed {closed} instead of replaying {len(posted)} entries"
    assert frames == posted


# --- restarts -----------------------------------------------------------------------------------------------------


def test_sigterm_closes_sockets_1012_and_another_process_resumes(service: Service, tmp_path: Path) -> None:
    """SIGTERM of a service closes its sockets with 1012; LiveClient resumes on another process from its last id, no loss."""
    member = unique("m")
    doomed = start_service(service.redis_url, service.prefix, tmp_path / "doomed")

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]:
        async with service.async_client() as http:
            client = LiveClient(ws_base(doomed), member_token(member), since="0-0", backoff_min_s=0.02, max_attempts=1)
            async with reading(client) as feed:
                expected = frames_of(await post(http, purchase(member, 19900)))
                got = await feed.until(expected[-1]["id"])
                doomed.process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionError):  # closed 1012, then nothing listens there any more
                    await feed.next()
                codes = list(client.close_codes)
            expected += frames_of(await post(http, purchase(member, 300)))  # while no socket is open
            # An app re-points at another node and resumes from the last id it saw.
            again = LiveClient(ws_base(service), member_token(member), since=client.last_id, backoff_min_s=0.02)
            async with reading(again) as feed:
                got += await feed.until(expected[-1]["id"])
            return expected, got, codes

    try:
        expected, got, codes = asyncio.run(main())
    finally:
        status = doomed.stop()
    assert codes == [1012]
    assert got == expected
    assert status in (0, -signal.SIGTERM)
    assert "Traceback" not in doomed.stderr_text()
