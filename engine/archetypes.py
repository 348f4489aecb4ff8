"""A synthetic population for ``rekindle simulate``: archetypes in a small TOML, checked as a
programme is (every mistake named by key path), and the pure, seeded rules that say what each
member does each day.

A member's day depends only on the seed, the member and the day (its own ``random.Random``), never
on the order members are run in, so the same seed, programme and archetypes give the same events,
whatever the batching. Each archetype says how many of the population it is, when its members
join (at the start, or spread over the run: new members), how likely each is to stop for good each
week (churn), and, per event type of the programme, how often (a rate a week, or a chance after
each purchase) and with what data (an int drawn around a median, a bool with a chance, a choice).
Refunds are a share of purchases, some days later, for all or part of the amount.
"""

from __future__ import annotations

import math
import random
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from engine.config import CompiledProgram, FieldType, _shape_problems
from engine.errors import ConfigError, ConfigProblem

Name = Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=64)]
Rate = Annotated[float, Field(ge=0.0, le=1000.0)]
Chance = Annotated[float, Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Around(_Model):
    """An int drawn around a median (log-normal: baskets are skewed), within ``min``..``max``."""

    median: Annotated[int, Strict(), Field(ge=0, le=10**9)]
    spread: Annotated[float, Field(ge=0.0, le=3.0)] = Field(0.5, description="sigma of the log: 0 is always the median")
    min: Annotated[int, Strict(), Field(ge=0, le=10**9)] | None = None
    max: Annotated[int, Strict(), Field(ge=0, le=10**9)] | None = None


class Pick(_Model):
    """A bool true with ``chance``, or one of ``one_of`` (equally likely)."""

    chance: Chance | None = None
    one_of: tuple[Annotated[str, Strict()] | Annotated[int, Strict()], ...] | None = Field(None, min_length=1, max_length=64)


class Behaviour(_Model):
    """How often an archetype's members post one event type, and its data."""

    per_week: Rate | None = Field(None, description="events a week (a Poisson rate, spread over the days)")
    per_purchase: Chance | None = Field(None, description="the chance of one after each purchase (a review)")
    data: dict[Name, Around | Pick | Annotated[int, Strict()] | Annotated[str, Strict()] | Annotated[bool, Strict()]] = Field(
        default_factory=dict, description="each field: a constant, an int around a median, a chance or a choice")


class Play(_Model):
    """How the archetype's members play the programme's games: a chance a day each."""

    checkin: Chance = Field(0.0, description="check in (`POST /v1/me/checkin`)")
    flash: Chance = Field(0.0, description="claim each flash sale that is open (`POST /v1/games/flash/{sale}/claim`)")
    spin: Chance = Field(0.0, description="spin each wheel, while spins are held (up to 3 a day)")
    draw: Chance = Field(0.0, description="draw each card campaign's cards, while draws are held (up to 3 a day), "
                                          "then combine a full set when one is held")
    bargain: Chance = Field(0.0, description="start a bargain of each bargain campaign, when none of the member's is open")
    help: Chance = Field(0.0, description="help others' open bargains (1 to `helps` of them, at random among all open)")
    helps: Annotated[int, Field(ge=1, le=20)] = Field(2, description="the most bargains a helping member helps a day")


class Archetype(_Model):
    share: Chance = Field(description="of the population (the shares add up to 1)")
    new: bool = Field(False, description="true: its members join over the run (one day each), not before it")
    churn_per_week: Chance = Field(0.0, description="the chance a member stops for good, each week")
    refund_share: Chance = Field(0.0, description="of purchases refunded, 1 to 7 days later")
    partial_refund_share: Chance = Field(0.0, description="of refunds, the part that refunds half the amount")
    birthday_share: Chance = Field(0.5, description="of members whose profile gives a birthday")
    events: dict[Name, Behaviour] = Field(default_factory=dict, description="by event type of the programme")
    play: Play = Field(Play(), description="the games its members play, a chance a day each")


class Simulation(_Model):
    purchase_event: Name = Field("purchase", description="the event type that is a purchase")
    refund_event: Name | None = Field(None, description="the refund event type (reverses the purchase type)")
    point_value_cents: Annotated[float, Field(ge=0.0, le=10_000.0)] = Field(
        1.0, description="what one point costs the shop, in cents: the liability in money")


class Population(_Model):
    simulation: Simulation = Simulation()
    archetypes: dict[Name, Archetype] = Field(min_length=1, max_length=32)


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    archetype: str
    joins_day: int  # 0: before the run (members at the start); d: joins on day d
    birthday: str | None  # "MM-DD"


def load_population(path: str | Path, program: CompiledProgram) -> Population:
    """Read and check an archetypes file against ``program``; raise ``ConfigError`` naming every problem."""
    path = Path(path)
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read", [ConfigProblem(file, "", exc.strerror or str(exc))]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML", [ConfigProblem(file, "", str(exc))]) from None
    try:
        population = Population.model_validate(raw)
    except ValidationError as exc:
        problems = [ConfigProblem(file, p, r) for p, r in _shape_problems(exc.errors(), raw)]
        raise ConfigError(f"{file}: {len(problems)} problem(s)", problems) from None
    problems = [ConfigProblem(file, p, r) for p, r in _cross_check(population, program)]
    if problems:
        raise ConfigError(f"{file}: {len(problems)} problem(s)", problems)
    return population


def _cross_check(pop: Population, program: CompiledProgram) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    events = program.events
    sim = pop.simulation
    if sim.purchase_event not in events:
        out.append(("simulation.purchase_event", f"the programme has no event type {sim.purchase_event!r}"))
    if sim.refund_event is not None:
        refund = events.get(sim.refund_event)
        if refund is None:
            out.append(("simulation.refund_event", f"the programme has no event type {sim.refund_event!r}"))
        elif refund.reverses != sim.purchase_event:
            out.append(("simulation.refund_event", f"{sim.refund_event!r} does not reverse {sim.purchase_event!r}"))
    total = sum(a.share for a in pop.archetypes.values())
    if abs(total - 1.0) > 1e-6:
        out.append(("archetypes", f"the shares add up to {total:g}, not 1"))
    for name, arch in pop.archetypes.items():
        for key, game, chance in (("checkin", "checkin", arch.play.checkin), ("flash", "flash", arch.play.flash),
                                  ("spin", "lottery", arch.play.spin), ("draw", "cards", arch.play.draw),
                                  ("bargain", "bargain", arch.play.bargain), ("help", "bargain", arch.play.help)):
            if chance and game not in program.games:
                out.append((f"archetypes.{name}.play.{key}", f"the programme has no [games.{game}] to play"))
        for event, b in arch.events.items():
            path = f"archetypes.{name}.events.{event}"
            spec = events.get(event)
            if spec is None:
                out.append((path, f"the programme has no event type {event!r}"))
                continue
            if spec.reverses is not None:
                out.append((path, "a refund is made from `refund_share`, not as an event of its own"))
            if (b.per_week is None) == (b.per_purchase is None):
                out.append((path, "give exactly one of per_week or per_purchase"))
            for field, gen in b.data.items():
                fspec = spec.fields.get(field)
                if fspec is None:
                    out.append((f"{path}.data.{field}", f"event type {event!r} has no field {field!r}"))
                    continue
                kind = fspec.type
                ok = ((isinstance(gen, Around) and kind is FieldType.INT)
                      or (isinstance(gen, Pick) and ((gen.chance is not None) != (gen.one_of is not None))
                          and (gen.chance is None or kind is FieldType.BOOL))
                      or (isinstance(gen, bool) and kind is FieldType.BOOL)
                      or (isinstance(gen, int) and not isinstance(gen, bool) and kind is FieldType.INT)
                      or (isinstance(gen, str) and kind is FieldType.STR))
                if not ok:
                    out.append((f"{path}.data.{field}", f"cannot make a {kind.value} field from this"))
            for field, fspec in spec.fields.items():
                if fspec.required and field not in b.data and not (event == sim.purchase_event and field == "amount"):
                    out.append((f"{path}.data", f"event type {event!r} requires {field!r}: give it here"))
    return out


def members(pop: Population, count: int, days: int, seed: int) -> list[Member]:
    """``count`` members split by share (the largest remainders get the rounding), each with its
    join day and birthday, from the seed."""
    names = list(pop.archetypes)
    exact = [pop.archetypes[n].share * count for n in names]
    sizes = [math.floor(x) for x in exact]
    for i in sorted(range(len(names)), key=lambda i: exact[i] - sizes[i], reverse=True)[: count - sum(sizes)]:
        sizes[i] += 1
    out: list[Member] = []
    for name, size in zip(names, sizes):
        arch = pop.archetypes[name]
        for k in range(size):
            rng = random.Random(f"{seed}:member:{name}:{k}")
            joins = rng.randrange(1, days + 1) if arch.new and days > 0 else 0
            birthday = None
            if rng.random() < arch.birthday_share:
                month, day = rng.randrange(1, 13), rng.randrange(1, 29)
                birthday = f"{month:02d}-{day:02d}"
            out.append(Member(f"sim-{name}-{k}", name, joins, birthday))
    return out


@dataclass(frozen=True, slots=True)
class Planned:
    """One event a member posts on a day: its type, its second of the day, its data."""

    type: str
    second: int
    data: dict[str, Any]
    refund: tuple[int, bool] | None = None  # a purchase refunded: (days later, half the amount)


def day_events(pop: Population, program: CompiledProgram, member: Member, day: int, seed: int) -> tuple[list[Planned], bool]:
    """What the member posts on ``day`` (0-based), and whether they churned that day (they post
    nothing from then on: the caller stops asking)."""
    arch = pop.archetypes[member.archetype]
    rng = random.Random(f"{seed}:{member.id}:{day}")
    if arch.churn_per_week and rng.random() < 1 - (1 - arch.churn_per_week) ** (1 / 7):
        return [], True
    sim = pop.simulation
    out: list[Planned] = []
    purchases = 0
    for event, b in arch.events.items():
        if b.per_week is None:
            continue
        for _ in range(_poisson(rng, b.per_week / 7)):
            data = _data(rng, program, event, b)
            refund = None
            if event == sim.purchase_event:
                purchases += 1
                if sim.refund_event is not None and rng.random() < arch.refund_share:
                    refund = (rng.randrange(1, 8), rng.random() < arch.partial_refund_share)
            out.append(Planned(event, rng.randrange(0, 86_000), data, refund))
    for event, b in arch.events.items():
        if b.per_purchase is None:
            continue
        for _ in range(purchases):
            if rng.random() < b.per_purchase:
                out.append(Planned(event, rng.randrange(0, 86_000), _data(rng, program, event, b)))
    out.sort(key=lambda p: p.second)
    return out, False


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


def _data(rng: random.Random, program: CompiledProgram, event: str, b: Behaviour) -> dict[str, Any]:
    spec = program.events[event].fields
    out: dict[str, Any] = {}
    for field, gen in b.data.items():
        if isinstance(gen, Around):
            value = int(round(gen.median * math.exp(rng.gauss(0.0, gen.spread)))) if gen.spread else gen.median
            lows = [x for x in (gen.min, spec[field].min, 0) if x is not None]
            highs = [x for x in (gen.max, spec[field].max, 10**9) if x is not None]
            out[field] = min(max(value, max(lows)), min(highs))
        elif isinstance(gen, Pick):
            out[field] = rng.random() < gen.chance if gen.chance is not None else rng.choice(gen.one_of or ("",))
        else:
            out[field] = gen
    if "amount" in spec and "amount" not in out and spec["amount"].type is FieldType.INT:
        out["amount"] = max(spec["amount"].min or 1, 1)
    return out


def day_plays(pop: Population, program: CompiledProgram, member: Member, day: int, seed: int) -> list[str]:
    """The game actions of the member's day: "checkin", "<game>:<name>" for a sale's claim, a
    wheel's spins, a card campaign's draws and a bargain's start (whether each can be taken is the
    caller's to know: a sale not open answers so), and "help:<n>", the number of others' bargains
    to help (which ones: ``pick_bargains``)."""
    play = pop.archetypes[member.archetype].play
    rng = random.Random(f"{seed}:{member.id}:{day}:play")
    out: list[str] = []
    if play.checkin and rng.random() < play.checkin:
        out.append("checkin")
    for game, chance in (("flash", play.flash), ("lottery", play.spin), ("cards", play.draw),
                         ("bargain", play.bargain)):
        if chance:
            for name in getattr(program.games.get(game), "root", {}):
                if rng.random() < chance:
                    out.append(f"{game}:{name}")
    if play.help and rng.random() < play.help:
        out.append(f"help:{rng.randint(1, play.helps)}")
    return out


def pick_bargains(open_: Sequence[str], owner_of: Mapping[str, str], member: Member, day: int, seed: int,
                  count: int) -> list[str]:
    """The open bargains (``open_``, in the order they started) a member helps on ``day``: up to
    ``count``, at random among those of others, from the seed, the member and the day."""
    rng = random.Random(f"{seed}:{member.id}:{day}:help")
    # A sample a little larger than asked, less the member's own (one per campaign at most).
    drawn = rng.sample(range(len(open_)), min(count + 4, len(open_)))
    return [open_[i] for i in drawn if owner_of[open_[i]] != member.id][:count]
