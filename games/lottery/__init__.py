"""Lottery wheel (幸运大转盘): members spend spins, earned from rules, quests, tiers and streaks,
on prizes drawn with published odds, within each prize's stock and the wheel's budget.

The wheel is an object on the cross-slot seam under the tag ``{lottery:<wheel>}`` (``lua/wheel.lua``:
units given per prize, their cost); a spin is ``store.spin``, its member step ``plans.SpinStep``.
A prize out of stock becomes the fallback prize, so the odds a member is shown are the draw's.
"""

from __future__ import annotations

from collections.abc import Mapping

from typing import Annotated

from pydantic import Field
from typing_extensions import TypedDict

from engine.config import CompiledProgram, Item, item_field
from engine.plugins import Game
from engine.scripts import LuaScript
from games.lottery.config import Wheels, check
from games.lottery.plans import LOTTERY, SpinStep, spin_item
from games.lottery.routes import ROUTES, snapshot


class PrizeData(TypedDict):
    """A spin of a wheel gave a prize (its own effects follow: `xp`, `points`, `reward`, `inventory`)."""

    wheel: Annotated[str, Field(description="the wheel's name in the programme")]
    prize: Annotated[str, Field(description="the prize given")]
    title: Annotated[str, Field(description="its title, to show")]
    fallback: Annotated[bool, Field(description="true when the prize drawn was out of stock or past the budget, "
                                                "and this is the wheel's fallback instead")]


def items(section: Wheels) -> Mapping[str, Item]:
    """Each wheel's spins: ``lottery:<wheel>``, granted by rules, quests, tiers and streak rewards."""
    return {spin_item(name): Item(item_field(spin_item(name)), wheel.spins_cap, f"spin of {wheel.title}")
            for name, wheel in section.root.items()}


def within_stock_and_budget(program: CompiledProgram | None, kind: str, wheel: str,
                            counters: Mapping[str, int]) -> list[str]:
    """``rekindle verify``: no prize given past its stock, no wheel past its budget."""
    section = program.games.get(LOTTERY) if program is not None else None
    terms = section.root.get(wheel) if isinstance(section, Wheels) else None
    if terms is None:
        return []
    out = [f"{counters[f'given:{p.name}']} of prize {p.name!r} given, stock {p.stock}"
           for p in terms.prizes if p.stock is not None and counters.get(f"given:{p.name}", 0) > p.stock]
    if terms.budget is not None and counters.get("spent", 0) > terms.budget:
        out.append(f"prizes costing {counters['spent']} given, budget {terms.budget}")
    return out


GAME = Game(
    name=LOTTERY, section=Wheels, check=check, routes=ROUTES, snapshot=snapshot, items=items,
    effects={"prize": PrizeData},
    objects={LOTTERY: LuaScript.from_package("wheel.lua", package="games.lottery", with_object=True)},
    steps={LOTTERY: SpinStep()}, verify=within_stock_and_budget,
)
