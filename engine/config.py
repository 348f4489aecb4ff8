"""Designers' programmes: TOML in, frozen validated models out, compiled once for the hot path.

``load_program(path)`` reads one TOML file and either returns a ``CompiledProgram`` or raises
``ConfigError`` listing *every* problem with its file, key path and reason: pydantic finds the
shape mistakes (unknown keys included, so a typo never passes silently) and ``_cross_check``
finds the ones that need the whole file (a rule naming an event type that is not declared, a
coupon missing from the catalogue, tiers out of order).
"""

from __future__ import annotations

import copy
import hashlib
import tomllib
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgpack
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

from engine.calendar import Calendar
from engine.clock import DAY_MS
from engine.errors import ConfigError, ConfigProblem

# Scalars are strict: `daily_cap = "5000"` or `fixed = true` is a mistake to name, not to coerce.
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Name = Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=48)]
Count = Annotated[int, Strict(), Field(ge=0, le=1_000_000_000)]


class _Model(BaseModel):
    # No whitespace stripping: `[rules." r"]` must be an error, not quietly the same rule as `r`.
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the programme as designers write it ------------------------------------------------------


class ProgramInfo(_Model):
    """The programme's identity and the engine limits it chooses."""

    name: Str = Field(min_length=1, max_length=120)
    timezone: Str = Field("UTC", description="IANA zone whose midnight starts a day and a week")
    dedupe_retention_days: Int = Field(
        14, ge=7, le=90, description="how long an event id is remembered; older events are refused"
    )
    max_clock_skew_s: Int = Field(
        300, ge=0, le=3600, description="how far in the future an event's `at` may lie"
    )
    feed_length: Int = Field(
        500, ge=10, le=100_000, description="awards kept in each member's progress stream (for resuming the live feed)"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class FieldType(str, Enum):
    INT = "int"
    STR = "str"
    BOOL = "bool"


class FieldSpec(_Model):
    """One key of an event's ``data``. Money is ``int`` cents: there is no float type."""

    type: FieldType
    required: Bool = True
    description: Str = ""
    min: Int | None = Field(None, ge=-(10**12), le=10**12, description="int: smallest value allowed")
    max: Int | None = Field(None, ge=-(10**12), le=10**12, description="int: largest value allowed")
    max_length: Int = Field(256, ge=1, le=4096, description="str: longest value allowed")
    one_of: tuple[Str, ...] | None = Field(None, min_length=1, description="str: the only values allowed")


class EventType(_Model):
    """A kind of member event the shop posts, and the fields its ``data`` carries."""

    description: Str = ""
    fields: dict[Name, FieldSpec] = Field(default_factory=dict)


class Condition(_Model):
    """A test on one field of an event's data; all given tests must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    eq: Int | Bool | Str | None = None
    ne: Int | Bool | Str | None = None
    gt: Int | None = None
    gte: Int | None = None
    lt: Int | None = None
    lte: Int | None = None
    in_: tuple[Int | Str, ...] | None = Field(None, alias="in")
    not_in: tuple[Int | Str, ...] | None = None


class PerUnit(_Model):
    """``amount`` for every whole ``every`` of ``field``: 1 XP per 100 cents is every=100, amount=1."""

    field: Name
    every: Int = Field(ge=1)
    amount: Int = Field(ge=1, le=1_000_000)


class Currency(str, Enum):
    XP = "xp"
    POINTS = "points"


class Rule(_Model):
    """What one event type earns in one currency; ``fixed`` or ``per``, never both."""

    event: Name
    grant: Currency
    fixed: Int | None = Field(None, ge=1, le=1_000_000)
    per: PerUnit | None = None
    daily_cap: Int | None = Field(None, ge=1, le=10**12, description="most this rule grants a member per day")
    where: dict[Name, Condition] = Field(default_factory=dict)


class Rewards(_Model):
    """A bundle granted at once: quest completion, tier-up."""

    xp: Count = 0
    points: Count = 0
    coupons: tuple[Name, ...] = ()


class CatalogItem(_Model):
    """A reward that is not a number: a coupon and its terms."""

    kind: Literal["coupon"] = "coupon"
    title: Str = Field(min_length=1, max_length=120)
    value_cents: Int = Field(ge=0)
    min_spend_cents: Int = Field(0, ge=0)
    valid_days: Int = Field(30, ge=1, le=3650)


class Tier(_Model):
    """A rung of the ladder, reached by lifetime XP."""

    id: Name
    name: Str = Field(min_length=1, max_length=60)
    xp: Count
    points_multiplier: float = Field(1.0, ge=0.0, le=100.0)
    rewards: Rewards = Rewards()

    @field_validator("points_multiplier", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number such as 1.25")
        return value

    @field_validator("points_multiplier")
    @classmethod
    def _thousandths(cls, value: float) -> float:
        if abs(round(value * 1000) - value * 1000) > 1e-6:
            raise ValueError("must have at most three decimals (it is applied in thousandths)")
        return value


class QuestKind(str, Enum):
    ONCE = "once"
    DAILY = "daily"
    WEEKLY = "weekly"
    WINDOW = "window"


class Quest(_Model):
    """A goal: count events (or sum a field of them) until ``target``; then the rewards."""

    title: Str = Field(min_length=1, max_length=120)
    kind: QuestKind
    event: Name
    target: Int = Field(ge=1, le=1_000_000_000)
    sum: Name | None = Field(None, description="int field to add up; without it, events are counted")
    where: dict[Name, Condition] = Field(default_factory=dict)
    starts: datetime | None = None
    ends: datetime | None = None
    rewards: Rewards = Rewards()


class Program(_Model):
    """A whole programme file."""

    program: ProgramInfo
    events: dict[Name, EventType]
    rules: dict[Name, Rule] = Field(default_factory=dict)
    tiers: tuple[Tier, ...] = Field(min_length=1)
    quests: dict[Name, Quest] = Field(default_factory=dict)
    catalog: dict[Name, CatalogItem] = Field(default_factory=dict)


# --- loading and checking -------------------------------------------------------------------


def parse_program(source: str | bytes, file: str) -> Program:
    """Parse and validate one programme's TOML text; raise ``ConfigError`` naming every problem."""
    try:
        text = source.decode("utf-8") if isinstance(source, bytes) else source
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8", [ConfigProblem(file, "", f"not UTF-8 text: {exc}")]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML", [ConfigProblem(file, "", str(exc))]) from None
    try:
        program = Program.model_validate(raw)
    except ValidationError as exc:
        problems = [ConfigProblem(file, _key_path(err["loc"]), _reason(err)) for err in exc.errors()]
        # Drop what the shape mistakes touch and cross-check the rest: one run names every mistake.
        pruned = _prune(raw, exc.errors())
        if pruned is not None:
            partial, dropped = pruned
            problems += [ConfigProblem(file, path, reason) for path, reason in _cross_check(partial, dropped)]
        raise ConfigError(f"{file}: {len(problems)} problem(s)", problems) from None
    problems = [ConfigProblem(file, path, reason) for path, reason in _cross_check(program)]
    if problems:
        raise ConfigError(f"{file}: {len(problems)} problem(s)", problems)
    return program


_SECTIONS = ("events", "rules", "quests", "catalog")
_PLACEHOLDERS: dict[str, Any] = {"program": {"name": "-"}, "tiers": [{"id": "-", "name": "-", "xp": 0}]}


def _prune(raw: dict[str, Any], errors: list[Any]) -> tuple[Program, dict[str, set[str]]] | None:
    """A valid programme made of the parts that passed, and what was left out (by section)."""
    candidate = copy.deepcopy(raw)
    dropped: dict[str, set[str]] = {name: set() for name in (*_SECTIONS, *_PLACEHOLDERS)}
    for _ in range(3):
        for err in errors:
            loc = err["loc"]
            if not loc:
                return None
            section = str(loc[0])
            if section in _SECTIONS and len(loc) >= 2 and isinstance(candidate.get(section), dict):
                candidate[section].pop(loc[1], None)
                dropped[section].add(str(loc[1]))
            elif section in _SECTIONS:
                candidate[section] = {}
                dropped[section].add("*")
            elif section in _PLACEHOLDERS:
                candidate[section] = copy.deepcopy(_PLACEHOLDERS[section])
                dropped[section].add("*")
            else:
                candidate.pop(section, None)  # an unknown top-level key
        try:
            return Program.model_validate(candidate), dropped
        except ValidationError as exc:
            errors = exc.errors()
    return None


def load_program(path: str | Path) -> "CompiledProgram":
    """Read, validate and compile the programme at ``path``."""
    path = Path(path)
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read", [ConfigProblem(str(path), "", exc.strerror or str(exc))]) from None
    return compile_program(parse_program(source, str(path)), source)


def json_schema() -> dict[str, Any]:
    """The JSON Schema editors use to complete and check programme files."""
    schema = Program.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "rekindle programme"
    return schema


_UNION_BRANCHES = frozenset({"int", "bool", "str", "float", "constrained-str", "constrained-int", "list", "tuple"})


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in _UNION_BRANCHES or "[" in item:
            continue  # pydantic names the union branch it tried; designers do not need that
        else:
            parts.append(("." if parts else "") + ("in" if item == "in_" else item))
    return "".join(parts)


def _reason(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (check its spelling; see config/program.schema.json)"
    if err["type"] == "missing":
        return "required key is missing"
    return str(err["msg"]).removeprefix("Value error, ")


def _cross_check(p: Program, dropped: dict[str, set[str]] | None = None) -> list[tuple[str, str]]:
    """Problems that need the whole file to see, as (key path, reason).

    ``dropped``: names left out for shape mistakes already reported; references to them are
    not reported again as missing.
    """
    out: list[tuple[str, str]] = []
    dropped = dropped or {}

    def gone(section: str, name: str) -> bool:
        names = dropped.get(section, set())
        return name in names or "*" in names

    def check_where(path: str, event: str, where: dict[str, Condition]) -> None:
        fields = p.events[event].fields
        for name, cond in where.items():
            spec = fields.get(name)
            if spec is None:
                out.append((f"{path}.where.{name}", f"event type {event!r} has no field {name!r}"))
                continue
            ordered = (cond.gt, cond.gte, cond.lt, cond.lte)
            if spec.type is not FieldType.INT and any(v is not None for v in ordered):
                out.append((f"{path}.where.{name}", f"gt/gte/lt/lte need an int field; {name!r} is {spec.type.value}"))
            for op in ("eq", "ne"):
                value = getattr(cond, op)
                if value is not None and not _fits(spec.type, value):
                    out.append((f"{path}.where.{name}.{op}", f"{value!r} is not a {spec.type.value}"))
            for op, values in (("in", cond.in_), ("not_in", cond.not_in)):
                for value in values or ():
                    if not _fits(spec.type, value):
                        out.append((f"{path}.where.{name}.{op}", f"{value!r} is not a {spec.type.value}"))

    def check_rewards(path: str, rewards: Rewards) -> None:
        for i, coupon in enumerate(rewards.coupons):
            if coupon not in p.catalog and not gone("catalog", coupon):
                out.append((f"{path}.rewards.coupons[{i}]", f"no catalog item {coupon!r}"))

    def int_field(path: str, event: str, name: str) -> None:
        spec = p.events[event].fields.get(name)
        if spec is None:
            out.append((path, f"event type {event!r} has no field {name!r}"))
        elif spec.type is not FieldType.INT:
            out.append((path, f"field {name!r} is {spec.type.value}; only int fields can be summed"))

    for name, et in p.events.items():
        for fname, spec in et.fields.items():
            path = f"events.{name}.fields.{fname}"
            if spec.min is not None and spec.max is not None and spec.min > spec.max:
                out.append((f"{path}.min", "is greater than max"))
            if spec.type is not FieldType.INT and (spec.min is not None or spec.max is not None):
                out.append((path, "min/max apply to int fields only"))
            if spec.type is not FieldType.STR and spec.one_of is not None:
                out.append((f"{path}.one_of", "applies to str fields only"))

    for name, rule in p.rules.items():
        path = f"rules.{name}"
        if rule.event not in p.events:
            if not gone("events", rule.event):
                out.append((f"{path}.event", f"no event type {rule.event!r} is declared under [events]"))
            continue
        if (rule.fixed is None) == (rule.per is None):
            out.append((path, "give exactly one of `fixed` or `per`"))
        if rule.per is not None:
            int_field(f"{path}.per.field", rule.event, rule.per.field)
        check_where(path, rule.event, rule.where)

    seen: set[str] = set()
    for i, tier in enumerate(() if gone("tiers", "*") else p.tiers):
        path = f"tiers[{i}]"
        if tier.id in seen:
            out.append((f"{path}.id", f"tier {tier.id!r} is declared twice"))
        seen.add(tier.id)
        if i == 0 and tier.xp != 0:
            out.append((f"{path}.xp", "the first tier is where every member starts: its xp must be 0"))
        if i > 0 and tier.xp <= p.tiers[i - 1].xp:
            out.append((f"{path}.xp", f"must be greater than the tier before it ({p.tiers[i - 1].xp})"))
        check_rewards(path, tier.rewards)

    for name, quest in p.quests.items():
        path = f"quests.{name}"
        if quest.event not in p.events:
            if not gone("events", quest.event):
                out.append((f"{path}.event", f"no event type {quest.event!r} is declared under [events]"))
            continue
        if quest.sum is not None:
            int_field(f"{path}.sum", quest.event, quest.sum)
        check_where(path, quest.event, quest.where)
        check_rewards(path, quest.rewards)
        for key in ("starts", "ends"):
            value = getattr(quest, key)
            if value is not None and value.tzinfo is None:
                out.append((f"{path}.{key}", "needs a UTC offset, e.g. 2026-12-12T00:00:00+08:00"))
        if quest.kind is QuestKind.WINDOW and (quest.starts is None or quest.ends is None):
            out.append((path, "a window quest needs both `starts` and `ends`"))
        if (
            quest.starts and quest.ends and quest.starts.tzinfo and quest.ends.tzinfo
            and quest.starts >= quest.ends
        ):
            out.append((f"{path}.ends", "must be after starts"))
    return out


def _fits(ftype: FieldType, value: object) -> bool:
    if ftype is FieldType.BOOL:
        return isinstance(value, bool)
    if ftype is FieldType.INT:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


# --- compiled: the lookup tables the hot path reads ---------------------------------------------


Predicate = tuple[str, str, Any]  # (field, op, operand)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    currency: Currency
    fixed: int
    per_field: str | None
    per_every: int
    per_amount: int
    daily_cap: int
    where: tuple[Predicate, ...]


@dataclass(frozen=True, slots=True)
class CompiledQuest:
    id: str
    title: str
    kind: QuestKind
    event: str
    target: int
    sum_field: str | None
    where: tuple[Predicate, ...]
    starts_ms: int | None
    ends_ms: int | None
    rewards: Rewards


@dataclass(frozen=True, slots=True)
class CompiledProgram:
    """A validated programme plus the tables the award path reads per event."""

    model: Program
    program_hash: str  # sha256 of the source bytes, first 16 hex digits
    source: bytes
    tz: ZoneInfo
    retention_ms: int
    skew_ms: int
    feed_length: int
    events: dict[str, EventType]
    rules_by_event: dict[str, tuple[CompiledRule, ...]]
    quests_by_event: dict[str, tuple[CompiledQuest, ...]]
    quests: tuple[CompiledQuest, ...]
    tiers: tuple[Tier, ...]
    tiers_packed: bytes  # msgpack table handed to award.lua with every call
    calendar: Calendar  # days and weeks in the programme's zone (remembers the last found)

    @property
    def name(self) -> str:
        return self.model.program.name


def compile_program(program: Program, source: bytes) -> CompiledProgram:
    rules: dict[str, list[CompiledRule]] = {name: [] for name in program.events}
    for rid, r in program.rules.items():
        rules[r.event].append(
            CompiledRule(
                id=rid,
                currency=r.grant,
                fixed=r.fixed or 0,
                per_field=r.per.field if r.per else None,
                per_every=r.per.every if r.per else 1,
                per_amount=r.per.amount if r.per else 0,
                daily_cap=r.daily_cap or 0,
                where=_predicates(r.where),
            )
        )
    quests: dict[str, list[CompiledQuest]] = {name: [] for name in program.events}
    all_quests: list[CompiledQuest] = []
    for qid, q in program.quests.items():
        cq = CompiledQuest(
            id=qid,
            title=q.title,
            kind=q.kind,
            event=q.event,
            target=q.target,
            sum_field=q.sum,
            where=_predicates(q.where),
            starts_ms=_epoch_ms(q.starts),
            ends_ms=_epoch_ms(q.ends),
            rewards=q.rewards,
        )
        quests[q.event].append(cq)
        all_quests.append(cq)
    tiers_packed = msgpack.packb(
        [
            [t.id, t.xp, round(t.points_multiplier * 1000), t.rewards.xp, t.rewards.points, list(t.rewards.coupons)]
            for t in program.tiers
        ]
    )
    info = program.program
    return CompiledProgram(
        model=program,
        program_hash=hashlib.sha256(source).hexdigest()[:16],
        source=source,
        tz=ZoneInfo(info.timezone),
        retention_ms=info.dedupe_retention_days * DAY_MS,
        skew_ms=info.max_clock_skew_s * 1000,
        feed_length=info.feed_length,
        events=dict(program.events),
        rules_by_event={k: tuple(v) for k, v in rules.items()},
        quests_by_event={k: tuple(v) for k, v in quests.items()},
        quests=tuple(all_quests),
        tiers=program.tiers,
        tiers_packed=tiers_packed,
        calendar=Calendar(ZoneInfo(info.timezone)),
    )


def _predicates(where: dict[str, Condition]) -> tuple[Predicate, ...]:
    out: list[Predicate] = []
    for name, cond in where.items():
        for op in ("eq", "ne", "gt", "gte", "lt", "lte", "not_in"):
            value = getattr(cond, op)
            if value is not None:
                out.append((name, op, frozenset(value) if op == "not_in" else value))
        if cond.in_ is not None:
            out.append((name, "in", frozenset(cond.in_)))
    return tuple(out)


def _epoch_ms(value: datetime | None) -> int | None:
    return None if value is None or value.tzinfo is None else int(value.timestamp() * 1000)
