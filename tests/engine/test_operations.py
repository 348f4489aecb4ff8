"""The member script's operations beyond adding: points lots and their expiry, spends, coupon uses,
limited counters, passed-through game effects; every refusal writes nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.clock import DAY_MS
from engine.errors import InvalidInput
from engine.ledger import verify
from engine.operations import (
    Operation,
    fingerprint,
    member_plan,
    parse_coupon_use,
    parse_spend,
    plan_coupon_use,
    plan_spend,
)
from engine.store import OpResult, OpStatus
from tests.engine.conftest import SHANGHAI

APPLIED, DUPLICATE, CONFLICT, REFUSED = OpStatus.APPLIED, OpStatus.DUPLICATE, OpStatus.CONFLICT, OpStatus.REFUSED

LOTS = """
[program]
name = "lots"
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

[points]
expiry = "{expiry}"
expiry_days = 3
"""


def lots_program(compile_toml: Any, expiry: str = "days") -> Any:
    return compile_toml(LOTS.format(expiry=expiry))


async def dump(e: Any, member: str) -> dict[bytes, Any]:
    """Every key of the member with its serialized value and expiry."""
    keys = [k async for k in e.redis.scan_iter(match=f"{e.keys.prefix}:{{m:{member}}}:*")]
    return {k: (await e.redis.dump(k), await e.redis.pexpiretime(k)) for k in keys}


async def spend(e: Any, member: str, op_id: str, amount: int, now_ms: int | None = None, reason: str = "spend") -> OpResult:
    now = e.now_ms if now_ms is None else now_ms
    request = parse_spend({"id": op_id, "amount": amount, "reason": reason}, member, now)
    return await e.store.apply(plan_spend(e.program, request, now), e.program)


async def lots_of(e: Any, member: str) -> dict[int, int]:
    raw = await e.redis.hgetall(e.keys.member(member).lots)
    return {int(k): int(v) for k, v in raw.items()}


def local_midnight_after(ms: int, days: int) -> int:
    local = datetime.fromtimestamp(ms / 1000, SHANGHAI)
    start = datetime(local.year, local.month, local.day, tzinfo=SHANGHAI)
    return int(start.timestamp() * 1000) + (days + 1) * DAY_MS


def test_grants_land_in_lots_by_expiry_and_spends_take_the_soonest_first(engine, compile_toml) -> None:
    """Points of three days sit in three lots; a spend empties the oldest lot before touching the next."""

    async def run() -> None:
        program = lots_program(compile_toml)
        async with engine(program_=program) as e:
            days = [e.now_ms - 2 * DAY_MS, e.now_ms - DAY_MS, e.now_ms]
            for i, at in enumerate(days):
                await e.apply(f"p-{i}", "m-1", "pay", {"cents": 100}, at=at, now_ms=at)
            expiries = [local_midnight_after(at, 3) for at in days]
            assert await lots_of(e, "m-1") == dict.fromkeys(expiries, 100)
            result = await spend(e, "m-1", "s-1", 150)
            assert result.status is APPLIED
            assert [(x["type"], x["data"]["amount"], x["data"]["balance"]) for x in result.effects] == [("points", -150, 150)]
            assert await lots_of(e, "m-1") == {expiries[1]: 50, expiries[2]: 100}
            assert await e.balance("m-1") == 150
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_a_spend_the_balance_cannot_cover_is_refused_and_writes_nothing(engine) -> None:
    """insufficient_points, and every key of the member byte-identical; the same id may then succeed."""

    async def run() -> None:
        async with engine() as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 19900})  # 299 points
            before = await dump(e, "m-1")
            refused = await spend(e, "m-1", "s-1", 300)
            assert (refused.status, refused.refusal) == (REFUSED, "insufficient_points")
            assert await dump(e, "m-1") == before
            assert (await spend(e, "m-1", "s-1", 299)).status is APPLIED  # nothing remembered the refusal
            assert await e.balance("m-1") == 0

    asyncio.run(run())


def test_a_spend_is_exactly_once_and_conflicts_on_another_body(engine) -> None:
    """The same spend id again is a duplicate replaying the spend; another amount under it is a conflict."""

    async def run() -> None:
        async with engine() as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 19900})
            first = await spend(e, "m-1", "s-1", 100)
            again = await spend(e, "m-1", "s-1", 100)
            assert (again.status, again.effects) == (DUPLICATE, first.effects)
            assert (await spend(e, "m-1", "s-1", 101)).status is CONFLICT
            assert await e.balance("m-1") == 199
            assert await e.ledger("m-1") == [(199, 199), (100, 299), (-100, 199)]

    asyncio.run(run())


def test_200_concurrent_spends_never_go_below_zero(engine) -> None:
    """299 points, 200 spends of 7 at once: exactly 42 apply, the rest are refused; balance 5."""

    async def run() -> None:
        async with engine() as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 19900})
            results = await asyncio.gather(*(spend(e, "m-1", f"s-{i}", 7) for i in range(200)))
            statuses = [r.status for r in results]
            assert statuses.count(APPLIED) == 299 // 7
            assert {r.refusal for r in results if r.status is REFUSED} == {"insufficient_points"}
            assert await e.balance("m-1") == 299 - 7 * (299 // 7)
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_lots_expire_at_their_time_on_the_next_operation(engine, compile_toml) -> None:
    """A lot past its expiry is written off (ledger, feed) by the member's next operation, before
    anything else of it, and a spend can only use what is still live."""

    async def run() -> None:
        program = lots_program(compile_toml)
        async with engine(program_=program) as e:
            await e.apply("p-old", "m-1", "pay", {"cents": 100}, at=e.now_ms - 5 * DAY_MS, now_ms=e.now_ms - 5 * DAY_MS)
            before = await dump(e, "m-1")
            refused = await spend(e, "m-1", "s-1", 100)
            assert refused.refusal == "insufficient_points"  # the 100 are past their expiry
            assert await dump(e, "m-1") == before  # and a refusal writes nothing, not even the expiry
            result = await e.apply("p-new", "m-1", "pay", {"cents": 40})
            kinds = [(x["type"], x["data"]["amount"], x["data"]["balance"]) for x in result.effects]
            assert kinds == [("points_expired", 100, 0), ("points", 40, 40)]
            assert (await spend(e, "m-1", "s-2", 40)).status is APPLIED
            assert await e.balance("m-1") == 0
            assert await lots_of(e, "m-1") == {}
            ledger = await e.redis.xrange(e.keys.member("m-1").ledger)
            assert [f[b"k"] for _, f in ledger] == [b"g", b"x", b"g", b"s"]
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_end_of_next_year_and_never(engine, compile_toml) -> None:
    """The common 积分 rule: points expire at the end of the calendar year after the grant's;
    with expiry never, they sit in the lot that never expires."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml, "end_of_next_year")) as e:
            await e.apply("p-1", "m-1", "pay", {"cents": 5})
            year = datetime.fromtimestamp(e.now_ms / 1000, SHANGHAI).year
            assert await lots_of(e, "m-1") == {int(datetime(year + 2, 1, 1, tzinfo=SHANGHAI).timestamp() * 1000): 5}
        async with engine(program_=lots_program(compile_toml, "never")) as e:
            await e.apply("p-1", "m-2", "pay", {"cents": 5})
            assert await lots_of(e, "m-2") == {0: 5}

    asyncio.run(run())


async def coupon_of(e: Any, member: str) -> str:
    raw = await e.redis.hgetall(e.keys.member(member).coupons)
    return sorted(k.decode() for k in raw)[0]


async def use(e: Any, member: str, op_id: str, coupon: str, order: str = "order-1", now_ms: int | None = None) -> OpResult:
    now = e.now_ms if now_ms is None else now_ms
    request = parse_coupon_use({"id": op_id, "order": order}, member, coupon, now)
    return await e.store.apply(plan_coupon_use(e.program, request, now), e.program)


def test_a_coupon_is_used_once(engine) -> None:
    """First use applies; a second use (another id) is already_used and writes nothing; the snapshot says used."""

    async def run() -> None:
        async with engine() as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 19900})  # first_order grants free-shipping
            coupon = await coupon_of(e, "m-1")
            assert coupon == "o-1:c1"
            first = await use(e, "m-1", "u-1", coupon)
            assert [(x["type"], x["data"]) for x in first.effects] == [
                ("coupon_used", {"coupon": coupon, "item": "free-shipping", "order": "order-1"})
            ]
            before = await dump(e, "m-1")
            second = await use(e, "m-1", "u-2", coupon, order="order-2")
            assert (second.status, second.refusal) == (REFUSED, "already_used")
            assert await dump(e, "m-1") == before
            assert (await use(e, "m-1", "u-1", coupon)).status is DUPLICATE

    asyncio.run(run())


def test_unknown_and_expired_coupons_are_refused(engine) -> None:
    """A coupon id the member does not hold is not_found; one past its validity is expired."""

    async def run() -> None:
        async with engine() as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 19900})
            assert (await use(e, "m-1", "u-1", "o-9:c1")).refusal == "not_found"
            late = e.now_ms + 31 * DAY_MS  # free-shipping is valid 30 days
            assert (await use(e, "m-1", "u-2", "o-1:c1", now_ms=late)).refusal == "expired"

    asyncio.run(run())


def test_limited_counters_and_passed_effects(engine) -> None:
    """A counter with a limit refuses past it (limit_reached, nothing written); a game's effects
    reach the feed as they are."""

    async def run() -> None:
        async with engine() as e:
            def plan(i: int) -> Any:
                op = Operation(f"g-{i}", "m-1", e.now_ms, fingerprint("game", i))
                return member_plan(
                    e.program, op, e.now_ms,
                    counters=(["n:draws", 1, 2, 0],),
                    effects=(["card", {"card": f"fu-{i}"}],),
                )

            results = [await e.store.apply(plan(i), e.program) for i in range(3)]
            assert [r.status for r in results] == [APPLIED, APPLIED, REFUSED]
            assert results[2].refusal == "limit_reached"
            assert [(x["type"], x["data"]) for x in results[0].effects] == [("card", {"card": "fu-0"})]
            assert int(await e.redis.hget(e.keys.member("m-1").state, "n:draws")) == 2

    asyncio.run(run())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"amount": 5}, "id"),
        ({"id": "s-1"}, "amount"),
        ({"id": "s-1", "amount": 0}, "amount"),
        ({"id": "s-1", "amount": 1.5}, "amount"),
        ({"id": "s-1", "amount": True}, "amount"),
        ({"id": "s-1", "amount": 10**10}, "amount"),
        ({"id": "s{1}", "amount": 5}, "id"),
        ({"id": "s-1", "amount": 5, "reason": "a b"}, "reason"),
        ({"id": "s-1", "amount": 5, "colour": "red"}, "colour"),
    ],
)
def test_bad_spends_name_the_field(body: object, field: str) -> None:
    """A spend body is checked before anything else: the field is named."""
    with pytest.raises(InvalidInput) as info:
        parse_spend(body, "m-1", 0)
    assert info.value.field == field


@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("grant"), st.integers(min_value=1, max_value=500), st.integers(min_value=0, max_value=6)),
            st.tuples(st.just("spend"), st.integers(min_value=1, max_value=700), st.integers(min_value=0, max_value=6)),
        ),
        min_size=1,
        max_size=14,
    )
)
def test_balance_equals_lots_equals_ledger(open_engine, compile_toml, steps: list[tuple[str, int, int]]) -> None:
    """Any mix of grants and spends over a week of 3-day lots: balance == sum of live lots == sum
    of the ledger, never negative, and a spend is refused exactly when the live balance is short."""
    program = lots_program(compile_toml)

    async def run() -> None:
        async with open_engine(program_=program) as e:
            start = e.now_ms - 7 * DAY_MS
            live: dict[int, int] = {}  # expiry -> points: the model
            for i, (kind, amount, day) in enumerate(sorted(steps, key=lambda s: s[2])):
                now = start + day * DAY_MS
                for expiry in [x for x in live if x <= now]:
                    del live[expiry]
                if kind == "grant":
                    await e.apply(f"p-{i}", "m-1", "pay", {"cents": amount}, at=now, now_ms=now)
                    expiry = local_midnight_after(now, 3)
                    live[expiry] = live.get(expiry, 0) + amount
                else:
                    result = await spend(e, "m-1", f"s-{i}", amount, now_ms=now)
                    assert (result.status is APPLIED) == (amount <= sum(live.values()))
                    left = amount if result.status is APPLIED else 0
                    for expiry in sorted(live):
                        take = min(left, live[expiry])
                        live[expiry] -= take
                        left -= take
                    live = {k: v for k, v in live.items() if v}
            report = await verify(e.redis, e.keys)
            assert report.ok, report.mismatches
            balance = await e.balance("m-1")
            assert balance >= 0
            lots = await lots_of(e, "m-1")
            assert sum(lots.values()) == balance
            assert {k: v for k, v in lots.items() if k > start + 6 * DAY_MS} == {
                k: v for k, v in live.items() if k > start + 6 * DAY_MS
            }

    asyncio.run(run())


def test_coupon_records_hold_their_validity(engine) -> None:
    """A coupon's record carries its item, grant time, operation and end of validity."""

    async def run() -> None:
        async with engine() as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 19900})
            raw = await e.redis.hget(e.keys.member("m-1").coupons, "o-1:c1")
            item, at_ms, reason, op_id, state, until_ms, used_at, order = msgpack.unpackb(raw, raw=False)
            assert (item, at_ms, reason, op_id, state) == ("free-shipping", e.now_ms, "quest:first_order", "o-1", 0)
            assert until_ms == e.now_ms + 30 * DAY_MS

    asyncio.run(run())


def test_a_plan_grants_coupons_directly(engine) -> None:
    """A plan's own coupons (a redemption, a care moment) are granted with ids and validity."""

    async def run() -> None:
        async with engine() as e:
            op = Operation("r-1", "m-1", e.now_ms, fingerprint("redeem", "free-shipping"))
            plan = member_plan(e.program, op, e.now_ms, coupons=(["free-shipping", 30 * DAY_MS, "redeem"],))
            result = await e.store.apply(plan, e.program)
            assert [(x["type"], x["data"]) for x in result.effects] == [
                ("reward", {"kind": "coupon", "item": "free-shipping", "coupon": "r-1:c1", "reason": "redeem",
                            "expires_at_ms": e.now_ms + 30 * DAY_MS})
            ]
            assert await e.coupons("m-1") == ["free-shipping"]

    asyncio.run(run())


def test_points_granted_into_a_lot_already_expired_are_written_off_at_once(engine, compile_toml) -> None:
    """An event with an old `at` lands in its own day's lot; past that lot's expiry (3 days), the
    same operation writes it off: balance, lots and ledger agree, and no later operation is needed."""

    async def run() -> None:
        async with engine(program_=lots_program(compile_toml)) as e:
            old = e.now_ms - 5 * DAY_MS
            result = await e.apply("p-1", "m", "pay", {"cents": 40}, at=old)
            assert result.status is APPLIED
            kinds = [(x["type"], x["data"]["amount"]) for x in result.effects]
            assert kinds == [("points", 40), ("points_expired", 40)]
            assert await e.balance("m") == 0 and await lots_of(e, "m") == {}
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())
