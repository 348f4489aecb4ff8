"""Flash sale (限量抢购): a limited stock opening at a set instant, claimed by members, never oversold.

The sale's stock is an object on the cross-slot seam (the catalog's stock script under the tag
``{flash:<sale>}``); a claim is ``engine.redemptions.claim_unit``, its member step ``ClaimStep``.
A single sale is one hot key: every claim of the opening second goes through one Valkey slot.
What keeps it cheap: one intent a second a process (not one a claim), the settle not waited for,
and sold-out answered from memory for 0.1 s once the sale said so. On a cluster a sale still
lives on one primary; splitting one sale's stock into several objects is the next step if one
primary's rate is not enough.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.config import CompiledProgram
from engine.plugins import Game
from engine.scripts import LuaScript
from games.flash.config import FlashSales, check
from games.flash.plans import FLASH, ClaimStep
from games.flash.routes import ROUTES, snapshot

def never_oversold(program: CompiledProgram | None, kind: str, sale: str, counters: Mapping[str, int]) -> list[str]:
    """``rekindle verify``: no sale has more units taken than its stock."""
    section = program.games.get("flash") if program is not None else None
    terms = section.root.get(sale) if isinstance(section, FlashSales) else None
    if terms is not None and counters.get("sold", 0) > terms.stock:
        return [f"{counters['sold']} units taken, stock {terms.stock}"]
    return []


GAME = Game(
    name="flash", section=FlashSales, check=check, routes=ROUTES, snapshot=snapshot,
    objects={FLASH: LuaScript.from_package("catalog.lua", with_object=True)}, steps={FLASH: ClaimStep()},
    verify=never_oversold,
)
