"""KPIs from counters the operations maintain (``engine/kpis.py``), on the real server: what the
operations' effects add up to, a day at a time, and a read whose cost does not grow with the
members (100,000 of them, counted by the server's own command statistics)."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from engine import kpis
from engine.clock import DAY_MS
from engine.kpis import KpiRecorder
from engine.operations import Operation


class _Plan(NamedTuple):  # what the recorder reads of a plan: its operation
    op: Operation
    event: str = ""


def test_the_operations_effects_add_up_a_day_at_a_time(engine: Any) -> None:
    """Purchases by two members (one twice), a spend and a game step: two active, two buyers,
    the points issued and spent as their effects say, one player of the game; the engine's own
    operations (ids rk:...) are no activity."""

    async def run() -> None:
        async with engine() as e:
            recorder = KpiRecorder(e.pipeline, e.keys, {"prize": "lottery"})
            e.store.kpis = recorder
            await e.apply("o-1", "m-1", "purchase", {"amount": 1000})
            await e.apply("o-2", "m-1", "purchase", {"amount": 2000})
            await e.apply("o-3", "m-2", "purchase", {"amount": 500})
            recorder.record(_Plan(Operation("s-1", "m-2", e.now_ms, b"")), e.program,  # type: ignore[arg-type]
                            [{"type": "points", "data": {"amount": -3}}, {"type": "prize", "data": {}}])
            recorder.record(_Plan(Operation("rk:expire:m-3:1", "m-3", e.now_ms, b"")), e.program,  # type: ignore[arg-type]
                            [{"type": "points_expired", "data": {"amount": 7}}])
            await recorder.flush()
            day = e.program.calendar.day(e.now_ms)[0]
            figures = await kpis.read_day(e.redis, e.keys, day, ["lottery"])
            issued = await e.balance("m-1") + await e.balance("m-2")
            assert (figures["active"], figures["buyers"], figures["games"]) == (2, 2, {"lottery": 1})
            assert (figures["points_issued"], figures["points_spent"], figures["points_expired"]) == (issued, 3, 7)
            assert await kpis.outstanding(e.redis, e.keys) == issued - 3 - 7
            before, again = await kpis.members_between(e.redis, e.keys, "active", [day], [day])
            assert (before, again) == (2, 2)

    asyncio.run(run())


def test_reading_a_days_figures_costs_the_same_for_1000_or_100000_members(engine: Any) -> None:
    """The commands one day's read sends (the server's statistics) are the same with a hundred
    times the members; the count of them is an estimate within 2%."""

    async def run() -> None:
        async with engine() as e:
            recorder = KpiRecorder(e.pipeline, e.keys)
            day = e.program.calendar.day(e.now_ms)[0]

            async def add(first: int, last: int) -> None:
                for m in range(first, last):
                    recorder.record(_Plan(Operation(f"o-{m}", f"m-{m}", e.now_ms, b""), "purchase"),  # type: ignore[arg-type]
                                    e.program, [{"type": "points", "data": {"amount": 1}}], "purchase")
                await recorder.flush()

            async def read_cost() -> tuple[int, dict[str, Any]]:
                await e.redis.config_resetstat()
                figures = await kpis.read_day(e.redis, e.keys, day, [])
                stats = await e.redis.info("commandstats")
                return sum(int(v["calls"]) for k, v in stats.items() if not k.startswith(("cmdstat_config", "cmdstat_info"))), figures

            await add(0, 1_000)
            small_cost, small = await read_cost()
            await add(1_000, 100_000)
            large_cost, large = await read_cost()
            assert small_cost == large_cost == kpis.SHARDS * 3
            assert abs(small["active"] - 1_000) <= 20 and abs(large["active"] - 100_000) <= 2_000
            assert large["points_issued"] == 100_000  # counters are exact

    asyncio.run(run())


def test_a_day_is_the_operations_own(engine: Any) -> None:
    """An operation dated yesterday counts on yesterday (a moved clock, a late event)."""

    async def run() -> None:
        async with engine() as e:
            recorder = KpiRecorder(e.pipeline, e.keys)
            recorder.record(_Plan(Operation("o-1", "m-1", e.now_ms - DAY_MS, b"")), e.program, [])  # type: ignore[arg-type]
            await recorder.flush()
            yesterday = e.program.calendar.day(e.now_ms - DAY_MS)[0]
            today = e.program.calendar.day(e.now_ms)[0]
            assert (await kpis.read_day(e.redis, e.keys, yesterday, []))["active"] == 1
            assert (await kpis.read_day(e.redis, e.keys, today, []))["active"] == 0

    asyncio.run(run())
