"""The flash sale's section of a programme: ``[games.flash.<sale>]``, one table a sale."""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, Strict

from engine.config import Audience, Name, Program, audience_problems
from engine.plugins import window_problems

Count = Annotated[int, Strict(), Field(ge=0, le=1_000_000_000)]


class Sale(BaseModel):
    """A limited stock of a catalog item, claimed first come first served from an opening instant:
    never oversold, not by one, however many claim in the opening second."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    title: Annotated[str, Strict(), Field(min_length=1, max_length=120, description="shown to the member")]
    item: Annotated[str, Strict(), Field(min_length=1, max_length=64, description="the catalog item a winner gets, as a coupon")]
    stock: Annotated[int, Strict(), Field(ge=1, le=10_000_000, description="units in all")]
    per_member_limit: Annotated[int, Strict(), Field(ge=1, le=1_000, description="units one member may win")] = 1
    price_points: Count = Field(0, description="points a claim costs (0: free)")
    opens_at: AwareDatetime | None = Field(None, description="when claims open, with its UTC offset (not set: open now)")
    ends_at: AwareDatetime | None = Field(None, description="when claims end (exclusive), with its UTC offset (not set: never)")
    audience: Audience | None = Field(None, description="who may claim (everyone without it): anyone else is refused "
                                                        "`not_eligible`, the unit staying in the sale")


class FlashSales(RootModel[dict[Name, Sale]]):
    """The programme's flash sales, by name (the name is in the routes: `/v1/games/flash/<sale>`)."""

    model_config = ConfigDict(frozen=True)


def check(program: Program, section: FlashSales) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    catalog = getattr(program, "catalog", {})
    for name, sale in section.root.items():
        path = f"games.flash.{name}"
        if sale.item not in catalog:
            out.append((f"{path}.item", f"no catalog item {sale.item!r} is declared under [catalog]"))
        out += window_problems(path, sale.opens_at, sale.ends_at)
        out += audience_problems(program, f"{path}.audience", sale.audience)
    return out

