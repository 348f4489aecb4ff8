"""Points redemption across the item's slot and the member's: stock never oversold, points and
coupons exactly once, every refusal compensated, and the sweep finishing what a crash left."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest

from engine.clock import DAY_MS
from engine.errors import InvalidInput
from engine.ledger import verify
from engine.clock import ManualClock
from engine.crossing import CROSS, WINDOW_MS, Crossing, EntryState, ObjectRef, entry_record
from engine.jobs import SHARDS, jobs_key
from engine.redeem import (
    CATALOG,
    REDEEM,
    RedeemStep,
    Redemption,
    limit_field,
    parse_redeem,
    plan_redeem_member,
    redemption_of,
    redemption_step,
)
from engine.redemptions import RedemptionStore, Reserve, catalog_keys
from engine.scheduler import Scheduler
from engine.scripts import Command
from engine.store import OpResult, OpStatus

APPLIED, DUPLICATE, CONFLICT, REFUSED = OpStatus.APPLIED, OpStatus.DUPLICATE, OpStatus.CONFLICT, OpStatus.REFUSED
GRACE_MS = 30_000
#: When the intent of a step at the test's time (noon: a whole second) falls due.
DUE_MS = GRACE_MS + WINDOW_MS

SHOP = """
[program]
name = "redeem"
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

[catalog.mug]
title = "A mug"
value_cents = 0
valid_days = 10
points_cost = {mug_cost}
stock = {mug_stock}
per_member_limit = 2

[catalog.sticker]
title = "A sticker, as many as you like"
value_cents = 0
points_cost = 10

[catalog.gift]
title = "Not for points"
value_cents = 500
"""


def shop(compile_toml: Any, mug_stock: int = 50, mug_cost: int = 100) -> Any:
    return compile_toml(SHOP.format(mug_stock=mug_stock, mug_cost=mug_cost))


def crossing_of(e: Any, now_ms: int | None = None) -> Crossing:
    """The seam as a process sees it at ``now_ms`` (default: the test's now)."""
    return Crossing(e.pipeline, e.keys, e.store, {CATALOG: e.scripts.catalog}, {REDEEM: RedeemStep()}, grace_ms=GRACE_MS,
                    clock=ManualClock(e.now_ms if now_ms is None else now_ms))


def store_of(e: Any) -> RedemptionStore:
    return RedemptionStore(crossing_of(e))


async def sweep(e: Any, now_ms: int, program: Any = None) -> int:
    """The seam's sweep: a scheduler at ``now_ms`` running every due job; how many ran."""
    scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(now_ms), lambda: program or e.program,
                          tasks={CROSS: crossing_of(e).run_job})
    try:
        return await scheduler.run_due()
    finally:
        await scheduler.stop()


async def intents(e: Any) -> int:
    """Cross-slot intents waiting in the scheduler's shards."""
    return sum([await e.redis.zcard(jobs_key(e.keys, s)) for s in range(SHARDS)])


async def redeem(e: Any, store: RedemptionStore, member: str, op_id: str, item: str = "mug", program: Any = None,
                 now_ms: int | None = None) -> OpResult:
    program = program or e.program
    now = e.now_ms if now_ms is None else now_ms
    request = parse_redeem({"id": op_id, "item": item}, member, program, now)
    return await store.redeem(program, request, now)


def record(e: Any, member: str, op_id: str, item: str = "mug") -> Redemption:
    return redemption_of(e.program, parse_redeem({"id": op_id, "item": item}, member, e.program, e.now_ms))


async def pay(e: Any, member: str, cents: int) -> None:
    assert (await e.apply(f"pay-{member}-{cents}", member, "pay", {"cents": cents})).status is APPLIED


async def settled(e: Any, item: str = "mug") -> None:
    """Wait until what the test's runner sent the item (a settle sent without waiting for its
    reply) is in: a call behind it on the same connection."""
    await e.pipeline.call(Command("EXISTS"), [catalog_keys(e.keys, item)[0]], [])


async def sold(e: Any, item: str = "mug") -> int:
    await settled(e, item)
    return int(await e.redis.hget(catalog_keys(e.keys, item)[1], "sold") or 0)


async def outbox(e: Any, item: str = "mug") -> tuple[int, int]:
    """Entries the item holds pending, and its index of them (the two always agree)."""
    await settled(e, item)
    entries = await e.redis.hgetall(catalog_keys(e.keys, item)[0])
    pending = sum(1 for v in entries.values() if entry_record(v)[0] is EntryState.PENDING)
    return pending, await e.redis.zcard(catalog_keys(e.keys, item)[2])


async def item_dump(e: Any, item: str = "mug") -> dict[str, Any]:
    return {k: (await e.redis.dump(k), await e.redis.pexpiretime(k)) for k in catalog_keys(e.keys, item)}


async def member_dump(e: Any, member: str) -> dict[bytes, Any]:
    keys = [k async for k in e.redis.scan_iter(match=f"{e.keys.prefix}:{{m:{member}}}:*")]
    return {k: (await e.redis.dump(k), await e.redis.pexpiretime(k)) for k in keys}


# --- pure: the request and the member plan ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"item": "mug"}, "id"),
        ({"id": "r 1", "item": "mug"}, "id"),
        ({"id": "r-1"}, "item"),
        ({"id": "r-1", "item": 7}, "item"),
        ({"id": "r-1", "item": "teapot"}, "item"),
        ({"id": "r-1", "item": "gift"}, "item"),
        ({"id": "r-1", "item": "mug", "qty": 2}, "qty"),
        (["mug"], "body"),
    ],
)
def test_bad_redemptions_name_the_field(compile_toml, body: object, field: str) -> None:
    """Every bad body is refused before any store call, naming the field."""
    with pytest.raises(InvalidInput) as caught:
        parse_redeem(body, "m-1", shop(compile_toml), 0)
    assert caught.value.field == field


def test_an_unknown_or_unredeemable_item_says_which(compile_toml) -> None:
    """An item missing from the catalog and one without points_cost are told apart."""
    program = shop(compile_toml)
    with pytest.raises(InvalidInput, match="no such item"):
        parse_redeem({"id": "r-1", "item": "teapot"}, "m-1", program, 0)
    with pytest.raises(InvalidInput, match="not redeemable"):
        parse_redeem({"id": "r-1", "item": "gift"}, "m-1", program, 0)


def test_the_member_plan_debits_counts_and_grants(compile_toml) -> None:
    """points_cost debited, the limit counted (only when the item has one), the coupon granted."""
    program = shop(compile_toml)
    mug = redemption_of(program, parse_redeem({"id": "r-1", "item": "mug"}, "m-1", program, 1_000))
    assert mug == Redemption("m-1", "r-1", 1_000, 100, 2, 10 * DAY_MS, "mug")
    assert Redemption.unpack(mug.pack()) == mug
    plan = plan_redeem_member(program, mug, 2_000)
    assert plan.op.at_ms == 1_000 and plan.now_ms == 2_000
    assert plan.args.debits == ([100, "redeem:mug"],)
    assert plan.args.counters == ([limit_field("mug"), 1, 2, 0],)
    assert plan.args.coupons == (["mug", 10 * DAY_MS, "redeem"],)
    sticker = redemption_of(program, parse_redeem({"id": "r-2", "item": "sticker"}, "m-1", program, 1_000))
    assert plan_redeem_member(program, sticker, 2_000).args.counters == ()


# --- the item's steps ------------------------------------------------------------------------------


def test_reserve_settle_release_are_idempotent(engine, compile_toml) -> None:
    """A second reserve of a pending redemption takes nothing; settle and release decide once and
    a second answers the first decision; a settled redemption is not reserved again; a release
    after settle gives nothing back; a decision is kept for the dedupe retention and a day."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store, crossing = store_of(e), crossing_of(e)
            a, b = record(e, "m-1", "r-1"), record(e, "m-2", "r-1")
            mug = ObjectRef(CATALOG, "mug")
            assert (await store.reserve(a, 50, e.now_ms))[:2] == (Reserve.RESERVED, 1)
            again = await store.reserve(a, 50, e.now_ms)
            assert (again.status, again.state) == (Reserve.EXISTS, EntryState.PENDING)
            assert await sold(e) == 1 and await outbox(e) == (1, 1)
            keep = e.now_ms + e.program.retention_ms + DAY_MS
            assert await crossing._decide(mug, a.key, "settle", keep) == (EntryState.SETTLED, True, "")
            assert await crossing._decide(mug, a.key, "settle", keep) == (EntryState.SETTLED, False, "")
            assert (await store.reserve(a, 50, e.now_ms))[0::2] == (Reserve.EXISTS, EntryState.SETTLED)
            assert (await crossing._decide(mug, a.key, "release", keep, "x")).state is EntryState.SETTLED
            assert await sold(e) == 1
            entries = catalog_keys(e.keys, "mug")[0]
            assert await e.redis.execute_command("HPEXPIRETIME", entries, "FIELDS", 1, a.key) == [keep]

            assert (await store.reserve(b, 50, e.now_ms))[:2] == (Reserve.RESERVED, 2)
            assert await crossing._decide(mug, b.key, "release", keep, "insufficient_points") == (
                EntryState.RELEASED, True, "")
            assert await crossing._decide(mug, b.key, "release", keep, "x") == (
                EntryState.RELEASED, False, "insufficient_points")
            assert await sold(e) == 1

    asyncio.run(run())


def test_a_member_step_landing_after_its_release_is_reversed_not_sold_again(engine, compile_toml) -> None:
    """The object decides once. The sweep's member step was refused and released the unit; then
    a stalled request's step (the same id) applied after all: its settle is told "released", so
    the member's step is reversed by rk:undo:<id> (points back, limit count back, coupon
    revoked), the unit is not taken again, the caller is told refused, and verify is clean."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml, mug_stock=1)) as e:
            store = store_of(e)
            crossing = crossing_of(e, e.now_ms + DUE_MS)  # the stalled request's process, after the sweep
            a = record(e, "m-1", "r-1")
            mug = ObjectRef(CATALOG, "mug")
            assert (await store.reserve(a, 1, e.now_ms)).status is Reserve.RESERVED
            # The sweep (the request stalled): the member cannot pay, so the unit goes back.
            await sweep(e, e.now_ms + DUE_MS)
            assert await sold(e) == 0 and await outbox(e) == (0, 0)
            # The member is paid meanwhile; the stalled request's step lands, then it settles.
            await pay(e, "m-1", 500)
            outcome = await crossing.finish(e.program, mug, [redemption_step(a)], e.now_ms, opened_now=True)
            assert outcome.state is EntryState.RELEASED
            assert (outcome.result.status, outcome.result.refusal) == (REFUSED, "insufficient_points")
            assert await sold(e) == 0  # never taken again: sold may not pass the stock
            assert await e.balance("m-1") == 500
            coupons = await e.redis.hgetall(e.keys.member("m-1").coupons)
            assert [msgpack.unpackb(c, raw=False)[4] for c in coupons.values()] == [2]  # revoked
            assert await e.redis.hget(e.keys.member("m-1").state, limit_field("mug")) == b"0"
            # Later, another member can have the unit; the retry of the first answers its decision.
            later = e.now_ms + DUE_MS
            await pay(e, "m-2", 500)
            assert (await redeem(e, store, "m-2", "r-1", now_ms=later)).status is APPLIED
            retry = await redeem(e, store, "m-1", "r-1", now_ms=later)
            assert (retry.status, retry.refusal) == (REFUSED, "insufficient_points")
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_out_of_stock_writes_nothing_and_the_programme_stock_applies_at_once(engine, compile_toml) -> None:
    """At the stock the next reservation is refused with every key of the item unchanged; the
    stock comes from the programme of the call, so raising it sells more."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            assert (await store.reserve(record(e, "m-1", "r-1"), 1, e.now_ms)).status is Reserve.RESERVED
            before = await item_dump(e)
            refused = Reserve.REFUSED, 1, EntryState.PENDING, "out_of_stock"
            assert await store.reserve(record(e, "m-2", "r-1"), 1, e.now_ms) == refused
            assert await store.reserve(record(e, "m-2", "r-1"), 0, e.now_ms) == refused
            assert await item_dump(e) == before
            assert (await store.reserve(record(e, "m-2", "r-1"), 2, e.now_ms))[:2] == (Reserve.RESERVED, 2)
            assert (await store.reserve(record(e, "m-3", "r-1"), None, e.now_ms))[:2] == (Reserve.RESERVED, 3)  # unlimited

    asyncio.run(run())


# --- a redemption, end to end -----------------------------------------------------------------------


def test_a_redemption_debits_grants_and_settles(engine, compile_toml) -> None:
    """Applied: points effect and the coupon reward; one unit sold; the outbox empty; verify clean."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            await pay(e, "m-1", 250)
            result = await redeem(e, store, "m-1", "r-1")
            assert result.status is APPLIED
            assert [(x["type"], x["data"]) for x in result.effects] == [
                ("points", {"amount": -100, "balance": 150, "reason": "redeem:mug"}),
                ("reward", {"kind": "coupon", "item": "mug", "coupon": "r-1:c1", "reason": "redeem",
                            "expires_at_ms": e.now_ms + 10 * DAY_MS}),
            ]
            assert await sold(e) == 1 and await outbox(e) == (0, 0)
            assert await e.balance("m-1") == 150 and await e.coupons("m-1") == ["mug"]
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_200_concurrent_redemptions_sell_exactly_the_stock(engine, compile_toml) -> None:
    """Stock 50, 200 members with the points, all at once: 50 applied, 150 out_of_stock with
    nothing written on them; 50 coupons, sold == 50, the outbox empty, every ledger sound."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml, mug_stock=50)) as e:
            store = store_of(e)
            members = [f"m-{i}" for i in range(200)]
            await asyncio.gather(*(pay(e, m, 150) for m in members))
            before = {m: await member_dump(e, m) for m in members}
            results = await asyncio.gather(*(redeem(e, store, m, "r-1") for m in members))
            winners = [m for m, r in zip(members, results) if r.status is APPLIED]
            assert len(winners) == 50
            refused = [(m, r) for m, r in zip(members, results) if r.status is not APPLIED]
            assert {(r.status, r.refusal) for _, r in refused} == {(REFUSED, "out_of_stock")}
            for m, _ in refused:
                assert await member_dump(e, m) == before[m]
            coupons = [c for m in members for c in await e.coupons(m)]
            assert coupons == ["mug"] * 50
            balances = {m: await e.balance(m) for m in members}
            assert sorted(m for m in members if balances[m] == 50) == sorted(winners)
            assert await sold(e) == 50 and await outbox(e) == (0, 0)
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_the_per_member_limit_refuses_and_releases(engine, compile_toml) -> None:
    """Two mugs per member: the third is limit_reached, its unit given back, nothing debited."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            await pay(e, "m-1", 1_000)
            assert [(await redeem(e, store, "m-1", f"r-{i}")).status for i in range(2)] == [APPLIED, APPLIED]
            before = await member_dump(e, "m-1")
            third = await redeem(e, store, "m-1", "r-2")
            assert (third.status, third.refusal) == (REFUSED, "limit_reached")
            assert await member_dump(e, "m-1") == before
            assert await sold(e) == 2 and await outbox(e) == (0, 0)
            assert await e.balance("m-1") == 800

    asyncio.run(run())


def test_a_member_over_their_limit_never_holds_stock(engine, compile_toml) -> None:
    """The limit is the item's to check, before the stock: 20 reservations by one member (limit
    2) take 2 units and are told limit_reached for the rest, writing nothing, so the others can
    still have the 3 units left; a released reservation frees the member's place again."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml, mug_stock=5)) as e:
            store = store_of(e)
            replies = [await store.reserve(record(e, "m-1", f"r-{i}"), 5, e.now_ms) for i in range(20)]
            assert [(r.status, r.reason) for r in replies] == (
                [(Reserve.RESERVED, "")] * 2 + [(Reserve.REFUSED, "limit_reached")] * 18)
            assert await sold(e) == 2 and (await outbox(e))[0] == 2
            for member in ("m-2", "m-3", "m-4"):
                assert (await store.reserve(record(e, member, "r-0"), 5, e.now_ms)).status is Reserve.RESERVED
            keep = e.now_ms + DAY_MS
            released = await crossing_of(e)._decide(ObjectRef(CATALOG, "mug"), record(e, "m-1", "r-0").key, "release", keep, "x")
            assert released.now
            assert (await store.reserve(record(e, "m-1", "r-9"), 5, e.now_ms)).status is Reserve.RESERVED

    asyncio.run(run())


def test_concurrent_redemptions_by_one_member_leave_the_stock_to_others(engine, compile_toml) -> None:
    """One member firing 20 redemptions at once (limit 2, stock 5) while three others redeem
    one each: the member gets 2, every other member gets theirs, and the stock is exactly sold."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml, mug_stock=5)) as e:
            store = store_of(e)
            members = ["m-1", "m-2", "m-3", "m-4"]
            for m in members:
                await pay(e, m, 1_000)
            results = await asyncio.gather(
                *(redeem(e, store, "m-1", f"r-{i}") for i in range(20)),
                *(redeem(e, store, m, "r-0") for m in members[1:]),
            )
            mine, theirs = results[:20], results[20:]
            assert sum(r.status is APPLIED for r in mine) == 2
            assert {r.refusal for r in mine if r.status is not APPLIED} == {"limit_reached"}
            assert [r.status for r in theirs] == [APPLIED] * 3
            assert await sold(e) == 5 and await outbox(e) == (0, 0)
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_insufficient_points_releases_the_stock(engine, compile_toml) -> None:
    """A member who cannot pay is refused insufficient_points; the unit is back, the member untouched."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml, mug_stock=1)) as e:
            store = store_of(e)
            await pay(e, "m-1", 99)
            before = await member_dump(e, "m-1")
            refused = await redeem(e, store, "m-1", "r-1")
            assert (refused.status, refused.refusal) == (REFUSED, "insufficient_points")
            assert await member_dump(e, "m-1") == before
            assert await sold(e) == 0 and await outbox(e) == (0, 0)
            await pay(e, "m-2", 100)
            assert (await redeem(e, store, "m-2", "r-1")).status is APPLIED  # the one unit is still there

    asyncio.run(run())


def test_a_retry_is_a_duplicate_and_takes_no_stock(engine, compile_toml) -> None:
    """The same id again answers duplicate replaying the effects, also once the item sold out,
    and also after the item forgot the redemption (the member script still knows it)."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml, mug_stock=1)) as e:
            store = store_of(e)
            await pay(e, "m-1", 500)
            first = await redeem(e, store, "m-1", "r-1")
            again = await redeem(e, store, "m-1", "r-1")
            assert (again.status, again.effects) == (DUPLICATE, first.effects)
            assert await sold(e) == 1
            await e.redis.delete(catalog_keys(e.keys, "mug")[0])  # as once the decision's keep time passed
            program = shop(compile_toml, mug_stock=2)
            late = await redeem(e, store, "m-1", "r-1", program=program)
            assert (late.status, late.effects) == (DUPLICATE, first.effects)
            assert await sold(e) == 1 and await outbox(e) == (0, 0)
            assert await e.balance("m-1") == 400 and await e.coupons("m-1") == ["mug"]

    asyncio.run(run())


def test_an_id_reused_for_another_item_conflicts_and_takes_nothing(engine, compile_toml) -> None:
    """The member's operation id already redeemed a mug: a sticker under it is a conflict, released."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            await pay(e, "m-1", 500)
            await redeem(e, store, "m-1", "r-1")
            assert (await redeem(e, store, "m-1", "r-1", item="sticker")).status is CONFLICT
            assert await sold(e, "sticker") == 0 and await outbox(e, "sticker") == (0, 0)
            assert await e.balance("m-1") == 400

    asyncio.run(run())


def test_a_pending_redemption_answers_in_progress(engine, compile_toml) -> None:
    """While another call holds a redemption (or a crash left it), a retry takes nothing and waits."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            await pay(e, "m-1", 500)
            await store.reserve(record(e, "m-1", "r-1"), 50, e.now_ms)
            busy = await redeem(e, store, "m-1", "r-1")
            assert (busy.status, busy.refusal) == (REFUSED, "in_progress")
            assert await sold(e) == 1 and await e.balance("m-1") == 500

    asyncio.run(run())


# --- the sweep ----------------------------------------------------------------------------------------


def test_the_sweep_delivers_what_a_crash_left_and_compensates_what_cannot_pay(engine, compile_toml) -> None:
    """Three crashes: after the reservation (delivered by the sweep), after the member step
    (settled as its duplicate), and a member who cannot pay (released). Not before the grace;
    a second sweep finds nothing."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            await pay(e, "m-1", 500)
            await pay(e, "m-2", 500)
            await pay(e, "m-3", 50)
            reserved, applied, broke = record(e, "m-1", "r-1"), record(e, "m-2", "r-1"), record(e, "m-3", "r-1")
            for r in (reserved, applied, broke):
                assert (await store.reserve(r, 50, e.now_ms)).status is Reserve.RESERVED
            assert (await e.store.apply(plan_redeem_member(e.program, applied, e.now_ms), e.program)).status is APPLIED
            broke_before = await member_dump(e, "m-3")

            assert await sweep(e, e.now_ms + DUE_MS - 1) == 0
            assert await outbox(e) == (3, 3)

            assert await sweep(e, e.now_ms + DUE_MS) == 1  # one intent: the item's second
            assert await sold(e) == 2 and await outbox(e) == (0, 0)
            assert [await e.balance(m) for m in ("m-1", "m-2", "m-3")] == [400, 400, 50]
            assert await e.coupons("m-1") == await e.coupons("m-2") == ["mug"]
            assert await member_dump(e, "m-3") == broke_before
            assert await sweep(e, e.now_ms + DUE_MS) == 0
            assert (await redeem(e, store, "m-1", "r-1")).status is DUPLICATE  # settled: no unit taken
            assert await sold(e) == 2
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_the_sweep_keeps_the_terms_of_the_reservation(engine, compile_toml) -> None:
    """The price went up after the crash: the sweep charges what the member was offered."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml, mug_cost=100)) as e:
            store = store_of(e)
            await pay(e, "m-1", 150)
            await store.reserve(record(e, "m-1", "r-1"), 50, e.now_ms)
            dearer = shop(compile_toml, mug_cost=1_000)
            assert await sweep(e, e.now_ms + DUE_MS, dearer) == 1
            assert await e.balance("m-1") == 50

    asyncio.run(run())


def test_sweeps_racing_apply_once(engine, compile_toml) -> None:
    """Several sweeps at once (several workers) deliver a left-behind redemption once."""

    async def run() -> None:
        async with engine(program_=shop(compile_toml)) as e:
            store = store_of(e)
            members = [f"m-{i}" for i in range(20)]
            await asyncio.gather(*(pay(e, m, 100) for m in members))
            for m in members:
                await store.reserve(record(e, m, "r-1"), 50, e.now_ms)
            # Four schedulers at once (four workers): the leases give each shard to one at a time,
            # and a job run twice (a lease lost while slow) finishes its entry once.
            ran = await asyncio.gather(*(sweep(e, e.now_ms + DUE_MS) for _ in range(4)))
            assert sum(ran) >= 1
            assert await sold(e) == 20 and await outbox(e) == (0, 0)
            assert [await e.balance(m) for m in members] == [0] * 20
            assert [len(await e.coupons(m)) for m in members] == [1] * 20
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())
