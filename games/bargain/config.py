"""The bargain's section of a programme: ``[games.bargain.<campaign>]``, one table a campaign.

A campaign is an item (a catalog coupon) at a price, cut by friends' helps down to a floor. The
amount to cut, ``price_cents - floor_cents``, is split into ``helpers`` units when a bargain starts
(``rules.unit_cuts``, with the campaign's ``algorithm``): each help takes one unit (a member new
to the programme: ``new_member_units``), every unit cuts at least one cent, and the help taking the
last unit lands the price exactly on the floor.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, Strict, field_validator

from engine.config import Audience, Name, Program, audience_problems
from engine.plugins import window_problems

#: The cut algorithms a designer picks from (``rules.unit_cuts`` draws each).
Algorithm = Literal["schedule", "red_packet", "line"]
ALGORITHMS: tuple[Algorithm, ...] = ("schedule", "red_packet", "line")
MAX_CENTS = 1_000_000_000  #: ten million yuan: far above any item, far below Lua's exact integers
MAX_HELPERS = 200


class Campaign(BaseModel):
    """A bargain campaign (砍价): a member starts a bargain on the item at ``price_cents``; each
    friend's help cuts the price, and the help that takes the last of ``helpers`` units lands it
    exactly on ``floor_cents``, when the owner gets the item as a coupon. A bargain not at its
    floor within ``duration_hours`` of its start expires with nothing given."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    title: Annotated[str, Strict(), Field(min_length=1, max_length=120, description="shown to the member")]
    item: Annotated[str, Strict(), Field(
        min_length=1, max_length=64,
        description="the catalog item the owner gets, as a coupon, when the bargain reaches its floor")]
    price_cents: Annotated[int, Strict(), Field(ge=1, le=MAX_CENTS, description="the price a bargain starts at, in cents")]
    floor_cents: Annotated[int, Strict(), Field(
        ge=0, le=MAX_CENTS, description="the price the helps cut it down to, in cents, below `price_cents` (0: free)")] = 0
    helpers: Annotated[int, Strict(), Field(
        ge=1, le=MAX_HELPERS, description="helper units that reach the floor: helps by members who are not new each take "
                                          "one; every unit cuts at least 1 cent, so at most `price_cents - floor_cents`")]
    algorithm: Algorithm = Field(
        "schedule", description='how the amount is split into the units, drawn once when a bargain starts: "schedule": a '
                                'decreasing schedule, big cuts first and a long tail of small ones; "red_packet": each '
                                "unit uniform between 1 cent and twice the mean of what is left, the last unit the rest "
                                '(the red-packet draw); "line": random cut points on the amount, the pieces in order')
    first_cut_share: float | None = Field(
        None, description='"schedule" only: the share of the amount the first unit cuts, between 0 and 1 exclusive '
                          "(0.5: the first help halves the way to the floor); the units after it decrease. Not set: "
                          "the first unit is drawn with the rest")
    new_member_units: Annotated[int, Strict(), Field(
        ge=1, le=10, description="units a help by a new member takes (larger cuts for bringing new members); "
                                 "1: new members help like everyone")] = 1
    new_member_days: Annotated[int, Strict(), Field(
        ge=1, le=365, description="a member whose first operation in the programme is fewer than this many days "
                                  "old (or who has none) is new")] = 7
    duration_hours: Annotated[int, Strict(), Field(
        ge=1, le=720, description="how long a bargain stays open from its start: not at its floor by then, it expires")] = 24
    helps_per_day: Annotated[int, Strict(), Field(
        ge=1, le=1_000, description="helps one member may give in a local day, across every bargain of the programme")] = 5
    opens_at: AwareDatetime | None = Field(
        None, description="when bargains may start, with its UTC offset (not set: open now)")
    ends_at: AwareDatetime | None = Field(
        None, description="when starting bargains ends (exclusive), with its UTC offset (not set: never); "
                          "bargains started before it run their full duration")
    audience: Audience | None = Field(
        None, description="who may start a bargain (everyone without it): anyone else is refused `not_eligible`. "
                          "Helpers are anyone (the anti-collusion report watches them)")

    @field_validator("first_cut_share", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError("must be a number such as 0.5")
        return value

    @property
    def amount(self) -> int:
        """What the helps cut in all, in cents."""
        return self.price_cents - self.floor_cents


class Campaigns(RootModel[dict[Name, Campaign]]):
    """The programme's bargain campaigns, by name (the name is in the routes: `/v1/games/bargain/<campaign>`)."""

    model_config = ConfigDict(frozen=True)


def check(program: Program, section: Campaigns) -> list[tuple[str, str]]:
    """Campaigns that cannot work as set: key path and problem."""
    from games.bargain.rules import share_cents  # pure, and it imports this module

    out: list[tuple[str, str]] = []
    catalog = getattr(program, "catalog", {})
    for name, campaign in section.root.items():
        path = f"games.bargain.{name}"
        if campaign.item not in catalog:
            out.append((f"{path}.item", f"no catalog item {campaign.item!r} is declared under [catalog]"))
        amount = campaign.amount
        if campaign.floor_cents >= campaign.price_cents:
            out.append((f"{path}.floor_cents", f"floor_cents {campaign.floor_cents} is not below price_cents "
                                               f"{campaign.price_cents}: there would be nothing to cut"))
        elif campaign.helpers > amount:
            out.append((f"{path}.helpers", f"helpers {campaign.helpers} cannot each cut at least 1 cent of {amount} cents "
                                           f"(price_cents - floor_cents): at most {amount}"))
        if campaign.new_member_units > campaign.helpers:
            out.append((f"{path}.new_member_units", f"new_member_units {campaign.new_member_units} is more than helpers "
                                                    f"{campaign.helpers}: a help never takes more units than the bargain has"))
        share = campaign.first_cut_share
        if share is not None:
            if campaign.algorithm != "schedule":
                out.append((f"{path}.first_cut_share", f'only "schedule" has a first cut share, not "{campaign.algorithm}"'))
            elif not 0 < share < 1:  # NaN too
                out.append((f"{path}.first_cut_share", f"{share} is not between 0 and 1 (exclusive): a share of the amount"))
            elif campaign.helpers == 1:
                out.append((f"{path}.first_cut_share", "with helpers 1 the only help cuts the whole amount: "
                                                       "a first cut share means nothing"))
            elif campaign.helpers <= amount:
                wanted = share_cents(amount, share)
                even = -(-amount // campaign.helpers)
                most = amount - (campaign.helpers - 1)
                if wanted < even:
                    out.append((f"{path}.first_cut_share", f"{share} of {amount} cents is {wanted} cents, less than an even "
                                                           f"split over {campaign.helpers} helpers ({even}): the cuts after "
                                                           "the first could not decrease"))
                elif wanted > most:
                    out.append((f"{path}.first_cut_share", f"{share} of {amount} cents is {wanted} cents, leaving less than "
                                                           f"1 cent for each of the {campaign.helpers - 1} other helpers "
                                                           f"(at most {most})"))
        out += window_problems(path, campaign.opens_at, campaign.ends_at)
        out += audience_problems(program, f"{path}.audience", campaign.audience)
    return out
