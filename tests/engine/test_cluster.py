"""The award path on a local Valkey Cluster (three primaries, a replica each): routing by slot,
and a slot migrated while awards flow, with nothing lost and nothing applied twice.

The cluster is this module's own (``realtime.cluster.LocalCluster``); the award path is the
service's (``ClusterRunner`` under ``OperationStore``), opened by ``open_engine(url=...)``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from engine.cluster import ClusterRunner, is_cluster_url, node_url, plain_url, redirect_of
from engine.store import OpStatus
from realtime.cluster import LocalCluster, Node

APPLIED, DUPLICATE = OpStatus.APPLIED, OpStatus.DUPLICATE


def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A started local cluster (three primaries, a replica each), stopped after its user."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from local_cluster(tmp_path_factory)


def member_slot(member: str) -> int:
    return key_slot(f"m:{member}".encode())  # the hash tag of every key of the member: {m:<id>}


def members_in_slot(slot: int, count: int, stem: str) -> list[str]:
    """``count`` member ids whose keys all hash to ``slot``."""
    found = []
    i = 0
    while len(found) < count:
        candidate = f"{stem}{i}"
        if member_slot(candidate) == slot:
            found.append(candidate)
        i += 1
    return found


def test_cluster_urls() -> None:
    """The cluster schemes select a cluster; a node's URL keeps the credentials and options."""
    assert is_cluster_url("redis+cluster://h:1") and is_cluster_url("rediss+cluster://h:1")
    assert not is_cluster_url("redis://h:1") and not is_cluster_url(None)
    assert plain_url("rediss+cluster://u:p@h:7000/0?x=1") == "rediss://u:p@h:7000/0?x=1"
    assert node_url("redis+cluster://u:p@h:7000?x=1", "10.0.0.2", 7002) == "redis://u:p@10.0.0.2:7002?x=1"
    assert redirect_of(redis.ResponseError("MOVED 3999 127.0.0.1:6381")) == ("MOVED", 3999, "127.0.0.1", 6381)
    assert redirect_of(redis.ResponseError("ASK 12 10.0.0.1:7000")) == ("ASK", 12, "10.0.0.1", 7000)
    assert redirect_of(redis.ResponseError("ERR MOVED somewhere")) is None


def test_awards_reach_every_primary_and_apply_once(cluster: LocalCluster, open_engine, prefix: str) -> None:
    """Members spread over the three primaries: each award is applied on its slot's primary, once;
    a batch across primaries is applied in one call and answered in order; resent, all duplicates."""
    members = [f"m{i}" for i in range(60)]

    async def run() -> None:
        async with open_engine(prefix, url=cluster.url) as e:
            assert isinstance(e.pipeline, ClusterRunner)
            singles = await asyncio.gather(*(e.apply(f"o-{m}", m, "purchase", {"amount": 1000}) for m in members))
            assert [r.status for r in singles] == [APPLIED] * len(members)
            plans = [e.plan(f"c-{m}", m, "checkin") for m in members] + [e.plan(f"o-{members[0]}", members[0], "purchase", {"amount": 1000})]
            batch = await e.store.apply_many(plans, e.program)
            assert [r.status for r in batch] == [APPLIED] * len(members) + [DUPLICATE]
            again = await e.store.apply_many(plans[:-1], e.program)
            assert {r.status for r in again} == {DUPLICATE}
            for m, single, checkin in zip(members, singles, batch):
                earned = sum(x["data"]["amount"] for r in (single, checkin) for x in r.effects if x["type"] == "points")
                assert earned == 10 + 100 + 10  # ¥10's points, the first order's bonus, daily_checkin's
                assert await e.balance(m) == earned

    asyncio.run(run())
    owners = {cluster.primary_for_slot(member_slot(m)).port for m in members}
    assert len(owners) == 3, owners
    for node in cluster.nodes[: cluster.primaries]:
        with node.client() as client:
            assert client.dbsize() > 0, node.address


def test_a_member_half_way_through_a_migration_is_asked_for_then_moved(cluster: LocalCluster, open_engine, prefix: str) -> None:
    """With the member's slot MIGRATING and its keys already on the target, the source answers ASK
    and the call goes to the target after ASKING, which answers TRYAGAIN while the slot is still
    importing (the script names keys that do not exist yet): the call waits, and completes once
    the slot is the target's; then MOVED updates the map and calls go there directly. Each award
    applied once throughout."""
    member = "ask-me"
    slot = member_slot(member)

    async def run() -> None:
        async with open_engine(prefix, url=cluster.url) as e:
            assert (await e.apply("a-1", member, "purchase", {"amount": 1000})).status is APPLIED
            runner = e.pipeline
            assert isinstance(runner, ClusterRunner)
            source, target = begin_migration(cluster, slot)
            with source.client() as src:
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
                waiting = asyncio.create_task(e.apply("a-2", member, "purchase", {"amount": 1000}))
                while not runner.redirected["TRYAGAIN"]:  # asked, then told to try again
                    assert not waiting.done(), waiting.result()
                    await asyncio.sleep(0.005)
                assert runner.redirected["ASK"] >= 1
                finish_migration(cluster, slot, target)
                assert (await waiting).status is APPLIED
            assert (await e.apply("a-3", member, "purchase", {"amount": 1000})).status is APPLIED
            assert runner.redirected["MOVED"] >= 1
            assert (await e.apply("a-2", member, "purchase", {"amount": 1000})).status is DUPLICATE
            assert await e.balance(member) == 10 + 100 + 10 + 10
            assert cluster.primary_for_slot(slot).port == target.port

    asyncio.run(run())


def begin_migration(cluster: LocalCluster, slot: int) -> tuple[Node, Node]:
    """``slot`` IMPORTING on another primary, MIGRATING on its own: (source, target)."""
    source = cluster.primary_for_slot(slot)
    target = next(n for n in cluster.nodes[: cluster.primaries] if n.port != source.port)
    with source.client() as src, target.client() as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
    return source, target


def finish_migration(cluster: LocalCluster, slot: int, target: Node) -> None:
    """Every primary told that ``slot`` is ``target``'s now."""
    for node in cluster.nodes[: cluster.primaries]:
        with node.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(target))


def node_id(node: Node) -> str:
    with node.client() as client:
        return client.execute_command("CLUSTER", "MYID").decode()  # type: ignore[no-any-return]


def migrate_slot(cluster: LocalCluster, slot: int, moving: threading.Event) -> tuple[int, int]:
    """Move ``slot`` to another primary the way ``valkey-cli --cluster reshard`` does: IMPORTING on
    the target, MIGRATING on the source, MIGRATE the keys in small steps (so awards meet the slot
    half-moved), then the new owner told to every primary. Returns (source port, target port)."""
    source, target = begin_migration(cluster, slot)
    moving.set()
    with source.client() as src:
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 3):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    finish_migration(cluster, slot, target)
    return source.port, target.port


def test_a_slot_migrated_while_awards_flow_loses_and_doubles_nothing(cluster: LocalCluster, open_engine, prefix: str) -> None:
    """Awards stream to members of one slot while the slot moves to another primary (ASK, then
    TRYAGAIN while a member's keys are split, then MOVED): every event is applied exactly once,
    balances and ledgers agree with what was answered, and a resend of everything is all duplicates."""
    slot = member_slot("mig-anchor")
    members = members_in_slot(slot, 4, "mig")
    answered: dict[str, OpStatus] = {}
    member_of: dict[str, str] = {}
    points: dict[str, int] = defaultdict(int)
    errors: list[str] = []
    moving = threading.Event()

    async def run() -> tuple[int, int]:
        async with open_engine(prefix, url=cluster.url) as e:
            stop = asyncio.Event()

            async def stream(worker: int) -> None:
                i = 0
                while not stop.is_set() or i < 30:  # at least 30 each, and until the move is done
                    event_id, member = f"w{worker}-{i}", members[(worker + i) % len(members)]
                    while True:  # a failed call is sent again with the same id, as a shop would
                        try:
                            result = await e.apply(event_id, member, "purchase", {"amount": 500})
                            break
                        except Exception as exc:  # noqa: BLE001 - 503s while the slot is in motion
                            errors.append(type(exc).__name__)
                            await asyncio.sleep(0.01)
                    answered[event_id], member_of[event_id] = result.status, member
                    if result.status is APPLIED:
                        points[member] += sum(x["data"]["amount"] for x in result.effects if x["type"] == "points")
                    i += 1
                    await asyncio.sleep(0)

            workers = [asyncio.create_task(stream(w)) for w in range(8)]
            moved = asyncio.create_task(asyncio.to_thread(migrate_slot, cluster, slot, moving))
            ports = await moved
            stop.set()
            await asyncio.gather(*workers)

            assert set(answered.values()) == {APPLIED}, errors[:5]
            assert isinstance(e.pipeline, ClusterRunner)
            assert e.pipeline.redirected["MOVED"] >= 1, e.pipeline.redirected  # the map was behind, then caught up
            for member in members:
                assert await e.balance(member) == points[member]
                ledger = await e.ledger(member)
                assert sum(delta for delta, _ in ledger) == points[member] == ledger[-1][1]
            plans = [e.plan(event_id, member, "purchase", {"amount": 500}) for event_id, member in member_of.items()]
            again = await e.store.apply_many(plans, e.program)
            assert {r.status for r in again} == {DUPLICATE}
            return ports

    source, target = asyncio.run(run())
    assert moving.is_set() and source != target
    assert cluster.primary_for_slot(slot).port == target
