"""The check-in game's section of a programme: ``[games.checkin]``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

from engine.config import Audience, Program, Rewards, audience_problems

Count = Annotated[int, Strict(), Field(ge=0, le=1_000_000_000)]
Days = Annotated[int, Strict(), Field(ge=1, le=3650)]

NOTHING = Rewards.model_validate({})  #: no reward (frozen, so one is shared)
#: Streak rewards a programme may set: every one is checked on every check-in.
MAX_STREAK_REWARDS = 20


class StreakReward(BaseModel):
    """What a streak earns the day it reaches ``days`` (once per run of consecutive days)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    days: Annotated[int, Strict(), Field(le=3650, description="the streak length that earns it (1 or more)")]
    rewards: Rewards = Field(NOTHING, description="granted once when the streak reaches `days`")
    makeup_cards: Count = Field(0, description="make-up cards granted with it (up to the cap)")


class Checkin(BaseModel):
    """Daily check-in with streaks: once a day (a second check-in the same local day is the first
    one again), a streak of consecutive days in the programme's time zone, rewards on the days the
    designer chooses, and make-up cards that repair one missed day."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    title: Annotated[str, Strict(), Field(min_length=1, max_length=120, description="shown to the member")] = "Daily check-in"
    rewards: Rewards = Field(NOTHING, description="granted by every check-in")
    streak_rewards: tuple[StreakReward, ...] = Field(
        (), max_length=MAX_STREAK_REWARDS, description="rewards on chosen streak days (3, 7, 30...)"
    )
    makeup_max_age_days: Days = Field(7, description="how far back a missed day can be made up")
    makeup_cards_cap: Count = Field(5, description="the most make-up cards a member can hold (0: no cap)")
    makeup_points_cost: Count | None = Field(
        None, description="points a make-up costs when the member has no card (not set: cards only)"
    )
    audience: Audience | None = Field(None, description="who may check in and make up a day (everyone without it): "
                                                        "anyone else is refused `not_eligible`")


def check(program: Program, section: Checkin) -> list[tuple[str, str]]:
    """Cross-checks with the programme: key path and problem."""
    out: list[tuple[str, str]] = []
    seen: set[int] = set()
    catalog = getattr(program, "catalog", {})
    for i, reward in enumerate(section.streak_rewards):
        path = f"games.checkin.streak_rewards[{i}]"
        if reward.days < 1:
            out.append((f"{path}.days", "a streak is at least 1 day long: day 0 can never be reached"))
        if reward.days in seen:
            out.append((f"{path}.days", f"another streak reward is on day {reward.days} already"))
        seen.add(reward.days)
        for coupon in reward.rewards.coupons:
            if coupon not in catalog:
                out.append((f"{path}.rewards.coupons", f"no catalog item {coupon!r} is declared under [catalog]"))
    for coupon in section.rewards.coupons:
        if coupon not in catalog:
            out.append(("games.checkin.rewards.coupons", f"no catalog item {coupon!r} is declared under [catalog]"))
    out += audience_problems(program, "games.checkin.audience", section.audience)
    return out
