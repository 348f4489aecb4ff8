"""Check-in routes (member): thin handlers over ``plans.py``; the service does the HTTP."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from engine import ids
from engine.config import CompiledProgram
from engine.errors import InvalidInput, NotFound
from engine.plugins import Answer, Context, GameCall, Link, Route
from engine.streaks import StreakState
from games.checkin.config import Checkin
from games.checkin.plans import CARDS_FIELD, STREAK_FIELD, day_label, day_number, parse_day, plan_checkin, plan_makeup

BODY_KEYS = ("makeup", "pay")


class CheckinIn(BaseModel):
    """Today's check-in (no body, or ``{}``), or a make-up of a missed day."""

    model_config = ConfigDict(extra="forbid")
    makeup: str | None = Field(None, description="a missed day to repair, YYYY-MM-DD, in the programme's time zone")
    pay: Literal["card", "points"] = Field("card", description="a make-up card (default), or the programme's points cost")


class CheckinState(TypedDict):
    """The member's check-in state (the snapshot's `games.checkin`)."""

    title: str
    current: int  # consecutive days, ending at the last day checked in
    longest: int
    last_day: str | None  # YYYY-MM-DD
    checked_in_today: bool
    makeup_cards: int
    repairable_day: str | None  # the one missed day a make-up can repair now, if any


def section_of(program: CompiledProgram) -> Checkin:
    section = program.games.get("checkin")
    if section is None:
        raise NotFound("this programme has no check-in ([games.checkin])", field="path")
    assert isinstance(section, Checkin)
    return section


async def post_checkin(call: GameCall) -> Answer:
    section = section_of(call.program)
    assert call.member is not None
    body = call.body if call.body is not None else {}
    if not isinstance(body, dict):
        raise InvalidInput(f"must be a JSON object, not {ids.kind_of(body)}", field="body")
    for key in body:
        if key not in BODY_KEYS:
            raise InvalidInput(f"unknown key (expected {', '.join(BODY_KEYS)})", field=str(key))
    if body.get("makeup") is None:
        if "pay" in body:
            raise InvalidInput("applies to a make-up only", field="pay")
        plan = plan_checkin(call.program, section, call.member, call.now_ms)
    else:
        pay = body.get("pay", "card")
        if pay not in ("card", "points"):
            raise InvalidInput('must be "card" or "points"', field="pay")
        missed = parse_day(body["makeup"], "makeup")
        plan = plan_makeup(call.program, section, call.member, missed, pay, call.now_ms)
    result = await call.ctx.ops.apply(plan, call.program)
    return Answer(operation=(plan.op.id, result))


async def snapshot(ctx: Context, program: CompiledProgram, member: ids.MemberId) -> CheckinState | None:
    section = program.games.get("checkin")
    if section is None:
        return None
    streak_raw, cards = await ctx.members.state_fields(member, [STREAK_FIELD, CARDS_FIELD])
    state = StreakState.unpack(streak_raw)
    today = day_number(program.tz, ctx.clock.now_ms())
    current = state.current if state.last >= today - 1 else 0  # a streak not continued yesterday is over
    repairable = state.gap if state.gap and state.gap >= today - section.makeup_max_age_days else (
        today - 1 if state.last and state.last == today - 2 else 0)
    return CheckinState(
        title=section.title,
        current=current,
        longest=state.longest,
        last_day=day_label(state.last) if state.last else None,
        checked_in_today=state.last == today,
        makeup_cards=int(cards or 0),
        repairable_day=day_label(repairable) if repairable else None,
    )


REFUSALS: dict[str, tuple[str, str]] = {
    "not_missed": ("that day was checked in, is today or later, or cannot join the streak", "makeup"),
    "too_old": ("that day is too long ago to make up", "makeup"),
    "out_of_order": ("a day before the last check-in cannot be checked in", "makeup"),
    "insufficient_items": ("the member has no make-up card", "pay"),
    "insufficient_points": ("the member's live points balance cannot cover the make-up", "pay"),
    "not_eligible": ("this programme's check-in is not for this member (its audience: tiers, tags, new or dormant "
                     "members)", "checkin"),
}

ROUTES = (
    Route(
        "post", "/v1/me/checkin", "checkIn", "Check in today, or make up a missed day",
        "Today's check-in in the programme's time zone: the section's rewards and the streak's next day (effects "
        "`xp`, `points`, `streak`, and a streak reward's on the days the programme chose). Twice a day is one "
        "check-in: the second answers `duplicate`, replaying the first's effects (its operation id is "
        "`rk:checkin:<member>:<day>`). With `makeup` (YYYY-MM-DD) it repairs one missed day with a make-up card, "
        "or with points when `pay` is `points` and the programme sets a cost. With an `audience` in `[games.checkin]`, "
        "check-ins and make-ups are for its members only (`not_eligible`). A refusal writes nothing.",
        "member", post_checkin, body=CheckinIn,
        errors={409: tuple(REFUSALS) + ("idempotency_conflict",), 404: ("not_found",), 422: ("invalid",)},
        example_body={"makeup": "2026-12-03"},
        links=(Link("snapshot", "getMe", {}, "The member's snapshot after this check-in: the streak, the rewards."),),
        refusals=REFUSALS,
    ),
)

