"""Daily check-in with streaks (签到): ``POST /v1/me/checkin``, make-up cards, streak rewards.

No object is shared between members here, so no step crosses slots: a check-in is one member
operation (``plans.py``), its streak decided by the member script against the stored state.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.config import Item
from engine.plugins import Game
from games.checkin.config import Checkin, check
from games.checkin.plans import CARDS_FIELD, CARDS_ITEM
from games.checkin.routes import ROUTES, snapshot


def items(section: Checkin) -> Mapping[str, Item]:
    """Make-up cards: rules, quests and tiers may grant them too (``items = {"checkin:makeup" = 1}``)."""
    return {CARDS_ITEM: Item(CARDS_FIELD, section.makeup_cards_cap, "make-up card")}


GAME = Game(name="checkin", section=Checkin, check=check, routes=ROUTES, snapshot=snapshot, items=items)
