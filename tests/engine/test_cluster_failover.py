"""A primary killed (SIGKILL) while awards stream to a local cluster: its replica takes over, and
with ``wait_replicas=1`` no acknowledged award is lost and none is applied twice.

A cluster replicates asynchronously: a primary acknowledges a write before its replica has it,
and a primary that dies in between takes the write with it. With ``REKINDLE_WAIT_REPLICAS=1``
every write waits for its replica (``WAIT``) before the caller hears ``applied``; a write its
replica did not confirm is answered as a failure, and the caller's retry by id finds it applied
(a duplicate) or applies it. The price: a shard whose replica is gone refuses to acknowledge
writes until one is back, so the test brings the killed node back, as a replica, after the
failover.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from engine.keys import Keys
from engine.store import OpStatus
from engine.verify import verify_all
from realtime.cluster import LocalCluster
from tests.engine.test_cluster import local_cluster, member_slot

DEADLINE_S = 60.0


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from local_cluster(tmp_path_factory)  # a cluster of this test's own: it kills a node


def test_a_primary_killed_mid_stream_loses_no_acknowledged_award(cluster: LocalCluster, open_engine, prefix: str) -> None:
    members = [f"f{i}" for i in range(24)]
    victim = cluster.primary_for_slot(member_slot(members[0]))
    on_victim = [m for m in members if cluster.primary_for_slot(member_slot(m)).port == victim.port]
    answers: dict[str, tuple[str, OpStatus, int]] = {}  # event id -> member, final answer, its points
    failures: defaultdict[str, int] = defaultdict(int)
    state: dict[str, Any] = {"killed_at": 0.0, "after": 0}

    async def run() -> None:
        async with open_engine(prefix, url=cluster.url, wait_replicas=1) as e:
            stop = asyncio.Event()

            async def stream(worker: int) -> None:
                i = 0
                while not stop.is_set():
                    event_id, member = f"w{worker}-{i}", members[(worker * 7 + i) % len(members)]
                    while True:  # a failure is retried by id, as the shop's backend does
                        try:
                            result = await e.apply(event_id, member, "purchase", {"amount": 300})
                            break
                        except Exception as exc:  # noqa: BLE001 - 503s during the failover
                            failures[type(exc).__name__] += 1
                            await asyncio.sleep(0.02)
                    earned = sum(x["data"]["amount"] for x in result.effects if x["type"] == "points")
                    answers[event_id] = (member, result.status, earned)
                    if state["killed_at"] and member in on_victim:
                        state["after"] += 1
                    i += 1
                    await asyncio.sleep(0)

            workers = [asyncio.create_task(stream(w)) for w in range(6)]
            await asyncio.sleep(0.5)
            cluster.kill(victim.index)  # SIGKILL: what its replica had not received is gone
            state["killed_at"] = time.monotonic()
            while cluster.primary_for_slot(member_slot(members[0])).port == victim.port:  # until its replica takes over
                assert time.monotonic() - state["killed_at"] < DEADLINE_S, "no failover"
                await asyncio.sleep(0.1)
            await asyncio.to_thread(cluster.restart, victim.index)  # back, as the new primary's replica
            await asyncio.to_thread(cluster.wait_healthy, DEADLINE_S)
            while state["after"] < 50:  # awards to the failed-over members acknowledged again
                assert time.monotonic() - state["killed_at"] < DEADLINE_S, (state, dict(failures))
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*workers)

            earned: defaultdict[str, int] = defaultdict(int)
            for member, status, points in answers.values():
                assert status in (OpStatus.APPLIED, OpStatus.DUPLICATE)  # a duplicate: applied by an unanswered try
                earned[member] += points
            for member in members:
                assert await e.balance(member) == earned[member], member
            plans = [e.plan(event_id, member, "purchase", {"amount": 300}) for event_id, (member, _, _) in answers.items()]
            again = await e.store.apply_many(plans, e.program)
            assert {r.status for r in again} == {OpStatus.DUPLICATE}
            report = await verify_all(e.redis, Keys(prefix))
            assert report.ok, report.table()

    asyncio.run(run())
    print(f"failures while failing over: {dict(failures)}; answers: {len(answers)}")
    assert failures, "the kill was never felt: nothing was tested"
    assert cluster.primary_for_slot(member_slot(members[0])).port != victim.port
