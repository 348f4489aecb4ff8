"""Collect cards (集卡, in the manner of Alipay's 集五福): members spend draw chances (the inventory
item ``cards:<campaign>``, earned from rules, quests and tiers) on cards drawn with published odds
within each card type's daily issue budget, with a pity counter towards the rare card, gift cards
to one another, and combine a full set (a universal card standing in for a missing one); at the
deadline the campaign's prize pool is split among those who combined.

``config`` is the programme section ``[games.cards.<campaign>]`` and its checks; ``rules`` the
pure rules (the draw, its fallback when a concurrent draw took the budget, pity, combining, the
split of the pool), property-tested in ``tests/games/test_cards_rules.py``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from typing_extensions import TypedDict

from engine.plugins import Game
from engine.scripts import LuaScript
from games.cards.audit import budgets_kept, conservation
from games.cards.config import Campaigns, check, items
from games.cards.plans import CARDS, COMBINE, DRAW, GIFTS, GIVE, RECEIVE, CombineStep, DrawStep, GiveStep, ReceiveStep
from games.cards.routes import ROUTES, snapshot
from games.cards.store import SPLIT, split_task


class CardDrawnData(TypedDict):
    """A draw gave a card (an `inventory` effect follows: the draw spent, the card added)."""

    campaign: Annotated[str, Field(description="the campaign's name in the programme")]
    card: Annotated[str, Field(description="the card given")]
    title: Annotated[str, Field(description="its title, to show")]
    rare: Annotated[bool, Field(description="true for a rare card")]
    universal: Annotated[bool, Field(description="true for the universal card")]
    pity: Annotated[int, Field(description="the member's draws without a rare card before this one")]


class CardGivenData(TypedDict):
    """The member gave a card to another member."""

    campaign: Annotated[str, Field(description="the campaign's name in the programme")]
    card: Annotated[str, Field(description="the card given")]
    to: Annotated[str, Field(description="the member who received it")]


#: Another member gave the member a card (``from`` is a keyword: the functional form).
CardReceivedData = TypedDict("CardReceivedData", {
    "campaign": Annotated[str, Field(description="the campaign's name in the programme")],
    "card": Annotated[str, Field(description="the card received")],
    "from": Annotated[str, Field(description="the member who gave it")],
})
CardReceivedData.__doc__ = "Another member gave the member a card."


class CardsCombinedData(TypedDict):
    """The member combined a full set and shares the pool at the deadline."""

    campaign: Annotated[str, Field(description="the campaign's name in the programme")]
    consumed: Annotated[dict[str, int], Field(description="the cards the set took, by card (universal cards included)")]


class CardsPayoutData(TypedDict):
    """The member's share of the pool, paid at the deadline (a `points` or `reward` effect follows)."""

    campaign: Annotated[str, Field(description="the campaign's name in the programme")]
    points: Annotated[int, Field(description="the points paid (0 for a coupon payout)")]
    coupon: Annotated[str | None, Field(description="the catalog item given, for a coupon payout")]
    rank: Annotated[int, Field(description="the member's place among those who combined (1: the first)")]
    combiners: Annotated[int, Field(description="how many members share the pool")]


GAME = Game(
    name=CARDS, section=Campaigns, check=check, routes=ROUTES, snapshot=snapshot, items=items,
    effects={"card_drawn": CardDrawnData, "card_given": CardGivenData, "card_received": CardReceivedData,
             "cards_combined": CardsCombinedData, "cards_payout": CardsPayoutData},
    objects={CARDS: (script := LuaScript.from_package("cards.lua", package="games.cards", with_object=True)),
             GIFTS: script},
    steps={DRAW: DrawStep(), GIVE: GiveStep(), RECEIVE: ReceiveStep(), COMBINE: CombineStep()},
    tasks={SPLIT: split_task}, verify=budgets_kept, audit=conservation,
)
