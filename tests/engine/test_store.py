"""The award store on a real Valkey: exactly-once, caps, quests, tiers, reloads, feed and restarts."""

from __future__ import annotations

import re
import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis.asyncio.cluster import RedisCluster

from engine.cluster import client_from_url
from tests.conftest import on_cluster
from engine.store import OpResult, OpStatus, member_call
from engine.keys import DEDUPE_BUCKET_MS

DAY_MS = 86_400_000
RETENTION_MS = 14 * DAY_MS
SHANGHAI = ZoneInfo("Asia/Shanghai")

APPLIED, DUPLICATE, CONFLICT = OpStatus.APPLIED, OpStatus.DUPLICATE, OpStatus.CONFLICT

#: The first ¥199.00 order of a new member under the example programme, worked by hand:
#: 199 XP and 199 points (bronze: x1.0), first_order completes (100 XP, 100 points, a coupon),
#: weekly_spend moves to 19900 of 30000 cents. 299 XP stays below silver (1000).
FIRST_ORDER_EFFECTS = [
    ("xp", {"amount": 199, "total": 199, "reason": "purchase_xp"}),
    ("points", {"amount": 199, "balance": 199, "reason": "purchase_points"}),
    ("quest_completed", {"quest": "first_order", "progress": 1, "target": 1}),
    ("xp", {"amount": 100, "total": 299, "reason": "quest:first_order"}),
    ("points", {"amount": 100, "balance": 299, "reason": "quest:first_order"}),
    ("reward", {"kind": "coupon", "item": "free-shipping", "reason": "quest:first_order"}),
    ("quest_progress", {"quest": "weekly_spend", "progress": 19900, "target": 30000}),
]

CAPPED = """
[program]
name = "capped"
timezone = "Asia/Shanghai"

[events.pay]
fields.cents = { type = "int", min = 1 }

[rules.pay_points]
event = "pay"
grant = "points"
per = { field = "cents", every = 1, amount = 1 }
daily_cap = 100

[[tiers]]
id = "base"
name = "Base"
xp = 0
"""


def effects(result: OpResult) -> list[tuple[str, dict[str, Any]]]:
    return [(e["type"], _without_coupon_id(e["data"]) if e["type"] == "reward" else e["data"]) for e in result.effects]


def _without_coupon_id(data: dict[str, Any]) -> dict[str, Any]:
    """A reward's coupon id (``<operation id>:c<n>``) and expiry, checked, then left out, so
    fixtures read the same for every event id."""
    assert re.fullmatch(r".+:c[0-9]+", data["coupon"]), data
    assert data["expires_at_ms"] > 0, data
    return {k: v for k, v in data.items() if k not in ("coupon", "expires_at_ms")}


def local_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, SHANGHAI).strftime("%Y%m%d")


def test_applied_then_duplicate(engine) -> None:
    """The first sighting applies with its effects; the same body again is a duplicate that changes nothing."""

    async def run() -> None:
        async with engine() as e:
            first = await e.apply("order-9912-paid", "m-42", "purchase", {"amount": 19900, "sku": "tea-01"})
            assert first.status is APPLIED
            assert effects(first) == FIRST_ORDER_EFFECTS
            assert await e.profile("m-42") == {"xp": "299", "pts": "299", "tier": "bronze"}
            assert await e.ledger("m-42") == [(199, 199), (100, 299)]
            assert await e.coupons("m-42") == ["free-shipping"]
            feed_len = await e.redis.xlen(e.keys.member("m-42").feed)
            assert feed_len == 1  # one feed entry per award, holding its seven effects

            again = await e.apply("order-9912-paid", "m-42", "purchase", {"amount": 19900, "sku": "tea-01"})
            # the original award is replayed: its feed entry and effects, ids and all
            entry = first.effects[0]["id"].rsplit("-", 1)[0]
            assert again == OpResult(DUPLICATE, first.effects, original=entry)
            # retried a day later, with `at` left out (so arriving in another dedupe bucket window)
            later = await e.apply("order-9912-paid", "m-42", "purchase", {"amount": 19900, "sku": "tea-01"},
                                  now_ms=e.now_ms + 8 * DAY_MS)
            assert later.status is DUPLICATE
            assert await e.profile("m-42") == {"xp": "299", "pts": "299", "tier": "bronze"}
            assert await e.ledger("m-42") == [(199, 199), (100, 299)]
            assert await e.redis.xlen(e.keys.member("m-42").feed) == feed_len

    asyncio.run(run())


def test_same_id_other_body_is_a_conflict(engine) -> None:
    """The same id with another amount (or another `at`) is a conflict and changes nothing."""

    async def run() -> None:
        async with engine() as e:
            assert (await e.apply("o-1", "m-1", "purchase", {"amount": 19900}, at=e.now_ms)).status is APPLIED
            assert (await e.apply("o-1", "m-1", "purchase", {"amount": 29900}, at=e.now_ms)).status is CONFLICT
            assert (await e.apply("o-1", "m-1", "purchase", {"amount": 19900}, at=e.now_ms - 1)).status is CONFLICT
            assert (await e.apply("o-1", "m-1", "checkin")).status is CONFLICT
            assert await e.profile("m-1") == {"xp": "299", "pts": "299", "tier": "bronze"}
            assert (await e.apply("o-1", "m-1", "purchase", {"amount": 19900}, at=e.now_ms)).status is DUPLICATE

    asyncio.run(run())


def test_event_ids_are_per_member(engine) -> None:
    """The same event id for two members is two events: each is applied once."""

    async def run() -> None:
        async with engine() as e:
            for member in ("m-1", "m-2"):
                assert effects(await e.apply("o-1", member, "purchase", {"amount": 19900})) == FIRST_ORDER_EFFECTS
            assert await e.balance("m-1") == await e.balance("m-2") == 299

    asyncio.run(run())


def test_an_old_event_is_found_in_an_older_bucket(engine) -> None:
    """An event 10 days old (an earlier dedupe bucket) is still a duplicate when retried now."""

    async def run() -> None:
        async with engine() as e:
            at = e.now_ms - 10 * DAY_MS
            assert (await e.apply("o-old", "m-1", "invite", {"invitee": "m-9"}, at=at)).status is APPLIED
            assert (await e.apply("o-old", "m-1", "invite", {"invitee": "m-9"}, at=at,
                                  now_ms=e.now_ms + 3 * DAY_MS)).status is DUPLICATE
            assert await e.balance("m-1") == 300

    asyncio.run(run())


def test_300_concurrent_retries_apply_exactly_once(engine, open_engine, prefix) -> None:
    """300 simultaneous applies of one event id, over three clients: one applied, 299 duplicates, one award."""

    async def run() -> None:
        async with engine() as e, open_engine(prefix) as e2, open_engine(prefix) as e3:
            stores = [e, e2, e3]
            results = await asyncio.gather(
                *(stores[i % 3].apply("order-1", "m-42", "purchase", {"amount": 19900}) for i in range(300))
            )
            statuses = [r.status for r in results]
            assert statuses.count(APPLIED) == 1
            assert statuses.count(DUPLICATE) == 299
            applied = next(r for r in results if r.status is APPLIED)
            assert effects(applied) == FIRST_ORDER_EFFECTS
            assert await e.profile("m-42") == {"xp": "299", "pts": "299", "tier": "bronze"}
            assert await e.ledger("m-42") == [(199, 199), (100, 299)]
            assert await e.coupons("m-42") == ["free-shipping"]

    asyncio.run(run())


def test_300_concurrent_distinct_events_all_count(engine) -> None:
    """300 distinct invites at once: 300 x 300 points plus the invite quest's 500, which completes once."""

    async def run() -> None:
        async with engine() as e:
            results = await asyncio.gather(
                *(e.apply(f"inv-{i}", "m-7", "invite", {"invitee": f"f-{i}"}) for i in range(300))
            )
            assert all(r.status is APPLIED for r in results)
            completed = [d for r in results for t, d in effects(r) if t == "quest_completed"]
            assert completed == [{"quest": "invite_friends", "progress": 3, "target": 3}]
            assert await e.profile("m-7") == {"xp": "500", "pts": str(300 * 300 + 500), "tier": "bronze"}
            ledger = await e.ledger("m-7")
            assert len(ledger) == 301
            assert sum(d for d, _ in ledger) == ledger[-1][1] == 90_500

    asyncio.run(run())


def test_once_quest_completes_once_under_concurrency(engine) -> None:
    """50 first orders at once: first_order completes once and its coupon is granted once."""

    async def run() -> None:
        async with engine() as e:
            results = await asyncio.gather(
                *(e.apply(f"o-{i}", "m-5", "purchase", {"amount": 100}) for i in range(50))
            )
            kinds = [t for r in results for t, _ in effects(r)]
            assert kinds.count("quest_completed") == 1
            assert await e.coupons("m-5") == ["free-shipping"]
            # 50 x (1 XP + 1 point) plus the quest's 100 XP and 100 points
            assert await e.profile("m-5") == {"xp": "150", "pts": "150", "tier": "bronze"}
            again = await e.apply("o-late", "m-5", "purchase", {"amount": 100})
            assert [t for t, _ in effects(again)] == ["xp", "points", "quest_progress"]
            assert await e.coupons("m-5") == ["free-shipping"]

    asyncio.run(run())


def test_daily_cap_clamps_and_resets_next_local_day(engine, compile_toml) -> None:
    """A 100-point daily cap: 70, then 30 of 70, then nothing; the next local day grants 70 again."""

    async def run() -> None:
        program = compile_toml(CAPPED)
        async with engine(program_=program) as e:
            day2 = e.now_ms + DAY_MS
            grants = []
            for i, (cents, now) in enumerate([(70, e.now_ms), (70, e.now_ms), (5, e.now_ms), (70, day2), (40, day2)]):
                r = await e.apply(f"p-{i}", "m-1", "pay", {"cents": cents}, now_ms=now)
                assert r.status is APPLIED
                grants.append([d["amount"] for t, d in effects(r) if t == "points"])
            assert grants == [[70], [30], [], [70], [30]]
            assert await e.balance("m-1") == 200
            assert await e.ledger("m-1") == [(70, 70), (30, 100), (70, 170), (30, 200)]
            state = e.keys.member("m-1").state
            field = f"c:pay_points:{local_day(e.now_ms)}"
            assert int(await e.redis.hget(state, field)) == 100
            # the counter is forgotten a retention after its day ends (field expiry, real server time)
            day_end = int(datetime.fromtimestamp(e.now_ms / 1000, SHANGHAI).replace(hour=0).timestamp() * 1000) + DAY_MS
            assert await e.redis.execute_command("HPEXPIRETIME", state, "FIELDS", 1, field) == [day_end + RETENTION_MS]

    asyncio.run(run())


def test_a_grant_with_no_effect_still_dedupes(engine, compile_toml) -> None:
    """An event that earns nothing (cap used up) is applied with no effects, no feed entry, and remembered."""

    async def run() -> None:
        async with engine(program_=compile_toml(CAPPED)) as e:
            await e.apply("p-1", "m-1", "pay", {"cents": 500})
            feed = e.keys.member("m-1").feed
            assert await e.redis.xlen(feed) == 1
            assert await e.apply("p-2", "m-1", "pay", {"cents": 5}) == OpResult(APPLIED, [])
            assert await e.redis.xlen(feed) == 1
            assert (await e.apply("p-2", "m-1", "pay", {"cents": 5})).status is DUPLICATE
            assert (await e.apply("p-2", "m-1", "pay", {"cents": 6})).status is CONFLICT

    asyncio.run(run())


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(min_value=1, max_value=80), st.booleans()), min_size=1, max_size=12))
def test_cap_property(open_engine, compile_toml, events: list[tuple[int, bool]]) -> None:
    """Whatever the amounts, each local day grants min(sum of the day, cap), and the ledger agrees."""
    program = compile_toml(CAPPED)

    async def run() -> None:
        async with open_engine(program_=program) as e:
            for i, (cents, next_day) in enumerate(events):
                await e.apply(f"p-{i}", "m-1", "pay", {"cents": cents}, now_ms=e.now_ms + (DAY_MS if next_day else 0))
            day1 = sum(c for c, nd in events if not nd)
            day2 = sum(c for c, nd in events if nd)
            expected = min(day1, 100) + min(day2, 100)
            assert await e.balance("m-1") == expected
            assert sum(d for d, _ in await e.ledger("m-1")) == expected

    asyncio.run(run())


def test_daily_xp_cap_and_daily_quest_repeat_next_day(engine) -> None:
    """Shares: 2 XP each up to 10 a day, a spin of the wheel each up to 3 a day, 'share twice'
    completes once a day, and again the next day."""

    def spin(count: int) -> tuple[str, dict[str, object]]:
        return ("inventory", {"item": "lottery:daily", "amount": 1, "count": count})

    async def run() -> None:
        async with engine() as e:
            day2 = e.now_ms + DAY_MS
            day1_results = [await e.apply(f"s-{i}", "m-3", "share", {"target": "wechat"}) for i in range(6)]
            assert [effects(r) for r in day1_results] == [
                [("xp", {"amount": 2, "total": 2, "reason": "share_xp"}), spin(1),
                 ("quest_progress", {"quest": "daily_share", "progress": 1, "target": 2})],
                [("xp", {"amount": 2, "total": 4, "reason": "share_xp"}), spin(2),
                 ("quest_completed", {"quest": "daily_share", "progress": 2, "target": 2}),
                 ("xp", {"amount": 10, "total": 14, "reason": "quest:daily_share"})],
                [("xp", {"amount": 2, "total": 16, "reason": "share_xp"}), spin(3)],
                [("xp", {"amount": 2, "total": 18, "reason": "share_xp"})],
                [("xp", {"amount": 2, "total": 20, "reason": "share_xp"})],
                [],
            ]
            day2_results = [await e.apply(f"s2-{i}", "m-3", "share", now_ms=day2) for i in range(2)]
            assert [effects(r) for r in day2_results] == [
                [("xp", {"amount": 2, "total": 22, "reason": "share_xp"}), spin(4),
                 ("quest_progress", {"quest": "daily_share", "progress": 1, "target": 2})],
                [("xp", {"amount": 2, "total": 24, "reason": "share_xp"}), spin(5),
                 ("quest_completed", {"quest": "daily_share", "progress": 2, "target": 2}),
                 ("xp", {"amount": 10, "total": 34, "reason": "quest:daily_share"})],
            ]
            assert await e.xp("m-3") == 34
            assert await e.balance("m-3") == 0

    asyncio.run(run())


def test_tier_up_chain_and_multiplier(engine) -> None:
    """¥6000 lifts bronze past silver and gold, granting both rungs in order; later points are x1.25, then capped."""

    async def run() -> None:
        async with engine() as e:
            big = await e.apply("o-big", "m-9", "purchase", {"amount": 600_000})
            assert effects(big) == [
                ("xp", {"amount": 6000, "total": 6000, "reason": "purchase_xp"}),
                ("points", {"amount": 5000, "balance": 5000, "reason": "purchase_points"}),  # 6000 capped at 5000
                ("quest_completed", {"quest": "first_order", "progress": 1, "target": 1}),
                ("xp", {"amount": 100, "total": 6100, "reason": "quest:first_order"}),
                ("points", {"amount": 100, "balance": 5100, "reason": "quest:first_order"}),
                ("reward", {"kind": "coupon", "item": "free-shipping", "reason": "quest:first_order"}),
                ("quest_completed", {"quest": "weekly_spend", "progress": 30000, "target": 30000}),
                ("xp", {"amount": 300, "total": 6400, "reason": "quest:weekly_spend"}),
                ("reward", {"kind": "coupon", "item": "weekly-10", "reason": "quest:weekly_spend"}),
                ("tier_up", {"from": "bronze", "to": "silver"}),
                ("points", {"amount": 200, "balance": 5300, "reason": "tier:silver"}),
                ("reward", {"kind": "coupon", "item": "silver-welcome", "reason": "tier:silver"}),
                ("tier_up", {"from": "silver", "to": "gold"}),
                ("points", {"amount": 500, "balance": 5800, "reason": "tier:gold"}),
                ("reward", {"kind": "coupon", "item": "gold-welcome", "reason": "tier:gold"}),
                ("reward", {"kind": "coupon", "item": "free-shipping", "reason": "tier:gold"}),
            ]
            assert await e.profile("m-9") == {"xp": "6400", "pts": "5800", "tier": "gold"}
            assert await e.coupons("m-9") == ["free-shipping", "weekly-10", "silver-welcome", "gold-welcome",
                                              "free-shipping"]

            # gold multiplies rule points by 1.25 (floored): review 20 -> 25, photo bonus 30 -> 37;
            # the caps (60 and 90 a day) count multiplied points: the third review gets 10 and 16.
            points = []
            for i in range(3):
                r = await e.apply(f"rv-{i}", "m-9", "review", {"stars": 5, "has_photo": True})
                points.append([(d["reason"], d["amount"]) for t, d in effects(r) if t == "points"])
            assert points == [
                [("review_points", 25), ("photo_review_bonus", 37)],
                [("review_points", 25), ("photo_review_bonus", 37)],
                [("review_points", 10), ("photo_review_bonus", 16), ("quest:weekly_reviews", 100)],
            ]
            assert await e.balance("m-9") == 5800 + 62 + 62 + 26 + 100
            ledger = await e.ledger("m-9")
            assert sum(d for d, _ in ledger) == ledger[-1][1] == 6050

    asyncio.run(run())


LADDER = """
[program]
name = "ladder"

[events.act]

[rules.act_xp]
event = "act"
grant = "xp"
fixed = 10

[[tiers]]
id = "t0"
name = "T0"
xp = 0

[[tiers]]
id = "t1"
name = "T1"
xp = 10
rewards = { xp = 100 }

[[tiers]]
id = "t2"
name = "T2"
xp = 100
points_multiplier = 2.0
rewards = { points = 7 }

[[tiers]]
id = "t3"
name = "T3"
xp = 1000
"""


def test_tier_reward_xp_can_lift_further(engine, compile_toml) -> None:
    """A rung's reward XP counts toward the next rung: 10 XP reaches t1, whose 100 XP reaches t2."""

    async def run() -> None:
        async with engine(program_=compile_toml(LADDER)) as e:
            r = await e.apply("a-1", "m-1", "act")
            assert effects(r) == [
                ("xp", {"amount": 10, "total": 10, "reason": "act_xp"}),
                ("tier_up", {"from": "t0", "to": "t1"}),
                ("xp", {"amount": 100, "total": 110, "reason": "tier:t1"}),
                ("tier_up", {"from": "t1", "to": "t2"}),
                ("points", {"amount": 7, "balance": 7, "reason": "tier:t2"}),
            ]
            assert await e.profile("m-1") == {"xp": "110", "pts": "7", "tier": "t2"}

    asyncio.run(run())


def test_calls_survive_script_flush(engine) -> None:
    """After SCRIPT FLUSH, apply and apply_many reload member.lua (NOSCRIPT) and still apply exactly once."""

    async def run() -> None:
        async with engine() as e:
            sha = e.scripts.member.sha
            await e.redis.script_flush()
            assert await e.redis.script_exists(sha) == [False]
            single = await e.apply("o-1", "m-1", "purchase", {"amount": 19900})
            assert effects(single) == FIRST_ORDER_EFFECTS
            if not isinstance(e.redis, RedisCluster):  # on a cluster, loaded on the member's primary only
                assert await e.redis.script_exists(sha) == [True]

            await e.redis.script_flush()
            plans = [e.plan(f"c-{i}", f"m-{i}", "checkin") for i in range(2)] + [e.plan("o-1", "m-1", "purchase",
                                                                                       {"amount": 19900})]
            results = await e.store.apply_many(plans, e.program)
            assert [r.status for r in results] == [APPLIED, APPLIED, DUPLICATE]
            assert (await e.xp("m-0"), await e.balance("m-0")) == (5, 10)  # 5 XP, daily_checkin's 10 points
            assert (await e.xp("m-1"), await e.balance("m-1")) == (299 + 5, 299 + 10)

    asyncio.run(run())


def test_apply_many_same_id_twice_in_one_batch(engine) -> None:
    """One batch holding an id twice: applied, then duplicate (or conflict when the body differs)."""

    async def run() -> None:
        async with engine() as e:
            plans = [
                e.plan("o-1", "m-1", "purchase", {"amount": 19900}),
                e.plan("o-1", "m-1", "purchase", {"amount": 19900}),
                e.plan("o-1", "m-1", "purchase", {"amount": 100}),
                e.plan("o-2", "m-1", "login"),
            ]
            results = await e.store.apply_many(plans, e.program)
            assert [r.status for r in results] == [APPLIED, DUPLICATE, CONFLICT, APPLIED]
            assert effects(results[0]) == FIRST_ORDER_EFFECTS
            assert await e.profile("m-1") == {"xp": "300", "pts": "299", "tier": "bronze"}

    asyncio.run(run())


def test_feed_ids_match_the_stream(engine) -> None:
    """The ids returned with the effects are <entry>-<i> of the member's feed entries, in order, with their data."""

    async def run() -> None:
        async with engine() as e:
            results = [
                await e.apply("o-1", "m-1", "purchase", {"amount": 19900}),
                await e.apply("c-1", "m-1", "checkin"),
            ]
            returned = [(x["id"], x["type"], x["data"]) for r in results for x in r.effects]
            stream = await e.redis.xrange(e.keys.member("m-1").feed)
            assert [f[b"e"] for _, f in stream] == [b"o-1", b"c-1"]
            stored = [
                (f"{i.decode()}-{n}", kind, data)
                for i, f in stream
                for n, (kind, data) in enumerate(msgpack.unpackb(f[b"d"], raw=False))
            ]
            assert stored == returned
            assert len(returned) == 7 + 3  # check-in: 5 XP, daily_checkin completed, its 10 points

    asyncio.run(run())


def test_publish_reaches_a_subscriber(engine, redis_url) -> None:
    """A subscriber of the member's channel receives the award's feed ids, effects and event id."""

    async def run() -> None:
        async with engine() as e:
            listener = await client_from_url(redis_url).initialize()  # a cluster's pub/sub routes by its slot map
            pubsub = listener.pubsub()
            try:
                await pubsub.ssubscribe(e.keys.member("m-1").channel)  # sharded: the member script SPUBLISHes
                # A cluster's pub/sub reads sharded messages apart; one server's, with the rest.
                receive = getattr(pubsub, "get_sharded_message", pubsub.get_message)
                confirm = await asyncio.wait_for(receive(timeout=5), 5)
                assert confirm["type"] == "ssubscribe"
                result = await e.apply("o-1", "m-1", "purchase", {"amount": 19900})

                async def next_message() -> dict[str, Any]:
                    while True:
                        message = await receive(ignore_subscribe_messages=True, timeout=5)
                        if message is not None:
                            return message

                message = await asyncio.wait_for(next_message(), 5)
                entry_id, event_id, sent_effects = msgpack.unpackb(message["data"], raw=False)
                assert event_id == "o-1"
                assert [f"{entry_id}-{n}" for n in range(len(sent_effects))] == [x["id"] for x in result.effects]
                sent = [(kind, _without_coupon_id(data) if kind == "reward" else data) for kind, data in sent_effects]
                assert sent == FIRST_ORDER_EFFECTS
            finally:
                await pubsub.aclose()
                await listener.aclose()

    asyncio.run(run())


def test_duplicate_survives_a_server_crash(open_engine, tmp_path: Path) -> None:
    """Apply, SIGKILL the server, restart it on the same AOF: the retry is a duplicate, the balance unchanged."""
    from realtime.embedded import EmbeddedValkey

    prefix = "crash"
    servers = []

    async def apply_once(url: str) -> tuple[OpResult, int]:
        async with open_engine(prefix, url=url) as e:
            result = await e.apply("o-1", "m-1", "purchase", {"amount": 19900})
            return result, await e.balance("m-1")

    try:
        first = EmbeddedValkey(tmp_path)
        servers.append(first)
        first.start()
        result, balance = asyncio.run(apply_once(first.url))
        assert (result.status, balance) == (APPLIED, 299)
        first.kill()

        second = EmbeddedValkey(tmp_path)
        servers.append(second)
        second.start()
        result, balance = asyncio.run(apply_once(second.url))
        assert (result.status, balance) == (DUPLICATE, 299)
    finally:
        for server in servers:
            if server.pid is not None:
                server.stop()


def test_award_keys_are_the_members_keys(engine) -> None:
    """member_call names exactly the member's keys from keys.py (profile, state, ledger, feed, coupons, lots, dedupe, channel)."""
    from engine.awards import plan_award
    from engine.events import parse_event

    async def run() -> None:
        async with engine() as e:
            event = parse_event({"id": "o-1", "member": "m-7", "type": "checkin"}, e.program, e.now_ms)
            plan = plan_award(e.program, event, e.now_ms)
            keys, args = member_call(e.keys, plan, e.program)
            mk = e.keys.member("m-7")
            own = plan.dedupe_bucket
            assert keys[:8] == [mk.profile, mk.state, mk.ledger, mk.feed, mk.coupons, mk.lots, mk.records(own), mk.dedupe(own)]
            assert sorted(keys[7:]) == sorted(mk.dedupe(b) for b in plan.lookup_buckets)
            assert args[2] == mk.channel
            # A refund also names, last, every grant-record bucket its original could be in.
            refund = parse_event(
                {"id": "r-1", "member": "m-7", "type": "refund", "data": {"of": "o-1"}}, e.program, e.now_ms
            )
            plan = plan_award(e.program, refund, e.now_ms)
            keys, _ = member_call(e.keys, plan, e.program)
            assert len(plan.record_buckets) >= e.program.refund_window_ms // DEDUPE_BUCKET_MS
            assert keys[-len(plan.record_buckets) :] == [mk.records(b) for b in plan.record_buckets]

    asyncio.run(run())


QUESTED = """
[program]
name = "quested"
timezone = "Asia/Shanghai"

[events.pay]
fields.cents = {{ type = "int", min = 1 }}

[[tiers]]
id = "base"
name = "Base"
xp = 0

[quests.five_orders]
title = "Five orders"
kind = "{kind}"
event = "pay"
target = {target}
rewards = {{ points = 50 }}
"""


def quested(compile_toml, target: int, kind: str = "once") -> Any:
    return compile_toml(QUESTED.format(target=target, kind=kind))


def quest_effects(result: OpResult) -> list[str]:
    return [t for t, _ in effects(result) if t.startswith("quest")]


def test_a_lowered_target_completes_a_quest_on_the_next_event(engine, compile_toml) -> None:
    """A member at 3/5 whose quest is lowered to 2 completes it (once) on the next matching event."""

    async def run() -> None:
        async with engine() as e:
            five, two = quested(compile_toml, 5), quested(compile_toml, 2)
            for i in range(3):
                await e.apply(f"p-{i}", "m-1", "pay", {"cents": 1}, program=five)
            done = await e.apply("p-3", "m-1", "pay", {"cents": 1}, program=two)
            assert quest_effects(done) == ["quest_completed"]
            assert await e.balance("m-1") == 50
            later = await e.apply("p-4", "m-1", "pay", {"cents": 1}, program=two)
            assert quest_effects(later) == []
            assert await e.balance("m-1") == 50

    asyncio.run(run())


def test_a_raised_target_never_rewards_a_completed_quest_twice(engine, compile_toml) -> None:
    """Completed at 2, then the target is raised to 3: no second reward in the same period."""

    async def run() -> None:
        async with engine() as e:
            two, three = quested(compile_toml, 2), quested(compile_toml, 3)
            results = [await e.apply(f"p-{i}", "m-1", "pay", {"cents": 1}, program=two) for i in range(2)]
            assert quest_effects(results[-1]) == ["quest_completed"]
            for i in range(2, 5):
                assert quest_effects(await e.apply(f"p-{i}", "m-1", "pay", {"cents": 1}, program=three)) == []
            assert await e.balance("m-1") == 50
            assert await e.ledger("m-1") == [(50, 50)]

    asyncio.run(run())


def test_a_duplicate_of_a_trimmed_award_names_it_without_effects(engine) -> None:
    """Once the feed no longer keeps the original entry, a duplicate still names it (no effects)."""

    async def run() -> None:
        async with engine() as e:
            first = await e.apply("o-1", "m-1", "purchase", {"amount": 19900})
            entry = first.effects[0]["id"].rsplit("-", 1)[0]
            await e.redis.xtrim(e.keys.member("m-1").feed, maxlen=0)
            assert await e.apply("o-1", "m-1", "purchase", {"amount": 19900}) == OpResult(DUPLICATE, [], original=entry)

    asyncio.run(run())


def day_end_ms(ms: int) -> int:
    local = datetime.fromtimestamp(ms / 1000, SHANGHAI)
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000) + DAY_MS


def test_dedupe_bucket_outlives_its_events_and_never_expires_earlier(engine, compile_toml) -> None:
    """A bucket expires no sooner than the event's `at` plus the retention, and a later write under
    a shorter retention never brings its expiry forward."""

    async def run() -> None:
        async with engine() as e:
            plan = e.plan("o-1", "m-1", "purchase", {"amount": 100}, at=e.now_ms)
            await e.store.apply(plan, e.program)
            bucket = e.keys.member("m-1").dedupe(plan.dedupe_bucket)
            expiry = await e.redis.pexpiretime(bucket)
            assert expiry >= e.now_ms + RETENTION_MS
            assert expiry >= (plan.dedupe_bucket + 1) * DEDUPE_BUCKET_MS + RETENTION_MS
            short = compile_toml(CAPPED.replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\ndedupe_retention_days = 7'))
            await e.apply("p-1", "m-1", "pay", {"cents": 1}, at=e.now_ms, program=short)
            assert await e.redis.pexpiretime(bucket) == expiry
            long = compile_toml(CAPPED.replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\ndedupe_retention_days = 30'))
            await e.apply("p-2", "m-1", "pay", {"cents": 1}, at=e.now_ms, program=long)
            assert await e.redis.pexpiretime(bucket) >= e.now_ms + 30 * DAY_MS

    asyncio.run(run())


def test_quest_fields_expire_with_their_period_and_once_quests_never(engine, compile_toml) -> None:
    """A daily quest's progress and completion marker expire a retention after the local day ends;
    a once quest's never expire; a later write keeps the expiry."""

    async def run() -> None:
        async with engine() as e:
            daily, once = quested(compile_toml, 1, "daily"), quested(compile_toml, 1, "once")
            await e.apply("p-1", "m-1", "pay", {"cents": 1}, program=daily)
            state = e.keys.member("m-1").state
            day = local_day(e.now_ms)
            fields = [f"q:five_orders:{day}", f"dq:five_orders:{day}"]
            expected = day_end_ms(e.now_ms) + RETENTION_MS
            assert await e.redis.execute_command("HPEXPIRETIME", state, "FIELDS", 2, *fields) == [expected, expected]
            # a later write of the day keeps the field's expiry (a plain HSET would drop it)
            await e.apply("p-3", "m-1", "pay", {"cents": 1}, program=daily)
            assert int(await e.redis.hget(state, fields[0])) == 2
            assert await e.redis.execute_command("HPEXPIRETIME", state, "FIELDS", 2, *fields) == [expected, expected]
            await e.apply("p-2", "m-2", "pay", {"cents": 1}, program=once)
            state2 = e.keys.member("m-2").state
            once_fields = ["q:five_orders:all", "dq:five_orders:all"]
            assert await e.redis.execute_command("HPEXPIRETIME", state2, "FIELDS", 2, *once_fields) == [-1, -1]

    asyncio.run(run())


def test_every_duplicate_replays_its_own_award(engine) -> None:
    """A batch of one member's events (several in one millisecond, so entry seqs above 0) and a
    back-dated one: each retry replays exactly its own original effects."""

    async def run() -> None:
        async with engine() as e:
            plans = [e.plan(f"o-{i}", "m-1", "purchase", {"amount": 100}) for i in range(20)]
            plans.append(e.plan("old-1", "m-1", "purchase", {"amount": 500}, at=e.now_ms - 10 * DAY_MS))
            first = await e.store.apply_many(plans, e.program)
            assert all(r.status is APPLIED for r in first)
            assert any(not r.effects[0]["id"].split("-")[1] == "0" for r in first)  # seq > 0 happened
            again = await e.store.apply_many(plans, e.program)
            for original, retry in zip(first, again):
                assert retry == OpResult(DUPLICATE, original.effects, original=original.effects[0]["id"].rsplit("-", 1)[0])

    asyncio.run(run())


def test_a_write_no_replica_confirms_is_a_failure_and_its_retry_a_duplicate(engine, redis_url) -> None:
    """With wait_replicas=1 on a server that has none, the call fails with NotReplicated once WAIT
    times out, though the primary applied it: the retry by id answers duplicate with the same effects."""
    from engine.pipelining import NotReplicated

    async def run() -> None:
        async with engine(wait_replicas=1) as waiting, engine() as plain:
            with pytest.raises(NotReplicated):
                await waiting.apply("o-1", "m-1", "purchase", {"amount": 19900})
            retried = await plain.apply("o-1", "m-1", "purchase", {"amount": 19900})
            assert retried.status is DUPLICATE and effects(retried) == FIRST_ORDER_EFFECTS

    if on_cluster(redis_url):
        pytest.skip("a local cluster's primaries have replicas: WAIT is answered")
    asyncio.run(run())
