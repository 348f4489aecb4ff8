"""Check-in plans, pure: the member operation a check-in or a make-up is, for ``member.lua``.

A check-in's operation id is derived from its local day (``rk:checkin:<member>:<day>``), so a
second check-in the same day is the first one again (a duplicate, replaying its effects), however
many devices tap at once. A make-up's is derived from the day it repairs. The streak itself is
decided by the script against the stored state (``engine/streaks.py`` has the rules). With an
``audience``, both are for its members only: anyone else is refused ``not_eligible``, writing
nothing (a second check-in the same day is still the first one's duplicate).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from engine import ids
from engine.clock import DAY_MS
from engine.config import CompiledProgram, Rewards, item_field
from engine.errors import InvalidInput
from engine.operations import MemberPlan, Operation, fingerprint, member_plan
from games.checkin.config import Checkin

STREAK = "checkin"  #: the streak's name (feed and snapshot)
STREAK_FIELD = "k:checkin"  #: member state field holding it
CARDS_ITEM = "checkin:makeup"  #: the make-up cards' inventory item
CARDS_FIELD = "i:checkin:makeup"
_EPOCH = date(1970, 1, 1).toordinal()


def day_number(tz: ZoneInfo, at_ms: int) -> int:
    """The local day holding ``at_ms``, as days since 1970-01-01 (the streak's unit)."""
    return datetime.fromtimestamp(at_ms / 1000, tz).date().toordinal() - _EPOCH


def day_label(day: int) -> str:
    return date.fromordinal(day + _EPOCH).isoformat()


def parse_day(value: object, field: str) -> int:
    """``YYYY-MM-DD`` as a day number; anything else names the field."""
    if not isinstance(value, str):
        raise InvalidInput(f"must be a date as YYYY-MM-DD, not {ids.kind_of(value)}", field=field)
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("must be a date that exists, as YYYY-MM-DD", field=field) from None
    if len(value) != 10:
        raise InvalidInput("must be a date as YYYY-MM-DD", field=field)
    return parsed.toordinal() - _EPOCH


def _bundle(program: CompiledProgram, rewards: Rewards) -> tuple[int, int, list[list[Any]]]:
    coupons = [[item, program.model.catalog[item].valid_days * DAY_MS] for item in rewards.coupons]
    return rewards.xp, rewards.points, coupons


def _items(program: CompiledProgram, rewards: Rewards) -> list[list[Any]]:
    """Inventory lines granting a bundle's items (spins of a wheel...), each up to its cap."""
    return [[item_field(name), n, program.items[name].cap, 0, name] for name, n in rewards.items.items()]


def _streak(program: CompiledProgram, section: Checkin, today: int, makeup: int) -> list[Any]:
    thresholds = [
        [r.days, *_bundle(program, r.rewards),
         ([[CARDS_FIELD, r.makeup_cards, section.makeup_cards_cap, 0, CARDS_ITEM]] if r.makeup_cards else [])
         + _items(program, r.rewards)]
        for r in section.streak_rewards
    ]
    return [STREAK_FIELD, today, makeup, section.makeup_max_age_days, thresholds, STREAK]


def plan_checkin(program: CompiledProgram, section: Checkin, member: ids.MemberId, now_ms: int) -> MemberPlan:
    """Today's check-in: the section's rewards and the streak's next day."""
    today = day_number(program.tz, now_ms)
    op = Operation(ids.derived_id("checkin", member, today), member, now_ms, fingerprint("checkin", today))
    xp, points, coupons = _bundle(program, section.rewards)
    both: tuple[list[Any], ...] = (["x", xp, "checkin", "", 0, 0, 0], ["p", points, "checkin", "", 0, 0, 0])
    grants = tuple(g for g in both if g[1] > 0)
    return member_plan(
        program, op, now_ms, grants=grants, coupons=tuple([c[0], c[1], "checkin"] for c in coupons),
        inventory=tuple(_items(program, section.rewards)), streak=_streak(program, section, today, 0),
        audience=program.audience(section.audience),
    )


def plan_makeup(program: CompiledProgram, section: Checkin, member: ids.MemberId, missed: int, pay: str,
                now_ms: int) -> MemberPlan:
    """Repair the missed day ``missed`` with a card (``pay`` "card") or points ("points")."""
    today = day_number(program.tz, now_ms)
    op = Operation(ids.derived_id("makeup", member, missed), member, now_ms, fingerprint("makeup", missed, pay))
    if pay == "points":
        if section.makeup_points_cost is None:
            raise InvalidInput("this programme's make-ups take cards only", field="pay")
        return member_plan(program, op, now_ms, debits=([section.makeup_points_cost, "checkin_makeup"],),
                           streak=_streak(program, section, today, missed), audience=program.audience(section.audience))
    return member_plan(program, op, now_ms, inventory=([CARDS_FIELD, -1, section.makeup_cards_cap, 0, CARDS_ITEM],),
                       streak=_streak(program, section, today, missed), audience=program.audience(section.audience))
