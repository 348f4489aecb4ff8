"""The programme's KPIs, from counters the operations maintain: never a scan of members.

Every operation ``member.lua`` applies comes back to the process with its effects; the process
(``KpiRecorder``, fed by ``OperationStore``) adds what they say to per-day counters of the
operation's local day (the programme's time zone, the operation's time: a moved clock and a
simulation see the right day):

- **members**: HyperLogLogs of the day's active members (every operation whose id is not the
  engine's own, as member.lua's ``la``), buyers (the programme's purchase event: the quest
  ``care.purchases`` counts, else an event type named ``purchase``) and each game's players (an
  effect of the game's);
- **amounts**: points issued (positive ``points`` effects), spent (negative: spends and refunds'
  take-backs), expired; rewards issued (``reward``); new members (a ``welcome``); members marked
  dormant and woken up; and running totals of the points, for what is outstanding.

Counters are sharded by member (``SHARDS`` hash tags), so no key is hot and a cluster spreads
them; a member always counts in the same shard, so the shards' HyperLogLogs add up without
overlap. The recorder gathers a second's worth in memory and sends it without waiting (one
``PFADD`` a shard, day and set; one ``HINCRBY`` a counter): the award path gains no round trip,
and a member already counted active today by this process is not sent again. A process that dies
loses at most its last second of counts: these are statistics, not state.

``read_stats`` reads a fixed number of keys a day (``SHARDS`` x a few), whatever the members.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from engine import ids
from engine.config import CompiledProgram
from engine.keys import Keys
from engine.operations import MemberPlan
from engine.runner import Call, Runner
from engine.scripts import Command

log = logging.getLogger("rekindle.kpis")

SHARDS = 16
FLUSH_S = 1.0
#: Members a process remembers as counted active today (per day): past it, sent again (harmless).
SEEN_MAX = 200_000
#: Days a KPI key is kept.
KEEP_DAYS = 400

_PFADD, _HINCRBY, _EXPIRE = Command("PFADD"), Command("HINCRBY"), Command("EXPIRE")
SETS = ("active", "buyers")  #: HyperLogLogs a day; and one a game: "game:<name>"
COUNTERS = ("points_issued", "points_spent", "points_expired", "rewards", "new", "dormant", "woken")


def shard_of(member: str) -> int:
    return zlib.crc32(member.encode()) % SHARDS


def tag(keys: Keys, shard: int) -> str:
    return f"{keys.prefix}:{{kpi:{shard}}}"


def set_key(keys: Keys, shard: int, name: str, day: str) -> str:
    return f"{tag(keys, shard)}:{name}:{day}"


def counters_key(keys: Keys, shard: int, day: str) -> str:
    return f"{tag(keys, shard)}:c:{day}"


def totals_key(keys: Keys, shard: int) -> str:
    return f"{tag(keys, shard)}:total"


def purchase_event(program: CompiledProgram) -> str:
    care = program.model.care
    return care.purchases.event if care.purchases is not None else "purchase"


class KpiRecorder:
    """Gathers the KPIs of the operations this process applies, sent once a second (see above)."""

    def __init__(self, runner: Runner, keys: Keys, game_effects: Mapping[str, str] | None = None) -> None:
        self._runner, self._keys = runner, keys
        self._games = dict(game_effects or {})  # effect type -> its game
        self._sets: dict[tuple[int, str, str], set[str]] = defaultdict(set)  # (shard, set, day) -> members
        self._counts: dict[tuple[int, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._seen: dict[str, set[str]] = {}  # day -> members counted active by this process
        self._task: asyncio.Task[None] | None = None

    @property
    def games(self) -> Mapping[str, str]:
        """Effect type -> the game whose players it counts."""
        return self._games

    def record(self, plan: MemberPlan, program: CompiledProgram, effects: Sequence[Mapping[str, Any]],
               event_type: str = "") -> None:
        """One applied operation: its member, its day, its effects. Pure bookkeeping, no I/O."""
        op = plan.op
        member = op.member
        day, _ = program.calendar.day(op.at_ms)
        shard = shard_of(member)
        if not op.id.startswith(ids.DERIVED_PREFIX):
            seen = self._seen.get(day)
            if seen is None:
                if len(self._seen) > 2:  # days long gone
                    self._seen.clear()
                seen = self._seen[day] = set()
            if member not in seen:
                if len(seen) < SEEN_MAX:
                    seen.add(member)
                self._sets[(shard, "active", day)].add(member)
            if event_type and event_type == purchase_event(program):
                self._sets[(shard, "buyers", day)].add(member)
        counts = None
        for e in effects:
            kind = e["type"]
            if kind == "points":
                counts = counts if counts is not None else self._counts[(shard, day)]
                amount = e["data"]["amount"]
                counts["points_issued" if amount > 0 else "points_spent"] += abs(amount)
            elif kind == "points_expired":
                counts = counts if counts is not None else self._counts[(shard, day)]
                counts["points_expired"] += e["data"]["amount"]
            elif kind == "reward":
                counts = counts if counts is not None else self._counts[(shard, day)]
                counts["rewards"] += 1
            elif kind == "wake_up":
                counts = counts if counts is not None else self._counts[(shard, day)]
                counts["woken"] += 1
            elif kind == "care":
                moment = e["data"]["moment"]
                if moment in ("welcome", "dormant"):
                    counts = counts if counts is not None else self._counts[(shard, day)]
                    counts["new" if moment == "welcome" else "dormant"] += 1
            else:
                game = self._games.get(kind)
                if game is not None:
                    self._sets[(shard, f"game:{game}", day)].add(member)

    def calls(self) -> list[Call]:
        """What has been gathered, as commands (and forgotten here)."""
        sets, counts = self._sets, self._counts
        self._sets, self._counts = defaultdict(set), defaultdict(lambda: defaultdict(int))
        keep = KEEP_DAYS * 86_400
        out: list[Call] = []
        for (shard, name, day), members in sets.items():
            key = set_key(self._keys, shard, name, day)
            out += [(_PFADD, [key], sorted(members)), (_EXPIRE, [key], [keep])]
        for (shard, day), values in counts.items():
            key, totals = counters_key(self._keys, shard, day), totals_key(self._keys, shard)
            for name, n in values.items():
                out.append((_HINCRBY, [key], [name, n]))
                out.append((_HINCRBY, [totals], [name, n]))  # running totals: outstanding points, dormant now
            out.append((_EXPIRE, [key], [keep]))
        return out

    async def flush(self) -> None:
        calls = self.calls()
        if calls:
            for reply in await self._runner.run_many(calls):
                if isinstance(reply, Exception):
                    log.warning("KPI counts not written (%s): lost", type(reply).__name__)
                    return

    def start(self, interval_s: float = FLUSH_S) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(interval_s), name="kpis")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self.flush()
        except Exception:  # noqa: BLE001  (statistics: a store gone at shutdown loses the last second)
            log.warning("KPI counts of the last second not written at shutdown")

    async def _loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001
                log.warning("KPI flush failed (%s): its counts are lost", type(exc).__name__)


class DayStats(TypedDict):
    day: str
    active: int
    buyers: int
    new: int
    dormant: int
    woken: int
    points_issued: int
    points_spent: int
    points_expired: int
    rewards: int
    games: dict[str, int]


async def read_day(redis: Any, keys: Keys, day: str, games: Iterable[str]) -> DayStats:
    """One day's figures: ``SHARDS`` x (the sets, one hash) reads, whatever the members."""
    games = list(games)
    pipe = redis.pipeline(transaction=False)
    for shard in range(SHARDS):
        for name in (*SETS, *(f"game:{g}" for g in games)):
            pipe.pfcount(set_key(keys, shard, name, day))
        pipe.hgetall(counters_key(keys, shard, day))
    replies = await pipe.execute()
    per = len(SETS) + len(games) + 1
    totals: dict[str, int] = defaultdict(int)
    game_players: dict[str, int] = defaultdict(int)
    for shard in range(SHARDS):
        row = replies[shard * per:(shard + 1) * per]
        totals["active"] += int(row[0])
        totals["buyers"] += int(row[1])
        for g, n in zip(games, row[2:2 + len(games)]):
            game_players[g] += int(n)
        for k, v in row[-1].items():
            totals[k.decode() if isinstance(k, bytes) else k] += int(v)
    return DayStats(day=day, active=totals["active"], buyers=totals["buyers"], new=totals["new"],
                    dormant=totals["dormant"], woken=totals["woken"], points_issued=totals["points_issued"],
                    points_spent=totals["points_spent"], points_expired=totals["points_expired"],
                    rewards=totals["rewards"], games=dict(game_players))


async def members_between(redis: Any, keys: Keys, name: str, first: Sequence[str], second: Sequence[str]) -> tuple[int, int]:
    """(members in ``first``'s days, of them also in ``second``'s) for the set ``name``, by
    HyperLogLog unions (each shard's days share a slot): |A ∩ B| = |A| + |B| - |A ∪ B|."""
    a = b = both = 0
    for shard in range(SHARDS):
        ka = [set_key(keys, shard, name, d) for d in first]
        kb = [set_key(keys, shard, name, d) for d in second]
        na = int(await redis.pfcount(*ka)) if ka else 0
        nb = int(await redis.pfcount(*kb)) if kb else 0
        nu = int(await redis.pfcount(*ka, *kb)) if ka or kb else 0
        a += na
        both += max(0, na + nb - nu)
        b += nb
    return a, min(both, a)


async def _totals(redis: Any, keys: Keys) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for shard in range(SHARDS):
        for k, v in (await redis.hgetall(totals_key(keys, shard))).items():
            out[k.decode() if isinstance(k, bytes) else k] += int(v)
    return out


async def outstanding(redis: Any, keys: Keys) -> int:
    """Points issued less spent and expired, ever: the shards' running totals."""
    t = await _totals(redis, keys)
    return t["points_issued"] - t["points_spent"] - t["points_expired"]


async def dormant_now(redis: Any, keys: Keys) -> int:
    """Members marked dormant less those who came back, ever."""
    t = await _totals(redis, keys)
    return max(0, t["dormant"] - t["woken"])
