"""The points ledger: the balance is the sum of the entries, and verify() finds any member where it is not."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ledger import PAGE, Mismatch, verify
from engine.store import OpStatus

DAY_MS = 86_400_000


def test_verify_is_ok_on_real_data(engine) -> None:
    """After real awards to three members, verify counts them and their entries and finds nothing wrong."""

    async def run() -> None:
        async with engine() as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 19900})  # 2 entries: 199, quest 100
            await e.apply("i-1", "m-2", "invite", {"invitee": "f-1"})  # 1 entry: 300
            await e.apply("s-1", "m-3", "share")  # XP only: no entry
            report = await verify(e.redis, e.keys)
            assert (report.members, report.entries, report.mismatches, report.ok) == (3, 3, [], True)

    asyncio.run(run())


def test_verify_of_an_empty_prefix(engine) -> None:
    """No members: nothing to check, and that is ok."""

    async def run() -> None:
        async with engine() as e:
            report = await verify(e.redis, e.keys)
            assert (report.members, report.entries, report.ok) == (0, 0, True)

    asyncio.run(run())


def test_tampered_balance_is_reported_for_that_member_only(engine) -> None:
    """HINCRBY of one member's pts: verify names exactly that member with both numbers."""

    async def run() -> None:
        async with engine() as e:
            for member in ("m-1", "m-2", "m-3"):
                await e.apply("o-1", member, "purchase", {"amount": 19900})
            await e.redis.hincrby(e.keys.member("m-2").profile, "pts", 50)
            report = await verify(e.redis, e.keys)
            assert report.ok is False
            assert report.mismatches == [Mismatch("m-2", 349, 299, "balance 349 differs from the sum of its lots (299)")]
            assert (report.members, report.entries) == (3, 6)

    asyncio.run(run())


def test_wrong_ledger_entry_is_reported(engine) -> None:
    """An entry whose recorded running balance does not follow is named by its id."""

    async def run() -> None:
        async with engine() as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 19900})
            await e.apply("o-1", "m-2", "purchase", {"amount": 19900})
            ledger = e.keys.member("m-1").ledger
            bad_id = (await e.redis.xadd(ledger, {"d": 5, "b": 999, "r": "forged", "e": "x"})).decode()
            report = await verify(e.redis, e.keys)
            assert report.mismatches == [
                Mismatch("m-1", 299, 304, f"entry {bad_id} records balance 999; entries sum to 304")
            ]

    asyncio.run(run())


def test_doubled_award_is_reported(engine) -> None:
    """The same event granting points twice for the same reason (consistent sums) is still reported."""

    async def run() -> None:
        async with engine() as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 19900})
            mk = e.keys.member("m-1")
            await e.redis.xadd(mk.ledger, {"d": 199, "b": 498, "r": "purchase_points", "e": "o-1"})
            await e.redis.hset(mk.profile, "pts", 498)
            report = await verify(e.redis, e.keys)
            assert report.mismatches == [
                Mismatch("m-1", 498, 498, "operation o-1 granted points twice for purchase_points")
            ]

    asyncio.run(run())


def test_entry_missing_from_the_ledger_is_reported(engine) -> None:
    """Deleting a ledger entry (a lost write) leaves the balance above the sum: reported."""

    async def run() -> None:
        async with engine() as e:
            await e.apply("o-1", "m-1", "purchase", {"amount": 19900})
            ledger = e.keys.member("m-1").ledger
            first_id = (await e.redis.xrange(ledger, count=1))[0][0]
            await e.redis.xdel(ledger, first_id)
            report = await verify(e.redis, e.keys)
            assert [(m.member, m.balance, m.ledger_sum) for m in report.mismatches] == [("m-1", 299, 100)]

    asyncio.run(run())


def test_verify_reads_long_ledgers_in_pages(engine) -> None:
    """A ledger longer than one page (1,000) is read in full: 1,001 invites and the quest reward."""

    async def run() -> None:
        async with engine() as e:
            count = PAGE + 1
            plans = [e.plan(f"i-{i}", "m-1", "invite", {"invitee": f"f-{i}"}) for i in range(count)]
            results = await e.store.apply_many(plans, e.program)
            assert all(not isinstance(r, Exception) for r in results)
            report = await verify(e.redis, e.keys)
            assert (report.members, report.entries, report.ok) == (1, count + 1, True)
            assert await e.balance("m-1") == count * 300 + 500
            # a forged delta at the very end of the second page is still seen
            await e.redis.xadd(e.keys.member("m-1").ledger, {"d": 1, "b": count * 300 + 501, "r": "x", "e": "x"})
            report = await verify(e.redis, e.keys)
            assert [(m.balance, m.ledger_sum) for m in report.mismatches] == [(count * 300 + 500, count * 300 + 501)]

    asyncio.run(run())


EVENTS = st.one_of(
    st.builds(lambda a: ("purchase", {"amount": a}), st.integers(min_value=1, max_value=2_000_000)),
    st.builds(lambda p: ("review", {"stars": 3, "has_photo": p}), st.booleans()),
    st.just(("invite", {"invitee": "f"})),
    st.just(("checkin", {})),
    st.just(("share", {})),
)


@settings(max_examples=25, deadline=None, database=None)
@given(st.lists(st.tuples(EVENTS, st.integers(min_value=0, max_value=2), st.booleans()), min_size=1, max_size=15))
def test_balance_is_the_sum_of_ledger_deltas(open_engine, events) -> None:
    """Any sequence of events (some retried, over three days): balance = sum of deltas = last running balance."""

    async def run() -> None:
        async with open_engine() as e:
            granted = 0
            for i, ((type_, data), day, retry) in enumerate(events):
                now = e.now_ms + day * DAY_MS
                for _ in range(2 if retry else 1):
                    result = await e.apply(f"e-{i}", "m-1", type_, data, now_ms=now)
                    if result.status is OpStatus.APPLIED:  # a duplicate replays, never grants
                        granted += sum(x["data"]["amount"] for x in result.effects if x["type"] == "points")
            ledger = await e.ledger("m-1")
            balance = await e.balance("m-1")
            assert balance == granted == sum(d for d, _ in ledger)
            running = 0
            for delta, after in ledger:
                running += delta
                assert after == running
            assert all(delta > 0 for delta, _ in ledger)
            report = await verify(e.redis, e.keys)
            assert report.ok

    asyncio.run(run())


def test_the_ledger_is_trimmed_after_the_audit_period_and_still_verifies(engine) -> None:
    """A ledger aged past the audit period (400 days in the example) is trimmed by the next
    entry; what is left opens at its oldest entry's balance and still proves the balance."""

    async def run() -> None:
        async with engine() as e:
            mk = e.keys.member("m-1")
            seconds, _ = await e.redis.time()
            old_ms = (seconds - 500 * 86_400) * 1000  # 500 days ago, by the server's clock
            # An aged history: 300 grants of 10 points, written as the script writes them.
            for i in range(300):
                await e.redis.xadd(mk.ledger, {"k": "g", "d": 10, "b": 10 * (i + 1), "r": "old", "e": f"o-{i}"}, id=f"{old_ms + i}-0")
            await e.redis.hset(mk.profile, mapping={"pts": 3000, "xp": 0})
            await e.redis.hset(mk.lots, "0", 3000)
            assert (await verify(e.redis, e.keys)).ok
            await e.apply("i-1", "m-1", "invite", {"invitee": "f-1"})
            kept = await e.redis.xlen(mk.ledger)
            assert kept < 300  # whole stream nodes older than the horizon are gone
            report = await verify(e.redis, e.keys)
            assert report.ok, report.mismatches
            assert report.entries == kept
            # A trimmed ledger is still checked from its first kept entry on.
            last_id = (await e.redis.xrevrange(mk.ledger, count=1))[0][0]
            await e.redis.xdel(mk.ledger, last_id)
            assert not (await verify(e.redis, e.keys)).ok

    asyncio.run(run())


def test_an_entry_deleted_by_hand_is_not_taken_for_a_trim(engine) -> None:
    """Deleting the first entries of a young ledger looks like a trim but is not one: reported."""

    async def run() -> None:
        async with engine() as e:
            for i in range(3):
                await e.apply(f"i-{i}", "m-1", "invite", {"invitee": f"f-{i}"})
            ledger = e.keys.member("m-1").ledger
            first_id = (await e.redis.xrange(ledger, count=1))[0][0]
            await e.redis.xdel(ledger, first_id)
            assert not (await verify(e.redis, e.keys)).ok

    asyncio.run(run())
