"""What an event earns: a pure function of the programme, the event and the time.

``plan_award`` decides everything that does not depend on stored state: which rules and quests
the event matches, the base XP and points, which counter field each quest moves for the
event's period, when each field may be forgotten. ``member.lua`` decides the rest atomically
from stored state (daily caps left, the tier multiplier, whether a quest was already done).
"""

from __future__ import annotations

from typing import Any

from engine.config import CompiledProgram, CompiledQuest, CompiledRule, Currency, Predicate, QuestKind
from engine.errors import InvalidEvent
from engine.events import Event
from engine.operations import Grant, MemberPlan, Operation, QuestStep, member_plan, type_tag

#: Most XP or points one rule grants for one event: keeps every total the member script keeps
#: far inside the integers a Lua double holds exactly, so the script cannot fail halfway.
AWARD_MAX = 10**9


def plan_award(program: CompiledProgram, event: Event, now_ms: int) -> MemberPlan:
    """What this event earns under this programme; the store decides what state allows."""
    data = event.data
    periods = Periods(program, event.at_ms)
    grants: list[Grant] = []
    targets: list[tuple[str, int, list[Any]]] = []
    for rule in program.rules_by_event[event.type]:
        if not matches(rule.where, data):
            continue
        if rule.per_field is None:
            amount = rule.fixed
        else:
            amount = (data.get(rule.per_field, 0) // rule.per_every) * rule.per_amount
        if amount <= 0:
            continue
        if amount > AWARD_MAX:
            raise InvalidEvent(
                f"would earn {amount:,} {rule.currency.value} under rule {rule.id!r}; one event earns at most {AWARD_MAX:,}",
                field=f"data.{rule.per_field}",
            )
        if rule.audience is not None:
            targets.append(("g", len(grants), rule.audience))
        if rule.currency is Currency.ITEM:
            grants.append(_item_grant(rule, amount, periods, program.retention_ms))
            continue
        currency = "x" if rule.currency is Currency.XP else "p"
        if rule.daily_cap:
            day, day_end_ms = periods.day()
            grants.append(
                [currency, amount, rule.id, cap_field(rule.id, day), rule.daily_cap, day_end_ms + program.retention_ms, 1]
            )
        else:
            grants.append([currency, amount, rule.id, "", 0, 0, 1])

    quests: list[QuestStep] = []
    for quest in program.quests_by_event[event.type]:
        step = _quest_step(quest, event, periods, program.retention_ms)
        if step is not None:
            if quest.audience is not None:
                targets.append(("q", len(quests), quest.audience))
            quests.append(step)

    op = Operation(event.id, event.member, event.at_ms, event.fingerprint)
    record = None
    if event.type in program.refundable:
        amount = data.get("amount", 0)
        record = (type_tag(event.type), amount if isinstance(amount, int) and amount > 0 else 0)
    reverse = _reversal(program, event)
    qualify = 0
    rules = program.tier_rules
    if rules is not None and rules.spend:  # the spend a tier policy counts (a refund: what it takes back)
        if event.type in rules.spend_events:
            amount = data.get("amount", 0)
            qualify = amount if isinstance(amount, int) and amount > 0 else 0
        elif reverse is not None and program.events[event.type].reverses in rules.spend_events:
            qualify = -1
    # A dormant member's return (the programme's return event) earns the wake-up gift.
    return member_plan(program, op, now_ms, grants=tuple(grants), quests=tuple(quests), record=record, reverse=reverse,
                       event=event.type, wakes=event.type == program.wake_event, qualify=qualify,
                       targets=tuple(targets), boosts=program.boosts(periods.day()[0]) if program.member_days else None)


def _item_grant(rule: CompiledRule, amount: int, periods: "Periods", retention_ms: int) -> Grant:
    """An item rule's grant: an xp/points grant's seven elements (its daily cap kept as theirs are,
    no multiplier), then the inventory the script adds to: item field, item cap, item name.

    A grant line, not an inventory line (plan[20]): the rule's daily cap is state the script
    reads and writes with the other caps, and an inventory line cannot carry it; inventory lines
    also refuse the operation below zero, which a grant never needs."""
    if rule.daily_cap:
        day, day_end_ms = periods.day()
        cap = [cap_field(rule.id, day), rule.daily_cap, day_end_ms + retention_ms]
    else:
        cap = ["", 0, 0]
    return ["i", amount, rule.id, *cap, 0, rule.item_field, rule.item_cap, rule.item]


def _reversal(program: CompiledProgram, event: Event) -> tuple[str, int, int] | None:
    """A refund's original and amount (0: all that remains); the store checks both against the
    original's grant record."""
    reverses = program.events[event.type].reverses
    if reverses is None:
        return None
    of = event.data["of"]  # required by the programme's cross-check
    if of == event.id:
        raise InvalidEvent("a refund cannot reverse itself", field="data.of")
    amount = event.data.get("amount", 0)
    if "amount" in event.data and amount < 1:
        raise InvalidEvent("must be at least 1: the share of the original's amount to refund", field="data.amount")
    return of, amount, type_tag(reverses)


def matches(where: tuple[Predicate, ...], data: dict[str, Any]) -> bool:
    """True when every predicate holds; a missing optional field fails every test."""
    for name, op, operand in where:
        if name not in data:
            return False
        value = data[name]
        if op == "eq":
            ok = value == operand and type(value) is type(operand)
        elif op == "ne":
            ok = not (value == operand and type(value) is type(operand))
        elif op == "gt":
            ok = value > operand
        elif op == "gte":
            ok = value >= operand
        elif op == "lt":
            ok = value < operand
        elif op == "lte":
            ok = value <= operand
        elif op == "in":
            ok = value in operand
        else:  # not_in
            ok = value not in operand
        if not ok:
            return False
    return True


def quest_period(quest: CompiledQuest, periods: "Periods") -> tuple[str, int]:
    """The counter-field suffix for the period holding the time, and when it may be forgotten."""
    if quest.kind is QuestKind.DAILY:
        return periods.day()
    if quest.kind is QuestKind.WEEKLY:
        return periods.week()
    return "all", 0


def _on_its_day(days: frozenset[str], day: str) -> bool:
    """Whether the local day "YYYYMMDD" is one of a holiday's days ("MMDD" every year, or the date)."""
    return day in days or day[4:] in days


# Fields of the member's state hash (keys.MemberKeys.state), named in one place.
def quest_field(quest_id: str, period: str) -> str:
    return f"q:{quest_id}:{period}"


def quest_done_field(progress_field: str) -> str:
    """The completion marker beside a quest's progress field (member.lua derives it the same way)."""
    return "d" + progress_field


def cap_field(rule_id: str, day: str) -> str:
    return f"c:{rule_id}:{day}"


def _quest_step(quest: CompiledQuest, event: Event, periods: "Periods", retention_ms: int) -> QuestStep | None:
    if quest.starts_ms is not None and event.at_ms < quest.starts_ms:
        return None
    if quest.ends_ms is not None and event.at_ms >= quest.ends_ms:
        return None
    if quest.days and not _on_its_day(quest.days, periods.day()[0]):
        return None
    if not matches(quest.where, event.data):
        return None
    increment = 1 if quest.sum_field is None else event.data.get(quest.sum_field, 0)
    if increment <= 0:
        return None
    period, period_end_ms = quest_period(quest, periods)
    r = quest.rewards
    step: QuestStep = [
        quest.id,
        quest_field(quest.id, period),
        increment,
        quest.target,
        period_end_ms + retention_ms if period_end_ms else 0,
        r.xp,
        r.points,
        [list(c) for c in quest.coupons],
    ]
    if quest.items:  # a 9th element only then: the script unpacks no table for the others
        step.append([list(line) for line in quest.items])
    return step


class Periods:
    """The local day and ISO week holding one instant, in the programme's time zone."""

    __slots__ = ("_calendar", "_at_ms")

    def __init__(self, program: CompiledProgram, at_ms: int) -> None:
        self._calendar = program.calendar
        self._at_ms = at_ms

    def day(self) -> tuple[str, int]:
        return self._calendar.day(self._at_ms)

    def week(self) -> tuple[str, int]:
        return self._calendar.week(self._at_ms)
