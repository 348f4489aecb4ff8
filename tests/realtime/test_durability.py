"""Processes come and go; awards stay exactly-once.

A service and its own embedded Valkey are both stopped (the Valkey by SIGKILL, as a crash) and
started again on the same data folder: an event retried afterwards is still a duplicate. A
service with two worker processes applies simultaneous copies of an event once, and its
/metrics adds up the counts of both workers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from engine.keys import Keys
from realtime.embedded import EmbeddedValkey
from tests.realtime.conftest import ADMIN_KEY, Service, free_port, new_prefix, purchase, start_service, unique


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
                assert again["effects"] == []
                conflict = shop.post("/v1/events", json={**event, "data": {"amount": 1}})
                assert conflict.status_code == 409
                assert shop.get(f"/v1/members/{member}").json()["points"]["balance"] == 299
                assert shop.get("/v1/config", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()["program_version"] == 1
        finally:
            service.stop()
    finally:
        valkey.stop()


def test_store_outage_is_503_and_a_retry_applies_once(tmp_path: Path) -> None:
    """While Valkey is down, events answer 503 saying nothing internal; retried after it is back, each applies once."""
    valkey_dir = tmp_path / "valkey"
    port = free_port()
    member = unique("m")
    before, during = purchase(member, 19900), purchase(member, 100)

    valkey = EmbeddedValkey(valkey_dir, port=port)
    valkey.start()
    service = start_service(valkey.url, new_prefix(), tmp_path / "serve")
    try:
        with service.client() as shop:
            assert shop.post("/v1/events", json=before).json()["results"][0]["status"] == "applied"
            valkey.kill()
            response = shop.post("/v1/events", json=during)
            assert response.status_code == 503, response.text
            assert response.json() == {"error": {"code": "unavailable", "message": "the service could not complete the request"}}
            assert shop.get("/healthz").status_code == 503
            batch = shop.post("/v1/events", json={"events": [during]})  # per event: retry this one
            assert batch.status_code in (200, 503), batch.text
            if batch.status_code == 200:
                [result] = batch.json()["results"]
                assert (result["status"], result["error"]["code"]) == ("error", "unavailable")

            valkey = EmbeddedValkey(valkey_dir, port=port)
            valkey.start()
            assert shop.get("/healthz").status_code == 200
            assert shop.post("/v1/events", json=during).json()["results"][0]["status"] == "applied"
            assert shop.post("/v1/events", json=before).json()["results"][0]["status"] == "duplicate"
            assert shop.get(f"/v1/members/{member}").json()["points"]["balance"] == 299 + 1
    finally:
        service.stop()
        if valkey.pid is not None:
            valkey.stop()
    for line in service.stderr_text().splitlines():  # the outage is logged, as JSON lines
        assert isinstance(json.loads(line), dict), line


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
