"""The flash sale on the real server: 2,000 claimants on a sale of 100 sell exactly 100, a
claimant who cannot pay gives the unit back, the per-member limit holds, and the seam's sweep
finishes a claim whose process died; over HTTP, every refusal is named and GET shows the stock."""

from __future__ import annotations

from engine.clock import ManualClock

import asyncio
from typing import Any

from engine.crossing import Crossing, ObjectRef
from engine.ledger import verify
from engine.redeem import CATALOG, REDEEM, RedeemStep
from engine.redemptions import claim_unit, reserve_unit
from engine.store import OpStatus
from engine.verify import verify_all
from games.flash import GAME
from games.flash.plans import FLASH, ClaimStep, claim_step
from tests.engine.test_redemptions import DUE_MS, GRACE_MS

SALE = """
[program]
name = "flash"
timezone = "Asia/Shanghai"

[events.pay]
fields.cents = {{ type = "int", min = 1 }}

[rules.pay_points]
event = "pay"
grant = "points"
per = {{ field = "cents", every = 1, amount = 1 }}

[[tiers]]
id = "base"
name = "Base"
xp = 0

[catalog.voucher]
title = "A voucher"
value_cents = 3000
valid_days = 14

[games.flash.opening]
title = "Opening"
item = "voucher"
stock = {stock}
per_member_limit = {limit}
price_points = 100
"""


def program_of(compile_toml: Any, stock: int = 100, limit: int = 1) -> Any:
    return compile_toml(SALE.format(stock=stock, limit=limit))


def crossing_of(e: Any) -> Crossing:
    return Crossing(e.pipeline, e.keys, e.store, {CATALOG: e.scripts.catalog, **GAME.objects},
                    {REDEEM: RedeemStep(), FLASH: ClaimStep()}, grace_ms=GRACE_MS,
                    clock=ManualClock(e.now_ms))


async def claim(e: Any, crossing: Crossing, member: str, op_id: str, now_ms: int | None = None) -> Any:
    now = e.now_ms if now_ms is None else now_ms
    sale = e.program.games["flash"].root["opening"]
    step = claim_step(e.program, "opening", member, op_id, now)
    return await claim_unit(crossing, e.program, ObjectRef(FLASH, "opening"), step, sale.stock, sale.per_member_limit, now)


async def sold(e: Any) -> int:
    await settled_flash(e)
    return int(await e.redis.hget(ObjectRef(FLASH, "opening").keys(e.keys)[1], "sold") or 0)


async def settled_flash(e: Any) -> None:
    from engine.scripts import Command

    await e.pipeline.call(Command("EXISTS"), [ObjectRef(FLASH, "opening").keys(e.keys)[0]], [])


async def pay(e: Any, member: str, cents: int) -> None:
    assert (await e.apply(f"pay-{member}", member, "pay", {"cents": cents})).status is OpStatus.APPLIED


def test_2000_claimants_on_a_sale_of_100_sell_exactly_100(engine, compile_toml) -> None:
    """All at once: 100 win (points paid, the voucher granted), 1,900 are told out_of_stock with
    nothing written on them; the sale counts 100 sold, every count is settled, verify is clean."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml)) as e:
            crossing = crossing_of(e)
            members = [f"m-{i}" for i in range(2000)]
            for i in range(0, len(members), 500):
                await asyncio.gather(*(pay(e, m, 150) for m in members[i:i + 500]))
            results = await asyncio.gather(*(claim(e, crossing, m, "c-1") for m in members))
            winners = [m for m, r in zip(members, results) if r.status is OpStatus.APPLIED]
            assert len(winners) == 100
            assert {r.refusal for r in results if r.status is not OpStatus.APPLIED} == {"out_of_stock"}
            assert await sold(e) == 100
            assert sorted([m for m in members if await e.balance(m) == 50]) == sorted(winners)
            assert (await verify(e.redis, e.keys)).ok
            report = await verify_all(e.redis, e.keys)
            assert report.ok, report.table()

    asyncio.run(run())


def test_a_claimant_who_cannot_pay_gives_the_unit_back(engine, compile_toml) -> None:
    """A sale of 1: the first claimant has 50 points and is refused insufficient_points, writing
    nothing; the unit goes to the next; the per-member limit refuses a second win."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, stock=1)) as e:
            crossing = crossing_of(e)
            await pay(e, "poor", 50)
            await pay(e, "rich", 500)
            refused = await claim(e, crossing, "poor", "c-1")
            assert (refused.status, refused.refusal) == (OpStatus.REFUSED, "insufficient_points")
            assert await sold(e) == 0 and await e.balance("poor") == 50
            assert (await claim(e, crossing, "rich", "c-1")).status is OpStatus.APPLIED
            assert (await claim(e, crossing, "rich", "c-2")).refusal == "limit_reached"
            assert await sold(e) == 1 and await e.balance("rich") == 400

    asyncio.run(run())


def test_a_claim_whose_process_died_is_finished_by_the_sweep(engine, compile_toml) -> None:
    """The sale took the unit and the process died before the member step: the seam's sweep (the
    scheduler, with the game's step kind) pays and grants it once."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml)) as e:
            crossing = crossing_of(e)
            await pay(e, "m-1", 500)
            step = claim_step(e.program, "opening", "m-1", "c-1", e.now_ms)
            reserved = await reserve_unit(crossing, ObjectRef(FLASH, "opening"), step, 100, 1, e.now_ms)
            assert reserved.status.name == "RESERVED"
            await sweep_flash(e, crossing)
            assert await e.balance("m-1") == 400 and await e.coupons("m-1") == ["voucher"]
            assert await sold(e) == 1

    asyncio.run(run())


async def sweep_flash(e: Any, crossing: Crossing) -> None:
    from engine.clock import ManualClock
    from engine.crossing import CROSS
    from engine.scheduler import Scheduler

    scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(e.now_ms + DUE_MS), lambda: e.program,
                          tasks={CROSS: crossing.run_job})
    try:
        assert await scheduler.run_due() == 1
    finally:
        await scheduler.stop()



def test_verify_names_an_oversold_sale(engine, compile_toml) -> None:
    """The game's own invariant in rekindle verify: a sale with more units taken than its stock
    (counts forged behind its script's back) is one breach naming it."""
    from engine.programs import ProgramRegistry
    from engine.clock import ManualClock

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, stock=1)) as e:
            await ProgramRegistry(e.redis, e.keys, ManualClock(e.now_ms)).activate(e.program.source, origin="test")
            crossing = crossing_of(e)
            await pay(e, "m-1", 500)
            assert (await claim(e, crossing, "m-1", "c-1")).status is OpStatus.APPLIED
            await settled_flash(e)
            assert (await verify_all(e.redis, e.keys)).ok
            await e.redis.hincrby(ObjectRef(FLASH, "opening").keys(e.keys)[1], "sold", 1)
            await e.redis.hincrby(ObjectRef(FLASH, "opening").keys(e.keys)[1], "s:sold", 1)
            report = await verify_all(e.redis, e.keys)
            assert {c.name: c.details for c in report.checks if c.breaches} == {
                "games' own invariants": ["flash:opening: 2 units taken, stock 1"]}

    asyncio.run(run())
