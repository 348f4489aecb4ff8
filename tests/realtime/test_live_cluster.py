"""The live feed of a service on a local cluster: sharded pub/sub per primary, and what a member's
socket sees when its channel's shard goes away (its slot moved, or its primary killed).

Either way the socket is told to resume (4409), and ``LiveClient`` reconnects with the last id it
saw and receives everything, in order, once the hub subscribes where the channel now lives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from realtime.client import LiveClient
from realtime.cluster import LocalCluster
from tests.engine.test_cluster import begin_migration, finish_migration, local_cluster, member_slot
from tests.realtime.conftest import Service, new_prefix, purchase, start_service
from tests.realtime.test_live import frames_of, member_token, post, reading, ws_base


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from local_cluster(tmp_path_factory)  # of this test's own: slots move, nodes die


@pytest.fixture
def service(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_service(cluster.url, new_prefix(), tmp_path_factory.mktemp("serve"))
    try:
        yield svc
    finally:
        svc.stop()


def follow_through(service: Service, member: str, disturb: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], LiveClient]:
    """Awards before, during and after ``disturb()`` (run in a thread), read by one LiveClient."""

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], LiveClient]:
        client = LiveClient(ws_base(service), member_token(member), since="0-0", backoff_min_s=0.05, backoff_max_s=0.5)
        async with service.async_client() as http, reading(client) as feed:
            expected = frames_of(await post(http, purchase(member, 19900)))
            got = await feed.until(expected[-1]["id"])
            await asyncio.to_thread(disturb)
            for amount in (300, 400):
                while True:  # a 503 while the shard is down or moving: the shop retries by id
                    response = await http.post("/v1/events", json=purchase(member, amount, event_id=f"{member}-{amount}"))
                    if response.status_code == 200:
                        break
                    assert response.status_code == 503, response.text
                    await asyncio.sleep(0.1)
                expected += frames_of(response.json()["results"])
                got += await feed.until(expected[-1]["id"])
            return expected, got, client

    return asyncio.run(main())


def test_a_moved_slot_resumes_its_sockets_and_loses_nothing(cluster: LocalCluster, service: Service) -> None:
    """The member's slot moves to another primary: the server ends the hub's subscription there
    (sunsubscribe), the socket is told to resume, and resumes on the new shard with nothing lost."""
    member = "live-mover"
    slot = member_slot(member)

    def move() -> None:
        source, target = begin_migration(cluster, slot)
        with source.client() as src:
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        finish_migration(cluster, slot, target)

    before = cluster.primary_for_slot(slot).port
    expected, got, client = follow_through(service, member, move)
    assert got == expected
    assert cluster.primary_for_slot(slot).port != before
    assert 4409 in client.close_codes, client.close_codes


def test_a_failed_over_shard_resumes_its_sockets_and_loses_nothing(cluster: LocalCluster, service: Service) -> None:
    """The primary of the member's slot is killed: the hub's subscription there is lost, the socket
    resumes, and once the replica has taken over it follows the channel there with nothing lost."""
    member = "live-survivor"
    slot = member_slot(member)
    victim = cluster.primary_for_slot(slot)

    expected, got, client = follow_through(service, member, lambda: cluster.kill(victim.index))
    assert got == expected
    assert cluster.primary_for_slot(slot).port != victim.port
    assert 4409 in client.close_codes, client.close_codes
