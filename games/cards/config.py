"""The collect-cards game's section of a programme: ``[games.cards.<campaign>]``, one table a campaign.

A campaign publishes each card type's odds as a weight: a draw gives a type with the chance of its
weight over the weights of the types *still within today's budget* (a type whose daily budget is
spent is skipped, so its share goes to the others for the rest of the local day). The designer
controls how many members can complete a set through the rare card's small daily budget; a pity
counter hands the rare card to a member after ``pity_draws`` draws without one, but never past its
budget (the pity then waits for the next draw with room). A draw chance is the inventory item
``cards:<campaign>``. At the deadline the prize pool is split among the members who combined a
set: in points (the pool converted to whole points once, then split) or one coupon each.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, Strict

from engine.config import Audience, Int, Item, Name, Program, audience_problems, item_field
from engine.plugins import window_problems

GAME_NAME = "cards"  #: the section ``[games.cards]``, the routes' prefix and the items' ``<game>:``
MAX_CARDS = 20  #: card types in one campaign (the universal card aside)
MAX_WEIGHT = 1_000_000
Bool = Annotated[bool, Strict()]
Count = Annotated[int, Strict(), Field(ge=0, le=1_000_000_000)]
Title = Annotated[str, Strict(), Field(min_length=1, max_length=120, description="shown to the member")]
Weight = Annotated[int, Strict(), Field(ge=0, le=MAX_WEIGHT)]


class Card(BaseModel):
    """One card type of a set: its odds, its daily budget, whether it is the rare one."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name = Field(description="the card type's id (in effects, the snapshot and key paths)")
    title: Title
    weight: Weight = Field(description="its relative odds in a draw: weight over the weights of the types still "
                                       "within today's budget (0: never drawn, except a rare card by pity)")
    daily_budget: Int | None = Field(
        None, ge=0, le=1_000_000_000, description="the most of this type issued per local day, to all members together (not set: no limit); "
                          "once it is reached the type is skipped until the next day and its odds go to the others. "
                          "0 is allowed: a type not issued today")
    rare: Bool = Field(False, description="a rare card: what the pity counter gives (it needs a daily_budget when "
                                          "pity_draws is set)")


class Universal(BaseModel):
    """The universal card (万能福): stands for any one missing card type when combining."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name = Field(description="its id, distinct from every card type's")
    title: Title
    weight: Weight = Field(description="its relative odds in a draw, as a card type's (more than 0)")
    daily_budget: Int | None = Field(
        None, ge=0, le=1_000_000_000, description="the most issued per local day, to all members together (not set: no limit)")


class Campaign(BaseModel):
    """A collect-cards campaign (集卡): members spend draw chances (the item `cards:<campaign>`,
    earned from rules, quests and tiers) on cards, gift cards to one another and combine a full set
    of one card of each type; at the deadline the prize pool is split among those who combined."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    title: Title
    cards: tuple[Card, ...] = Field(max_length=MAX_CARDS, description="the card types of a set (2 or more), in "
                                                                      "display order")
    universal: Universal | None = Field(None, description="the universal card and its odds (not set: none)")
    universal_stands_for: Annotated[int, Strict(), Field(ge=1, le=MAX_CARDS - 1)] = Field(
        1, description="how many missing card types universal cards may stand in for in one set (one universal card "
                       "each); a set always holds at least one real card")
    pity_draws: Int | None = Field(
        None, ge=1, le=100_000, description="after this many draws in a row without a rare card, the member's next draw is a rare card "
                          "(by weight among the rare cards) if a rare card's budget has room today; otherwise the pity "
                          "waits for a draw that has room (not set: no pity)")
    chances_cap: Count = Field(0, description="the most draw chances (`cards:<campaign>`) one member may hold (0: no cap)")
    pool_cents: Annotated[int, Strict(), Field(ge=0, le=10**12)] = Field(
        0, description='the prize pool in cents, split at the deadline among the members who combined (payout = '
                       '"points"; 0 with payout = "coupon"). Nobody combined: nothing is paid and the pool stays '
                       "with the shop (the split reports it)")
    payout: Literal["points", "coupon"] = Field(
        "points", description='"points": the pool is converted to whole points once (1 point per `cents_per_point` '
                              "cents, rounded down: the less than one point's worth left stays with the shop) and the "
                              'points are split as `remainder` says; "coupon": each member who combined gets one '
                              "`coupon` (a catalog item) and the pool is not split")
    cents_per_point: Annotated[int, Strict(), Field(ge=1, le=1_000_000)] = Field(
        100, description='payout = "points": the cents one point is worth')
    coupon: Name | None = Field(None, description='payout = "coupon": the catalog item each member who combined gets')
    remainder: Literal["first_combiners"] = Field(
        "first_combiners", description='how a split that does not divide evenly is settled: "first_combiners": each '
                                       "member gets the pool divided by the number of members who combined, rounded "
                                       "down, and the earliest combiners get one unit (a point) more each until the "
                                       "remainder is spent, so the shares add up to the pool exactly and differ by at "
                                       "most one")
    opens_at: AwareDatetime | None = Field(None, description="when draws open, with its UTC offset (not set: open now)")
    deadline: AwareDatetime = Field(description="when draws and combining end (exclusive) and the pool is split, "
                                                "with its UTC offset")
    audience: Audience | None = Field(None, description="who may draw (everyone without it): anyone else is refused "
                                                        "`not_eligible`, keeping the chance. Gifts and combines are "
                                                        "anyone's")

    @property
    def deck(self) -> tuple[str, ...]:
        """Every card a draw can give, in order: the card types, then the universal card."""
        names = tuple(card.name for card in self.cards)
        return names if self.universal is None else (*names, self.universal.name)

    @property
    def types(self) -> tuple[str, ...]:
        """The card types of a set."""
        return tuple(card.name for card in self.cards)


class Campaigns(RootModel[dict[Name, Campaign]]):
    """The programme's collect-cards campaigns, by name (the name is in the routes:
    `/v1/games/cards/<campaign>`, and in its draw chances: `cards:<campaign>`)."""

    model_config = ConfigDict(frozen=True)


def draw_item(campaign: str) -> str:
    """The inventory item a draw of ``campaign`` spends: ``cards:<campaign>``."""
    return f"{GAME_NAME}:{campaign}"


def items(section: Campaigns) -> dict[str, Item]:
    """The draw chances each campaign declares, with their caps (for ``Game.items``)."""
    return {draw_item(name): Item(item_field(draw_item(name)), campaign.chances_cap, f"draw of {campaign.title}")
            for name, campaign in section.root.items()}


def obtainable(card: Card, pity_draws: int | None) -> bool:
    """Whether some draw can give ``card``: a positive weight, or a rare card under pity."""
    return card.weight > 0 or (card.rare and pity_draws is not None)


def check(program: Program, section: Campaigns) -> list[tuple[str, str]]:
    """Campaigns that cannot work as published: key path and problem.

    Refused: fewer than two card types; a name used twice (the universal card's included); no
    card type with a positive weight; a card type no draw can give (weight 0 and not a rare card
    under pity: no set could ever be made of it); a universal card with weight 0; universal cards
    standing in for every type of a set, or set to stand in without a universal card; pity without
    a rare card, or with a rare card without a daily budget (pity would hand one to every member
    every ``pity_draws + 1`` draws, and the designer could not bound the sets completed); a coupon
    payout without a catalog item or with a pool to split; payout settings of the other payout;
    a points payout without ``pool_cents`` (0 must be written: a prize forgotten is not a prize of
    nothing); a deadline not after the opening. A daily budget of 0 is legal (a type not issued
    today).
    """
    out: list[tuple[str, str]] = []
    catalog = getattr(program, "catalog", {})
    for name, campaign in section.root.items():
        path = f"games.{GAME_NAME}.{name}"
        cards = campaign.cards
        if len(cards) < 2:
            out.append((f"{path}.cards", f"a set needs at least 2 card types, not {len(cards)}"))
        seen: list[str] = []
        for i, card in enumerate(cards):
            if card.name in seen:
                out.append((f"{path}.cards[{i}].name", f"another card type is named {card.name!r} already"))
            seen.append(card.name)
        if cards and not any(card.weight > 0 for card in cards):
            out.append((f"{path}.cards", "no card type has a weight above 0: no draw could give a card"))
        else:
            for i, card in enumerate(cards):
                if not obtainable(card, campaign.pity_draws):
                    why = "no draw can give it" if not card.rare else "no draw can give it (pity_draws is not set)"
                    out.append((f"{path}.cards[{i}].weight", f"card {card.name!r} has weight 0 and {why}, so no "
                                                             "member could ever complete a set"))
        universal = campaign.universal
        if universal is not None:
            if universal.name in seen:
                out.append((f"{path}.universal.name", f"a card type is named {universal.name!r} already"))
            if universal.weight == 0:
                out.append((f"{path}.universal.weight", "is 0: no draw could give the universal card (leave "
                                                        "[universal] out for a campaign without one)"))
            if cards and campaign.universal_stands_for >= len(cards):
                out.append((f"{path}.universal_stands_for",
                            f"is {campaign.universal_stands_for} for a set of {len(cards)} card types: a set must hold "
                            f"at least one real card (at most {len(cards) - 1})"))
        elif "universal_stands_for" in campaign.model_fields_set:
            out.append((f"{path}.universal_stands_for", "is set but the campaign has no universal card"))
        if campaign.pity_draws is not None:
            rare = [(i, card) for i, card in enumerate(cards) if card.rare]
            if not rare:
                out.append((f"{path}.pity_draws", "no card type is rare: pity would have nothing to give"))
            for i, card in rare:
                if card.daily_budget is None:
                    out.append((f"{path}.cards[{i}].daily_budget",
                                f"rare card {card.name!r} has no daily budget: with pity_draws every member would get "
                                f"one every {campaign.pity_draws + 1} draws, and the sets completed would have no bound"))
        if campaign.payout == "coupon":
            if campaign.coupon is None:
                out.append((f"{path}.coupon", 'payout = "coupon" needs the catalog item each member who combined gets'))
            elif campaign.coupon not in catalog:
                out.append((f"{path}.coupon", f"no catalog item {campaign.coupon!r} is declared under [catalog]"))
            if campaign.pool_cents > 0:
                out.append((f"{path}.pool_cents", 'payout = "coupon" gives each member who combined one coupon and '
                                                  "splits no pool: leave pool_cents out"))
            if "cents_per_point" in campaign.model_fields_set:
                out.append((f"{path}.cents_per_point", 'is for payout = "points" only'))
        else:
            if "pool_cents" not in campaign.model_fields_set:
                out.append((f"{path}.pool_cents", 'payout = "points" splits the pool: set it (0 for a campaign '
                                                  "without a prize)"))
            if campaign.coupon is not None:
                out.append((f"{path}.coupon", 'is for payout = "coupon" only (payout is "points")'))
        out += [(key.removesuffix(".ends_at") + ".deadline", problem)
                for key, problem in window_problems(path, campaign.opens_at, campaign.deadline)]
        out += audience_problems(program, f"{path}.audience", campaign.audience)
    return out
