"""The cross-slot seam on the real server (``engine/crossing.py``), through its first user, the
catalog: an intent a second before the object steps it covers, the sweep as scheduler jobs,
entries whose item left the programme, a step that stalled past its sweep, and an outage longer
than the dedupe retention."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.clock import DAY_MS
from engine.crossing import CROSS, WINDOW_MS, EntryState, ObjectRef, intent_id, parse_intent
from engine.jobs import SHARDS, dead_key, jobs_key, parse_job, shard_of
from engine.ledger import verify
from engine.redeem import CATALOG
from engine.redemptions import Reserve
from engine.store import OpStatus
from engine.verify import verify_all
from tests.engine.conftest import local_noon_ms
from tests.engine.test_redemptions import (
    DUE_MS, GRACE_MS, SHOP, crossing_of, outbox, pay, record, redeem, shop, sold, store_of, sweep,
)

MUG = ObjectRef(CATALOG, "mug")


async def dead_jobs(e: Any) -> list[str]:
    return [j.decode() for s in range(SHARDS) for j in await e.redis.zrange(dead_key(e.keys, s), 0, -1)]


def test_an_intent_names_its_object_and_second() -> None:
    """The job id is in the engine's namespace and parses back to the object (whose id may hold
    ':' and '.') and the second it covers; its shard is the object's."""
    odd = ObjectRef(CATALOG, "tea:box.1")
    job = intent_id(odd, 1_796_529_600)
    assert job == "rk:cross:cat.tea:box.1:1796529600"
    parsed = parse_job(job, 0)
    assert parsed.kind == CROSS and parse_intent(parsed) == (odd, 1_796_529_600)


def test_one_intent_covers_every_step_of_a_second_and_waits_for_its_sweep(engine, compile_toml) -> None:
    """Twenty redemptions of the mug within one second leave one intent, due the grace after the
    second ends, in the object's shard; the next second gets its own; the sweep of each finds
    nothing left to do once the requests have settled their entries, and removes it."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            members = [f"m-{i}" for i in range(20)]
            for m in members:
                await pay(e, m, 500)
            await asyncio.gather(*(redeem(e, store, m, "r-1") for m in members))
            await redeem(e, store, "m-0", "r-2", now_ms=e.now_ms + WINDOW_MS)
            shard_key = jobs_key(e.keys, shard_of(f"{MUG.kind}.{MUG.id}"))
            second = e.now_ms // WINDOW_MS
            assert await e.redis.zrange(shard_key, 0, -1, withscores=True) == [
                (intent_id(MUG, second).encode(), float(e.now_ms + DUE_MS)),
                (intent_id(MUG, second + 1).encode(), float(e.now_ms + DUE_MS + WINDOW_MS)),
            ]
            assert await sold(e) == 21 and await outbox(e) == (0, 0)
            assert await sweep(e, e.now_ms + DUE_MS + WINDOW_MS) == 2
            assert await e.redis.zcard(shard_key) == 0

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
            assert await sweep(e, e.now_ms + DUE_MS, without_mug) == 1
            assert await e.balance("m-1") == 400 and await e.coupons("m-1") == ["mug"]
            assert await sold(e) == 1 and await outbox(e) == (0, 0)
            # A retry now answers what was decided, not in_progress.
            retry = await redeem(e, store, "m-1", "r-1", now_ms=e.now_ms + DUE_MS)
            assert retry.status is OpStatus.DUPLICATE

    asyncio.run(run())


def test_a_step_that_stalled_past_its_sweep_takes_nothing(engine, compile_toml) -> None:
    """A request whose time the item's sweep has looked at already (it stalled for longer than
    the grace) is refused as stale, taking nothing: the sweep would never see its entry. Sent
    again it is a new step, of now, and applies."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            await pay(e, "m-1", 500)
            await pay(e, "m-2", 500)
            assert (await redeem(e, store, "m-2", "r-1")).status is OpStatus.APPLIED
            assert await sweep(e, e.now_ms + DUE_MS) == 1
            with pytest.raises(TimeoutError):
                await redeem(e, store, "m-1", "r-1")  # its time: the second swept already
            assert await sold(e) == 1 and await e.balance("m-1") == 500 and await outbox(e) == (0, 0)
            assert (await redeem(e, store, "m-1", "r-1", now_ms=e.now_ms + DUE_MS)).status is OpStatus.APPLIED
            assert await sold(e) == 2 and await e.balance("m-1") == 400

    asyncio.run(run())


def test_an_entry_pending_past_the_dedupe_retention_is_left_to_an_operator(engine, compile_toml) -> None:
    """An outage longer than the dedupe retention: the member step had applied before the crash
    and its dedupe entry has been forgotten since, so running it again would charge twice. The
    sweep does not: the job goes to its shard's dead list, the member is charged once, the unit
    stays held, and rekindle verify names the job."""

    async def run() -> None:
        # A day ahead of real time: verify reads the server's clock, which must not find the entry
        # overdue by itself (at noon in Shanghai and after, today's noon would be).
        async with engine(program_=shop(compile_toml), now_ms=local_noon_ms() + DAY_MS) as e:
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
            job = intent_id(MUG, e.now_ms // WINDOW_MS)
            assert await dead_jobs(e) == [job]
            assert await e.balance("m-1") == 400 and await e.coupons("m-1") == ["mug"]
            assert await sold(e) == 1 and (await outbox(e))[0] == 1
            assert (await verify(e.redis, e.keys)).ok  # the member's points are sound
            # The entry is overdue by the test's clock only (verify reads the server's, real time):
            # the dead job is what names it here.
            report = await verify_all(e.redis, e.keys)
            assert {c.name: c.details for c in report.checks if c.breaches} == {
                "no job given up": [f"shard {shard_of('cat.mug')}: {job} given up at {later}"]}

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
            assert await sweep(e, e.now_ms + DUE_MS) == 1
            assert await e.balance("m-1") == 0
            from engine.redeem import redemption_step

            outcome = await crossing.finish(e.program, MUG, [redemption_step(r)], e.now_ms, opened_now=False)
            assert (outcome.state, outcome.result.status) == (EntryState.SETTLED, OpStatus.DUPLICATE)
            assert [x["type"] for x in outcome.result.effects] == ["points", "reward"]
            assert await sold(e) == 1 and await e.balance("m-1") == 0

    asyncio.run(run())


def test_the_settles_of_a_turn_go_to_their_object_in_one_call(engine, compile_toml) -> None:
    """Twenty concurrent redemptions: the settles of the ones answered in one turn of the loop
    reach the mug as one ``settle_many`` (EVALSHA calls counted by the server), every entry is
    settled, and a retry straight after its answer finds its entry settled (duplicate)."""

    async def evalshas(e: Any) -> int:
        stats = await e.redis.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            members = [f"m-{i}" for i in range(20)]
            for m in members:
                await pay(e, m, 500)
            await e.redis.config_resetstat()
            results = await asyncio.gather(*(redeem(e, store, m, "r-1") for m in members))
            assert {r.status for r in results} == {OpStatus.APPLIED}
            assert await sold(e) == 20 and await outbox(e) == (0, 0)
            # 20 object steps, 20 member steps, and the settles: a call per turn that answered some
            # (the replies come back over a few reads), not one per redemption
            settle_calls = await evalshas(e) - 20 - 20
            assert 1 <= settle_calls <= 5, settle_calls
            assert (await redeem(e, store, "m-0", "r-1")).status is OpStatus.DUPLICATE

    asyncio.run(run())


def test_a_stalled_request_finding_its_step_applied_by_the_sweep_settles_it(engine, compile_toml) -> None:
    """The sweep applied the step of a stalled request but had not decided yet; the request then
    finds its own step a duplicate. Past half the grace since the entry's time that duplicate is
    the entry's own step (not an earlier operation's under the same id): the entry is settled, the
    member keeps the mug once, and the unit stays sold (released, the unit would be sold twice)."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml, mug_stock=1)) as e:
            store = store_of(e)
            await pay(e, "m-1", 500)
            r = record(e, "m-1", "r-1")
            assert (await store.reserve(r, 1, e.now_ms)).status is Reserve.RESERVED
            from engine.redeem import plan_redeem_member, redemption_step

            assert (await e.store.apply(plan_redeem_member(e.program, r, e.now_ms), e.program)).status is OpStatus.APPLIED
            late = crossing_of(e, e.now_ms + DUE_MS)
            outcome = await late.finish(e.program, MUG, [redemption_step(r)], e.now_ms, opened_now=True)
            assert (outcome.state, outcome.result.status) == (EntryState.SETTLED, OpStatus.DUPLICATE)
            assert await sold(e) == 1 and await outbox(e) == (0, 0)
            assert await e.balance("m-1") == 400 and await e.coupons("m-1") == ["mug"]

    asyncio.run(run())


def test_the_steps_waiting_on_an_intent_whose_sender_was_cancelled_send_it_again(engine, compile_toml) -> None:
    """The first step of a second carries the second's intent; the others wait for its reply. The
    first is cancelled (its client went away) before the reply: the others do not wait forever,
    they send the intent themselves, and the sweep's job for the second is there."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            first = asyncio.create_task(store.reserve(record(e, "m-1", "r-1"), 50, e.now_ms))
            await asyncio.sleep(0)  # the first is sending the intent and its step
            others = [asyncio.create_task(store.reserve(record(e, f"m-{i}", "r-1"), 50, e.now_ms)) for i in (2, 3)]
            await asyncio.sleep(0)  # the others wait on the first's intent
            first.cancel()
            done = await asyncio.wait_for(asyncio.gather(*others), 10)  # a guard against a hang, not a speed check
            assert [d.status for d in done] == [Reserve.RESERVED, Reserve.RESERVED]
            shard_key = jobs_key(e.keys, shard_of(f"{MUG.kind}.{MUG.id}"))
            assert await e.redis.zrange(shard_key, 0, -1) == [intent_id(MUG, e.now_ms // WINDOW_MS).encode()]

    asyncio.run(run())


def test_a_sweep_behind_more_dead_entries_than_a_batch_still_finishes_the_rest(engine, compile_toml) -> None:
    """More entries left for an operator (pending past the dedupe retention) than one sweep call
    reads: the sweep skips them and still finishes the entry behind them."""
    from engine.crossing import DUE_BATCH
    from engine.redeem import parse_redeem, redemption_of

    async def run() -> None:
        async with engine(program_=shop(compile_toml, mug_stock=DUE_BATCH + 10)) as e:
            store = store_of(e)
            for i in range(DUE_BATCH + 1):
                assert (await store.reserve(record(e, f"m-{i}", "r-1"), DUE_BATCH + 10, e.now_ms)).status is Reserve.RESERVED
            later = e.now_ms + e.program.retention_ms + DAY_MS
            await pay(e, "late", 500)
            r = redemption_of(e.program, parse_redeem({"id": "r-1", "item": "mug"}, "late", e.program, later - 60_000))
            assert (await store.reserve(r, DUE_BATCH + 10, later - 60_000)).status is Reserve.RESERVED
            await sweep(e, later)
            assert await e.coupons("late") == ["mug"] and await e.balance("late") == 400
            assert (await outbox(e))[0] == DUE_BATCH + 1  # the old ones stay pending, for an operator
            assert intent_id(MUG, e.now_ms // WINDOW_MS) in await dead_jobs(e)

    asyncio.run(run())
