"""Valkey CPU per member-script call, by path: what one primary's ceiling in awards/s comes from.

``INFO commandstats`` keeps the server time of each command; after ``CONFIG RESETSTAT`` on a
database of its own, a run of one kind of call through the real ``OperationStore`` makes that
figure the server time of that path alone (the service's Python is not in it). Paths:

- a typical purchase under the example programme (the figure the design holds at <= 60 us);
- the same event again: a duplicate, which replays the original award from the feed;
- a purchase under a programme at every size limit the validator allows (tiers, coupons per
  bundle, quests matching one event), which shows that no valid programme can make an award
  cost many times the typical one;
- a purchase under the example programme with tiers kept or lost over a rolling 12-month window
  (``[tier_policy]``: the window's 12 fields read and one written with every award);
- and, beside the CPU, the AOF bytes a member's second purchase writes (every write the script
  makes is propagated as it made it, in a MULTI/EXEC): the cost the bare endpoint of phase [1],
  which writes nothing, does not pay.

Absolute us swing 2x between runs on a shared machine, so both purchases are also set against a
*floor script* (``loadtest/lua/floor.lua``: only the writes every award makes) on the same
server in the same run. ``usec`` of ``evalsha`` is one figure for every script, so each batch is
measured alone (stats reset before it, read after), and the batches take turns, round after
round, so that noise hits both sides of a ratio.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from redis.asyncio import Redis

from engine import config
from engine.awards import plan_award
from engine.operations import MemberPlan
from engine.config import CompiledProgram, compile_program, parse_program
from engine.events import parse_event
from engine.keys import Keys
from engine.pipelining import AutoPipeline
from engine.scripts import LuaScript, Scripts
from engine.store import OpStatus, OperationStore


@dataclass(frozen=True)
class CostRound:
    """One round's batches, back to back on one server: a ratio is taken within a round only."""

    award_us: float  # member.lua, a purchase under the example programme
    floor_us: float  # floor.lua, on the same purchases
    at_limits_us: float  # member.lua, a purchase under the programme at its limits
    tiered_us: float = 0.0  # member.lua, a purchase under the example with a rolling tier window

    @property
    def tiered_ratio(self) -> float:
        return self.tiered_us / self.floor_us

    @property
    def award_ratio(self) -> float:
        return self.award_us / self.floor_us

    @property
    def at_limits_ratio(self) -> float:
        return self.at_limits_us / self.floor_us


@dataclass(frozen=True)
class ServerCost:
    rounds: tuple[CostRound, ...]
    duplicate_us: float
    limits: str  # what "at its limits" meant in this run
    #: AOF bytes a member's second purchase adds (None: the server keeps no AOF, or a rewrite
    #: came during the batch): what every award costs the server in writes beside its CPU.
    aof_bytes: float | None = None

    @property
    def award_us(self) -> float:
        return statistics.median(r.award_us for r in self.rounds)

    @property
    def at_limits_us(self) -> float:
        return statistics.median(r.at_limits_us for r in self.rounds)


def tiered(program: CompiledProgram) -> CompiledProgram:
    """``program`` with tiers qualified over a rolling 12-month window: the most fields a tier
    policy reads per award."""
    source = program.source + b'\n[tier_policy]\nwindow = "rolling"\nmonths = 12\n'
    return compile_program(parse_program(source, "tiered.toml"), source)


def limits_program() -> CompiledProgram:
    """A programme at the validator's limits: every tier with the most coupons a bundle holds,
    and as many rules and quests on one event type as allowed (so one award runs them all)."""
    tiers, coupons = config.MAX_TIERS, config.MAX_COUPONS_PER_REWARD
    rules, quests = config.MAX_RULES_PER_EVENT, config.MAX_QUESTS_PER_EVENT
    name = "x" * 40  # long names cost bytes in every table the script unpacks
    lines = [
        '[program]\nname = "at the limits"\ntimezone = "Asia/Shanghai"\n',
        '[events.pay]\nfields.cents = { type = "int", min = 1 }\n',
    ]
    for r in range(rules):  # half XP, half points, every one with a daily cap (the costlier kind)
        grant = "xp" if r % 2 else "points"
        lines.append(
            f'[rules.r{r}{name}]\nevent = "pay"\ngrant = "{grant}"\nper = {{ field = "cents", every = 100, amount = 1 }}\n'
            "daily_cap = 1000000\n"
        )
    for c in range(coupons):
        lines.append(f'[catalog.c{c}{name}]\ntitle = "c"\nvalue_cents = 100\n')
    bundle = ", ".join(f'"c{c}{name}"' for c in range(coupons))
    for t in range(tiers):
        lines.append(
            f'[[tiers]]\nid = "t{t}{name}"\nname = "Tier {t}"\nxp = {t * 1_000_000}\npoints_multiplier = 1.5\n'
            f"rewards = {{ points = 10, coupons = [{bundle}] }}\n"
        )
    for q in range(quests):
        lines.append(f'[quests.q{q}{name}]\ntitle = "q"\nkind = "daily"\nevent = "pay"\ntarget = 1000000\n')
    source = "\n".join(lines).encode()
    return compile_program(parse_program(source, "limits.toml"), source)


def _plans(program: CompiledProgram, event_type: str, data: dict, members: int, run_id: str, now_ms: int) -> list[MemberPlan]:
    raws = [{"id": f"{run_id}-{m}", "member": f"m{m}", "type": event_type, "data": data} for m in range(members)]
    return [plan_award(program, parse_event(raw, program, now_ms), now_ms) for raw in raws]


def floor_script() -> LuaScript:
    return LuaScript.from_package("floor.lua", package="loadtest")


def floor_call(keys: Keys, plan: MemberPlan) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of floor.lua (see its header) for ``plan``: its own amounts, ids and
    expiries, so the floor writes what the award must write, at the sizes the award writes."""
    a = plan.args
    mk = keys.member(plan.op.member)
    xp = sum(g[1] for g in a.grants if g[0] == "x")
    points = sum(g[1] for g in a.grants if g[0] == "p")
    reason = next((g[2] for g in a.grants if g[0] == "p"), "award")
    effects = msgpack.packb([["xp" if g[0] == "x" else "points", {"amount": g[1], "reason": g[2]}] for g in a.grants],
                            use_bin_type=False)
    return [mk.profile, mk.ledger, mk.feed, mk.dedupe(plan.dedupe_bucket)], [
        a.op_id, a.dedupe_field, a.fingerprint + bytes(5), a.dedupe_expire_ms, xp, points, reason,
        a.now_ms - a.ledger_keep_ms, a.feed_length, effects, mk.channel,
    ]


#: Sends a chunk of plans one way (member.lua through the store, or floor.lua) and checks the replies.
Send = Callable[[Sequence[MemberPlan]], Awaitable[None]]


def _member_batches(store: OperationStore, program: CompiledProgram, expect: OpStatus) -> Send:
    async def send(plans: Sequence[MemberPlan]) -> None:
        results = await store.apply_many(plans, program)
        bad = [r for r in results if isinstance(r, Exception) or r.status is not expect]
        if bad:
            raise RuntimeError(f"server cost: {len(bad)} calls not {expect.value}, e.g. {bad[0]!r}")

    return send


def _floor_batches(runner: AutoPipeline, keys: Keys, floor: LuaScript) -> Send:
    async def send(plans: Sequence[MemberPlan]) -> None:
        replies = await runner.run_many([(floor, *floor_call(keys, p)) for p in plans])
        bad = [r for r in replies if isinstance(r, Exception)]
        if bad:
            raise RuntimeError(f"server cost: {len(bad)} floor calls failed, e.g. {bad[0]!r}")

    return send


async def _server_us(client: Redis, plans: Sequence[MemberPlan], send: Send) -> float:
    """The server's us of EVALSHA per plan, ``plans`` sent 1,000 a pipeline after a stats reset:
    every script shares that one figure, so a batch is only ever measured alone. A plan is one
    script call; the ``ZADD`` that schedules a new lot's expiry job first (engine/jobs.py) is a
    command of its own, not in this figure."""
    await client.config_resetstat()
    for i in range(0, len(plans), 1000):
        await send(plans[i : i + 1000])
    stats = await client.info("commandstats")
    return float(stats["cmdstat_evalsha"]["usec"]) / len(plans)


async def _aof_bytes(client: Redis, plans: Sequence[MemberPlan], send: Send, wait_s: float = 60.0) -> float | None:
    """The AOF's growth per plan over ``plans`` (written to the file before their replies go out,
    with appendfsync everysec), after a rewrite: None without an AOF, or when another rewrite
    still came between the reads."""

    def rewriting(info: dict[str, Any]) -> bool:
        return bool(int(info.get("aof_rewrite_in_progress", 0)) or int(info.get("aof_rewrite_scheduled", 0)))

    info = await client.info("persistence")
    if int(info.get("aof_enabled", 0)) != 1:
        return None
    # A rewrite now, waited for: one due (the rounds' writes, then their FLUSHDB, leave a file
    # well past its base) would otherwise start within the batch.
    if not rewriting(info):
        await client.bgrewriteaof()
    deadline = asyncio.get_running_loop().time() + wait_s
    info = await client.info("persistence")
    while rewriting(info) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        info = await client.info("persistence")
    before, rewrites = int(info["aof_current_size"]), int(info["aof_rewrites"])
    for i in range(0, len(plans), 1000):
        await send(plans[i : i + 1000])
    info = await client.info("persistence")
    if rewriting(info) or int(info["aof_rewrites"]) != rewrites:
        return None
    return (int(info["aof_current_size"]) - before) / len(plans)


async def _measure(url: str, db: int, program: CompiledProgram, run_id: str, now_ms: int, members: int,
                   rounds: int) -> ServerCost:
    client = Redis.from_url(url, db=db)
    runner = AutoPipeline(client)
    try:
        scripts, floor = Scripts(), floor_script()
        await scripts.load(client)  # loaded first: no NOSCRIPT round trip inside a measured batch
        await floor.load(client)
        limits = limits_program()
        purchases = _plans(program, "purchase", {"amount": 12_900}, members, run_id, now_ms)
        at_limits = _plans(limits, "pay", {"cents": 12_900}, members, run_id, now_ms)
        tiered_program = tiered(program)
        tiered_plans = _plans(tiered_program, "purchase", {"amount": 12_900}, members, run_id, now_ms)
        measured = []
        for n in range(rounds):
            # Every round on an empty database and every batch on keys of its own, so each round
            # measures the same first purchase of the same members; the order turns each round,
            # so that no batch always meets the smallest keyspace. SYNC: the server's default
            # (lazyfree-lazy-user-flush) frees in a thread of its own, which would compete with
            # the round's first batch for the cores.
            await client.execute_command("FLUSHDB", "SYNC")
            store = OperationStore(runner, Keys(f"sc{run_id}{n}"), scripts)
            batches: list[tuple[str, Sequence[MemberPlan], Send]] = [
                ("award_us", purchases, _member_batches(store, program, OpStatus.APPLIED)),
                ("floor_us", purchases, _floor_batches(runner, Keys(f"sf{run_id}{n}"), floor)),
                ("at_limits_us", at_limits, _member_batches(
                    OperationStore(runner, Keys(f"sl{run_id}{n}"), scripts), limits, OpStatus.APPLIED)),
                ("tiered_us", tiered_plans, _member_batches(
                    OperationStore(runner, Keys(f"st{run_id}{n}"), scripts), tiered_program, OpStatus.APPLIED)),
            ]
            turned = batches[n % len(batches) :] + batches[: n % len(batches)]
            us = {name: await _server_us(client, plans, send) for name, plans, send in turned}
            measured.append(CostRound(**us))
        duplicate = await _server_us(client, purchases, _member_batches(store, program, OpStatus.DUPLICATE))
        # The same members' second purchase: what an award writes to the AOF in the steady state.
        second = _plans(program, "purchase", {"amount": 12_900}, members, f"{run_id}x", now_ms)
        aof = await _aof_bytes(client, second, _member_batches(store, program, OpStatus.APPLIED))
        await client.execute_command("FLUSHDB", "SYNC")
    finally:
        await runner.aclose()
        await client.aclose()
    described = (
        f"{config.MAX_TIERS} tiers x {config.MAX_COUPONS_PER_REWARD} coupons, {config.MAX_RULES_PER_EVENT} capped rules "
        f"and {config.MAX_QUESTS_PER_EVENT} quests on the event, "
        f"tiers ARGV {len(limits.tiers_packed):,} B"
    )
    return ServerCost(tuple(measured), duplicate, described, aof)


def measure(url: str, db: int, program: CompiledProgram, run_id: str, now_ms: int, members: int = 5000,
            rounds: int = 5) -> ServerCost:
    """Each path on ``members`` members, in database ``db`` (emptied before each round and after):
    ``rounds`` rounds of award, floor and at-limits batches, then the last round's purchases
    again, as duplicates."""
    return asyncio.run(_measure(url, db, program, run_id, now_ms, members, rounds))
