"""``rekindle simulate``: what a programme does to a population, before it ships.

A synthetic population (``engine/archetypes.py``) runs through the service's own parts
(``Service.open``: the planning code, the member script, the scheduler, the care moments, the
KPIs) on a scratch embedded Valkey, under a ``ManualClock`` moved a day at a time: each day's
joiners are given a profile (and so a welcome), its events are parsed, planned and applied in
batches as ``POST /v1/events`` applies a batch, then the clock goes to the day's end and the
scheduler runs what fell due (expiries, birthdays, dormancy, tier reviews, outreach). Outreach
webhooks never leave the machine: their client's transport answers each one itself and counts it.

The figures come from what the operations answered (effects) and from the KPIs the operations
kept (``engine/kpis.py``), read per day; nothing is modelled apart from the population. The same
seed, programme and archetypes give the same figures (the members' days are seeded by member
and day; the batches are applied in one order).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from engine import ids
from engine.archetypes import Member, Population, day_events, day_plays, load_population, members, pick_bargains
from engine.awards import plan_award
from engine.clock import DAY_MS, ManualClock
from engine.config import CompiledProgram, load_program
from engine.events import parse_event
from engine.keys import Keys
from engine.kpis import KpiRecorder, outstanding, read_day
from engine.operations import MemberPlan
from engine.runner import Runner
from engine.members import parse_profile
from engine.errors import RekindleError
from engine.plugins import Answer, GameCall, installed, seeded_draws
from engine.store import OpStatus
from realtime.embedded import EmbeddedValkey
from realtime.service import Service
from realtime.settings import Settings

BATCH = 1000  #: events a batch, as the largest ``POST /v1/events`` takes
#: A bargain campaign is warned of when fewer than LOW or at least HIGH of its ended bargains
#: reached the floor (once BARGAINS_TO_JUDGE of them ended).
LOW_FLOOR_SHARE, HIGH_FLOOR_SHARE, BARGAINS_TO_JUDGE = 0.10, 0.90, 20


class SimulateError(ValueError):
    """A run that cannot start: said before any work."""


@dataclass
class Day:
    day: str  # the local day, YYYYMMDD
    events: int = 0
    kpis: dict[str, Any] = field(default_factory=dict)
    liability_points: int = 0
    tiers: dict[str, int] = field(default_factory=dict)  # members per tier at the day's end
    quests: dict[str, int] = field(default_factory=dict)  # completions that day, by quest
    care: dict[str, int] = field(default_factory=dict)  # care moments granted that day, by moment
    coupons: int = 0
    refunds: int = 0
    games: dict[str, int] = field(default_factory=dict)  # what the games gave that day (``Report.outcomes``' keys)
    budget_spent: dict[str, int] = field(default_factory=dict)  # wheel -> its budget spent by the day's end


@dataclass
class Report:
    program: str
    program_hash: str
    members: int
    days: int
    seed: int
    point_value_cents: float
    start_day: str
    rows: list[Day]
    tier_ids: list[str]
    quest_ids: list[str]
    events: int = 0
    seconds: float = 0.0
    webhooks: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    plays: Counter[str] = field(default_factory=Counter)  # "<game action>:<outcome>" -> how many
    outcomes: Counter[str] = field(default_factory=Counter)  # the games' effects: prizes, cards, sets
    sold_out: dict[str, str] = field(default_factory=dict)  # flash sale -> the local day it sold out
    stock: dict[str, int] = field(default_factory=dict)  # flash sale -> its units
    demand: dict[str, tuple[int, int]] = field(default_factory=dict)  # flash sale -> (claims, units left) the day it sold out
    budgets: dict[str, tuple[int, int]] = field(default_factory=dict)  # wheel -> (its budget, its cheapest prize that costs)
    setup: Day = field(default_factory=lambda: Day("setup"))  # what the members' first profiles started

    def summary(self) -> dict[str, Any]:
        """The figures a designer reads first, and what a CI diff of a programme change compares."""
        last = self.rows[-1] if self.rows else Day("")
        issued = sum(r.kpis.get("points_issued", 0) for r in self.rows)
        spent = sum(r.kpis.get("points_spent", 0) for r in self.rows)
        expired = sum(r.kpis.get("points_expired", 0) for r in self.rows)
        completions: Counter[str] = Counter()
        care: Counter[str] = Counter()
        for r in (self.setup, *self.rows):
            completions.update(r.quests)
            care.update(r.care)
        return {
            "program": self.program, "program_hash": self.program_hash, "members": self.members, "days": self.days,
            "seed": self.seed, "start_day": self.start_day, "events": self.events,
            "tiers_at_end": {t: last.tiers.get(t, 0) for t in self.tier_ids},
            "points": {"issued": issued, "spent": spent, "expired": expired, "outstanding": last.liability_points,
                       "liability_cents": round(last.liability_points * self.point_value_cents)},
            "quests_completed": {q: completions.get(q, 0) for q in self.quest_ids},
            "care_moments": dict(sorted(care.items())),
            "coupons_granted": sum(r.coupons for r in self.rows),
            "refunds": sum(r.refunds for r in self.rows),
            "webhooks": self.webhooks,  # outreach messages the run's programme sent (answered on the machine)
            "active_members_per_day": [r.kpis.get("active", 0) for r in self.rows],
            "refused": dict(sorted(self.refused.items())),
            "games": dict(sorted(self.plays.items())),
            "flash_sold_out": dict(sorted(self.sold_out.items())),
            # The day each sale sold out: its claims (sent or not), and the units left that morning.
            "flash_demand": {sale: {"claims": c, "units_left": u} for sale, (c, u) in sorted(self.demand.items())},
            "game_outcomes": dict(sorted(self.outcomes.items())),
            "bargains": {c: {"started": n, "helps": self.plays.get(f"bargain:{c}:help:ok", 0),
                             "reached_floor": self.outcomes.get(f"bargain_done:{c}", 0),
                             "expired": self.outcomes.get(f"bargain_expired:{c}", 0)}
                         for c, n in sorted(self._started().items())},
            "lottery_budget": {w: {"budget": budget, "spent": self.rows[-1].budget_spent.get(w, 0) if self.rows else 0,
                                   "ran_out_on": self._ran_out(w)}
                               for w, (budget, _) in sorted(self.budgets.items())},
            "warnings": self.warnings(),
        }

    def _started(self) -> dict[str, int]:
        """Bargain campaign -> the bargains started: the starts that answered ok (none is sent while
        the member's own is open, so each began a bargain)."""
        return {k.split(":")[1]: n for k, n in self.plays.items() if k.startswith("bargain:") and k.endswith(":start:ok")}

    def _ran_out(self, wheel: str) -> str | None:
        """The local day a wheel's budget ran out: no prize that costs fits what is left of it."""
        budget, cheapest = self.budgets[wheel]
        return next((r.day for r in self.rows if r.budget_spent.get(wheel, 0) + cheapest > budget), None)

    def _day(self, day: str) -> str:
        """"day 3 (2027-01-09)": the run's day number, and its date."""
        n = next(i for i, r in enumerate(self.rows, 1) if r.day == day)
        return f"day {n} ({day[:4]}-{day[4:6]}-{day[6:]})"

    def warnings(self) -> list[str]:
        """What a designer should see, each with the number behind it."""
        out: list[str] = []
        if not self.rows:
            return out
        last = self.rows[-1]
        population = max(1, sum(last.tiers.values()))
        for tier in self.tier_ids[1:]:
            reached = sum(last.tiers.get(t, 0) for t in self.tier_ids[self.tier_ids.index(tier):])
            share = reached / population
            if share < 0.01:
                out.append(f"the {tier} tier is reached by {share:.1%} of members ({reached} of {population}) "
                           f"after {self.days} days")
        weekly = [r.liability_points for r in self.rows[6::7]]
        for before, after in zip(weekly, weekly[1:]):
            if before > 0 and after > before * 1.10:
                out.append(f"points liability grows {after / before - 1:.0%} a week (from {before:,} to {after:,} "
                           f"points, ¥{after * self.point_value_cents / 100:,.0f})")
                break
        completed: Counter[str] = Counter()
        for r in self.rows:
            completed.update(r.quests)
        for quest in self.quest_ids:
            if not quest.startswith("care.") and completed.get(quest, 0) == 0:
                out.append(f"quest {quest} is never completed in {self.days} days")
        return out + self._game_warnings()

    def _game_warnings(self) -> list[str]:
        out: list[str] = []
        for wheel, (budget, cheapest) in sorted(self.budgets.items()):
            spent = [r.budget_spent.get(wheel, 0) for r in self.rows]
            ran_out = self._ran_out(wheel)
            if ran_out is not None:
                out.append(f"the budget of wheel {wheel} runs out on {self._day(ran_out)}: {spent[-1]:,} of "
                           f"{budget:,} spent")
                continue
            span = min(7, len(spent))
            rate = (spent[-1] - (spent[-span - 1] if len(spent) > span else 0)) / span
            left = budget - cheapest + 1 - spent[-1]  # spent until the cheapest prize that costs no longer fits
            if rate > 0 and left / rate <= self.days:
                out.append(f"at the last {span} days' rate ({rate:,.0f} a day), the budget of wheel {wheel} runs out "
                           f"{left / rate:.0f} days after the run ({spent[-1]:,} of {budget:,} spent)")
        campaigns = sorted({k.split(":")[1] for k in self.outcomes if k.startswith("card:")})
        for campaign in campaigns:
            if not self.outcomes.get(f"cards_combined:{campaign}"):
                drawn = sum(n for k, n in self.outcomes.items() if k.startswith(f"card:{campaign}:"))
                out.append(f"no set of card campaign {campaign} is combined in {self.days} days ({drawn:,} cards drawn)")
        for sale, day in sorted(self.sold_out.items()):
            (claims, left), stock = self.demand.get(sale, (0, 0)), self.stock.get(sale, 0)
            if claims >= 2 * left:
                units = f"its {stock:,} units" if left == stock else f"the last {left:,} of its {stock:,} units"
                out.append(f"flash sale {sale} sells out on {self._day(day)}: {claims:,} members tried to claim "
                           f"{units} that day")
        for campaign in sorted(self._started()):
            done = self.outcomes.get(f"bargain_done:{campaign}", 0)
            decided = done + self.outcomes.get(f"bargain_expired:{campaign}", 0)
            if decided >= BARGAINS_TO_JUDGE and not LOW_FLOOR_SHARE <= done / decided < HIGH_FLOOR_SHARE:
                reach = "out of reach for most" if done / decided < LOW_FLOOR_SHARE else "within easy reach"
                out.append(f"{done / decided:.0%} of the bargains of campaign {campaign} reach the floor ({done:,} of "
                           f"{decided:,} ended): the floor is {reach}")
        return out


def check_run(members_: int, days: int, out: Path | None) -> None:
    """Refuse a run that cannot work, before any: the counts, and an output it cannot write."""
    if members_ < 1 or members_ > 1_000_000:
        raise SimulateError("--members must be from 1 to 1,000,000")
    if days < 1 or days > 3_650:
        raise SimulateError("--days must be from 1 to 3,650")
    if out is not None:
        if out.is_dir():
            raise SimulateError(f"{out}: is a folder, not a file to write")
        if not out.parent.exists() or not os.access(out.parent, os.W_OK):
            raise SimulateError(f"{out}: its folder does not exist or cannot be written")
        if out.exists() and not os.access(out, os.W_OK):
            raise SimulateError(f"{out}: cannot be written")


def prepare(program_path: Path, archetypes_path: Path) -> tuple[CompiledProgram, Population]:
    """The programme and the population, checked (``ConfigError`` names every problem)."""
    program = load_program(program_path)
    return program, load_population(archetypes_path, program)


def first_day(program: CompiledProgram, start: date | None) -> date:
    """The run's first local day: ``start``, or tomorrow in the programme's zone. It must be after
    today: the store's own expiries (fields, buckets) run on real time, so a run set in the past
    would see what it writes expire as it writes it."""
    tomorrow = datetime.now(program.tz).date() + timedelta(days=1)
    if start is None:
        return tomorrow
    if start < tomorrow:
        raise SimulateError(f"--start must be after today ({tomorrow - timedelta(days=1)} in {program.tz.key}): "
                            "the store's expiries run on real time")
    return start


def local_midnight(program: CompiledProgram, day: date) -> int:
    """Epoch ms of the local midnight starting ``day`` (a day is 23 or 25 hours across a DST change)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=program.tz).timestamp() * 1000)


async def simulate(program_path: Path, archetypes_path: Path, count: int, days: int, seed: int,
                   progress: Callable[[int, int], None] | None = None, start: date | None = None) -> Report:
    """The run: from ``start`` (tomorrow by default: a run on another day meets other dates, so
    give the same ``start`` for the same figures), ``days`` local days."""
    program, population = prepare(program_path, archetypes_path)
    first = first_day(program, start)
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="rekindle-simulate-"))
    valkey = EmbeddedValkey(folder / "valkey")
    valkey.start()
    try:
        return await _run(program_path, program, population, valkey.url, count, days, seed, started, progress, first)
    finally:
        valkey.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def _run(program_path: Path, program: CompiledProgram, population: Population, url: str, count: int, days: int,
               seed: int, started: float, progress: Callable[[int, int], None] | None, first: date) -> Report:
    start_ms = local_midnight(program, first)
    clock = ManualClock(start_ms)
    webhooks = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal webhooks
        webhooks += 1
        return httpx.Response(200)

    webhook_config = program.model.webhooks
    if webhook_config is not None and not os.environ.get(webhook_config.secret_env):
        os.environ[webhook_config.secret_env] = secrets.token_hex(32)  # this process only: the messages stay here
    settings = Settings(redis_url=url, config_path=program_path, key_prefix="sim", token_secret=secrets.token_hex(32),
                        api_keys=frozenset({"sim"}), admin_keys=frozenset({"sim-admin"}), scheduler_s=3600.0)
    svc = await Service.open(settings, clock, http=httpx.AsyncClient(transport=httpx.MockTransport(answer)))
    await svc.scheduler.stop()  # run by the day below, not by its loop
    # Every applied operation's effects pass through the store's KPI recorder (events, care
    # gifts, the scheduler's jobs): this one also tallies them for the report, and is flushed by
    # the day instead of by the second.
    if svc.ops.kpis is not None:
        await svc.ops.kpis.stop()
    tally = Tally(svc.pipeline, svc.keys, svc.ops.kpis.games if svc.ops.kpis is not None else {})
    # The games' draws from the seed and each action's own key: the same seed, the same prizes.
    svc.games = svc.games._replace(draws=seeded_draws(seed))
    svc.ops.kpis = tally
    program = svc.programs.current.program
    report = Report(program.name, program.program_hash, count, days, seed, population.simulation.point_value_cents,
                    first.strftime("%Y%m%d"), [], [t.id for t in program.tiers], [q.id for q in program.quests])
    people = members(population, count, days, seed)
    churned: set[str] = set()
    refunds: dict[int, list[tuple[str, str, int]]] = {}  # day -> (member, purchase id, cents: 0 the whole)
    games = list(program.games)
    bargains = Bargains()
    tally.row = report.setup
    for name, wheel in getattr(program.games.get("lottery"), "root", {}).items():
        tally.costs.update({(name, p.name): p.cost for p in wheel.prizes})
        costs = [p.cost for p in wheel.prizes if p.cost > 0]
        if wheel.budget is not None and costs:
            report.budgets[name] = (wheel.budget, min(costs))
    report.stock = {name: sale.stock for name, sale in getattr(program.games.get("flash"), "root", {}).items()}
    try:
        await _profiles(svc, program, [m for m in people if m.joins_day == 0], start_ms, seed, welcome=False)
        for d in range(days):
            day_start = local_midnight(program, first + timedelta(days=d))
            day_end = local_midnight(program, first + timedelta(days=d + 1))
            clock.set(day_start)
            row = tally.row = Day(program.calendar.day(day_start)[0])
            joiners = [m for m in people if m.joins_day == d + 1]
            await _profiles(svc, program, joiners, day_start, seed, welcome=True)
            clock.set(day_end - 1000)
            raws = _raw_events(population, program, people, d, seed, day_start, day_end, churned, refunds)
            row.refunds = sum(1 for r in raws if r["type"] == population.simulation.refund_event)
            await _apply(svc, program, raws, clock.now_ms(), row, report)
            await _play(svc, program, population, people, d, seed, churned, clock.now_ms(), row.day, report, tally, bargains)
            clock.set(day_end)
            await svc.scheduler.run_due()
            await tally.flush()
            row.kpis = dict(await read_day(svc.redis, svc.keys, row.day, games))
            row.liability_points = await outstanding(svc.redis, svc.keys)
            row.budget_spent = {w: tally.spent.get(w, 0) for w in report.budgets}
            counts = Counter(tally.tiers.values())
            base = program.tiers[0].id
            row.tiers = {t.id: counts.get(t.id, 0) for t in program.tiers}
            row.tiers[base] += sum(1 for m in people if m.joins_day <= d + 1) - len(tally.tiers)
            report.rows.append(row)
            report.events += row.events
            if progress is not None:
                progress(d + 1, row.events)
    finally:
        await svc.close()
    report.webhooks = webhooks
    report.outcomes = tally.outcomes
    report.seconds = time.perf_counter() - started
    return report


async def _profiles(svc: Service, program: CompiledProgram, people: list[Member], at_ms: int, seed: int,
                    welcome: bool) -> None:
    """Each member's profile: a join date (members at the start joined before it), a birthday.
    Joiners during the run are welcomed as a shop's profile write welcomes them; members at the
    start were welcomed long ago (their write follows a join date already known)."""
    for i in range(0, len(people), 500):
        chunk = people[i : i + 500]
        writes = []
        for m in chunk:
            joined = at_ms if welcome else at_ms - random.Random(f"{seed}:joined:{m.id}").randrange(30, 700) * DAY_MS
            fields: dict[str, Any] = {"joined_at": joined}
            if m.birthday is not None:
                fields["birthday"] = m.birthday
            writes.append((m, parse_profile(fields, m.id)))  # type: ignore[arg-type]
        await asyncio.gather(*(svc.members.put_profile(m.id, profile) for m, profile in writes))  # type: ignore[arg-type]
        await asyncio.gather(*(
            svc.care.after_profile(program, m.id, profile.fields,  # type: ignore[arg-type]
                                   {} if welcome else {"joined_at_ms": profile.fields["joined_at_ms"]}, at_ms)
            for m, profile in writes if welcome or m.birthday is not None))


#: The game routes the population plays, by their operation id (``engine.plugins.Route``).
PLAYED = {"checkin": "checkIn", "flash": "claimFlashSale", "lottery": "spinWheel", "cards": "drawCard",
          "combine": "combineCards", "bargain": "startBargain", "help": "helpBargain"}
WAVE = 200  #: actions sent together, where their order cannot change what they answer


@dataclass
class Bargains:
    """The run's open bargains, in the order they started: what helpers choose among."""

    open: dict[str, int] = field(default_factory=dict)  # id -> expires at (ms)
    owner: dict[str, str] = field(default_factory=dict)  # id -> its owner
    mine: dict[tuple[str, str], str] = field(default_factory=dict)  # (owner, campaign) -> its open bargain
    helpers: dict[str, set[str]] = field(default_factory=dict)  # open bargain -> the members who helped it

    def add(self, bargain: str, owner: str, campaign: str, expires_ms: int) -> None:
        self.open[bargain], self.owner[bargain], self.mine[(owner, campaign)] = expires_ms, owner, bargain

    def close(self, closed: set[str], now_ms: int) -> None:
        """Forget the bargains that reached their floor or expired (the effects say) or ran out of time."""
        for b in [b for b, expires in self.open.items() if b in closed or expires <= now_ms]:
            del self.open[b]
            del self.mine[(self.owner.pop(b), b.split(".", 1)[0])]
            self.helpers.pop(b, None)
        closed.clear()


def waves(pairs: Sequence[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """(member, object) actions in waves: in each, no member and no object twice, and each
    member's and object's actions in their order. What a wave's actions answer cannot depend on
    the order they are applied in, so a wave is sent at once and the figures stay the seed's."""
    last: dict[str, int] = {}
    out: list[list[tuple[str, str]]] = []
    for member, obj in pairs:
        w = max(last.get(f"m:{member}", -1), last.get(f"o:{obj}", -1)) + 1
        last[f"m:{member}"] = last[f"o:{obj}"] = w
        if w == len(out):
            out.append([])
        out[w].append((member, obj))
    return out


async def _play(svc: Service, program: CompiledProgram, population: Population, people: list[Member], d: int,
                seed: int, churned: set[str], now_ms: int, day: str, report: Report, tally: Tally,
                bargains: Bargains) -> None:
    """The day's game actions, through the games' own route handlers (as their HTTP routes call
    them). Check-ins touch the member alone: sent together. Claims, spins and draws contend for
    stock and budgets: sent one after another in the members' order, so the same seed sells the
    same units to the same members. Bargains start together (each is its owner's own), then helps
    go in waves (``waves``)."""
    routes = {r.operation_id: r for g in installed() for r in g.routes}
    held = tally.held
    checkins: list[str] = []
    contended: list[tuple[str, str, str]] = []  # (member, game, campaign)
    starts: list[tuple[str, str]] = []  # (member, bargain campaign)
    helpers: list[tuple[Member, int]] = []  # (member, how many bargains to help)
    for m in people:
        if m.joins_day > d + 1 or m.id in churned:
            continue
        for action in day_plays(population, program, m, d, seed):
            game, _, name = action.partition(":")
            if action == "checkin":
                checkins.append(m.id)
            elif game == "bargain":
                starts.append((m.id, name))
            elif game == "help":
                helpers.append((m, int(name)))
            else:
                contended.append((m.id, game, name))

    async def call(operation: str, member: str, params: dict[str, str], body: Any) -> tuple[str, Answer | None]:
        game_call = GameCall(svc.games, ids.MemberId(member), params, body, program, now_ms)
        try:
            answer = await routes[operation].handler(game_call)
        except RekindleError as exc:
            return getattr(exc, "code", type(exc).__name__), None
        if answer.operation is None:
            return "ok", answer
        result = answer.operation[1]
        return {OpStatus.APPLIED: "ok", OpStatus.DUPLICATE: "duplicate"}.get(result.status, result.refusal or "refused"), answer

    for i in range(0, len(checkins), WAVE):
        outcomes = await asyncio.gather(*(call(PLAYED["checkin"], m, {}, {}) for m in checkins[i : i + WAVE]))
        report.plays.update(f"checkin:{o}" for o, _ in outcomes)
    # Claims, spins and draws contend for stock and budgets: one after another, in the members'
    # order; a spin or a draw again while the last one was won (up to 3), then a combine.
    # What cannot but be refused is not sent (the run would spend most of its time on it): a spin
    # or a draw with none held (the inventory effects say), a claim of a sale that sold out.
    wanted: Counter[str] = Counter()  # flash sale -> the day's claims, sent or not
    won: Counter[str] = Counter()  # flash sale -> the units the day's claims won
    for member, game, name in contended:
        if game == "flash":
            wanted[name] += 1
            if name in report.sold_out:
                continue
        if game in ("lottery", "cards") and held.get((member, f"{game}:{name}"), 0) < 1:
            continue
        if game == "flash":
            outcome, _ = await call(PLAYED["flash"], member, {"sale": name}, {"id": f"sim-claim-{member}-{d}-{name}"})
            report.plays[f"flash:{name}:{outcome}"] += 1
            won[name] += outcome == "ok"
            if outcome == "sold_out":
                report.sold_out.setdefault(name, day)
            continue
        param = "wheel" if game == "lottery" else "campaign"
        for k in range(min(3, held.get((member, f"{game}:{name}"), 0))):
            outcome, _ = await call(PLAYED[game], member, {param: name}, {"id": f"sim-{game}-{member}-{d}-{name}-{k}"})
            report.plays[f"{game}:{name}:{outcome}"] += 1
            if outcome != "ok":
                break
        if game == "cards":
            outcome, _ = await call(PLAYED["combine"], member, {"campaign": name}, {"id": f"sim-combine-{member}-{d}-{name}"})
            if outcome != "no_full_set":
                report.plays[f"cards:{name}:combine:{outcome}"] += 1
    for sale, n in wanted.items():
        if report.sold_out.get(sale) == day:
            report.demand[sale] = (n, won[sale])
    # Bargains: a start while the member's own is open would answer that one (not sent); the
    # helps, in waves, among the bargains open after the starts.
    bargains.close(tally.closed, now_ms)
    starts = [(m, c) for m, c in starts if (m, c) not in bargains.mine]
    for i in range(0, len(starts), WAVE):
        chunk = starts[i : i + WAVE]
        answers = await asyncio.gather(*(call(PLAYED["bargain"], m, {}, {"campaign": c}) for m, c in chunk))
        for (member, campaign), (outcome, answer) in zip(chunk, answers):
            report.plays[f"bargain:{campaign}:start:{outcome}"] += 1
            if answer is not None and answer.status == 201 and answer.body is not None:
                bargains.add(answer.body["id"], member, campaign, int(answer.body["expires_at_ms"]))
    if not bargains.open:
        return
    open_ = list(bargains.open)
    pairs = [(m.id, b) for m, n in helpers for b in pick_bargains(open_, bargains.owner, m, d, seed, n)
             if m.id not in bargains.helpers.get(b, ())]  # a bargain the member helped already: refused, not sent
    for wave in waves(pairs):
        # A bargain that reached its floor in an earlier wave would refuse: not sent.
        sent = [(helper, b) for helper, b in wave if b not in tally.closed]
        for i in range(0, len(sent), WAVE):
            chunk = sent[i : i + WAVE]
            answers = await asyncio.gather(*(call(PLAYED["help"], helper, {"bargain": b},
                                                  {"id": f"sim-help-{helper}-{d}-{b}"}) for helper, b in chunk))
            for (helper, b), (outcome, _) in zip(chunk, answers):
                report.plays[f"bargain:{b.split('.', 1)[0]}:help:{outcome}"] += 1
                if outcome == "ok":
                    bargains.helpers.setdefault(b, set()).add(helper)


def _raw_events(population: Population, program: CompiledProgram, people: list[Member], d: int, seed: int,
                day_start: int, day_end: int, churned: set[str],
                refunds: dict[int, list[tuple[str, str, int]]]) -> list[dict[str, Any]]:
    sim = population.simulation
    out: list[dict[str, Any]] = []
    for m in people:
        if m.joins_day > d + 1 or m.id in churned:
            continue
        planned, gone = day_events(population, program, m, d, seed)
        if gone:
            churned.add(m.id)
            continue
        for n, ev in enumerate(planned):
            event_id = f"sim-{m.id}-{d}-{n}"
            out.append({"id": event_id, "member": m.id, "type": ev.type, "data": ev.data,
                        "at": min(day_start + ev.second * 1000, day_end - 2000)})
            if ev.refund is not None and sim.refund_event is not None:
                later, half = ev.refund
                amount = ev.data.get("amount", 0) // 2 if half else 0  # 0: the whole
                refunds.setdefault(d + later, []).append((m.id, event_id, amount))
    for member, of, amount in refunds.pop(d, []):
        data: dict[str, Any] = {"of": of}
        if amount > 0:
            data["amount"] = amount
        out.append({"id": f"refund-{of}", "member": member, "type": sim.refund_event, "data": data,
                    "at": day_end - 1500})
    out.sort(key=lambda e: e["at"])
    return out


async def _apply(svc: Service, program: CompiledProgram, raws: list[dict[str, Any]], now_ms: int, row: Day,
                 report: Report) -> None:
    window_ms = svc.programs.current.window_ms(now_ms)
    for i in range(0, len(raws), BATCH):
        events = [parse_event(raw, program, now_ms, window_ms) for raw in raws[i : i + BATCH]]
        outcomes = await svc.ops.apply_many([plan_award(program, e, now_ms) for e in events], program)
        for event, outcome in zip(events, outcomes):
            if isinstance(outcome, Exception):
                raise outcome
            if outcome.status is OpStatus.REFUSED:
                report.refused[outcome.refusal] += 1
        await svc.care.after_batch(program, list(zip(events, outcomes)), now_ms)
        row.events += len(events)


class Tally(KpiRecorder):
    """The KPI recorder, tallying as well what the report shows that the KPIs do not keep: the
    tier of every member, quest completions, care moments, coupons (of the current ``row``)."""

    def __init__(self, runner: Runner, keys: Keys, games: Mapping[str, str]) -> None:
        super().__init__(runner, keys, games)
        self.tiers: dict[str, str] = {}
        self.row = Day("")
        self.outcomes: Counter[str] = Counter()  # the games' own effects: prizes, cards, sets, bargains
        self.held: dict[tuple[str, str], int] = {}  # (member, item) -> count, from the inventory effects
        self.closed: set[str] = set()  # bargains that reached their floor or expired, since the last look
        self.costs: dict[tuple[str, str], int] = {}  # (wheel, prize) -> what one costs its wheel's budget
        self.spent: dict[str, int] = {}  # wheel -> the cost of the prizes it gave (its budget spent)

    def record(self, plan: MemberPlan, program: CompiledProgram, effects: Sequence[Mapping[str, Any]],
               event_type: str = "") -> None:
        super().record(plan, program, effects, event_type)
        row = self.row
        for effect in effects:
            kind, data = effect["type"], effect["data"]
            if kind in ("tier_up", "tier_down"):
                self.tiers[plan.op.member] = data["to"]
            elif kind == "quest_completed":
                row.quests[data["quest"]] = row.quests.get(data["quest"], 0) + 1
            elif kind == "care":
                row.care[data["moment"]] = row.care.get(data["moment"], 0) + 1
            elif kind == "reward":
                row.coupons += 1
            elif kind == "inventory":
                self.held[(plan.op.member, data["item"])] = int(data["count"])
            elif kind == "prize":
                self._outcome(f"prize:{data['wheel']}:{data['prize']}" + (":fallback" if data.get("fallback") else ""))
                cost = self.costs.get((data["wheel"], data["prize"]), 0)
                if cost:
                    self.spent[data["wheel"]] = self.spent.get(data["wheel"], 0) + cost
            elif kind == "card_drawn":
                self._outcome(f"card:{data['campaign']}:{data['card']}")
            elif kind == "cards_combined":
                self._outcome(f"{kind}:{data['campaign']}")
            elif kind in ("bargain_done", "bargain_expired"):
                self._outcome(f"{kind}:{data['bargain'].split('.', 1)[0]}")
                self.closed.add(data["bargain"])

    def _outcome(self, key: str) -> None:
        self.outcomes[key] += 1
        self.row.games[key] = self.row.games.get(key, 0) + 1
