"""The lottery's section of a programme: ``[games.lottery.<wheel>]``, one table a wheel.

Odds are published, so they are exact: each prize's ``probability`` is a decimal with at most six
places, kept as parts per million, and a wheel's add up to exactly 1. What a designer sets per
prize is its odds, its cost to the shop (in the wheel's budget unit, cents say) and, optionally,
its stock; the wheel's budget caps the cost of everything given. A drawn prize that is out of
stock, not yet released, or past the budget becomes the fallback prize, which therefore must be
unlimited: the published odds of every prize never silently change.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, Strict, field_validator

from engine.config import Audience, Int, Name, Program, Rewards, audience_problems
from engine.plugins import window_problems

PPM = 1_000_000  #: a probability's unit: parts per million
MAX_PRIZES = 20
Count = Annotated[int, Strict(), Field(ge=0, le=1_000_000_000)]
NOTHING = Rewards.model_validate({})


class Prize(BaseModel):
    """One slice of the wheel: its odds, its cost, its stock, what it gives."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name = Field(description="the prize's id (in effects, the snapshot and key paths)")
    title: Annotated[str, Strict(), Field(min_length=1, max_length=120, description="shown to the member")]
    probability: float = Field(ge=0.0, le=1.0, description="the published chance of drawing it, at most six decimals; "
                                                             "a wheel's add up to exactly 1")
    cost: Count = Field(0, description="what one costs the shop, in the wheel's budget unit (cents, say)")
    stock: Int | None = Field(None, ge=0, le=1_000_000_000,
                              description="how many can be given in all (not set: no limit but the budget)")
    rewards: Rewards = Field(NOTHING, description="what the member gets: xp, points, coupons, items")

    @field_validator("probability", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number such as 0.05")
        return value

    @field_validator("probability")
    @classmethod
    def _millionths(cls, value: float) -> float:
        if Decimal(repr(value)).as_tuple().exponent < -6:  # type: ignore[operator]
            raise ValueError("must have at most six decimals (odds are kept in parts per million)")
        return value

    @property
    def ppm(self) -> int:
        return round(self.probability * PPM)


class Wheel(BaseModel):
    """A lottery wheel (幸运大转盘): a member spends one spin (an inventory item, ``lottery:<wheel>``,
    earned from rules, quests, tiers or check-in streaks) and gets the prize drawn."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    title: Annotated[str, Strict(), Field(min_length=1, max_length=120, description="shown to the member")]
    prizes: tuple[Prize, ...] = Field(min_length=1, max_length=MAX_PRIZES, description="the slices, in display order")
    fallback: Name = Field(description="the prize given when the one drawn is out of stock or past the budget: "
                                       "one of `prizes`, without a stock")
    budget: Int | None = Field(
        None, ge=0, le=10**15, description="the most the prizes given may cost in all (not set: no limit but the stocks)")
    expected_spins: Int | None = Field(
        None, ge=1, le=10**12, description="spins the designer expects over the wheel's life: with a budget, `rekindle check` "
                          "refuses a wheel whose expected cost over them exceeds it")
    release: Literal["all", "over_day"] = Field(
        "all", description='"all": every stock is there from the start; "over_day": each limited prize\'s stock '
                           "is released evenly over each local day (a stock of 24 gives one an hour, and what is "
                           "not given rolls on)")
    spins_cap: Count = Field(0, description="the most spins one member may hold (0: no cap)")
    opens_at: AwareDatetime | None = Field(None, description="when spins open, with its UTC offset (not set: open now)")
    ends_at: AwareDatetime | None = Field(None, description="when spins end (exclusive), with its UTC offset (not set: never)")
    audience: Audience | None = Field(None, description="who may spin (everyone without it): anyone else is refused "
                                                        "`not_eligible`, keeping the spin, the prize back to the wheel")

    def prize(self, name: str) -> Prize:
        return next(p for p in self.prizes if p.name == name)


class Wheels(RootModel[dict[Name, Wheel]]):
    """The programme's wheels, by name (the name is in the routes: `/v1/games/lottery/<wheel>`)."""

    model_config = ConfigDict(frozen=True)


def check(program: Program, section: Wheels) -> list[tuple[str, str]]:
    """Wheels that cannot work as published: key path and problem."""
    from games.lottery.rules import expected_cost  # pure, and it imports this module

    out: list[tuple[str, str]] = []
    catalog = getattr(program, "catalog", {})
    for name, wheel in section.root.items():
        path = f"games.lottery.{name}"
        names = [p.name for p in wheel.prizes]
        for i, prize in enumerate(wheel.prizes):
            if prize.name in names[:i]:
                out.append((f"{path}.prizes[{i}].name", f"another prize is named {prize.name!r} already"))
            for coupon in prize.rewards.coupons:
                if coupon not in catalog:
                    out.append((f"{path}.prizes[{i}].rewards.coupons", f"no catalog item {coupon!r} is declared under [catalog]"))
        total = sum(p.ppm for p in wheel.prizes)
        if total != PPM:
            out.append((f"{path}.prizes", f"the probabilities add up to {Decimal(total) / PPM}, not 1"))
        if wheel.fallback not in names:
            out.append((f"{path}.fallback", f"names no prize of this wheel (prizes: {', '.join(names)})"))
        else:
            fallback = wheel.prize(wheel.fallback)
            if fallback.stock is not None:
                out.append((f"{path}.fallback", f"prize {wheel.fallback!r} has a stock of {fallback.stock}: the fallback "
                                                "must be unlimited, or a hit on a prize out of stock would have nothing to give"))
            if wheel.budget is not None and fallback.cost > 0:
                out.append((f"{path}.fallback", f"prize {wheel.fallback!r} costs {fallback.cost}: the fallback must cost "
                                                "nothing, or a spent budget would leave the wheel nothing to give"))
        if wheel.budget is not None and wheel.expected_spins is not None and total == PPM:
            cost = expected_cost(wheel, wheel.expected_spins)
            if cost > wheel.budget:
                out.append((f"{path}.budget", f"the expected cost of {wheel.expected_spins:,} expected spins is "
                                              f"{float(cost):,.2f} (each prize's odds x spins, up to its stock, x its "
                                              f"cost), more than the budget of {wheel.budget:,}"))
        out += window_problems(path, wheel.opens_at, wheel.ends_at)
        out += audience_problems(program, f"{path}.audience", wheel.audience)
    return out
