"""Every invariant the engine promises, checked from Redis alone (``rekindle verify``).

After a rehearsal, a crash drill or a migration, ops need one answer: was anything lost, doubled
or oversold? Each check reads what the scripts wrote and nothing else (no log, no load tool's
own counts), so it also holds for data written by another process, version or host:

- points: each member's balance equals the sum of its lots and of its ledger (``engine.ledger``);
- operations applied once: no operation granted points twice for the same reason;
- objects: every count an object of the cross-slot seam keeps (a catalog item's units sold, a
  member's units held) equals its settled part plus what its pending entries hold (nothing
  lost, nothing doubled between the slots, for catalog items and every game alike);
- stock: no catalog item has more units reserved or delivered than its stock;
- games' own invariants: each game's checks of its objects (a flash sale never oversold...);
- entries finished: no cross-slot entry pending longer than the scheduler takes to finish one (a
  crash not yet finished, or no scheduler running);
- no job given up: the scheduler's dead lists are empty (a job there waits for an operator).

Games add their own (card conservation, bargain sums) beside these. It walks members with SCAN,
so it is an offline tool: never point it at a hot path's schedule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis

from engine.clock import SystemClock
from engine.config import CompiledProgram
from engine.ids import MemberId
from engine.keys import DEDUPE_BUCKET_MS, Keys
from engine.operations import id_digest
from engine.ledger import members_of, server_ms, verify_member
from engine.programs import ProgramRegistry
from engine.crossing import EntryState, entry_record
from engine.jobs import SHARDS, dead_key
from engine.plugins import installed
from engine.redeem import CATALOG

#: An entry pending longer than this is reported: the scheduler finishes one a crash left within
#: the grace (30 s by default) and a tick.
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
    items = Check("inventory: no count below zero")
    totals: Counter[str] = Counter()  # every counted item over all members, for the games' audits
    members = entries = 0
    async for member in members_of(redis, keys):
        members += 1
        count, mismatch = await verify_member(redis, keys, member, now_ms)
        entries += count
        points.checked += 1
        once.checked += count
        async for field_name, value in redis.hscan_iter(keys.member(member).state, match="i:*", count=100):
            items.checked += 1
            totals[_text(field_name)] += int(value)
            if int(value) < 0:
                items.breach(f"member {member}: {_text(field_name)[2:]} is {int(value)}")
        if mismatch is not None:
            target = once if "twice" in mismatch.detail else points
            target.breach(f"member {member}: {mismatch.detail} (balance {mismatch.balance}, ledger {mismatch.ledger_sum})")
        if progress is not None and members % 1000 == 0:
            progress(members)
    if progress is not None:
        progress(members)
    checks = [points, once, items, *await _object_checks(redis, keys, now_ms), await _audits(redis, keys, totals),
              await _dead_jobs(redis, keys)]
    return Report(checks, members, entries)


async def _object_checks(redis: Redis, keys: Keys, now_ms: int) -> list[Check]:
    counts = Check("objects: counts = settled + pending")
    stock = Check("catalog stock not exceeded")
    games = Check("games' own invariants")
    checks = {kind: game.verify for game in installed() if game.verify is not None for kind in game.objects}
    finished = Check("cross-slot entries finished")
    program = await _active_program(redis, keys)
    objects: set[str] = set()
    async for key in redis.scan_iter(match=f"{keys.prefix}:{{*}}:n", count=1000):
        objects.add(_text(key)[: -len(":n")])
    if program is not None:  # an item never redeemed still has its stock checked
        objects |= {keys.object(CATALOG, i) for i, c in program.model.catalog.items() if c.points_cost is not None}
    for tag in sorted(objects):
        pipe = redis.pipeline(transaction=True)
        pipe.hgetall(f"{tag}:n")
        pipe.hgetall(f"{tag}:e")
        raw_counts, raw_entries = await pipe.execute()
        counters = {_text(k): int(v) for k, v in raw_counts.items()}
        pending: Counter[str] = Counter()
        for entry, raw in raw_entries.items():
            name = _text(entry)
            state, at_ms, undo = entry_record(raw)
            if state is not EntryState.PENDING:
                continue
            for field_name, delta in zip(undo[::2], undo[1::2]):
                pending[field_name] += int(delta)
            finished.checked += 1
            if at_ms < now_ms - OUTBOX_OVERDUE_MS:
                finished.breach(f"{tag}: entry {name} pending since {at_ms} ({(now_ms - at_ms) // 60_000} min)")
        for name, value in counters.items():
            if name.startswith(("s:", "#")):
                continue
            counts.checked += 1
            expected = counters.get(f"s:{name}", 0) + pending[name]
            if value != expected:
                counts.breach(f"{tag}: {name} is {value}, settled {counters.get(f's:{name}', 0)} + pending {pending[name]}")
        kind, _, object_id = tag[len(keys.prefix) + 2 : -1].partition(":")
        if kind == CATALOG:
            limit = _stock(program, object_id)
            stock.checked += 1
            if limit is not None and counters.get("sold", 0) > limit:
                stock.breach(f"item {object_id}: {counters['sold']} units taken, stock {limit}")
        elif kind in checks:
            games.checked += 1
            for breach in checks[kind](program, kind, object_id, counters):  # type: ignore[misc]
                games.breach(f"{kind}:{object_id}: {breach}")
    return [counts, stock, games, finished]


async def _audits(redis: Redis, keys: Keys, totals: Counter[str]) -> Check:
    check = Check("games' conservation across members")
    program = await _active_program(redis, keys)
    for game in installed():
        if game.audit is not None:
            check.checked += 1
            for breach in await game.audit(redis, keys, program, totals):
                check.breach(f"{game.name}: {breach}")
    return check


async def step_applied(redis: Redis, keys: Keys, member: str, op_id: str, at_ms: int) -> bool:
    """Whether a member step of the seam has applied: its operation id is in the member's dedupe
    bucket of its time (a game's audit counts a pending entry's step as done or not by it)."""
    bucket = keys.member(MemberId(member)).dedupe(at_ms // DEDUPE_BUCKET_MS)
    return bool(await redis.hexists(bucket, id_digest(op_id)))  # type: ignore[arg-type]


def _stock(program: CompiledProgram | None, item: str) -> int | None:
    if program is None or item not in program.model.catalog:
        return None
    return program.model.catalog[item].stock


async def _dead_jobs(redis: Redis, keys: Keys) -> Check:
    dead = Check("no job given up")
    for shard in range(SHARDS):
        dead.checked += 1
        for job, at_ms in cast(list[tuple[bytes, float]], await redis.zrange(dead_key(keys, shard), 0, -1, withscores=True)):
            dead.breach(f"shard {shard}: {_text(job)} given up at {int(at_ms)}")
    return dead


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _active_program(redis: Redis, keys: Keys) -> CompiledProgram | None:
    registry = ProgramRegistry(redis, keys, SystemClock())
    if not await registry.refresh():
        return None  # no programme was ever activated under this prefix
    return registry.current.program
