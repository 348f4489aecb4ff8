"""The bargain on the real server: 300 concurrent helpers on one bargain cut it exactly to its
floor, the owner rewarded once; one help per helper; the helper's daily quota (its own slot) is a
refused help that gives its cut back; a help after the floor or the expiry is refused; the seam's
sweep finishes a help whose process died with the object's decision; the close job expires a
bargain and tells its owner."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.clock import ManualClock
from engine.crossing import CROSS, Crossing, ObjectRef, entry_key, pack_steps
from engine.errors import Refused
from engine.members import MemberStore
from engine.plugins import Context
from engine.scheduler import Scheduler
from engine.store import OpStatus
from engine.verify import verify_all
from games.bargain import GAME
from games.bargain.plans import BARGAIN, helper_step, owner_step, coupon_terms
from games.bargain.store import CLOSE, HelpRequest, help_, object_keys, object_of, start, view
from tests.engine.test_redemptions import DUE_MS, GRACE_MS

CAMPAIGN = """
[program]
name = "bargain"
timezone = "Asia/Shanghai"

[events.pay]
fields.cents = {{ type = "int", min = 1 }}

[[tiers]]
id = "base"
name = "Base"
xp = 0

[catalog.teapot]
title = "A teapot"
value_cents = 9900
valid_days = 14

[games.bargain.teapot]
title = "Cut the teapot to 1 yuan"
item = "teapot"
price_cents = 9900
floor_cents = 100
helpers = {helpers}
algorithm = "{algorithm}"
helps_per_day = {quota}
duration_hours = 24
"""


def program_of(compile_toml: Any, helpers: int = 10, algorithm: str = "schedule", quota: int = 5) -> Any:
    return compile_toml(CAMPAIGN.format(helpers=helpers, algorithm=algorithm, quota=quota))


def context_of(e: Any, now_ms: int | None = None) -> Context:
    crossing = Crossing(e.pipeline, e.keys, e.store, dict(GAME.objects), dict(GAME.steps), grace_ms=GRACE_MS)
    return Context(e.keys, e.pipeline, e.store, crossing, MemberStore(e.redis, e.keys), e.redis,
                   ManualClock(e.now_ms if now_ms is None else now_ms), lambda: e.program)


async def helps(e: Any, ctx: Context, bargain: str, helpers: list[str], at_ms: int | None = None) -> list[Any]:
    """Every helper's help, sent again (as an app does) while it is answered in_progress."""
    async def one(helper: str) -> Any:
        while True:
            try:
                return await help_(ctx, e.program, HelpRequest(bargain, helper, f"h-{helper}", at_ms or e.now_ms, 1, "", 0))
            except Refused as exc:
                if exc.code != "in_progress":
                    return exc.code
            await asyncio.sleep(0.001)
    return await asyncio.gather(*(one(h) for h in helpers))


async def feed_types(e: Any, member: str) -> list[str]:
    import msgpack

    entries = await e.redis.xrange(e.keys.member(member).feed)
    return [effect[0] for _, fields in entries for effect in msgpack.unpackb(fields[b"d"], raw=False)]


async def settled(e: Any, owner: str) -> None:
    from engine.scripts import Command

    await e.pipeline.call(Command("EXISTS"), [object_of("teapot", owner).keys(e.keys)[0]], [])


@pytest.mark.parametrize("algorithm", ["schedule", "red_packet", "line"])
def test_300_concurrent_helpers_cut_exactly_to_the_floor_and_the_owner_is_rewarded_once(
        engine: Any, compile_toml: Any, algorithm: str) -> None:
    """50 helpers reach the floor: of 300 at once, 50 cut (their cuts sum to price - floor), 250
    are refused bargain_closed with nothing written; the owner gets the teapot once and a
    bargain_helped for each help; verify is clean."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, helpers=50, algorithm=algorithm)) as e:
            ctx = context_of(e)
            started, bargain = await start(ctx, e.program, "teapot", "owner", e.now_ms)
            assert started and bargain == "teapot.1.owner"
            results = await helps(e, ctx, bargain, [f"f-{i}" for i in range(300)])
            applied = [r for r in results if not isinstance(r, str) and r.status is OpStatus.APPLIED]
            assert len(applied) == 50 and {r for r in results if isinstance(r, str)} == {"bargain_closed"}
            cuts = [next(x["data"]["cut_cents"] for x in r.effects if x["type"] == "bargain_helped") for r in applied]
            assert sum(cuts) == 9800 and min(cuts) >= 1
            await settled(e, "owner")
            state = await view(ctx, bargain)
            assert (state.current, state.state(e.now_ms), len(state.helps)) == (100, "done", 50)
            assert await e.coupons("owner") == ["teapot"]
            report = await verify_all(e.redis, e.keys)
            assert report.ok, report.table()

    asyncio.run(run())


def test_one_help_per_helper_the_own_bargain_and_the_daily_quota(engine: Any, compile_toml: Any) -> None:
    """A second help by the same member: already_helped; the owner: own_bargain; a helper past
    the quota (2 a day) is refused helper_quota and the bargain gets its cut back."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, quota=2)) as e:
            ctx = context_of(e)
            bargains = [(await start(ctx, e.program, "teapot", f"o-{i}", e.now_ms))[1] for i in range(3)]
            assert (await helps(e, ctx, bargains[0], ["f"]))[0].status is OpStatus.APPLIED
            with pytest.raises(Refused) as caught:
                await help_(ctx, e.program, HelpRequest(bargains[0], "f", "h-2", e.now_ms, 1, "", 0))
            assert caught.value.code == "already_helped"
            with pytest.raises(Refused) as caught:
                await help_(ctx, e.program, HelpRequest(bargains[0], "o-0", "h-3", e.now_ms, 1, "", 0))
            assert caught.value.code == "own_bargain"
            assert (await help_(ctx, e.program, HelpRequest(bargains[1], "f", "h-4", e.now_ms, 1, "", 0))).status \
                is OpStatus.APPLIED
            third = await help_(ctx, e.program, HelpRequest(bargains[2], "f", "h-5", e.now_ms, 1, "", 0))
            assert (third.status, third.refusal) == (OpStatus.REFUSED, "helper_quota")
            await settled(e, "o-2")
            assert (await view(ctx, bargains[2])).taken == 0  # released: the cut is the bargain's again
            assert (await verify_all(e.redis, e.keys)).ok

    asyncio.run(run())


def test_a_help_whose_process_died_is_finished_by_the_sweep_with_the_objects_decision(
        engine: Any, compile_toml: Any) -> None:
    """The object cut and recorded its decision, the process died: the sweep applies both steps
    with that cut (the helper's and the owner's feeds say the same), once."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, helpers=1)) as e:
            ctx = context_of(e)
            _, bargain = await start(ctx, e.program, "teapot", "owner", e.now_ms)
            day, end = e.program.calendar.day(e.now_ms)
            steps = (helper_step(bargain, "f", "h-1", e.now_ms, day, end, 5),
                     owner_step(bargain, "owner", "f", "h-1", e.now_ms, coupon_terms(e.program, "teapot", 100)))
            obj = object_of("teapot", "owner")
            reply = await ctx.crossing.open(obj, e.now_ms, ["help", entry_key("f", "h-1"), e.now_ms, 1, "f", 1,
                                                            pack_steps(steps), "", 0], extra_keys=object_keys(ctx, obj)[3:])
            assert [int(x) for x in reply] == [1, 9800, 1, 1, 9800, 1, 100]
            scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(e.now_ms + DUE_MS),
                                  lambda: e.program, tasks={CROSS: ctx.crossing.run_job})
            try:
                assert await scheduler.run_due() == 1
            finally:
                await scheduler.stop()
            assert await e.coupons("owner") == ["teapot"]
            again = await help_(ctx, e.program, HelpRequest(bargain, "f", "h-1", e.now_ms, 1, "", 0))
            assert again.status is OpStatus.DUPLICATE
            assert [x["data"]["cut_cents"] for x in again.effects if x["type"] == "bargain_helped"] == [9800]

    asyncio.run(run())


def test_an_expired_bargain_refuses_helps_and_its_close_job_tells_the_owner(engine: Any, compile_toml: Any) -> None:
    async def run() -> None:
        async with engine(program_=program_of(compile_toml)) as e:
            ctx = context_of(e)
            _, bargain = await start(ctx, e.program, "teapot", "owner", e.now_ms)
            later = e.now_ms + 24 * 3_600_000
            with pytest.raises(Refused) as caught:
                await help_(ctx, e.program, HelpRequest(bargain, "f", "h-1", later, 1, "", 0))
            assert caught.value.code == "expired"
            scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(later + 1),
                                  lambda: e.program, tasks={CLOSE: GAME.tasks[CLOSE](ctx)})
            try:
                assert await scheduler.run_due() == 1
            finally:
                await scheduler.stop()
            assert (await view(ctx, bargain)).state(later) == "expired"
            assert await feed_types(e, "owner") == ["bargain_expired"]
            started, second = await start(ctx, e.program, "teapot", "owner", later + 2)
            assert started and second == "teapot.2.owner"

    asyncio.run(run())


def test_the_floor_is_reached_once_even_when_an_earlier_help_is_released(engine: Any, compile_toml: Any) -> None:
    """Two units. A's help is pending (its process stalled); B's would take the last unit: it
    waits (in_progress) rather than reward the owner while A may still be released. A is
    released (A's quota is spent), then B's retry reaches the floor: one coupon, not two."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, helpers=2, quota=1)) as e:
            ctx = context_of(e)
            _, bargain = await start(ctx, e.program, "teapot", "owner", e.now_ms)
            _, other = await start(ctx, e.program, "teapot", "other", e.now_ms)
            assert (await helps(e, ctx, other, ["a"]))[0].status is OpStatus.APPLIED  # A's quota: spent
            day, end = e.program.calendar.day(e.now_ms)
            steps = (helper_step(bargain, "a", "h-a", e.now_ms, day, end, 1),
                     owner_step(bargain, "owner", "a", "h-a", e.now_ms, coupon_terms(e.program, "teapot", 100)))
            obj = object_of("teapot", "owner")
            reply = await ctx.crossing.open(obj, e.now_ms, ["help", entry_key("a", "h-a"), e.now_ms, 1, "a", 1,
                                                            pack_steps(steps), "", 0], extra_keys=object_keys(ctx, obj)[3:])
            assert int(reply[0]) == 1  # A's help: pending, its process gone
            with pytest.raises(Refused) as caught:
                await help_(ctx, e.program, HelpRequest(bargain, "b", "h-b", e.now_ms, 1, "", 0))
            assert caught.value.code == "in_progress"
            scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(e.now_ms + DUE_MS),
                                  lambda: e.program, tasks={CROSS: ctx.crossing.run_job})
            try:
                assert await scheduler.run_due() >= 1  # the sweep: A's step refused (quota), A's help released
            finally:
                await scheduler.stop()
            later = e.now_ms + DUE_MS
            assert [r.status for r in await helps(e, ctx, bargain, ["b", "c"], at_ms=later)] == [OpStatus.APPLIED] * 2
            await settled(e, "owner")
            assert await e.coupons("owner") == ["teapot"]
            assert (await view(ctx, bargain)).state(later) == "done"
            assert (await verify_all(e.redis, e.keys)).ok

    asyncio.run(run())


def test_the_close_job_closes_its_own_round_when_a_newer_one_started(engine: Any, compile_toml: Any) -> None:
    """Round 1 expires; the owner starts round 2 before round 1's close job runs: the job closes
    round 1 (the owner is told) and leaves round 2 open."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml)) as e:
            ctx = context_of(e)
            _, first = await start(ctx, e.program, "teapot", "owner", e.now_ms)
            later = e.now_ms + 24 * 3_600_000
            _, second = await start(ctx, e.program, "teapot", "owner", later + 5)
            assert second == "teapot.2.owner"
            scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(later + 10),
                                  lambda: e.program, tasks={CLOSE: GAME.tasks[CLOSE](ctx)})
            try:
                assert await scheduler.run_due() == 1
            finally:
                await scheduler.stop()
            assert (await view(ctx, first)).closed and not (await view(ctx, second)).closed
            assert await feed_types(e, "owner") == ["bargain_expired"]

    asyncio.run(run())
