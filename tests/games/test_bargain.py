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
from engine.errors import NotFound, Refused
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
    clock = ManualClock(e.now_ms if now_ms is None else now_ms)
    crossing = Crossing(e.pipeline, e.keys, e.store, dict(GAME.objects), dict(GAME.steps), grace_ms=GRACE_MS,
                        clock=clock)
    return Context(e.keys, e.pipeline, e.store, crossing, MemberStore(e.redis, e.keys, runner=e.pipeline), e.redis,
                   clock, lambda: e.program)


async def helps(e: Any, ctx: Context, bargain: str, helpers: list[str], at_ms: int | None = None,
                op: str = "h") -> list[Any]:
    """Every helper's help (id ``<op>-<helper>``), sent again (as an app does) while it is answered in_progress."""
    async def one(helper: str) -> Any:
        while True:
            try:
                return await help_(ctx, e.program, HelpRequest(bargain, helper, f"{op}-{helper}", at_ms or e.now_ms, 1, "", 0))
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
            assert list(reply) == [1, 9800, 1, 1, 9800, 1, 100, b"teapot", 100]  # ..., the round's item and floor
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


# --- a round keeps its terms; the view's helps; the anti-collusion report -------------------------


def program_changed(compile_toml: Any, helpers: int = 1) -> Any:
    """The programme after an edit: the teapot campaign now gives a kettle at a 5-yuan floor, and
    the teapot's coupon is valid 7 days (not 14)."""
    text = CAMPAIGN.format(helpers=helpers, algorithm="schedule", quota=5)
    text = text.replace("valid_days = 14", "valid_days = 7").replace('item = "teapot"', 'item = "kettle"')
    text = text.replace("floor_cents = 100", "floor_cents = 500")
    return compile_toml(text + '\n[catalog.kettle]\ntitle = "A kettle"\nvalue_cents = 5000\nvalid_days = 30\n')


async def coupon_records(e: Any, member: str) -> list[list[Any]]:
    import msgpack

    return [msgpack.unpackb(r, raw=False) for r in (await e.redis.hgetall(e.keys.member(member).coupons)).values()]


def test_the_owners_reward_is_the_rounds_item_at_its_floor_after_the_programme_changed(
        engine: Any, compile_toml: Any) -> None:
    """A bargain started on the teapot at 1 yuan keeps those terms when the programme later makes
    the campaign a kettle at 5 yuan: the help that reaches the floor gives the teapot, its
    bargain_done says 100 cents, the coupon is valid the teapot's days in the programme now; a
    help finished by the sweep (steps packed under the new terms) gives the same; GET shows the
    teapot."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, helpers=1)) as e:
            ctx = context_of(e)
            _, first = await start(ctx, e.program, "teapot", "owner", e.now_ms)
            _, second = await start(ctx, e.program, "teapot", "other", e.now_ms)
            changed = program_changed(compile_toml)
            e.program = changed
            result = await help_(ctx, changed, HelpRequest(first, "f", "h-1", e.now_ms, 1, "", 0))
            assert result.status is OpStatus.APPLIED
            await settled(e, "owner")
            assert await e.coupons("owner") == ["teapot"]
            [record] = await coupon_records(e, "owner")
            assert record[5] - record[1] == 7 * 86_400_000  # the teapot's validity in the programme now
            done = [effect for effect in await feed_effects(e, "owner") if effect[0] == "bargain_done"]
            assert [d[1]["item"] for d in done] == ["teapot"] and [d[1]["price_cents"] for d in done] == [100]
            assert (await view(ctx, first)).item == "teapot"
            # The sweep replans from the entry: the decision carries the round's item and floor.
            day, end = changed.calendar.day(e.now_ms)
            steps = (helper_step(second, "g", "h-1", e.now_ms, day, end, 5),
                     owner_step(second, "other", "g", "h-1", e.now_ms, coupon_terms(changed, "kettle", 500)))
            obj = object_of("teapot", "other")
            reply = await ctx.crossing.open(obj, e.now_ms, ["help", entry_key("g", "h-1"), e.now_ms, 1, "g", 1,
                                                            pack_steps(steps), "", 0], extra_keys=object_keys(ctx, obj)[3:])
            assert list(reply)[-2:] == [b"teapot", 100]
            scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(e.now_ms + DUE_MS),
                                  lambda: changed, tasks={CROSS: ctx.crossing.run_job})
            try:
                assert await scheduler.run_due() == 2  # both objects' intents: the first's finds nothing
            finally:
                await scheduler.stop()
            assert await e.coupons("other") == ["teapot"]
            assert (await verify_all(e.redis, e.keys)).ok

    asyncio.run(run())


async def feed_effects(e: Any, member: str) -> list[Any]:
    import msgpack

    entries = await e.redis.xrange(e.keys.member(member).feed)
    return [effect for _, fields in entries for effect in msgpack.unpackb(fields[b"d"], raw=False)]


def test_a_bargain_whose_campaign_left_the_programme_refuses_helps_cleanly(engine: Any, compile_toml: Any) -> None:
    """The campaign removed while a round is open: a help is refused campaign_removed (409, naming
    the bargain), nothing written; a bargain of a campaign that never was is a 404; GET still
    shows the round with its own item; its close job still expires it."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml)) as e:
            ctx = context_of(e)
            _, bargain = await start(ctx, e.program, "teapot", "owner", e.now_ms)
            removed = compile_toml(CAMPAIGN.format(helpers=10, algorithm="schedule", quota=5).split("[games.bargain")[0])
            e.program = removed
            with pytest.raises(Refused) as caught:
                await help_(ctx, removed, HelpRequest(bargain, "f", "h-1", e.now_ms, 1, "", 0))
            assert (caught.value.code, caught.value.field) == ("campaign_removed", "bargain")
            with pytest.raises(NotFound) as missing:
                await help_(ctx, removed, HelpRequest("nope.1.owner", "f", "h-2", e.now_ms, 1, "", 0))
            assert missing.value.field == "bargain"
            state = await view(ctx, bargain)
            assert (state.taken, state.helps, state.item) == (0, [], "teapot")
            later = e.now_ms + 24 * 3_600_000
            scheduler = Scheduler(e.pipeline, e.keys, e.scripts, e.store, ManualClock(later + 1),
                                  lambda: removed, tasks={CLOSE: GAME.tasks[CLOSE](ctx)})
            try:
                assert await scheduler.run_due() == 1
            finally:
                await scheduler.stop()
            assert await feed_types(e, "owner") == ["bargain_expired"]

    asyncio.run(run())


def test_the_view_lists_a_helper_once_when_a_released_help_was_followed_by_another(
        engine: Any, compile_toml: Any) -> None:
    """f's help is released (f's quota of the day spent), f helps again the next day: the view
    shows f's one help that counts, once, with its cut."""

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, quota=1)) as e:
            ctx = context_of(e)
            _, bargain = await start(ctx, e.program, "teapot", "owner", e.now_ms)
            _, other = await start(ctx, e.program, "teapot", "other", e.now_ms)
            assert (await helps(e, ctx, other, ["f"]))[0].status is OpStatus.APPLIED  # f's quota: spent
            refused = await help_(ctx, e.program, HelpRequest(bargain, "f", "h-2", e.now_ms, 1, "", 0))
            assert (refused.status, refused.refusal) == (OpStatus.REFUSED, "helper_quota")
            assert (await helps(e, ctx, bargain, ["g"]))[0].status is OpStatus.APPLIED
            _, day_end = e.program.calendar.day(e.now_ms)
            again = await help_(ctx, e.program, HelpRequest(bargain, "f", "h-3", day_end + 1, 1, "", 0))
            assert again.status is OpStatus.APPLIED
            cut = next(x["data"]["cut_cents"] for x in again.effects if x["type"] == "bargain_helped")
            await settled(e, "owner")
            state = await view(ctx, bargain)
            assert [(h, c) for h, c, _ in state.helps][-1] == ("f", cut)
            assert [h for h, _, _ in state.helps] == ["g", "f"]
            assert sum(c for _, c, _ in state.helps) == state.taken

    asyncio.run(run())


async def joined(e: Any, member: str, at_ms: int) -> None:
    await e.redis.hset(e.keys.member(member).profile, "joined_at_ms", at_ms)


def test_the_report_finds_a_ring_new_member_owners_and_heavy_devices_from_counted_helps(
        engine: Any, compile_toml: Any) -> None:
    """Three members who helped one another's bargains three times each way are a ring (a fourth
    who helped one of them once is not in it); an owner helped by five members who joined today is
    flagged, one helped by five long-standing members is not; a device with three helps today is
    flagged at a threshold of three; a duplicate help and a refused one count nothing."""
    from games.bargain import report

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, helpers=2, quota=20)) as e:
            ctx = context_of(e)
            ring = ["a", "b", "c"]
            for m in [*ring, "d"] + [f"old-{i}" for i in range(5)]:
                await joined(e, m, e.now_ms - 400 * 86_400_000)
            for m in [f"new-{i}" for i in range(5)]:
                await joined(e, m, e.now_ms - 3_600_000)
            for k in range(3):
                for owner in ring:
                    started, bargain = await start(ctx, e.program, "teapot", owner, e.now_ms)
                    assert started
                    mates = [m for m in ring if m != owner]
                    assert [r.status for r in await helps(e, ctx, bargain, mates, op=f"h{k}{owner}")] \
                        == [OpStatus.APPLIED] * 2
                    await settled(e, owner)
            _, a_bargain = await start(ctx, e.program, "teapot", "a", e.now_ms)
            device = lambda m: "dev-1" if m in ("new-0", "new-1", "d") else ""  # noqa: E731
            d_help = HelpRequest(a_bargain, "d", "h-d", e.now_ms, 1, device("d"), 0)
            assert (await help_(ctx, e.program, d_help)).status is OpStatus.APPLIED
            assert (await help_(ctx, e.program, d_help)).status is OpStatus.DUPLICATE  # counted once
            e.program = program_of(compile_toml, helpers=10, quota=20)
            for owner, group in (("fresh", "new"), ("steady", "old")):
                _, bargain = await start(ctx, e.program, "teapot", owner, e.now_ms)
                for i in range(5):
                    m = f"{group}-{i}"
                    result = await help_(ctx, e.program, HelpRequest(bargain, m, "h-1", e.now_ms, 1, device(m), 0))
                    assert result.status is OpStatus.APPLIED
            got = await report.read(ctx, e.program, "teapot", e.now_ms, report.Thresholds(device_day=3))
            assert got["rings"] == [{
                "members": ring, "size": 3,
                "helps": [{"helper": x, "owner": y, "helps": 3} for x in ring for y in ring if x != y]}]
            assert got["new_member_owners"] == [{"owner": "fresh", "helps": 5, "from_new": 5, "share": 1.0}]
            assert got["devices"] == [{"device": "dev-1", "helps_today": 3}]
            assert got["truncated"] == {"pairs": False, "owners": False, "devices": False}
            raw = await e.redis.hgetall(report.report_keys(ctx, "teapot", "-")[1])
            counts = {k.decode(): int(v) for k, v in raw.items()}
            assert (counts["h:a"], counts["h:steady"], counts.get("n:steady", 0)) == (7, 5, 0)  # 3 rounds x 2, d once

    asyncio.run(run())


def test_a_refused_help_is_not_counted_for_the_report(engine: Any, compile_toml: Any) -> None:
    from games.bargain import report

    async def run() -> None:
        async with engine(program_=program_of(compile_toml, quota=1)) as e:
            ctx = context_of(e)
            _, first = await start(ctx, e.program, "teapot", "o-1", e.now_ms)
            _, second = await start(ctx, e.program, "teapot", "o-2", e.now_ms)
            assert (await helps(e, ctx, first, ["f"]))[0].status is OpStatus.APPLIED
            refused = await help_(ctx, e.program, HelpRequest(second, "f", "h-2", e.now_ms, 1, "", 0))
            assert refused.refusal == "helper_quota"
            got = await report.read(ctx, e.program, "teapot", e.now_ms, report.Thresholds(ring_min=1, min_helps=1))
            assert got["rings"] == []
            raw = await e.redis.zrange(report.report_keys(ctx, "teapot", "-")[0], 0, -1, withscores=True)
            assert raw == [(b"f>o-1", 1.0)]

    asyncio.run(run())
