"""Every invariant the engine promises, checked from Redis alone (``rekindle verify``).

After a rehearsal, a crash drill or a migration, ops need one answer: was anything lost, doubled
or oversold? Each check reads what the scripts wrote and nothing else (no log, no load tool's
own counts), so it also holds for data written by another process, version or host:

- points: each member's balance equals the sum of its lots and of its ledger (``engine.ledger``);
- operations applied once: no operation granted points twice for the same reason;
- stock: no catalog item has more units reserved or delivered than its stock;
- redemptions: the units an item counts as taken equal the coupons members hold from
  redeeming it plus the redemptions still pending in its outbox (nothing lost, nothing doubled);
- outboxes drained: no redemption pending longer than the sweep's grace (a crash not yet
  finished, or a sweep that is not running).

Games add their own (card conservation, bargain sums) beside these. It walks members with SCAN,
so it is an offline tool: never point it at a hot path's schedule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack
from redis.asyncio import Redis

from engine.clock import SystemClock
from engine.config import CompiledProgram
from engine.keys import Keys
from engine.ledger import members_of, server_ms, verify_member
from engine.programs import ProgramRegistry
from engine.redemptions import catalog_keys

#: A redemption pending longer than this is reported: the service's sweep finishes crashed ones
#: within its grace (30 s by default) and interval.
OUTBOX_OVERDUE_MS = 5 * 60_000
#: Breaches listed per check (the count is always whole).
SHOWN = 20


@dataclass
class Check:
    name: str
    checked: int = 0
    breaches: int = 0
    details: list[str] = field(default_factory=list)

    def breach(self, detail: str) -> None:
        self.breaches += 1
        if len(self.details) < SHOWN:
            self.details.append(detail)


@dataclass
class Report:
    checks: list[Check]
    members: int
    entries: int

    @property
    def ok(self) -> bool:
        return all(c.breaches == 0 for c in self.checks)

    def table(self) -> str:
        rows = [("check", "checked", "breaches")] + [(c.name, f"{c.checked:,}", f"{c.breaches:,}") for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = []
        for n, (name, checked, breaches) in enumerate(rows):
            lines.append(f"| {name.ljust(widths[0])} | {checked.rjust(widths[1])} | {breaches.rjust(widths[2])} |")
            if n == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


Progress = Callable[[int], None]


async def verify_all(redis: Redis, keys: Keys, progress: Progress | None = None) -> Report:
    """Run every check; ``progress`` is told how many members have been read so far."""
    now_ms = await server_ms(redis)
    points = Check("points: balance = lots = ledger")
    once = Check("operations applied once")
    redeemed: Counter[str] = Counter()  # coupons held from redeeming each item
    members = entries = 0
    async for member in members_of(redis, keys):
        members += 1
        count, mismatch = await verify_member(redis, keys, member, now_ms)
        entries += count
        points.checked += 1
        once.checked += count
        if mismatch is not None:
            target = once if "twice" in mismatch.detail else points
            target.breach(f"member {member}: {mismatch.detail} (balance {mismatch.balance}, ledger {mismatch.ledger_sum})")
        for raw in await redis.hvals(keys.member(member).coupons):
            record = msgpack.unpackb(raw, raw=False)
            if record[2] == "redeem":
                redeemed[record[0]] += 1
        if progress is not None and members % 1000 == 0:
            progress(members)
    if progress is not None:
        progress(members)
    checks = [points, once, *await _catalog_checks(redis, keys, redeemed, now_ms)]
    return Report(checks, members, entries)


async def _catalog_checks(redis: Redis, keys: Keys, redeemed: Counter[str], now_ms: int) -> list[Check]:
    stock = Check("catalog stock not exceeded")
    delivered = Check("units taken = coupons redeemed + pending")
    drained = Check("redemption outboxes drained")
    program = await _active_program(redis, keys)
    items = set(redeemed)
    if program is not None:
        items |= {i for i, c in program.model.catalog.items() if c.points_cost is not None}
    for item in sorted(items):
        sold_key, outbox, by_time = catalog_keys(keys, item)[:3]
        pipe = redis.pipeline(transaction=True)
        pipe.get(sold_key)
        pipe.hlen(outbox)
        pipe.zcount(by_time, "-inf", now_ms - OUTBOX_OVERDUE_MS)
        sold_raw, pending, overdue = await pipe.execute()
        sold = int(sold_raw or 0)
        limit = program.model.catalog[item].stock if program is not None and item in program.model.catalog else None
        stock.checked += 1
        if limit is not None and sold > limit:
            stock.breach(f"item {item}: {sold} units taken, stock {limit}")
        delivered.checked += 1
        if sold != redeemed[item] + pending:
            delivered.breach(f"item {item}: {sold} units taken, {redeemed[item]} coupons redeemed, {pending} pending")
        drained.checked += 1
        if overdue:
            drained.breach(f"item {item}: {overdue} redemptions pending over {OUTBOX_OVERDUE_MS // 60_000} min")
    return [stock, delivered, drained]


async def _active_program(redis: Redis, keys: Keys) -> CompiledProgram | None:
    registry = ProgramRegistry(redis, keys, SystemClock())
    if not await registry.refresh():
        return None  # no programme was ever activated under this prefix
    return registry.current.program
