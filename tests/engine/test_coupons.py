"""A member's coupons on the real server: history is forgotten after the programme's period, what is
still usable is kept, and a snapshot shows a bounded list however many a member holds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engine.clock import DAY_MS
from engine.ids import EventId
from engine.members import SNAPSHOT_HISTORY_MAX, SNAPSHOT_USABLE_MAX, MemberStore
from engine.operations import Operation, fingerprint, member_plan, parse_coupon_use, plan_coupon_use
from engine.store import OpResult, OpStatus

FORGET_TIMEOUT_S = 10.0


async def grant(e: Any, member: str, op_id: str, n: int, valid_ms: int, now_ms: int | None = None) -> list[str]:
    """Grant ``n`` free-shipping coupons in one operation; their ids."""
    now = e.now_ms if now_ms is None else now_ms
    op = Operation(EventId(op_id), member, now, fingerprint("grant", n, valid_ms))
    plan = member_plan(e.program, op, now, coupons=tuple(["free-shipping", valid_ms, "test"] for _ in range(n)))
    result = await e.store.apply(plan, e.program)
    assert result.status is OpStatus.APPLIED
    return [x["data"]["coupon"] for x in result.effects if x["type"] == "reward"]


async def use(e: Any, member: str, coupon: str, op_id: str, now_ms: int | None = None) -> OpResult:
    now = e.now_ms if now_ms is None else now_ms
    request = parse_coupon_use({"id": op_id, "order": f"o-{op_id}"}, member, coupon, now)
    return await e.store.apply(plan_coupon_use(e.program, request, now), e.program)


async def forgotten_at(e: Any, member: str, coupon: str) -> int:
    """When the coupon's field expires (epoch ms): -1 never, -2 no such field."""
    [at] = await e.redis.execute_command("HPEXPIRETIME", e.keys.member(member).coupons, "FIELDS", 1, coupon)
    return int(at)


def test_a_coupon_is_forgotten_the_history_period_after_it_became_history(engine) -> None:
    """Used: the period after its use. With an end: the period after the end. Unused and without
    an end: never (it is still the member's to use). Revoked: the period after the refund."""

    async def run() -> None:
        async with engine() as e:
            keep = e.program.coupon_history_ms
            assert keep == 90 * DAY_MS
            [open_ended] = await grant(e, "m-1", "g-1", 1, 0)
            [ending] = await grant(e, "m-1", "g-2", 1, 30 * DAY_MS)
            [used] = await grant(e, "m-1", "g-3", 1, 30 * DAY_MS)
            assert await forgotten_at(e, "m-1", open_ended) == -1
            assert await forgotten_at(e, "m-1", ending) == e.now_ms + 30 * DAY_MS + keep
            assert (await use(e, "m-1", used, "u-1", e.now_ms + 1000)).status is OpStatus.APPLIED
            assert await forgotten_at(e, "m-1", used) == e.now_ms + 1000 + keep
            # A refund revokes the first-order quest's coupon, unused: history from the refund on.
            paid = await e.apply("p-1", "m-2", "purchase", {"amount": 5000})
            [quest_coupon] = [x["data"]["coupon"] for x in paid.effects if x["type"] == "reward"]
            refund = await e.apply("r-1", "m-2", "refund", {"of": "p-1"})
            assert ("reward_revoked", quest_coupon) in [(x["type"], x["data"].get("coupon")) for x in refund.effects]
            assert await forgotten_at(e, "m-2", quest_coupon) == e.now_ms + keep

    asyncio.run(run())


def test_history_leaves_the_record_by_itself(engine) -> None:
    """A coupon used long enough ago that its period ends now is gone from the member's hash by
    the server's own field expiry, with no operation of the member's; a usable one stays."""

    async def run() -> None:
        real_now = int(time.time() * 1000)
        async with engine(now_ms=real_now) as e:
            then = real_now - e.program.coupon_history_ms + 1500  # its history ends 1.5 s from now
            [old, kept] = await grant(e, "m-1", "g-1", 2, 0, now_ms=then)
            assert (await use(e, "m-1", old, "u-1", then)).status is OpStatus.APPLIED
            key = e.keys.member("m-1").coupons
            assert await e.redis.hlen(key) == 2
            deadline = time.monotonic() + FORGET_TIMEOUT_S
            while await e.redis.hexists(key, old):
                assert time.monotonic() < deadline, "the used coupon was never forgotten"
                await asyncio.sleep(0.1)
            assert await e.redis.hkeys(key) == [kept.encode()]
            # Used again after it was forgotten: there is no such coupon.
            assert (await use(e, "m-1", old, "u-2")).refusal == "not_found"

    asyncio.run(run())


def test_a_snapshot_shows_a_bounded_list_of_coupons(engine) -> None:
    """A member holding 130 usable coupons and 30 used ones: the snapshot shows the 100 usable
    that end soonest and the 20 newest used, in grant order."""

    async def run() -> None:
        async with engine() as e:
            soon = await grant(e, "m-1", "g-soon", 60, 10 * DAY_MS)
            never = await grant(e, "m-1", "g-never", 70, 0, now_ms=e.now_ms + 1)
            spent = await grant(e, "m-1", "g-spent", 30, 0, now_ms=e.now_ms + 2)
            for i, coupon in enumerate(spent):
                assert (await use(e, "m-1", coupon, f"u-{i}", e.now_ms + 10 + i)).status is OpStatus.APPLIED
            snap = await MemberStore(e.redis, e.keys).snapshot("m-1", e.program, e.now_ms)
            shown = [r["coupon"] for r in snap["rewards"]]
            assert len(shown) == SNAPSHOT_USABLE_MAX + SNAPSHOT_HISTORY_MAX
            usable = [r["coupon"] for r in snap["rewards"] if r["state"] == "granted"]
            assert len(usable) == SNAPSHOT_USABLE_MAX and set(soon) < set(usable) < set(soon) | set(never)
            assert {r["coupon"] for r in snap["rewards"] if r["state"] == "used"} == set(spent[-SNAPSHOT_HISTORY_MAX:])
            in_grant_order = [c for c in [*soon, *never, *spent] if c in shown]
            assert shown == in_grant_order

    asyncio.run(run())
