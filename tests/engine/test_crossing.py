"""The cross-slot seam on the real server (``engine/crossing.py``), through its first user, the
catalog: intents before object steps, the sweep as scheduler jobs, entries whose item left the
programme, intents whose object step never ran, and an outage longer than the dedupe retention."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.clock import DAY_MS
from engine.crossing import CROSS, EntryState, ObjectRef, entry_key, intent_id, parse_intent
from engine.jobs import SHARDS, dead_key, jobs_key, parse_job, shard_of
from engine.ledger import verify
from engine.redeem import CATALOG
from engine.redemptions import Reserve
from engine.store import OpStatus
from engine.verify import verify_all
from tests.engine.test_redemptions import (
    GRACE_MS, SHOP, crossing_of, outbox, pay, record, redeem, shop, sold, store_of, sweep,
)

MUG = ObjectRef(CATALOG, "mug")


async def dead_jobs(e: Any) -> list[str]:
    return [j.decode() for s in range(SHARDS) for j in await e.redis.zrange(dead_key(e.keys, s), 0, -1)]


def test_an_intent_names_its_entry_and_waits_in_the_members_shard() -> None:
    """The job id is in the engine's namespace, parses back to the object and the operation id
    (which may hold ':' and '.'), and lands in the member's own shard."""
    job = intent_id(MUG, "m:1", "order.9:a")
    assert job.startswith("rk:cross:m:1:")
    parsed = parse_job(job, 0)
    assert (parsed.kind, parsed.member) == (CROSS, "m:1")
    assert parse_intent(parsed) == (MUG, "order.9:a")


def test_the_intent_is_written_with_the_reservation_and_dropped_once_decided(engine, compile_toml) -> None:
    """While an entry is pending its intent waits, due after the grace; once decided it goes."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            r = record(e, "m-1", "r-1")
            assert (await store.reserve(r, 50, e.now_ms)).status is Reserve.RESERVED
            job = intent_id(MUG, "m-1", "r-1")
            assert await e.redis.zscore(jobs_key(e.keys, shard_of("m-1")), job) == e.now_ms + GRACE_MS
            await pay(e, "m-2", 500)
            assert (await redeem(e, store, "m-2", "r-1")).status is OpStatus.APPLIED
            assert await outbox(e) == (1, 1)  # m-1's, still pending; m-2's intent gone

    asyncio.run(run())


def test_an_entry_whose_item_left_the_programme_is_still_finished(engine, compile_toml) -> None:
    """The mug is gone from the catalog after the crash: the sweep finishes the entry from its own
    record (the terms offered), the member pays once, the unit stays sold."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            await pay(e, "m-1", 500)
            assert (await store.reserve(record(e, "m-1", "r-1"), 50, e.now_ms)).status is Reserve.RESERVED
            start, end = SHOP.index("[catalog.mug]"), SHOP.index("[catalog.sticker]")
            without_mug = compile_toml(SHOP[:start].format(mug_stock=0, mug_cost=0) + SHOP[end:])
            assert "mug" not in without_mug.model.catalog
            assert await sweep(e, e.now_ms + GRACE_MS, without_mug) == 1
            assert await e.balance("m-1") == 400 and await e.coupons("m-1") == ["mug"]
            assert await sold(e) == 1 and await outbox(e) == (0, 0)
            # A retry now answers what was decided, not in_progress.
            retry = await redeem(e, store, "m-1", "r-1")
            assert retry.status is OpStatus.DUPLICATE

    asyncio.run(run())


def test_an_intent_whose_object_step_never_ran_closes_the_key_for_a_while(engine, compile_toml) -> None:
    """The process died between the intent and the item's step: the sweep finds no entry and
    abandons the key, so a stalled step cannot open it late (a retry meanwhile is in_progress);
    once the abandonment's keep time passes, the same id starts afresh."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            await pay(e, "m-1", 500)
            job = intent_id(MUG, "m-1", "r-1")
            await e.redis.zadd(jobs_key(e.keys, shard_of("m-1")), {job: e.now_ms + GRACE_MS})
            assert await sweep(e, e.now_ms + GRACE_MS) == 1
            stalled = await store.reserve(record(e, "m-1", "r-1"), 50, e.now_ms)
            assert (stalled.status, stalled.state) == (Reserve.EXISTS, EntryState.ABANDONED)
            busy = await redeem(e, store, "m-1", "r-1")
            assert (busy.status, busy.refusal) == (OpStatus.REFUSED, "in_progress")
            assert await sold(e) == 0 and await e.balance("m-1") == 500
            key = entry_key("m-1", "r-1")
            await e.redis.hdel(MUG.keys(e.keys)[0], key, f"{key}|s")  # as once its keep time passed
            assert (await redeem(e, store, "m-1", "r-1")).status is OpStatus.APPLIED
            assert await sold(e) == 1 and await e.balance("m-1") == 400

    asyncio.run(run())


def test_an_entry_pending_past_the_dedupe_retention_is_left_to_an_operator(engine, compile_toml) -> None:
    """An outage longer than the dedupe retention: the member step had applied before the crash
    and its dedupe entry has been forgotten since, so running it again would charge twice. The
    sweep does not: the job goes to its shard's dead list, the member is charged once, the unit
    stays held, and rekindle verify names the job."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            await pay(e, "m-1", 500)
            r = record(e, "m-1", "r-1")
            assert (await store.reserve(r, 50, e.now_ms)).status is Reserve.RESERVED
            from engine.redeem import plan_redeem_member

            assert (await e.store.apply(plan_redeem_member(e.program, r, e.now_ms), e.program)).status is OpStatus.APPLIED
            async for key in e.redis.scan_iter(match=f"{e.keys.member_tag('m-1')}:d:*"):
                await e.redis.delete(key)  # the dedupe buckets, as the retention forgets them
            later = e.now_ms + e.program.retention_ms + DAY_MS
            assert await sweep(e, later) == 0
            assert await dead_jobs(e) == [intent_id(MUG, "m-1", "r-1")]
            assert await e.balance("m-1") == 400 and await e.coupons("m-1") == ["mug"]
            assert await sold(e) == 1 and (await outbox(e))[0] == 1
            assert (await verify(e.redis, e.keys)).ok  # the member's points are sound
            # The entry is overdue by the test's clock only (verify reads the server's, real time):
            # the dead job is what names it here.
            report = await verify_all(e.redis, e.keys)
            assert {c.name: c.details for c in report.checks if c.breaches} == {
                "no job given up": [f"shard {shard_of('m-1')}: {intent_id(MUG, 'm-1', 'r-1')} given up at {later}"]}

    asyncio.run(run())


def test_a_request_that_reserved_answers_what_the_sweep_decided(engine, compile_toml) -> None:
    """The sweep applied the step while the request stalled; the request's own step then finds
    the member unable to pay again, yet the object says settled: the request answers applied
    (the step's duplicate, replaying its effects), not refused."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store, crossing = store_of(e), crossing_of(e)
            await pay(e, "m-1", 100)
            r = record(e, "m-1", "r-1")
            assert (await store.reserve(r, 50, e.now_ms)).status is Reserve.RESERVED
            assert await sweep(e, e.now_ms + GRACE_MS) == 1
            assert await e.balance("m-1") == 0
            from engine.redeem import redemption_step

            outcome = await crossing.finish(e.program, MUG, [redemption_step(r)], e.now_ms, opened_now=False)
            assert (outcome.state, outcome.result.status) == (EntryState.SETTLED, OpStatus.DUPLICATE)
            assert [x["type"] for x in outcome.result.effects] == ["points", "reward"]
            assert await sold(e) == 1 and await e.balance("m-1") == 0

    asyncio.run(run())
