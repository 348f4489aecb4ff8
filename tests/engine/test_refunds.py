"""Refunds: an event type that ``reverses`` another takes back what the original granted, in
proportion for a partial amount, out of the original's lot first; a shortfall is a debt that
later grants settle; quests it completed are reopened and their unused coupons revoked; an
unknown, fully refunded or too old original is refused, writing nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.clock import DAY_MS
from engine.errors import ConfigError, InvalidInput
from engine.ledger import verify
from engine.store import OpResult, OpStatus
from tests.engine.test_operations import dump, lots_of, spend

APPLIED, DUPLICATE, REFUSED = OpStatus.APPLIED, OpStatus.DUPLICATE, OpStatus.REFUSED

REFUNDS = """
[program]
name = "refunds"
timezone = "Asia/Shanghai"
refund_window_days = 30

[events.pay]
fields.amount = { type = "int", min = 1 }

[events.tip]
fields.amount = { type = "int", min = 1, required = false }

[events.refund]
reverses = "pay"
fields.of = { type = "str" }
fields.amount = { type = "int", required = false }

[events.untip]
reverses = "tip"
fields.of = { type = "str" }
fields.amount = { type = "int", required = false }

[rules.pay_points]
event = "pay"
grant = "points"
per = { field = "amount", every = 1, amount = 1 }

[rules.pay_xp]
event = "pay"
grant = "xp"
per = { field = "amount", every = 1, amount = 2 }

[rules.tip_points]
event = "tip"
grant = "points"
fixed = 10

[quests.three_orders]
title = "Three orders"
kind = "once"
event = "pay"
target = 3
rewards = { points = 50, xp = 5, coupons = ["c10"] }

[catalog.c10]
title = "10 off"
value_cents = 1_000

[[tiers]]
id = "base"
name = "Base"
xp = 0

[points]
expiry = "days"
expiry_days = 365
"""


@pytest.fixture
def refunds(engine: Any, compile_toml: Any) -> Any:
    return lambda: engine(program_=compile_toml(REFUNDS))


def effects(result: OpResult) -> list[tuple[str, dict[str, Any]]]:
    return [(e["type"], e["data"]) for e in result.effects]


async def refund(e: Any, member: str, op_id: str, of: str, amount: int | None = None, **kw: Any) -> OpResult:
    data: dict[str, Any] = {"of": of}
    if amount is not None:
        data["amount"] = amount
    return await e.apply(op_id, member, "refund", data, **kw)


async def quest_state(e: Any, member: str) -> dict[str, str]:
    raw = await e.redis.hgetall(e.keys.member(member).state)
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"q:") or k.startswith(b"dq:")}


def test_full_refund_takes_back_points_and_xp(refunds: Any) -> None:
    async def run() -> None:
        async with refunds() as e:
            assert (await e.apply("o-1", "m", "pay", {"amount": 100})).status is APPLIED
            result = await refund(e, "m", "r-1", "o-1")
            assert result.status is APPLIED
            assert effects(result) == [
                ("quest_progress", {"quest": "three_orders", "progress": 0, "target": 3}),
                ("xp", {"amount": -200, "total": 0, "reason": "refund"}),
                ("points", {"amount": -100, "balance": 0, "reason": "refund"}),
            ]
            assert await quest_state(e, "m") == {}
            assert await e.balance("m") == 0 and await e.xp("m") == 0
            assert await lots_of(e, "m") == {}
            assert (await e.ledger("m"))[-1] == (-100, 0)
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_partial_refunds_take_back_in_proportion_and_add_up_to_the_whole(refunds: Any) -> None:
    async def run() -> None:
        async with refunds() as e:
            await e.apply("o-1", "m", "pay", {"amount": 99})  # 99 points, 198 XP
            first = await refund(e, "m", "r-1", "o-1", 33)
            assert effects(first) == [
                ("xp", {"amount": -66, "total": 132, "reason": "refund"}),
                ("points", {"amount": -33, "balance": 66, "reason": "refund"}),
            ]
            await refund(e, "m", "r-2", "o-1", 10)  # floor(99 * 43 / 99) - 33 = 10
            assert await e.balance("m") == 56
            last = await refund(e, "m", "r-3", "o-1")  # all that remains
            assert [d["amount"] for t, d in effects(last) if t in ("xp", "points")] == [-112, -56]
            assert await e.balance("m") == 0 and await e.xp("m") == 0
            again = await refund(e, "m", "r-4", "o-1", 1)
            assert (again.status, again.refusal) == (REFUSED, "already_refunded")

    asyncio.run(run())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amount=st.integers(1, 10_000), cuts=st.lists(st.integers(1, 10_000), min_size=1, max_size=6))
def test_partial_refunds_never_take_more_than_was_granted(refunds: Any, amount: int, cuts: list[int]) -> None:
    member = f"m-{uuid.uuid4().hex[:8]}"  # the fixture's prefix is shared by every example

    async def run() -> None:
        async with refunds() as e:
            await e.apply("o-1", member, "pay", {"amount": amount})
            refunded = 0
            for i, cut in enumerate(cuts):
                result = await refund(e, member, f"r-{i}", "o-1", cut)
                if refunded + cut > amount:
                    why = "already_refunded" if refunded == amount else "amount_exceeds_original"
                    assert (result.status, result.refusal) == (REFUSED, why)
                    continue
                refunded += cut
                assert result.status is APPLIED
                # What is left is exactly the share not refunded, rounded in the member's favour.
                assert await e.balance(member) == amount - (amount * refunded) // amount
                assert await e.xp(member) == 2 * amount - (2 * amount * refunded) // amount
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


#: A grant that does not divide by the order's amount: every partial share has a remainder to round.
UNEVEN = """
[program]
name = "uneven"
timezone = "Asia/Shanghai"
refund_window_days = 30

[events.order]
fields.amount = { type = "int", min = 1 }

[events.cancel]
reverses = "order"
fields.of = { type = "str" }
fields.amount = { type = "int", required = false }

[rules.order_points]
event = "order"
grant = "points"
fixed = 10

[rules.order_xp]
event = "order"
grant = "xp"
fixed = 7

[[tiers]]
id = "base"
name = "Base"
xp = 0

[points]
expiry = "days"
expiry_days = 365
"""


def test_partial_refunds_round_what_they_take_in_the_members_favour(engine: Any, compile_toml: Any) -> None:
    """Each share taken back is floor(granted * refunded / amount) less what was taken; the last takes the remainder."""

    async def run() -> None:
        async with engine(program_=compile_toml(UNEVEN)) as e:
            await e.apply("o-1", "m", "order", {"amount": 3})  # 10 points, 7 XP
            taken = []
            for op_id, amount in (("c-1", 1), ("c-2", 1), ("c-3", None)):
                data = {"of": "o-1"} | ({} if amount is None else {"amount": amount})
                result = await e.apply(op_id, "m", "cancel", data)
                assert result.status is APPLIED
                taken.append(effects(result))
            assert taken == [
                # 1 of 3: floor(7 / 3) = 2 XP, floor(10 / 3) = 3 points
                [("xp", {"amount": -2, "total": 5, "reason": "refund"}),
                 ("points", {"amount": -3, "balance": 7, "reason": "refund"})],
                # 2 of 3: floor(14 / 3) - 2 = 2 XP, floor(20 / 3) - 3 = 3 points
                [("xp", {"amount": -2, "total": 3, "reason": "refund"}),
                 ("points", {"amount": -3, "balance": 4, "reason": "refund"})],
                # the rest: 7 - 4 = 3 XP, 10 - 6 = 4 points
                [("xp", {"amount": -3, "total": 0, "reason": "refund"}),
                 ("points", {"amount": -4, "balance": 0, "reason": "refund"})],
            ]
            assert (await e.balance("m"), await e.xp("m")) == (0, 0)
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_points_already_spent_become_a_debt_that_later_grants_settle(refunds: Any) -> None:
    async def run() -> None:
        async with refunds() as e:
            await e.apply("o-1", "m", "pay", {"amount": 100})
            assert (await spend(e, "m", "s-1", 80)).status is APPLIED
            result = await refund(e, "m", "r-1", "o-1")
            assert effects(result)[2:] == [
                ("points", {"amount": -20, "balance": 0, "reason": "refund"}),
                ("debt", {"amount": 80, "debt": 80}),
            ]
            assert (await e.profile("m"))["debt"] == "80"
            settled = await e.apply("o-2", "m", "pay", {"amount": 100})
            assert ("debt_settled", {"amount": 80, "balance": 20, "debt": 0}) in effects(settled)
            assert await e.balance("m") == 20 and await lots_of(e, "m") == {e.program.lot_expiry_ms(e.now_ms): 20}
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


async def ledger_kinds(e: Any, member: str) -> list[tuple[str, int, int]]:
    """(kind, delta, balance after) of every ledger entry, oldest first."""
    entries = await e.redis.xrange(e.keys.member(member).ledger)
    return [(f[b"k"].decode(), int(f[b"d"]), int(f[b"b"])) for _, f in entries]


def test_a_debt_larger_than_a_grant_takes_the_whole_grant_and_stays_owed_in_part(refunds: Any) -> None:
    """Debt 80, a grant of 30: all 30 settle it, the balance stays 0, 50 is still owed, no lot is made."""

    async def run() -> None:
        async with refunds() as e:
            await e.apply("o-1", "m", "pay", {"amount": 100})
            assert (await spend(e, "m", "s-1", 80)).status is APPLIED
            assert (await refund(e, "m", "r-1", "o-1")).status is APPLIED
            assert (await e.profile("m"))["debt"] == "80" and await e.balance("m") == 0
            before = len(await ledger_kinds(e, "m"))
            result = await e.apply("o-2", "m", "pay", {"amount": 30})
            assert effects(result)[:2] == [
                ("points", {"amount": 30, "balance": 30, "reason": "pay_points"}),
                ("debt_settled", {"amount": 30, "balance": 0, "debt": 50}),
            ]
            profile = await e.profile("m")
            assert (profile["pts"], profile["debt"]) == ("0", "50")
            assert await lots_of(e, "m") == {}
            assert (await ledger_kinds(e, "m"))[before:] == [("g", 30, 30), ("d", -30, 0)]
            assert (await verify(e.redis, e.keys)).ok
            # The next grant settles the 50 left; only what exceeds it lands in a lot.
            result = await e.apply("o-3", "m", "pay", {"amount": 70})
            assert ("debt_settled", {"amount": 50, "balance": 20, "debt": 0}) in effects(result)
            profile = await e.profile("m")
            assert (profile["pts"], profile["debt"]) == ("20", "0")
            assert await lots_of(e, "m") == {e.program.lot_expiry_ms(e.now_ms): 20}
            assert (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_points_come_out_of_the_originals_lot_first(refunds: Any) -> None:
    async def run() -> None:
        async with refunds() as e:
            await e.apply("o-1", "m", "pay", {"amount": 100}, at=e.now_ms - 2 * DAY_MS)
            await e.apply("o-2", "m", "pay", {"amount": 100})
            early, late = e.program.lot_expiry_ms(e.now_ms - 2 * DAY_MS), e.program.lot_expiry_ms(e.now_ms)
            await refund(e, "m", "r-1", "o-2")
            assert await lots_of(e, "m") == {early: 100}
            assert late != early

    asyncio.run(run())


def test_a_refund_of_the_whole_reopens_the_quest_it_completed_and_revokes_its_coupon(refunds: Any) -> None:
    async def run() -> None:
        async with refunds() as e:
            for i in (1, 2, 3):
                await e.apply(f"o-{i}", "m", "pay", {"amount": 10})
            assert (await e.coupons("m")) == ["c10"]
            assert await e.balance("m") == 80  # 30 + the quest's 50
            partial = await refund(e, "m", "r-1", "o-3", 5)
            assert [t for t, _ in effects(partial)] == ["xp", "points"]  # a partial refund keeps the order
            result = await refund(e, "m", "r-2", "o-3")
            kinds = effects(result)
            assert ("quest_progress", {"quest": "three_orders", "progress": 2, "target": 3}) in kinds
            assert ("xp", {"amount": -15, "total": 40, "reason": "refund"}) in kinds  # 10 left of the rule, 5 bonus
            assert ("points", {"amount": -55, "balance": 20, "reason": "refund"}) in kinds  # 5 left + 50 bonus
            revoked = [d for t, d in kinds if t == "reward_revoked"]
            assert [(d["item"], d["reason"]) for d in revoked] == [("c10", "refund")]
            records = [msgpack.unpackb(v, raw=False) for v in (await e.redis.hgetall(e.keys.member("m").coupons)).values()]
            assert [c[4] for c in records] == [2]  # revoked
            # The quest is open again: the next order completes it, and grants it again.
            again = await e.apply("o-4", "m", "pay", {"amount": 10})
            assert ("quest_completed", {"quest": "three_orders", "progress": 3, "target": 3}) in effects(again)

    asyncio.run(run())


def test_a_quest_still_met_by_the_other_orders_stays_completed(refunds: Any) -> None:
    async def run() -> None:
        async with refunds() as e:
            for i in (1, 2, 3, 4):
                await e.apply(f"o-{i}", "m", "pay", {"amount": 10})
            result = await refund(e, "m", "r-1", "o-3")  # completed it; o-4 still makes three
            assert [t for t, _ in effects(result)] == ["quest_progress", "xp", "points"]
            assert ("xp", {"amount": -20, "total": 65, "reason": "refund"}) in effects(result)  # no bonus taken
            assert await e.coupons("m") == ["c10"]

    asyncio.run(run())


def test_a_used_coupon_is_not_revoked(refunds: Any) -> None:
    from engine.operations import parse_coupon_use, plan_coupon_use

    async def run() -> None:
        async with refunds() as e:
            for i in (1, 2, 3):
                await e.apply(f"o-{i}", "m", "pay", {"amount": 10})
            coupon = next(iter(await e.redis.hkeys(e.keys.member("m").coupons))).decode()
            use = parse_coupon_use({"id": "u-1", "order": "x-1"}, "m", coupon, e.now_ms)
            assert (await e.store.apply(plan_coupon_use(e.program, use, e.now_ms), e.program)).status is APPLIED
            result = await refund(e, "m", "r-1", "o-3")
            assert "reward_revoked" not in [t for t, _ in effects(result)]

    asyncio.run(run())


@pytest.mark.parametrize(
    "case, refusal",
    [
        ("unknown", "unknown_original"),
        ("other member", "unknown_original"),
        ("twice", "already_refunded"),
        ("too old", "refund_window_passed"),
        ("too much", "amount_exceeds_original"),
        ("no amount", "no_amount"),
        ("not refundable type", "unknown_original"),
    ],
)
def test_refused_refunds_write_nothing(refunds: Any, case: str, refusal: str) -> None:
    async def run() -> None:
        async with refunds() as e:
            old = e.now_ms - 10 * DAY_MS
            await e.apply("o-1", "m", "pay", {"amount": 100}, at=old, now_ms=old)
            await e.apply("o-2", "other", "pay", {"amount": 100})
            await e.apply("t-1", "m", "tip", {})
            await e.apply("login-1", "m", "tip", {"amount": 5})
            later = None
            if case == "twice":
                assert (await refund(e, "m", "r-0", "o-1")).status is APPLIED
            if case == "too old":
                later = old + 30 * DAY_MS + 1
            before = await dump(e, "m")
            of, amount, kind = {
                "unknown": ("nope", None, "refund"),
                "other member": ("o-2", None, "refund"),
                "twice": ("o-1", None, "refund"),
                "too old": ("o-1", None, "refund"),
                "too much": ("o-1", 101, "refund"),
                "no amount": ("t-1", 1, "untip"),
                "not refundable type": ("o-1", None, "untip"),
            }[case]
            data: dict[str, Any] = {"of": of} | ({} if amount is None else {"amount": amount})
            kw = {} if later is None else {"now_ms": later, "at": later}
            result = await e.apply("r-x", "m", kind, data, **kw)
            assert (result.status, result.refusal) == (REFUSED, refusal)
            assert await dump(e, "m") == before
            # Refused writes nothing, not even the id: it can be sent again once it can apply.
            assert (await e.apply("r-x", "m", kind, data, **kw)).status is REFUSED

    asyncio.run(run())


def test_a_refund_at_exactly_the_window_applies_and_one_millisecond_later_is_too_late(refunds: Any) -> None:
    """The window is inclusive: refund_window_days after the original applies; 1 ms more is refund_window_passed."""

    async def run() -> None:
        async with refunds() as e:
            old = e.now_ms - 10 * DAY_MS
            await e.apply("o-1", "m", "pay", {"amount": 100}, at=old, now_ms=old)
            end = old + e.program.refund_window_ms
            before = await dump(e, "m")
            late = await refund(e, "m", "r-1", "o-1", now_ms=end + 1, at=end + 1)
            assert (late.status, late.refusal) == (REFUSED, "refund_window_passed")
            assert await dump(e, "m") == before
            on_time = await refund(e, "m", "r-2", "o-1", now_ms=end, at=end)
            assert on_time.status is APPLIED
            assert (await e.balance("m"), await e.xp("m")) == (0, 0)

    asyncio.run(run())


def test_a_refund_is_an_event_like_any_other_a_retry_is_a_duplicate(refunds: Any) -> None:
    async def run() -> None:
        async with refunds() as e:
            await e.apply("o-1", "m", "pay", {"amount": 100})
            first = await refund(e, "m", "r-1", "o-1", 40)
            again = await refund(e, "m", "r-1", "o-1", 40)
            assert again.status is DUPLICATE and again.effects == first.effects
            assert await e.balance("m") == 60
            other = await refund(e, "m", "r-1", "o-1", 41)
            assert other.status is OpStatus.CONFLICT

    asyncio.run(run())


def test_only_refundable_event_types_keep_a_record(refunds: Any) -> None:
    async def run() -> None:
        async with refunds() as e:
            program = e.program
            assert program.refundable == {"pay", "tip"}
            plan = e.plan("o-1", "m", "pay", {"amount": 7})
            until, amount, at, tag = plan.args.record
            assert (amount, at) == (7, e.now_ms)
            assert until >= e.now_ms + program.refund_window_ms
            assert e.plan("t-1", "m", "tip", {}).args.record[1] == 0
            assert e.plan("t-1", "m", "tip", {}).args.record[3] != tag  # another type
            assert e.plan("l-1", "m", "untip", {"of": "t-1"}).args.reverse[3] == e.plan("t-1", "m", "tip", {}).args.record[3]

    asyncio.run(run())


def test_a_refund_must_name_another_event_and_a_positive_amount(refunds: Any) -> None:
    async def run() -> None:
        async with refunds() as e:
            with pytest.raises(InvalidInput) as caught:
                e.plan("r-1", "m", "refund", {"of": "r-1"})
            assert caught.value.field == "data.of"
            with pytest.raises(InvalidInput) as caught:
                e.plan("r-1", "m", "refund", {"of": "o-1", "amount": 0})
            assert caught.value.field == "data.amount"
            with pytest.raises(InvalidInput) as caught:
                e.plan("r-1", "m", "refund", {})
            assert caught.value.field == "data.of"

    asyncio.run(run())


@pytest.mark.parametrize(
    "edit, path",
    [
        (('reverses = "pay"', 'reverses = "payy"'), "events.refund.reverses"),
        (('reverses = "pay"', 'reverses = "untip"'), "events.refund.reverses"),
        (('fields.of = { type = "str" }\nfields.amount = { type = "int", required = false }\n\n[events.untip]', 'fields.amount = { type = "int", required = false }\n\n[events.untip]'), "events.refund.fields.of"),
        (('fields.of = { type = "str" }\nfields.amount = { type = "int", required = false }\n\n[events.untip]', 'fields.of = { type = "int" }\nfields.amount = { type = "int", required = false }\n\n[events.untip]'), "events.refund.fields.of"),
        (('fields.of = { type = "str" }\nfields.amount = { type = "int", required = false }\n\n[events.untip]', 'fields.of = { type = "str" }\nfields.amount = { type = "str", required = false }\n\n[events.untip]'), "events.refund.fields.amount"),
        (('[events.tip]\nfields.amount = { type = "int", min = 1, required = false }', '[events.tip]\nfields.cents = { type = "int", min = 1, required = false }'), "events.untip.fields.amount"),
        # `of` must hold any event id (128 characters), or a long order id could not be refunded.
        (('fields.of = { type = "str" }\nfields.amount = { type = "int", required = false }\n\n[events.untip]', 'fields.of = { type = "str", max_length = 64 }\nfields.amount = { type = "int", required = false }\n\n[events.untip]'), "events.refund.fields.of"),
        (('fields.of = { type = "str" }\nfields.amount = { type = "int", required = false }\n\n[events.untip]', 'fields.of = { type = "str", one_of = ["o-1"] }\nfields.amount = { type = "int", required = false }\n\n[events.untip]'), "events.refund.fields.of"),
    ],
)
def test_refund_types_are_checked(compile_toml: Any, edit: tuple[str, str], path: str) -> None:
    old, new = edit
    assert REFUNDS.count(old) == 1
    with pytest.raises(ConfigError) as caught:
        compile_toml(REFUNDS.replace(old, new))
    assert path in [p.path for p in caught.value.problems], [str(p) for p in caught.value.problems]
