"""Designers' programmes: TOML in, frozen validated models out, compiled once for the hot path.

``load_program(path)`` reads one TOML file and either returns a ``CompiledProgram`` or raises
``ConfigError`` listing *every* problem with its file, key path and reason: pydantic finds the
shape mistakes (unknown keys included, so a typo never passes silently) and ``_cross_check``
finds the ones that need the whole file (a rule naming an event type that is not declared, a
coupon missing from the catalogue, tiers out of order, a `where` test that can never hold).

Problems are worded for the designer, not in pydantic's terms (``_reason``), and the ``MAX_*``
limits below keep a valid programme from crippling the service; docs/programme.md lists them,
generated from these models by ``engine.reference``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
import tomllib
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import msgpack
from pydantic import BaseModel, ConfigDict, Field, RootModel, Strict, ValidationError, field_validator

from engine.calendar import Calendar
from engine.clock import DAY_MS
from engine.errors import ConfigError, ConfigProblem
from engine.ids import EVENT_ID_MAX
from engine.targeting import Packed, pack as pack_audience
from engine.tiering import TierRules

# --- limits: a valid programme must not be able to cripple the service ------------------------
# Inclusive; each is named in the error a designer sees and listed in docs/programme.md. The tier
# table is read on every award, so it stays small; the others bound the work of one event.
MAX_TIERS = 20
MAX_EVENT_TYPES = 100
MAX_FIELDS = 32
MAX_RULES = 200
MAX_QUESTS = 200
MAX_RULES_PER_EVENT = 16  # one award runs every rule and quest of its event type: this bounds
MAX_QUESTS_PER_EVENT = 16  # the work of one award, whatever the programme's size
MAX_CATALOG_ITEMS = 1_000
MAX_COUPONS_PER_REWARD = 10
MAX_ITEMS_PER_REWARD = 10
MAX_ITEM_NAME_LENGTH = 64
MAX_CONDITIONS = 16
MAX_VALUES = 100
MAX_NAME_LENGTH = 48
MAX_DESCRIPTION_LENGTH = 500
MAX_NESTING = 16  # tables and arrays inside one another; a valid programme needs 5
MAX_PROBLEMS = 100  # problems listed per file; the rest are counted in one more line

LIMITS: dict[str, str] = {
    "MAX_TIERS": "tiers in `[[tiers]]`",
    "MAX_EVENT_TYPES": "event types under `[events]`",
    "MAX_FIELDS": "fields of one event type",
    "MAX_RULES": "rules under `[rules]`",
    "MAX_QUESTS": "quests under `[quests]`",
    "MAX_RULES_PER_EVENT": "rules that name one event type (one award runs them all)",
    "MAX_QUESTS_PER_EVENT": "quests that count one event type (one award moves them all)",
    "MAX_CATALOG_ITEMS": "items under `[catalog]`",
    "MAX_COUPONS_PER_REWARD": "coupons in one `rewards` bundle",
    "MAX_ITEMS_PER_REWARD": "counted items in one `rewards` bundle (`items`)",
    "MAX_ITEM_NAME_LENGTH": "characters in an item name (`<game>:<item>`)",
    "MAX_CONDITIONS": "fields tested in one `where` (rule or quest)",
    "MAX_VALUES": "values in one `in`, `not_in` or `one_of`",
    "MAX_NAME_LENGTH": "characters in a name (event type, field, rule, quest, tier id, catalog item)",
    "MAX_DESCRIPTION_LENGTH": "characters in a `description`",
    "MAX_NESTING": "tables and arrays inside one another anywhere in the file",
    "MAX_PROBLEMS": "problems reported for one file (the rest are counted)",
}
"""What each ``MAX_*`` limits, in the designer's words (for the reference)."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
NAME_RULE = f"names use letters, digits, _ and - (at most {MAX_NAME_LENGTH}), starting with a letter or digit"
#: A counted item a game declares (``engine.plugins.Game.items``): ``<game>:<item>``.
ITEM_PATTERN = r"^[a-z0-9_-]+:[A-Za-z0-9_-]+$"
ITEM_RULE = (
    f'item names are <game>:<item> as a game declares them, such as "checkin:makeup" '
    f"(letters, digits, _ and -, at most {MAX_ITEM_NAME_LENGTH} characters)"
)

# Scalars are strict: `daily_cap = "5000"` or `fixed = true` is a mistake to name, not to coerce.
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Text = Annotated[str, Strict(), Field(max_length=MAX_DESCRIPTION_LENGTH)]
Name = Annotated[str, Strict(), Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)]
Count = Annotated[int, Strict(), Field(ge=0, le=1_000_000_000)]
ItemName = Annotated[str, Strict(), Field(pattern=ITEM_PATTERN, max_length=MAX_ITEM_NAME_LENGTH)]
ItemCount = Annotated[int, Strict(), Field(ge=1, le=1_000_000_000)]


class _Model(BaseModel):
    # No whitespace stripping: `[rules." r"]` must be an error, not quietly the same rule as `r`.
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the programme as designers write it ------------------------------------------------------


class ProgramInfo(_Model):
    """The programme's identity and the engine limits it chooses."""

    name: Str = Field(min_length=1, max_length=120, description="shown to operators and in `rekindle check`")
    timezone: Str = Field(
        "UTC",
        description='IANA region zone whose midnight starts a day and a week: "UTC" or a name such as '
        '"Asia/Shanghai"; host-dependent names (localtime, posixrules, Factory) and bare aliases (GMT, PRC) '
        "are refused",
    )
    dedupe_retention_days: Int = Field(
        14, ge=7, le=90, description="how long an event id is remembered; older events are refused"
    )
    max_clock_skew_s: Int = Field(
        300, ge=0, le=3600, description="how far in the future an event's `at` may lie"
    )
    feed_length: Int = Field(
        500, ge=10, le=100_000, description="awards kept in each member's progress stream (for resuming the live feed)"
    )
    refund_window_days: Int = Field(
        90,
        ge=1,
        le=730,
        description="how long after an event a refund (an event type that `reverses` it) can take back what it granted",
    )
    coupon_history_days: Int = Field(
        90,
        ge=1,
        le=3650,
        description="how long a coupon used, revoked or past its end stays in the member's record (and snapshot) "
        "before it is forgotten; a coupon still usable is kept until its end",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        # Day and week boundaries must not depend on the host: "localtime" is whatever the
        # machine says, so only real region zones (and UTC) are accepted.
        advice = 'use "UTC" or a region name such as "Europe/Berlin" or "Asia/Shanghai"'
        if value not in _region_zones():
            if value in available_timezones():
                why = "its meaning depends on the host or it is a legacy alias"
                raise ValueError(f"{value!r} is not a region zone ({why}): {advice}")
            raise ValueError(f"unknown time zone {value!r}: {advice}")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: {advice}") from None
        return value


@functools.cache
def _region_zones() -> frozenset[str]:
    """UTC and the host's IANA ``Area/Location`` zones: not localtime, posixrules, Factory, GMT, posix/*."""
    zones = {z for z in available_timezones() if "/" in z and z.split("/", 1)[0] not in {"posix", "right"}}
    return frozenset(zones | {"UTC"})


class FieldType(str, Enum):
    """The type of one field of an event's ``data``."""

    INT = "int"
    STR = "str"
    BOOL = "bool"


class FieldSpec(_Model):
    """One key of an event's ``data``. Money is ``int`` cents: there is no float type."""

    type: FieldType = Field(description="int, str or bool; money is int cents")
    required: Bool = Field(True, description="whether every event must carry this field")
    description: Text = Field("", description="for people reading the programme")
    min: Int | None = Field(None, ge=-(10**12), le=10**12, description="int: smallest value allowed")
    max: Int | None = Field(None, ge=-(10**12), le=10**12, description="int: largest value allowed")
    max_length: Int = Field(256, ge=1, le=4096, description="str: longest value allowed")
    one_of: tuple[Str, ...] | None = Field(
        None, min_length=1, max_length=MAX_VALUES, description="str: the only values allowed"
    )


class EventType(_Model):
    """A kind of member event the shop posts, and the fields its ``data`` carries."""

    description: Text = Field("", description="for people reading the programme")
    fields: dict[Name, FieldSpec] = Field(
        default_factory=dict, max_length=MAX_FIELDS, description="the keys of the event's `data`, by name"
    )
    reverses: Name | None = Field(
        None,
        description="this type is a refund of that event type: `data.of` (a str field it must declare) names "
        "the original event; an optional int `data.amount` takes back that share of the original's `amount`",
    )


class Condition(_Model):
    """A test on one field of an event's data; all given tests must hold.

    A test the field can never pass or never fail (a value outside its ``one_of`` or its
    ``min``..``max``) is refused: the rule or quest would silently never fire, or always.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    eq: Int | Bool | Str | None = Field(None, description="the field equals this value")
    ne: Int | Bool | Str | None = Field(None, description="the field differs from this value")
    gt: Int | None = Field(None, description="int field: greater than")
    gte: Int | None = Field(None, description="int field: greater than or equal to")
    lt: Int | None = Field(None, description="int field: less than")
    lte: Int | None = Field(None, description="int field: less than or equal to")
    in_: tuple[Int | Str, ...] | None = Field(
        None, alias="in", max_length=MAX_VALUES, description="the field equals one of these values"
    )
    not_in: tuple[Int | Str, ...] | None = Field(
        None, max_length=MAX_VALUES, description="the field equals none of these values"
    )


class PerUnit(_Model):
    """``amount`` for every whole ``every`` of ``field``: 1 XP per 100 cents is every=100, amount=1."""

    field: Name = Field(description="the int field of the event to measure")
    every: Int = Field(ge=1, description="size of one whole unit of the field")
    amount: Int = Field(ge=1, le=1_000_000, description="granted per whole unit")


class Currency(str, Enum):
    """What a rule grants."""

    XP = "xp"
    POINTS = "points"
    ITEM = "item"  # a counted item a game declares, named by the rule's `item`


class Audience(_Model):
    """Who it is for (专属, engine/targeting.py): every test given must hold, for the member as
    they stand before the operation. A rule or quest not for the member earns nothing; a catalog
    item or a game's campaign refuses them (`not_eligible`)."""

    tiers: tuple[Name, ...] | None = Field(None, min_length=1, max_length=MAX_TIERS,
                                           description="the member's tier is one of these")
    tags: tuple[Name, ...] | None = Field(None, min_length=1, max_length=16,
                                          description="the member has one of these tags (`PUT /v1/members/{id}`)")
    new_days: Int | None = Field(None, ge=1, le=3650, description="the member joined (the profile's `joined_at`) "
                                                                  "less than this many days before")
    dormant: Bool | None = Field(None, description="true: only members marked dormant (`[care.dormancy]`); "
                                                   "false: only members who are not")


class Rule(_Model):
    """What one event type earns in one currency; ``fixed`` or ``per``, never both."""

    event: Name = Field(description="the event type (under `[events]`) this rule applies to")
    grant: Currency = Field(
        description='the currency granted; "item": a counted item a game of the programme declares (spins of '
        "a wheel, make-up cards), named by `item`, up to the most a member may hold"
    )
    item: ItemName | None = Field(
        None,
        description='with grant = "item" (and only then): the item granted, `<game>:<item>` as declared by a '
        'game section of this programme, e.g. "checkin:makeup"',
    )
    fixed: Int | None = Field(None, ge=1, le=1_000_000, description="granted once per matching event")
    per: PerUnit | None = Field(None, description="granted in proportion to an int field")
    daily_cap: Int | None = Field(
        None,
        ge=1,
        le=10**12,
        description="most this rule grants a member per day (items: counts only what the member got, "
        "not what the item's cap cut)",
    )
    where: dict[Name, Condition] = Field(
        default_factory=dict, max_length=MAX_CONDITIONS, description="tests on the event's fields, by field name"
    )
    audience: Audience | None = Field(None, description="who the rule is for (everyone without it)")


class Rewards(_Model):
    """A bundle granted at once: quest completion, tier-up."""

    xp: Count = Field(0, description="XP granted")
    points: Count = Field(0, description="points granted (tier multipliers do not apply)")
    coupons: tuple[Name, ...] = Field((), max_length=MAX_COUPONS_PER_REWARD, description="catalog items granted")
    items: dict[ItemName, ItemCount] = Field(
        default_factory=dict,
        max_length=MAX_ITEMS_PER_REWARD,
        description='counted items granted, by item name (`items = { "checkin:makeup" = 1 }`): items a game '
        "section of this programme declares, each up to the most a member may hold",
    )


class Item(NamedTuple):
    """A counted item members hold (``member.lua``'s inventory): a game declares its own."""

    field: str  # the member state field holding the count: "i:<item name>"
    cap: int  # the most one member holds (0: no cap); a grant past it is cut to it
    title: str  # shown to the member


def item_field(name: str) -> str:
    return f"i:{name}"


class CatalogItem(_Model):
    """A reward that is not a number: a coupon and its terms."""

    kind: Literal["coupon"] = Field("coupon", description="the only kind today")
    title: Str = Field(min_length=1, max_length=120, description="shown to the member")
    value_cents: Int = Field(ge=0, description="discount in cents")
    min_spend_cents: Int = Field(0, ge=0, description="smallest order it applies to, in cents")
    valid_days: Int = Field(30, ge=1, le=3650, description="days from grant until it expires")
    points_cost: Int | None = Field(
        None, ge=1, le=10**9, description="members may redeem it for this many points (not redeemable without it)"
    )
    stock: Int | None = Field(None, ge=0, le=10**9, description="how many can be redeemed in all (no limit without it)")
    per_member_limit: Int | None = Field(None, ge=1, le=10**6, description="how many one member may redeem")
    audience: Audience | None = Field(None, description="who may redeem it (everyone without it); a coupon granted "
                                                        "as a reward goes to whoever earned it")


class PointsExpiry(str, Enum):
    NEVER = "never"
    DAYS = "days"
    END_OF_NEXT_YEAR = "end_of_next_year"


class Points(_Model):
    """How long points live. Each grant is a lot with the expiry of the day it was granted;
    spending takes the soonest-expiring lots first."""

    expiry: PointsExpiry = Field(
        PointsExpiry.NEVER,
        description='"never"; "days": at the end of the local day of the grant plus `expiry_days`; '
        '"end_of_next_year": at the end of the calendar year after the grant\'s (the common 积分 rule)',
    )
    expiry_days: Int = Field(365, ge=1, le=3650, description='with expiry = "days": how many days after the grant\'s day')
    ledger_keep_days: Int = Field(
        400, ge=30, le=3650, description="how long ledger entries are kept for audit; older ones are trimmed"
    )


class Webhooks(_Model):
    """Outreach to the shop's backend (``engine/outreach.py``): each message ("your points expire
    in 7 days", "happy birthday", "we miss you") is POSTed to ``url``, signed with HMAC-SHA256 over
    its timestamp and body (the header ``Rekindle-Signature``), retried with exponential backoff and
    jitter, and kept in a dead list an admin can read and replay after ``max_attempts``. The
    signing secret is never in the programme (programmes are stored and shown): it is read from the
    environment variable ``secret_env`` of the processes that send."""

    url: Str = Field(
        min_length=8, max_length=2048, pattern=r"^https?://[^\s/?#]+[^\s]*$",
        description="where messages are POSTed: an http:// or https:// URL of the shop's backend")
    secret_env: Str = Field(
        "REKINDLE_WEBHOOK_SECRET", min_length=1, max_length=128, pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="the environment variable holding the signing secret (at least 16 bytes)")
    timeout_s: float = Field(5.0, ge=0.1, le=60.0, description="how long one delivery attempt may take")
    max_attempts: Int = Field(12, ge=1, le=50, description="delivery attempts before a message goes to the dead list")


class CareMoment(_Model):
    """A care moment's gift: what it grants, once per occasion, and how it is told."""

    title: Str = Field(min_length=1, max_length=120, description="shown to the member (the `care` effect's title)")
    rewards: Rewards = Field(Rewards(), description="granted once per occasion")
    outreach: bool = Field(False, description="also sent to the shop as a signed webhook (needs `[webhooks]`)")


class Birthday(CareMoment):
    """Once a year, on the member's birthday (the profile's `birthday`, MM-DD), in the programme's
    time zone: on the day, or from the start of its week (Monday) or month."""

    when: Literal["day", "week", "month"] = Field(
        "day", description='"day": at the start of the birthday; "week": of its week (Monday); "month": of its month. '
                           "A birthday set or changed within a year grants once that year all the same")


class Holiday(CareMoment):
    """A dated occasion: the member's first qualifying event on one of its days grants its gift,
    once per day listed (as a daily quest that only runs on those days)."""

    days: tuple[Str, ...] = Field(
        min_length=1, max_length=366,
        description='the local days it runs: "MM-DD" every year (Double 11: "11-11") or "YYYY-MM-DD" once (the Spring '
                    'Festival by date: "2027-02-06")')
    event: Name = Field(description="the event type whose first event of the day earns it (under `[events]`)")


class Referral(_Model):
    """The inviter (the profile's `referrer`) is rewarded when the invitee joins and again at the
    invitee's first purchase; a member cannot refer itself or close a loop of referrals."""

    on_join: CareMoment | None = Field(None, description="granted to the referrer when the invitee joins")
    on_first_purchase: CareMoment | None = Field(
        None, description="granted to the referrer at the invitee's first purchase: when the invitee completes "
                          "`first_purchase_quest`")
    first_purchase_quest: Str = Field(
        "care.purchase.1", min_length=1, max_length=80,
        description='the quest whose completion is the first purchase: `care.purchase.1` (`[care.purchases]` at "1") '
                    "or a quest of the programme (`first_order`)")


class Purchases(_Model):
    """The first and the Nth purchase: each a once-per-member gift at that count of purchase events."""

    event: Name = Field(description="the event type that is a purchase (under `[events]`)")
    at: dict[str, CareMoment] = Field(
        min_length=1, max_length=16,
        description='gifts by purchase count: `at."1"` the first purchase, `at."5"` the fifth')


class Dormancy(_Model):
    """A member inactive for ``after_days`` (no event, no game step of their own) is marked dormant:
    a ``care`` effect ("we miss you", and the webhook when ``outreach``), and the wake-up offer: the
    member's next ``return_event`` (a purchase) ends the dormancy with the ``wake_up`` gift, once."""

    after_days: Int = Field(ge=7, le=3650, description="days without activity that make a member dormant")
    title: Str = Field(min_length=1, max_length=120, description='the message when a member becomes dormant ("we miss you")')
    outreach: bool = Field(False, description="also sent to the shop as a signed webhook (needs `[webhooks]`)")
    return_event: Name = Field(description="the event type whose event by a dormant member is its return (under `[events]`)")
    wake_up: CareMoment = Field(description="the gift of the return")


class PointsExpiring(_Model):
    """A notice, ``days_before`` a lot of points expires, of the points that will go then: a
    ``care`` effect on the member's feed, and the webhook when ``outreach`` ("your points expire in
    7 days"). Nothing is granted; nothing is said when the lot is spent by then."""

    days_before: Int = Field(7, ge=1, le=90, description="days before the expiry")
    title: Str = Field(min_length=1, max_length=120, description="the notice, shown to the member")
    outreach: bool = Field(False, description="also sent to the shop as a signed webhook (needs `[webhooks]`)")


class MemberDay(_Model):
    """A member day (会员日): on its days, points from rules earn at a multiple, for its tiers."""

    title: Str = Field(min_length=1, max_length=120, description="shown to members")
    days: tuple[Str, ...] = Field(
        min_length=1, max_length=366,
        description='the local days: "MM-DD" every year ("12-12") or "YYYY-MM-DD" once')
    multiplier: float = Field(ge=1.0, le=10.0, description="multiplies points from rules on those days, on top of "
                                                            "the tier's multiplier; at most three decimals")
    tiers: tuple[Name, ...] | None = Field(None, min_length=1, max_length=MAX_TIERS,
                                           description="the tiers it is for (every tier without it)")

    @field_validator("multiplier", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number such as 2 or 1.5")
        return value

    @field_validator("multiplier")
    @classmethod
    def _thousandths(cls, value: float) -> float:
        if abs(round(value * 1000) - value * 1000) > 1e-6:
            raise ValueError("must have at most three decimals (it is applied in thousandths)")
        return value


class Care(_Model):
    """The care moments (关怀): each grants its gift at most once per occasion, on an operation id
    derived from the occasion, so running twice, on two processes or across a restart grants once."""

    welcome: CareMoment | None = Field(None, description="a new member: when the profile's `joined_at` is first set, "
                                                         "or at the `join_event`")
    join_event: Name | None = Field(None, description="an event type (under `[events]`) that also marks joining")
    purchases: Purchases | None = Field(None, description="the first and the Nth purchase")
    birthday: Birthday | None = Field(None, description="once a year, on the member's birthday")
    holidays: dict[Name, Holiday] = Field(default_factory=dict, max_length=64, description="dated occasions, by name")
    referral: Referral | None = Field(None, description="the referrer's gifts")
    dormancy: Dormancy | None = Field(None, description="dormancy and the wake-up gift")
    points_expiring: PointsExpiring | None = Field(None, description="a notice before points expire")


class Tier(_Model):
    """A rung of the ladder, reached by lifetime XP (the default) or by what `[tier_policy]` counts."""

    id: Name = Field(description="stable id used in the API and in key paths (`tiers[gold]`)")
    name: Str = Field(min_length=1, max_length=60, description="shown to the member")
    xp: Count = Field(description="XP that reaches this tier (lifetime XP, or the XP of `[tier_policy]`'s window); "
                                  "0 for the first, rising after")
    spend: Count | None = Field(None, description="with `tier_policy.qualify_on = \"spend\"`: the spend (int cents, "
                                                  "the `amount` of the spend events) in the window that reaches this "
                                                  "tier; 0 for the first, rising after")
    points_multiplier: float = Field(
        1.0, ge=0.0, le=100.0, description="multiplies points from rules while in this tier; at most three decimals"
    )
    rewards: Rewards = Field(Rewards(), description="granted once on reaching this tier")

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


class TierWindow(str, Enum):
    """What a tier is qualified on, and so how long it lasts."""

    LIFETIME = "lifetime"
    YEAR = "year"
    ROLLING = "rolling"


class QualifyOn(str, Enum):
    XP = "xp"
    SPEND = "spend"


class TierPolicy(_Model):
    """How tiers are kept or lost (engine/tiering.py). Without it, tiers are reached by lifetime XP
    and kept for good. With a window, a tier is reached on what the member earns (XP) or spends in
    the window and held until a stated expiry: reached or kept in a calendar year, until the end
    of the next year (`year`); reached or kept at some moment, for `months` months after it
    (`rolling`, the window being those months). At the expiry it is reviewed: kept when the window
    still reaches it, else held `grace_days` more (reaching it again meanwhile keeps it), then
    dropped, by at most one level. Never dropped before its expiry; every change is logged with
    the programme version and shown in the member's snapshot."""

    qualify_on: QualifyOn = Field(QualifyOn.XP, description='"xp": the XP earned; "spend": the `amount` of '
                                                            "`spend_events` (each tier then gives `spend`)")
    window: TierWindow = Field(TierWindow.LIFETIME, description='"lifetime" (never reviewed), "year" (a calendar '
                                                               'year, in the programme\'s zone) or "rolling" '
                                                               "(the last `months` months)")
    months: Int = Field(12, ge=1, le=36, description='with window = "rolling": the months counted, and how long a '
                                                     "tier reached or kept is held")
    grace_days: Int = Field(0, ge=0, le=180, description="days a tier is held past its expiry when the window no "
                                                         "longer reaches it (0: dropped at the expiry)")
    spend_events: tuple[Name, ...] = Field(("purchase",), min_length=1, max_length=8,
                                           description='with qualify_on = "spend": the event types whose int '
                                                       "`amount` counts (a refund of one takes its amount back)")


class QuestKind(str, Enum):
    """How a quest repeats: never, each day, each week (Monday), or only inside its window."""

    ONCE = "once"
    DAILY = "daily"
    WEEKLY = "weekly"
    WINDOW = "window"


class Quest(_Model):
    """A goal: count events (or sum a field of them) until ``target``; then the rewards."""

    title: Str = Field(min_length=1, max_length=120, description="shown to the member")
    kind: QuestKind = Field(description="once, daily, weekly (from Monday) or window (between starts and ends)")
    event: Name = Field(description="the event type (under `[events]`) that advances it")
    target: Int = Field(ge=1, le=1_000_000_000, description="count (or sum) at which the quest completes")
    sum: Name | None = Field(None, description="int field to add up; without it, events are counted")
    where: dict[Name, Condition] = Field(
        default_factory=dict, max_length=MAX_CONDITIONS, description="tests on the event's fields, by field name"
    )
    audience: Audience | None = Field(None, description="who the quest is for (everyone without it): it counts "
                                                          "no event of anyone else")
    # Kept on every kind (issue 10 asked: document or refuse): bounds are useful for a seasonal
    # daily or weekly quest, and the award path already honours them.
    starts: datetime | None = Field(
        None,
        description="first instant the quest counts events, with its UTC offset (2026-12-12T00:00:00+08:00). "
        "Required for window quests; optional for once, daily and weekly quests, which then run only from "
        "this instant (a daily or weekly quest still resets every day or week in between)",
    )
    ends: datetime | None = Field(
        None,
        description="instant the quest stops counting (exclusive), with its UTC offset. Required for window "
        "quests; optional for once, daily and weekly quests, which then run only until this instant "
        "(a daily or weekly quest still resets every day or week before it)",
    )
    rewards: Rewards = Field(
        Rewards(), description="granted once per completion (once per day or week when it repeats)"
    )


class Program(_Model):
    """A whole programme file."""

    program: ProgramInfo = Field(description="name, time zone and engine settings")
    events: dict[Name, EventType] = Field(max_length=MAX_EVENT_TYPES, description="event types the shop posts, by name")
    rules: dict[Name, Rule] = Field(
        default_factory=dict, max_length=MAX_RULES, description="what events earn, by rule name"
    )
    tiers: tuple[Tier, ...] = Field(
        min_length=1, max_length=MAX_TIERS, description="ascending by xp; the first has xp 0"
    )
    tier_policy: TierPolicy = Field(TierPolicy(), description="how tiers are qualified for, kept or lost "
                                                              "(default: lifetime XP, kept for good)")
    quests: dict[Name, Quest] = Field(default_factory=dict, max_length=MAX_QUESTS, description="goals, by quest name")
    catalog: dict[Name, CatalogItem] = Field(
        default_factory=dict, max_length=MAX_CATALOG_ITEMS, description="coupons that rewards name, by item name"
    )
    points: Points = Field(Points(), description="how long points live")
    care: Care = Field(Care(), description="care moments: welcome, purchases, birthday, holidays, referral")
    member_days: dict[Name, MemberDay] = Field(default_factory=dict, max_length=64,
                                               description="member days: points at a multiple on their days, by name")
    webhooks: Webhooks | None = Field(None, description="outreach to the shop's backend as signed webhooks (not "
                                                        "set: messages go to members' live feeds only)")
    games: dict[Name, Any] = Field(
        default_factory=dict,
        description="the games of the programme, by game: `[games.<game>]`, each checked by its game's own "
        "section (see the games below)",
    )


# --- loading and checking -------------------------------------------------------------------


def parse_program(source: str | bytes, file: str) -> Program:
    """Parse and validate one programme's TOML text; raise ``ConfigError`` naming every problem."""
    try:
        text = source.decode("utf-8") if isinstance(source, bytes) else source
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8", [ConfigProblem(file, "", f"not UTF-8 text: {exc}")]) from None
    too_deep = f"nested too deeply: at most {MAX_NESTING} levels of tables and arrays"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML", [ConfigProblem(file, "", _toml_reason(exc))]) from None
    except RecursionError:  # tomllib recurses per nested array or inline table
        raise ConfigError(f"{file}: nested too deeply", [ConfigProblem(file, "", too_deep)]) from None
    deep_at = _too_deep(raw)
    if deep_at is not None:  # before pydantic and deepcopy, which recurse too
        raise ConfigError(f"{file}: nested too deeply", [ConfigProblem(file, deep_at, too_deep)])
    try:
        program = Program.model_validate(raw)
    except ValidationError as exc:
        problems = [ConfigProblem(file, path, reason) for path, reason in _shape_problems(exc.errors(), raw)]
        # Drop what the shape mistakes touch and cross-check the rest: one run names every mistake.
        pruned = _prune(raw, exc.errors())
        if pruned is not None:
            partial, dropped = pruned
            problems += [ConfigProblem(file, path, reason) for path, reason in _cross_check(partial, dropped)]
        raise ConfigError(f"{file}: {len(problems)} problem(s)", _capped(problems, file)) from None
    problems = [ConfigProblem(file, path, reason) for path, reason in _cross_check(program)]
    asked = set(program.games)
    program, game_problems = _game_sections(program, raw)
    problems += [ConfigProblem(file, path, reason) for path, reason in game_problems]
    # Items are declared by the games' sections: checked once those are (a section with its own
    # problems declares nothing, and its items are not reported again as missing).
    problems += [ConfigProblem(file, path, reason) for path, reason in _item_check(program, asked - set(program.games))]
    if problems:
        raise ConfigError(f"{file}: {len(problems)} problem(s)", _capped(problems, file))
    return program


def _game_sections(program: Program, raw: dict[str, Any]) -> tuple[Program, list[tuple[str, str]]]:
    """Each ``[games.<game>]`` through its installed game's section model and cross-checks, with
    key paths under ``games.<game>``; the programme keeps the validated sections."""
    from engine.plugins import installed  # the games' modules import this one

    games = {game.name: game for game in installed()}
    problems: list[tuple[str, str]] = []
    sections: dict[str, Any] = {}
    for name, section_raw in program.games.items():
        game = games.get(name)
        if game is None or game.section is None:
            known = ", ".join(sorted(g for g, x in games.items() if x.section is not None)) or "none"
            problems.append((f"games.{name}", f"no game {name!r} is installed (installed: {known})"))
            continue
        try:
            section = game.section.model_validate(section_raw)
        except ValidationError as exc:
            raw_games = raw.get("games", {})
            problems += [(f"games.{name}.{path}" if path else f"games.{name}", reason)
                         for path, reason in _shape_problems(exc.errors(), raw_games.get(name, {}))]
            continue
        if game.check is not None:
            problems += game.check(program, section)
        sections[name] = section
    return program.model_copy(update={"games": sections}), problems


def declared_items(program: Program) -> dict[str, Item]:
    """Every counted item the programme's game sections declare, by name (``Game.items``); the
    programme's ``games`` must hold validated sections (as ``parse_program`` leaves them)."""
    from engine.plugins import installed  # the games' modules import this one

    games = {game.name: game for game in installed()}
    out: dict[str, Item] = {}
    for name, section in program.games.items():
        game = games.get(name)
        if game is not None and game.items is not None:
            out.update(game.items(section))
    return out


def _item_check(program: Program, unchecked: set[str]) -> list[tuple[str, str]]:
    """Every item a rule or a ``rewards`` names must be declared by a game section of this
    programme; ``unchecked``: games whose section has problems of its own (not reported again)."""
    from engine.plugins import installed

    declared = declared_items(program)
    installed_names = {game.name for game in installed() if game.items is not None}
    out: list[tuple[str, str]] = []

    def check(path: str, name: str) -> None:
        game = name.split(":", 1)[0]
        if name in declared or game in unchecked:
            return
        reason = f"no item {name!r} is declared by this programme's games (declared: {', '.join(sorted(declared)) or 'none'})"
        if game in installed_names and game not in program.games:
            reason += f"; the {game} game declares its items in [games.{game}], which this programme does not have"
        out.append((path, reason))

    for rid, rule in program.rules.items():
        if rule.grant is Currency.ITEM and rule.item is not None:
            check(f"rules.{rid}.item", rule.item)
    tier_ids = [tier.id for tier in program.tiers]
    for i, tier in enumerate(program.tiers):
        for name in tier.rewards.items:
            check(f"tiers[{_tier_label(tier_ids, i)}].rewards.items.{name}", name)
    for qid, quest in program.quests.items():
        for name in quest.rewards.items:
            check(f"quests.{qid}.rewards.items.{name}", name)
    for path, rewards in _rewards_in(program.care, "care"):
        for name in rewards.items:
            check(f"{path}.items.{name}", name)
    for game, section in program.games.items():  # a game's own rewards (a wheel's prizes, streak days)
        for path, rewards in _rewards_in(section, f"games.{game}"):
            for name in rewards.items:
                check(f"{path}.items.{name}", name)
    return out


def _rewards_in(node: Any, path: str) -> Iterator[tuple[str, Rewards]]:
    """Every ``Rewards`` inside a validated game section, with its key path: a game that uses
    the engine's bundle gets its items checked without a line of its own."""
    if isinstance(node, Rewards):
        yield path, node
    elif isinstance(node, RootModel):
        yield from _rewards_in(node.root, path)
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _rewards_in(getattr(node, name), f"{path}.{name}")
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _rewards_in(value, f"{path}.{key}")
    elif isinstance(node, tuple | list):
        for i, value in enumerate(node):
            yield from _rewards_in(value, f"{path}[{i}]")


def _toml_reason(exc: tomllib.TOMLDecodeError) -> str:
    """The parser's message with its position first: "not valid TOML at line 12, column 5: ..."."""
    message = str(exc)
    found = re.search(r" \((at line \d+, column \d+|at end of document)\)$", message)
    if found is None:
        return f"not valid TOML: {message}"
    return f"not valid TOML {found.group(1)}: {message[: found.start()]}"


def _too_deep(raw: dict[str, Any]) -> str | None:
    """Key path of the first value nested past ``MAX_NESTING``, or None (iterative: no recursion)."""
    stack: list[tuple[Any, int, str]] = [(raw, 0, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_NESTING:
            return path
        if isinstance(node, dict):
            stack.extend((v, depth + 1, f"{path}.{k}" if path else str(k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, depth + 1, path) for v in node)
    return None


def _capped(problems: list[ConfigProblem], file: str) -> list[ConfigProblem]:
    """At most ``MAX_PROBLEMS``, then one line counting the rest: a 500-problem reply helps nobody."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = len(problems) - MAX_PROBLEMS
    summary = ConfigProblem(file, "", f"and {rest} more problems (the first {MAX_PROBLEMS} are listed)")
    return [*problems[:MAX_PROBLEMS], summary]


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
    _game_schemas(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "rekindle programme"
    return schema


def _game_schemas(schema: dict[str, Any]) -> None:
    """``games`` in the schema: each installed game's section, so an editor completes and checks
    ``[games.<game>]`` like the rest."""
    from engine.plugins import installed

    defs = schema.setdefault("$defs", {})
    properties: dict[str, Any] = {}
    for game in installed():
        if game.section is None:
            continue
        sub = game.section.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        properties[game.name] = sub
    games = schema["properties"]["games"]
    games.pop("additionalProperties", None)
    games.pop("propertyNames", None)
    games["properties"] = properties
    games["additionalProperties"] = False


# --- shape mistakes in the designer's words -----------------------------------------------------


def _shape_problems(errors: Sequence[Any], raw: dict[str, Any]) -> list[tuple[str, str]]:
    """pydantic's errors as (key path, reason); a union's per-branch errors become one problem."""
    out: list[tuple[str, str]] = []
    branches: dict[str, list[str]] = {}  # key path -> union branches that all failed
    for err in errors:
        path, branch = _key_path(err["loc"], raw)
        if branch is None:
            out.append((path, _reason(err, path)))
        elif path not in branches:
            branches[path] = [branch]
            out.append((path, ""))  # placeholder keeps the problem in pydantic's order
        else:
            branches[path].append(branch)
    return [(path, reason or _one_of_types(branches[path])) for path, reason in out]


def _key_path(loc: tuple[int | str, ...], raw: Any) -> tuple[str, str | None]:
    """The designer's key path for a pydantic ``loc``, and the union branch it names (if any).

    pydantic puts segments in ``loc`` that are not keys: the union branch it tried (``int``,
    ``str``) and ``[key]`` for a bad table key. Which segments those are follows from the model,
    not from their spelling, since a designer may name a field ``int`` or ``list``.
    """
    parts: list[str] = []
    branch: str | None = None
    annotation: Any = Program
    node: Any = raw
    i = 0
    while i < len(loc):
        item = loc[i]
        annotation, arms = _unwrap(annotation)
        if arms > 1:  # pydantic names the union branch it tried here
            branch, annotation = str(item), None
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = next((f for n, f in annotation.model_fields.items() if (f.alias or n) == item), None)
            parts.append(f".{item}")
            annotation = field.annotation if field else None
            node = node.get(item) if isinstance(node, dict) else None
        elif get_origin(annotation) is dict and isinstance(item, str):
            parts.append(f".{item}")
            annotation = get_args(annotation)[1]
            node = node.get(item) if isinstance(node, dict) else None
            if i + 1 < len(loc) and loc[i + 1] == "[key]":
                i += 1  # the mistake is in the key itself: its path is the key's
        elif get_origin(annotation) is tuple and isinstance(item, int):
            element = get_args(annotation)[0]
            label = _tier_label([_id_of(t) for t in node], item) if element is Tier and isinstance(node, list) else item
            parts.append(f"[{label}]")
            annotation = element
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(f"[{item}]" if isinstance(item, int) else f".{item}")
            annotation = node = None
        i += 1
    return "".join(parts).removeprefix("."), branch


def _unwrap(annotation: Any) -> tuple[Any, int]:
    """``annotation`` without ``Annotated`` and ``| None``, and how many arms its union has."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, types.UnionType):
            arms = [a for a in get_args(annotation) if a is not type(None)]
            if len(arms) > 1:
                return annotation, len(arms)
            annotation = arms[0]
        else:
            return annotation, 1


def audience_problems(p: Program, path: str, audience: Audience | None) -> list[tuple[str, str]]:
    """An audience naming a tier the programme lacks (a game's section checks its campaigns' with
    this too)."""
    return [] if audience is None else _unknown_tiers(p, f"{path}.tiers", audience.tiers)


def _unknown_tiers(p: Program, path: str, tiers: Sequence[str] | None) -> list[tuple[str, str]]:
    known = {t.id for t in p.tiers}
    if len(known) < len(p.tiers):
        return []  # a tier id declared twice is reported as such; which tier a name meant is unclear
    return [(f"{path}[{i}]", f"no tier {t!r} under [[tiers]]") for i, t in enumerate(tiers or ()) if t not in known]


def _tier_policy_problems(p: Program, tier_ids: Sequence[str], gone: Callable[[str, str], bool]) -> list[tuple[str, str]]:
    """A tier policy that cannot work: spend thresholds missing or out of order, spend events that
    carry no int amount, a grace or a months count its window never uses."""
    out: list[tuple[str, str]] = []
    policy = p.tier_policy
    given = policy.model_fields_set
    if policy.window is TierWindow.LIFETIME and policy.grace_days:
        out.append(("tier_policy.grace_days", "a lifetime tier never expires, so it has no grace: set window to "
                                              '"year" or "rolling", or remove grace_days'))
    if "months" in given and policy.window is not TierWindow.ROLLING:
        out.append(("tier_policy.months", 'counts the months of a "rolling" window; this window is '
                                          f"{policy.window.value!r}"))
    if policy.window is TierWindow.ROLLING and policy.grace_days >= policy.months * 28:
        out.append(("tier_policy.grace_days", f"must be shorter than the window ({policy.months} months)"))
    spend = policy.qualify_on is QualifyOn.SPEND
    if not spend:
        if "spend_events" in given:
            out.append(("tier_policy.spend_events", 'counted only with qualify_on = "spend"'))
        for i, tier in enumerate(p.tiers):
            if tier.spend is not None:
                out.append((f"tiers[{_tier_label(tier_ids, i)}].spend", 'read only with tier_policy.qualify_on = '
                                                                        '"spend"; tiers are reached by xp'))
        return out
    for i, tier in enumerate(p.tiers):
        path = f"tiers[{_tier_label(tier_ids, i)}].spend"
        before = p.tiers[i - 1].spend if i else None
        if tier.spend is None:
            out.append((path, 'is required with tier_policy.qualify_on = "spend"'))
        elif i == 0 and tier.spend != 0:
            out.append((path, "the first tier is where every member starts: its spend must be 0"))
        elif i > 0 and before is not None and tier.spend <= before:
            out.append((path, f"must be greater than the tier before it ({before})"))
    for j, name in enumerate(policy.spend_events):
        path = f"tier_policy.spend_events[{j}]"
        event = p.events.get(name)
        if event is None:
            if not gone("events", name):
                out.append((path, f"no event type {name!r} is declared under [events]"))
            continue
        amount = event.fields.get("amount")
        if event.reverses is not None:
            out.append((path, f"event type {name!r} is a refund: a refund of a spend event takes its amount back "
                              "by itself"))
        elif amount is None or amount.type is not FieldType.INT:
            out.append((path, f"event type {name!r} has no int field 'amount' to count"))
    return out


def _id_of(tier: object) -> object:
    return tier.get("id") if isinstance(tier, dict) else None


def _tier_label(ids: Sequence[object], index: int) -> str:
    """A tier's id for key paths (``tiers[gold]``); its index when the id is missing, invalid or shared."""
    tier_id = ids[index] if index < len(ids) else None
    if (
        isinstance(tier_id, str)
        and len(tier_id) <= MAX_NAME_LENGTH
        and re.match(NAME_PATTERN, tier_id)
        and ids.count(tier_id) == 1
    ):
        return tier_id
    return str(index)


_TYPE_WORDS = {"int": "a whole number", "bool": "true or false", "str": "text in quotes"}
_TABLE = "must be a table, such as [section] or { key = value }"
_TABLE_OF = {
    "Condition": "must be a table of tests such as { gte = 100 }",
    "FieldSpec": 'must be a table such as { type = "int" }',
    "PerUnit": 'must be a table such as { field = "amount", every = 100, amount = 1 }',
    "Rewards": "must be a table such as { points = 100 }",
}
_NOUNS = {
    "tiers": "tiers", "events": "event types", "fields": "fields", "rules": "rules", "quests": "quests",
    "catalog": "catalog items", "coupons": "coupons", "where": "conditions", "items": "items",
}
_WHEN = "must be a date and time with its UTC offset, such as 2026-12-12T00:00:00+08:00 (no quotes)"
_REASONS = {
    "extra_forbidden": "unknown key (check its spelling; see config/program.schema.json)",
    "missing": "required key is missing",
    "int_type": "must be a whole number such as 100 (no quotes)",
    "int_parsing": "must be a whole number such as 100 (no quotes)",
    "int_from_float": "must be a whole number such as 100 (no quotes)",
    "bool_type": "must be true or false (no quotes)",
    "bool_parsing": "must be true or false (no quotes)",
    "string_type": 'must be text in quotes, such as "gold"',
    "float_type": "must be a number such as 1.25 (no quotes)",
    "float_parsing": "must be a number such as 1.25 (no quotes)",
    "dict_type": _TABLE,
    "tuple_type": 'must be an array such as ["a", "b"]',
    "list_type": 'must be an array such as ["a", "b"]',
    "string_pattern_mismatch": NAME_RULE,  # names' pattern; item names' is told apart in _reason
    "datetime_type": _WHEN,
    "datetime_parsing": _WHEN,
    "datetime_from_date_parsing": _WHEN,
}


def _reason(err: Any, path: str) -> str:
    """One pydantic error as a sentence a programme designer reads without knowing pydantic."""
    kind, ctx = err["type"], err.get("ctx") or {}
    noun = _NOUNS.get(re.split(r"[.\[]", path)[-1], "values")
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == ITEM_PATTERN:
        return ITEM_RULE
    if kind in _REASONS:
        return _REASONS[kind]
    if kind in ("model_type", "model_attributes_type"):
        return _TABLE_OF.get(ctx.get("class_name", ""), _TABLE)
    if kind == "too_long":
        actual = ctx.get("actual_length") or len(err.get("input") or ())  # pydantic leaves it None for tables
        return f"at most {ctx['max_length']:,} {noun} are allowed (this has {actual:,})"
    if kind == "too_short":
        count = ctx["min_length"]
        return f"needs at least {count:,} {noun[:-1] if count == 1 else noun}"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']:,} characters long"
    if kind == "string_too_short":
        shortest = ctx["min_length"]
        return "must not be empty" if shortest == 1 else f"must be at least {shortest:,} characters long"
    bounds = {"greater_than_equal": ("ge", "at least"), "less_than_equal": ("le", "at most"),
              "greater_than": ("gt", "more than"), "less_than": ("lt", "less than")}
    if kind in bounds:
        key, words = bounds[kind]
        return f"must be {words} {_number(ctx[key])}"
    if kind in ("enum", "literal_error"):
        return "must be one of " + ", ".join(f'"{v}"' for v in re.findall(r"'([^']*)'", ctx.get("expected", "")))
    return str(err["msg"]).removeprefix("Value error, ")


def _one_of_types(branches: list[str]) -> str:
    """'must be a whole number, true or false, or text in quotes' for a value no union arm took."""
    words = [_TYPE_WORDS.get(b, b) for b in branches]
    if len(words) == 1:
        return f"must be {words[0]}"
    return "must be " + ", ".join(words[:-1]) + ("," if len(words) > 2 else "") + f" or {words[-1]}"


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


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
                continue
            mistyped = [
                (f"{path}.where.{name}.{op}", f"{value!r} is not a {spec.type.value}")
                for op, values in _operands(cond)
                for value in values
                if not _fits(spec.type, value)
            ]
            out.extend(mistyped or _dead_tests(f"{path}.where.{name}", name, spec, cond))

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

    for name, et in p.events.items():
        if et.reverses is None:
            continue
        path = f"events.{name}.reverses"
        original = p.events.get(et.reverses)
        if original is None:
            if not gone("events", et.reverses):
                out.append((path, f"no event type {et.reverses!r} is declared under [events]"))
            continue
        if original.reverses is not None:
            out.append((path, f"{et.reverses!r} is itself a refund; a refund reverses an ordinary event type"))
        of = et.fields.get("of")
        if of is None or of.type is not FieldType.STR or not of.required:
            out.append((f"events.{name}.fields.of", "a refund needs a required str field `of`: the original event's id"))
        elif of.max_length < EVENT_ID_MAX or of.one_of is not None:
            # Any valid event id may be refunded: an `of` that cannot hold one would answer 422
            # to the refund of an order the shop was allowed to post.
            out.append((f"events.{name}.fields.of", f"must accept every event id: max_length at least {EVENT_ID_MAX} "
                        f"(an event id may be {EVENT_ID_MAX} characters) and no one_of"))
        amount = et.fields.get("amount")
        if amount is not None and amount.type is not FieldType.INT:
            out.append((f"events.{name}.fields.amount", "a refund's `amount` is an int (the share of the original's)"))
        if amount is not None and (original.fields.get("amount") is None or original.fields["amount"].type is not FieldType.INT):
            out.append((f"events.{name}.fields.amount", f"a partial refund needs an int `amount` on {et.reverses!r} to take a share of"))

    for section, items, limit, verb in (
        ("rules", p.rules, MAX_RULES_PER_EVENT, "name"),
        ("quests", p.quests, MAX_QUESTS_PER_EVENT, "count"),
    ):
        per_event: dict[str, list[str]] = {}
        for name, item in items.items():
            per_event.setdefault(item.event, []).append(name)
        for event, names in per_event.items():
            if len(names) > limit:
                out.append((
                    f"{section}.{names[limit]}.event",
                    f"at most {limit} {section} may {verb} one event type; {len(names)} {verb} {event!r}",
                ))

    for name, rule in p.rules.items():
        path = f"rules.{name}"
        # Whether the item is declared needs the games' sections: _item_check, once they are checked.
        if rule.grant is Currency.ITEM and rule.item is None:
            out.append((f"{path}.item", 'a rule with grant = "item" names the item it grants: item = "<game>:<item>"'))
        elif rule.grant is not Currency.ITEM and rule.item is not None:
            out.append((f"{path}.item", f'only a rule with grant = "item" names an item; this one grants {rule.grant.value}'))
        if rule.event not in p.events:
            if not gone("events", rule.event):
                out.append((f"{path}.event", f"no event type {rule.event!r} is declared under [events]"))
            continue
        if (rule.fixed is None) == (rule.per is None):
            out.append((path, "give exactly one of `fixed` or `per`"))
        if rule.per is not None:
            int_field(f"{path}.per.field", rule.event, rule.per.field)
        check_where(path, rule.event, rule.where)
        out.extend(audience_problems(p, f"{path}.audience", rule.audience))

    seen: set[str] = set()
    tier_ids = [tier.id for tier in p.tiers]
    for i, tier in enumerate(() if gone("tiers", "*") else p.tiers):
        path = f"tiers[{_tier_label(tier_ids, i)}]"
        if tier.id in seen:
            out.append((f"{path}.id", f"tier {tier.id!r} is declared twice"))
        seen.add(tier.id)
        if i == 0 and tier.xp != 0:
            out.append((f"{path}.xp", "the first tier is where every member starts: its xp must be 0"))
        if i > 0 and tier.xp <= p.tiers[i - 1].xp and p.tier_policy.qualify_on is QualifyOn.XP:
            out.append((f"{path}.xp", f"must be greater than the tier before it ({p.tiers[i - 1].xp})"))
        check_rewards(path, tier.rewards)
    out += _tier_policy_problems(p, tier_ids, gone)
    for name, entry in p.catalog.items():
        out.extend(audience_problems(p, f"catalog.{name}.audience", entry.audience))
    for name, day in p.member_days.items():
        path = f"member_days.{name}"
        for i, value in enumerate(day.days):
            if holiday_day(value) is None:
                out.append((f"{path}.days[{i}]", f"{value!r} is not a day: MM-DD (every year) or YYYY-MM-DD"))
        out.extend(_unknown_tiers(p, f"{path}.tiers", day.tiers))

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
        out.extend(audience_problems(p, f"{path}.audience", quest.audience))
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
    out += _care_check(p, gone, check_rewards)
    return out


def _care_check(p: Program, gone: Callable[[str, str], bool],
                check_rewards: Callable[[str, Rewards], None]) -> list[tuple[str, str]]:
    """``[care]``: the event types it names exist, purchase counts are whole numbers, holiday days
    are real days, the referrer's first-purchase gift has a first purchase to follow, and the
    rewards' coupons exist."""
    out: list[tuple[str, str]] = []
    care = p.care

    def event(path: str, name: str | None) -> None:
        if name is not None and name not in p.events and not gone("events", name):
            out.append((path, f"no event type {name!r} is declared under [events]"))

    def coupons(path: str, moment: CareMoment | None) -> None:
        if moment is not None:
            check_rewards(path, moment.rewards)  # the quests' and tiers' check: its problems go with theirs

    event("care.join_event", care.join_event)
    if care.dormancy is not None:
        event("care.dormancy.return_event", care.dormancy.return_event)
        coupons("care.dormancy.wake_up", care.dormancy.wake_up)
    coupons("care.welcome", care.welcome)
    if care.purchases is not None:
        event("care.purchases.event", care.purchases.event)
        for key, moment in care.purchases.at.items():
            if not (key.isdigit() and 1 <= int(key) <= 1_000_000 and str(int(key)) == key):
                out.append((f"care.purchases.at.{key}", "must be a purchase count from 1 to 1000000, such as \"5\""))
            coupons(f"care.purchases.at.{key}", moment)
    coupons("care.birthday", care.birthday)
    for name, holiday in care.holidays.items():
        event(f"care.holidays.{name}.event", holiday.event)
        coupons(f"care.holidays.{name}", holiday)
        for i, day in enumerate(holiday.days):
            if holiday_day(day) is None:
                out.append((f"care.holidays.{name}.days[{i}]", f"{day!r} is not a day: MM-DD (every year) or YYYY-MM-DD"))
    if care.referral is not None:
        coupons("care.referral.on_join", care.referral.on_join)
        coupons("care.referral.on_first_purchase", care.referral.on_first_purchase)
        quest = care.referral.first_purchase_quest
        known = quest in p.quests or (quest == "care.purchase.1" and care.purchases is not None and "1" in care.purchases.at)
        if care.referral.on_first_purchase is not None and not known and not gone("quests", quest):
            out.append(("care.referral.first_purchase_quest",
                        f"no quest {quest!r}: name a quest of [quests], or give [care.purchases] at.\"1\""))
    return out


def _care_quests(program: Program, items: dict[str, Item]) -> list[CompiledQuest]:
    """The care moments the award path grants, as quests: each purchase count a ``once`` quest
    (``care.purchase.<n>``), each holiday a ``daily`` quest of target 1 that runs on its days only
    (``care.holiday.<name>``); their completion is the quest's, once per member (per holiday day)."""
    care, out = program.care, []
    if care.purchases is not None:
        for key, moment in sorted(care.purchases.at.items(), key=lambda kv: int(kv[0])):
            out.append(CompiledQuest(
                id=f"care.purchase.{key}", title=moment.title, kind=QuestKind.ONCE, event=care.purchases.event,
                target=int(key), sum_field=None, where=(), starts_ms=None, ends_ms=None, rewards=moment.rewards,
                coupons=_coupons(program, moment.rewards), items=_item_lines(items, moment.rewards)))
    for name, holiday in care.holidays.items():
        out.append(CompiledQuest(
            id=f"care.holiday.{name}", title=holiday.title, kind=QuestKind.DAILY, event=holiday.event, target=1,
            sum_field=None, where=(), starts_ms=None, ends_ms=None, rewards=holiday.rewards,
            coupons=_coupons(program, holiday.rewards), items=_item_lines(items, holiday.rewards),
            days=frozenset(d for d in map(holiday_day, holiday.days) if d is not None)))
    return out


def holiday_day(value: str) -> str | None:
    """A holiday's day as the planner matches it: "MMDD" every year or "YYYYMMDD" once; None for
    no real day (02-29 is a day: it comes in leap years)."""
    match = re.fullmatch(r"(?:(\d{4})-)?(\d{2})-(\d{2})", value)
    if match is None:
        return None
    year, month, day = match.groups()
    try:
        date(int(year or 2024), int(month), int(day))
    except ValueError:
        return None
    return (year or "") + month + day


def _operands(cond: Condition) -> list[tuple[str, tuple[Any, ...]]]:
    """The equality tests of ``cond`` as (key, values): eq and ne hold one value, in and not_in many."""
    pairs = (("eq", (cond.eq,)), ("ne", (cond.ne,)), ("in", cond.in_ or ()), ("not_in", cond.not_in or ()))
    return [(op, tuple(v for v in values if v is not None)) for op, values in pairs]


def _dead_tests(path: str, name: str, spec: FieldSpec, cond: Condition) -> list[tuple[str, str]]:
    """Tests that can never hold (or never fail) given the field's one_of or min..max.

    Such a rule or quest would silently never fire (eq, in, gt...) or the test would be a no-op
    (ne, not_in): both are mistakes a designer wants named.
    """
    out: list[tuple[str, str]] = []
    outcome = {"eq": "never hold", "in": "never hold", "ne": "always hold", "not_in": "always hold"}
    lo, hi = spec.min, spec.max
    span = f"{'' if lo is None else lo}..{'' if hi is None else hi}"
    for op, values in _operands(cond):
        for value in values:
            if spec.type is FieldType.STR and spec.one_of is not None and value not in spec.one_of:
                allowed = ", ".join(spec.one_of)
                why = f"{value!r} is not one of the values {name!r} takes ({allowed})"
                out.append((f"{path}.{op}", f"{why}: this test would {outcome[op]}"))
            elif spec.type is FieldType.INT and ((lo is not None and value < lo) or (hi is not None and value > hi)):
                why = f"{value} is outside {span}, the range of {name!r}"
                out.append((f"{path}.{op}", f"{why}: this test would {outcome[op]}"))
    bounds = (("gt", cond.gt, hi is not None and cond.gt is not None and cond.gt >= hi),
              ("gte", cond.gte, hi is not None and cond.gte is not None and cond.gte > hi),
              ("lt", cond.lt, lo is not None and cond.lt is not None and cond.lt <= lo),
              ("lte", cond.lte, lo is not None and cond.lte is not None and cond.lte < lo))
    for op, value, dead in bounds:
        if dead:
            out.append((f"{path}.{op}", f"{op} {value} can never hold: {name!r} lies in {span}"))
    lowest = max((v for v in (cond.gte, None if cond.gt is None else cond.gt + 1) if v is not None), default=None)
    highest = min((v for v in (cond.lte, None if cond.lt is None else cond.lt - 1) if v is not None), default=None)
    if not out and lowest is not None and highest is not None and lowest > highest:
        out.append((path, "can never hold: no whole number passes both the lower and the upper bound"))
    return out


def _fits(ftype: FieldType, value: object) -> bool:
    if ftype is FieldType.BOOL:
        return isinstance(value, bool)
    if ftype is FieldType.INT:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


# --- compiled: the lookup tables the hot path reads ---------------------------------------------


Predicate = tuple[str, str, Any]  # (field, op, operand)
#: member.lua's inventory line: (state field, amount, cap (0 none), field expiry ms (0 never), item name)
ItemLine = tuple[str, int, int, int, str]


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
    #: currency ITEM: the item granted, its member state field and the most a member holds (0: no cap)
    item: str | None = None
    item_field: str = ""
    item_cap: int = 0
    audience: Packed | None = None  # who it is for (engine/targeting.py; None: everyone)


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
    coupons: tuple[tuple[str, int], ...]  # (catalog item, valid ms): what the member script grants
    items: tuple[ItemLine, ...] = ()  # the counted items it grants, as member.lua's inventory lines
    #: A holiday's (``[care.holidays]``): the local days it runs, "MMDD" every year or "YYYYMMDD";
    #: empty: every day of its window.
    days: frozenset[str] = frozenset()
    audience: Packed | None = None  # who it is for (engine/targeting.py; None: everyone)


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
    tiers_packed: bytes  # member.lua's ARGV[2] with every call: id, XP, multiplier of each tier
    tier_rewards_packed: bytes  # its ARGV[4]: each tier's rewards
    calendar: Calendar  # days and weeks in the programme's zone (remembers the last found)
    #: Every counted item the programme's game sections declare, by name (``Game.items``).
    items: dict[str, Item]
    refund_window_ms: int = 90 * DAY_MS
    ledger_keep_ms: int = 400 * DAY_MS
    coupon_history_ms: int = 90 * DAY_MS
    #: Event types some refund type ``reverses``: their operations keep a grant record.
    refundable: frozenset[str] = frozenset()
    #: Event types whose applied events the care moments look at after the award (the join event,
    #: the event of the referral's first-purchase quest): every other event costs one set lookup.
    care_events: frozenset[str] = frozenset()
    #: The dormancy's wake-up gift as member.lua's ARGV[5] (b"": no dormancy), and its return event.
    wake_packed: bytes = b""
    wake_event: str = ""
    dormancy_ms: int = 0  # inactivity that makes a member dormant (0: no dormancy)
    expiring_notice_ms: int = 0  # how long before a lot's expiry its notice is due (0: none)
    #: ``[tier_policy]`` when it is not the default (None: lifetime XP, kept for good).
    tier_rules: TierRules | None = None
    #: ``[member_days]``: (local days "MMDD" or "YYYYMMDD", the boost member.lua applies).
    member_days: tuple[tuple[frozenset[str], list[Any]], ...] = ()

    def audience(self, audience: Audience | None) -> Packed | None:
        """An audience as member.lua reads it (``engine/targeting.py``)."""
        if audience is None:
            return None
        return pack_audience(self.tiers[0].id, audience.tiers, audience.tags, audience.new_days, audience.dormant)

    def boosts(self, day: str) -> list[list[Any]]:
        """The member days' boosts of the local day "YYYYMMDD"."""
        return [boost for days, boost in self.member_days if day in days or day[4:] in days]

    @property
    def name(self) -> str:
        return self.model.program.name

    @property
    def games(self) -> dict[str, Any]:
        """Each game's section, validated by its game's model (``[games.<game>]``)."""
        return self.model.games

    def lot_expiry_ms(self, at_ms: int) -> int:
        """When points granted at ``at_ms`` expire (0: never), by the programme's ``[points]``."""
        policy = self.model.points
        if policy.expiry is PointsExpiry.DAYS:
            return self.calendar.days_after(at_ms, policy.expiry_days)
        if policy.expiry is PointsExpiry.END_OF_NEXT_YEAR:
            return self.calendar.year_end(at_ms, 1)
        return 0


def compile_program(program: Program, source: bytes) -> CompiledProgram:
    items = declared_items(program)
    rules: dict[str, list[CompiledRule]] = {name: [] for name in program.events}
    for rid, r in program.rules.items():
        item = items[r.item] if r.item is not None else None
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
                item=r.item,
                item_field=item.field if item else "",
                item_cap=item.cap if item else 0,
                audience=_audience(program, r.audience),
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
            coupons=_coupons(program, q.rewards),
            items=_item_lines(items, q.rewards),
            audience=_audience(program, q.audience),
        )
        quests[q.event].append(cq)
        all_quests.append(cq)
    for cq in _care_quests(program, items):
        quests[cq.event].append(cq)
        all_quests.append(cq)
    # Flat, so the script unpacks one table a call; the rewards only when a member climbs.
    spend = program.tier_policy.qualify_on is QualifyOn.SPEND
    tiers_packed = msgpack.packb([x for t in program.tiers
                                  for x in (t.id, (t.spend or 0) if spend else t.xp, round(t.points_multiplier * 1000))])
    # A tier's items, a 4th element, only when it grants some: the script reads none for the others.
    tier_rewards_packed = msgpack.packb([
        [t.rewards.xp, t.rewards.points, _coupons(program, t.rewards), *_packed_items(items, t.rewards)]
        for t in program.tiers
    ])
    info = program.program
    program_hash = hashlib.sha256(source).hexdigest()[:16]
    policy = program.tier_policy
    tier_rules = None
    if spend or policy.window is not TierWindow.LIFETIME:
        tier_rules = TierRules(spend=spend, window=policy.window.value, months=policy.months,
                               grace_ms=policy.grace_days * DAY_MS, calendar=Calendar(ZoneInfo(info.timezone)),
                               version=program_hash, spend_events=frozenset(policy.spend_events) if spend else frozenset())
    return CompiledProgram(
        model=program,
        program_hash=program_hash,
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
        tier_rewards_packed=tier_rewards_packed,
        calendar=Calendar(ZoneInfo(info.timezone)),
        items=items,
        refund_window_ms=info.refund_window_days * DAY_MS,
        ledger_keep_ms=program.points.ledger_keep_days * DAY_MS,
        coupon_history_ms=info.coupon_history_days * DAY_MS,
        refundable=frozenset(et.reverses for et in program.events.values() if et.reverses is not None),
        care_events=_care_events(program, all_quests),
        wake_packed=_wake_packed(program, items),
        wake_event=program.care.dormancy.return_event if program.care.dormancy is not None else "",
        dormancy_ms=program.care.dormancy.after_days * DAY_MS if program.care.dormancy is not None else 0,
        expiring_notice_ms=(program.care.points_expiring.days_before * DAY_MS
                            if program.care.points_expiring is not None else 0),
        tier_rules=tier_rules,
        member_days=tuple(
            (frozenset(d for d in map(holiday_day, day.days) if d is not None),
             [round(day.multiplier * 1000), list(day.tiers or ())])
            for day in program.member_days.values()),
    )


def _audience(program: Program, audience: Audience | None) -> Packed | None:
    if audience is None:
        return None
    return pack_audience(program.tiers[0].id, audience.tiers, audience.tags, audience.new_days, audience.dormant)


def _wake_packed(program: Program, items: dict[str, Item]) -> bytes:
    dormancy = program.care.dormancy
    if dormancy is None:
        return b""
    r = dormancy.wake_up.rewards
    return msgpack.packb([r.xp, r.points, [list(c) for c in _coupons(program, r)], *_packed_items(items, r)])


def _care_events(program: Program, quests: Sequence[CompiledQuest]) -> frozenset[str]:
    care = program.care
    out = {care.join_event} if care.join_event is not None else set()
    if care.referral is not None and care.referral.on_first_purchase is not None:
        out |= {q.event for q in quests if q.id == care.referral.first_purchase_quest}
    return frozenset(out)


def _coupons(program: Program, rewards: Rewards) -> tuple[tuple[str, int], ...]:
    return tuple((item, program.catalog[item].valid_days * DAY_MS) for item in rewards.coupons)


def _item_lines(items: dict[str, Item], rewards: Rewards) -> tuple[ItemLine, ...]:
    """The counted items of ``rewards`` as member.lua's inventory lines (never expiring)."""
    return tuple((items[name].field, count, items[name].cap, 0, name) for name, count in rewards.items.items())


def _packed_items(items: dict[str, Item], rewards: Rewards) -> list[list[list[Any]]]:
    lines = _item_lines(items, rewards)
    return [[list(line) for line in lines]] if lines else []


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
