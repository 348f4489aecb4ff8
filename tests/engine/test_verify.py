"""``verify_all``: every invariant from Redis alone, each check able to find its own breach."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engine.clock import ManualClock
from engine.programs import ProgramRegistry
from engine.jobs import dead_key
from engine.redemptions import catalog_keys
from engine.verify import OUTBOX_OVERDUE_MS, verify_all
from tests.engine.test_redemptions import DUE_MS, pay, settled, record, redeem, shop, store_of, sweep


def breaches(report: Any) -> dict[str, int]:
    return {c.name: c.breaches for c in report.checks if c.breaches}


async def redeemed_mugs(e: Any) -> None:
    """The shop's programme active under the test's prefix, and three mugs redeemed."""
    await ProgramRegistry(e.redis, e.keys, ManualClock(e.now_ms)).activate(e.program.source, origin="test")
    store = store_of(e)
    for m in ("a", "b", "c"):
        await pay(e, m, 500)
        assert (await redeem(e, store, m, f"r-{m}")).status.value == "applied"
    await settled(e)  # the settles were sent without waiting for their replies


def test_a_clean_run_passes_every_check_and_counts_what_it_read(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            await redeemed_mugs(e)
            seen: list[int] = []
            report = await verify_all(e.redis, e.keys, seen.append)
            assert report.ok, report.table()
            assert report.members == 3 and seen[-1] == 3
            checked = {c.name: c.checked for c in report.checks}
            assert checked["points: balance = lots = ledger"] == 3
            assert checked["catalog stock not exceeded"] == 2  # mug and sticker are redeemable
            assert checked["objects: counts = settled + pending"] == 4  # the mug's sold, and held by a, b, c
            assert "| objects: counts = settled + pending |" in report.table()

    asyncio.run(run())


def test_a_unit_taken_without_its_entry_is_a_breach(engine: Any, compile_toml: Any) -> None:
    """A unit counted taken that no entry, settled or pending, accounts for: one breach, named."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            await redeemed_mugs(e)
            await e.redis.hincrby(catalog_keys(e.keys, "mug")[1], "sold", 1)  # a unit lost between the slots
            report = await verify_all(e.redis, e.keys)
            assert breaches(report) == {"objects: counts = settled + pending": 1}
            [counts] = [c for c in report.checks if c.name == "objects: counts = settled + pending"]
            assert counts.details == [f"{e.keys.object('cat', 'mug')}: sold is 4, settled 3 + pending 0"]

    asyncio.run(run())


def test_stock_exceeded_is_a_breach(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=shop(compile_toml, mug_stock=3)) as e:
            await redeemed_mugs(e)
            assert (await verify_all(e.redis, e.keys)).ok
            await e.redis.hset(catalog_keys(e.keys, "mug")[1], mapping={"sold": 4, "s:sold": 4})
            assert breaches(await verify_all(e.redis, e.keys)) == {"catalog stock not exceeded": 1}

    asyncio.run(run())


def test_a_redemption_left_pending_is_counted_then_reported_once_overdue(engine: Any, compile_toml: Any) -> None:
    # Outbox times are the service's clock, which verify compares with the server's: real time.
    now_ms = int(time.time() * 1000)

    async def run() -> None:
        async with engine(program_=shop(compile_toml), now_ms=now_ms) as e:
            await redeemed_mugs(e)
            await pay(e, "d", 500)
            store = store_of(e)
            late = record(e, "d", "r-d")._replace(at_ms=e.now_ms - OUTBOX_OVERDUE_MS - 60_000)
            await store.reserve(record(e, "d", "r-d2"), 50, e.now_ms)  # a crash right after the item's step
            report = await verify_all(e.redis, e.keys)
            assert report.ok, report.table()  # pending, within the sweep's time: accounted for
            # Pending for longer than the sweep ever takes: reported.
            await store.reserve(late, 50, e.now_ms)
            assert breaches(await verify_all(e.redis, e.keys)) == {"cross-slot entries finished": 1}
            await sweep(e, e.now_ms + DUE_MS)
            assert (await verify_all(e.redis, e.keys)).ok

    asyncio.run(run())


def test_a_doubled_grant_is_reported_as_an_operation_applied_twice(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            await pay(e, "a", 500)
            ledger = e.keys.member("a").ledger
            [(_, fields)] = await e.redis.xrange(ledger)
            await e.redis.xadd(ledger, {**fields, b"b": 1000})
            await e.redis.hincrby(e.keys.member("a").profile, "pts", 500)
            await e.redis.hincrby(e.keys.member("a").lots, next(iter(await e.redis.hkeys(e.keys.member("a").lots))), 500)
            report = await verify_all(e.redis, e.keys)
            assert breaches(report) == {"operations applied once": 1}

    asyncio.run(run())


def test_a_lot_that_disagrees_with_the_balance_is_a_points_breach(engine: Any, compile_toml: Any) -> None:
    """A lot changed alone (balance and ledger intact) is one breach of the points check, and no other."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            for m in ("a", "b"):
                await pay(e, m, 500)
            assert (await verify_all(e.redis, e.keys)).ok
            lots = e.keys.member("a").lots
            [expiry] = await e.redis.hkeys(lots)
            await e.redis.hincrby(lots, expiry, 7)
            report = await verify_all(e.redis, e.keys)
            assert breaches(report) == {"points: balance = lots = ledger": 1}
            [points] = [c for c in report.checks if c.name == "points: balance = lots = ledger"]
            assert points.checked == 2 and [d.split(":")[0] for d in points.details] == ["member a"]

    asyncio.run(run())


def test_a_job_given_up_is_a_breach_until_an_operator_clears_it(engine: Any, compile_toml: Any) -> None:
    """A job on a shard's dead list is one breach naming it."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            await redeemed_mugs(e)
            await e.redis.zadd(dead_key(e.keys, 3), {"rk:cross:m:x": e.now_ms})
            report = await verify_all(e.redis, e.keys)
            assert breaches(report) == {"no job given up": 1}
            await e.redis.delete(dead_key(e.keys, 3))
            assert (await verify_all(e.redis, e.keys)).ok

    asyncio.run(run())


def test_an_inventory_count_below_zero_is_a_breach(engine: Any, compile_toml: Any) -> None:
    """The member script never lets a count go below zero; one forged behind its back is one
    breach naming the member and the item, and a count of zero or more is checked and passes."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            await redeemed_mugs(e)
            await e.redis.hset(e.keys.member("a").state, mapping={"i:lottery:daily": 2, "i:checkin:makeup": 0})
            assert (await verify_all(e.redis, e.keys)).ok
            await e.redis.hset(e.keys.member("b").state, "i:lottery:daily", -1)
            report = await verify_all(e.redis, e.keys)
            assert breaches(report) == {"inventory: no count below zero": 1}
            [items] = [c for c in report.checks if c.name == "inventory: no count below zero"]
            assert items.details == ["member b: lottery:daily is -1"] and items.checked == 3

    asyncio.run(run())
