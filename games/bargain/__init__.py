"""Bargain (砍价, "help me cut the price"): a member starts a bargain on a campaign's item, at its
price and for a limited time; friends help, and each help cuts the current price, until the
bargain reaches its floor and the owner gets the item as a coupon.

A bargain's whole cut schedule is drawn once, when it starts, from its seed (``rules.bargain_seed``:
the campaign, the owner and the start operation's id), with the campaign's algorithm
(``rules.unit_cuts``); the bargain's object keeps the schedule's prefix sums and gives each help
its cut (``rules.help_cut``), so a designer can replay any bargain (``rules.replay``). The section
is ``config.Campaigns`` (``[games.bargain.<campaign>]``), its cross-checks ``config.check``; its
anti-collusion report (help rings, owners helped mostly by new members, heavy devices) ``report``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field
from typing_extensions import TypedDict

from engine.config import CompiledProgram
from engine.plugins import Game, Watch
from engine.scripts import LuaScript
from games.bargain.config import Campaigns, check
from games.bargain.plans import BARGAIN, OWNER, HelperStep, OwnerStep, parse_bargain_id
from games.bargain.report import REPORT
from games.bargain.report import SCRIPT as REPORT_SCRIPT
from games.bargain.routes import ROUTES, snapshot
from games.bargain.store import CLOSE, close_task, view


class BargainHelpedData(TypedDict):
    """A help cut a bargain's price (on the helper's feed, and on the owner's)."""

    bargain: Annotated[str, Field(description="the bargain's id")]
    helper: Annotated[str, Field(description="the member who helped")]
    cut_cents: Annotated[int, Field(description="what the help cut, in cents")]
    current_cents: Annotated[int, Field(description="the price after it")]


class BargainDoneData(TypedDict):
    """A bargain reached its floor: the owner gets the item (a `reward` effect follows)."""

    bargain: Annotated[str, Field(description="the bargain's id")]
    item: Annotated[str, Field(description="the catalog item granted as a coupon")]
    price_cents: Annotated[int, Field(description="the price reached: the campaign's floor")]


class BargainExpiredData(TypedDict):
    """A bargain's time ran out before its floor: nothing is given."""

    bargain: Annotated[str, Field(description="the bargain's id")]
    current_cents: Annotated[int, Field(description="the price it had reached")]
    price_cents: Annotated[int, Field(description="the price it started at")]


def sums_agree(program: CompiledProgram | None, kind: str, obj: str, counters: Mapping[str, int]) -> list[str]:
    """``rekindle verify``: each round's cents cut are the sum of its helps' cuts, and no member
    helped a round twice."""
    out: list[str] = []
    rounds = {name.split(":")[1] for name in counters if name.startswith("taken:")}
    for r in sorted(rounds):
        cuts = sum(v for k, v in counters.items() if k.startswith(f"c:{r}:"))
        if cuts != counters.get(f"taken:{r}", 0):
            out.append(f"round {r}: {counters.get(f'taken:{r}', 0)} cents taken, its helps cut {cuts}")
        twice = sorted(k.split(":", 2)[2] for k, v in counters.items() if k.startswith(f"h:{r}:") and v > 1)
        if twice:
            out.append(f"round {r}: helped more than once by {', '.join(twice)}")
    return out


GAME = Game(
    name=BARGAIN, section=Campaigns, check=check, routes=ROUTES, snapshot=snapshot,
    effects={"bargain_helped": BargainHelpedData, "bargain_done": BargainDoneData, "bargain_expired": BargainExpiredData},
    objects={BARGAIN: LuaScript.from_package("bargain.lua", package="games.bargain", with_object=True)},
    scripts={REPORT: REPORT_SCRIPT},  # the anti-collusion report's counters: no seam object
    steps={BARGAIN: HelperStep(), OWNER: OwnerStep()}, tasks={CLOSE: close_task}, verify=sums_agree,
    watch=Watch(BARGAIN, owner=lambda value: parse_bargain_id(value)[2], exists=view),
)
