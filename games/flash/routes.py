"""Flash-sale routes: claim a unit (member), read a sale. Thin: the claim is the seam's
``claim_unit`` on the sale's stock object, as a catalog redemption is."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from engine import ids
from engine.config import CompiledProgram
from engine.crossing import ObjectRef
from engine.errors import Refused
from engine.operations import request_object
from engine.plugins import Answer, Context, GameCall, Link, Route, epoch_ms, name_param, require_open, window, section_entry
from engine.redemptions import claim_unit
from games.flash.config import FlashSales, Sale
from games.flash.plans import FLASH, claim_step

#: How long this process answers sold_out from memory once its sale said so: a crowd's refusals
#: then cost no round trip. A unit given back (a claim whose member could not pay) is offered
#: again at most this much later.
SOLD_OUT_MEMO_S = 0.1
_sold_out: dict[tuple[str, str], float] = {}  # (programme hash, sale) -> monotonic time it is trusted until


class ClaimIn(BaseModel):
    """A claim: its idempotency key."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="the claim's idempotency key: the same id again answers duplicate")


class SaleView(TypedDict):
    """A flash sale as an app shows it."""

    sale: str
    title: str
    item: str
    price_points: int
    per_member_limit: int
    stock: int
    left: int
    state: Literal["upcoming", "open", "sold_out", "ended"]
    opens_at_ms: int | None
    ends_at_ms: int | None


class SaleState(TypedDict):
    """A flash sale as the member's app shows it (the snapshot's ``games.flash.<sale>``): its terms
    and window, from the programme (the stock left is ``GET /v1/games/flash/{sale}``'s)."""

    title: str
    item: str
    price_points: int
    opens_at_ms: int | None
    ends_at_ms: int | None


async def snapshot(ctx: Context, program: CompiledProgram, member: ids.MemberId) -> dict[str, SaleState] | None:
    section = program.games.get(FLASH)
    if not isinstance(section, FlashSales) or not section.root:
        return None
    # A sale not for the member (its `audience`) is not shown: its claim could only be refused.
    shown = await ctx.members.in_audiences(member, [program.audience(s.audience) for s in section.root.values()],
                                           ctx.clock.now_ms())
    return {name: SaleState(title=s.title, item=s.item, price_points=s.price_points, opens_at_ms=epoch_ms(s.opens_at),
                            ends_at_ms=epoch_ms(s.ends_at)) for (name, s), ok in zip(section.root.items(), shown) if ok}


def sale_of(program: CompiledProgram, name: str) -> Sale:
    return section_entry(program, "flash", FlashSales, name, "flash sale", "sale")


async def post_claim(call: GameCall) -> Answer:
    name = call.params["sale"]
    sale = sale_of(call.program, name)
    assert call.member is not None
    body = request_object(call.body, ("id",), "the claim's idempotency key")
    op_id = ids.event_id(body["id"], "id")
    require_open(sale.opens_at, sale.ends_at, call.now_ms, "sale", "sale")
    memo = (call.program.program_hash, name)
    if _sold_out.get(memo, 0.0) > time.monotonic():
        raise Refused("sold_out", "this sale is sold out", field="sale")
    step = claim_step(call.program, name, call.member, op_id, call.now_ms)
    result = await claim_unit(call.ctx.crossing, call.program, ObjectRef(FLASH, name), step, sale.stock,
                              sale.per_member_limit, call.now_ms)
    if result.refusal == "out_of_stock":
        _sold_out[memo] = time.monotonic() + SOLD_OUT_MEMO_S
        raise Refused("sold_out", "this sale is sold out", field="sale")
    return Answer(operation=(op_id, result))


async def get_sale(call: GameCall) -> Answer:
    name = call.params["sale"]
    sale = sale_of(call.program, name)
    counters = ObjectRef(FLASH, name).keys(call.ctx.keys)[1]
    sold = int(await call.ctx.redis.hget(counters, "sold") or 0)
    left = max(0, sale.stock - sold)
    now = window(sale.opens_at, sale.ends_at, call.now_ms)
    state: Literal["upcoming", "open", "sold_out", "ended"] = "sold_out" if now == "open" and not left else now
    return Answer(SaleView(sale=name, title=sale.title, item=sale.item, price_points=sale.price_points,
                           per_member_limit=sale.per_member_limit, stock=sale.stock, left=left, state=state,
                           opens_at_ms=epoch_ms(sale.opens_at), ends_at_ms=epoch_ms(sale.ends_at)))


_SALE = name_param("sale", "The sale's name in the programme.")
REFUSALS: dict[str, tuple[str, str]] = {
    "limit_reached": ("the member has won this sale's limit", "sale"),
    "insufficient_points": ("the member's live points balance cannot cover the price", "sale"),
    "not_eligible": ("this sale is not for this member (its audience: tiers, tags, new or dormant members)", "sale"),
    "in_progress": ("this claim is being applied; send the same request again shortly", "id"),
}

ROUTES = (
    Route(
        "post", "/v1/games/flash/{sale}/claim", "claimFlashSale", "Claim a unit of a flash sale",
        "First come, first served from the opening instant, never oversold: a unit and the member's count under "
        "the per-member limit are taken by the sale, then the member pays its `price_points` and gets the item as "
        "a coupon (`points`, `reward` effects; `applied` is a win). A claim whose member cannot pay, or is not in "
        "the sale's `audience`, gives its unit back. The same id again answers `duplicate`. Refusals write nothing: "
        "`sold_out`, `not_open`, `ended`, `limit_reached`, `insufficient_points`, `not_eligible` (the sale is for "
        "its audience only), `in_progress` (send the same request again shortly). Once the "
        "sale said sold out, a process answers so for 0.1 s without asking it.",
        "member", post_claim, body=ClaimIn, params=(_SALE,),
        errors={409: ("sold_out", "not_open", "ended", "limit_reached", "insufficient_points", "not_eligible",
                      "in_progress"),
                404: ("not_found",), 422: ("invalid",)},
        example_body={"id": "claim-1"}, refusals=REFUSALS,
        links=(Link("sale", "getFlashSale", {"sale": "$request.path.sale"}, "The sale after this claim: what is left."),
               Link("snapshot", "getMe", {}, "The member's snapshot after this claim: the coupon, the points paid.")),
    ),
    Route(
        "get", "/v1/games/flash/{sale}", "getFlashSale", "A flash sale: stock left and its opening",
        "The sale's terms, its stock and what is left (units taken, pending or delivered, count as gone), and its "
        "state: `upcoming`, `open`, `sold_out` or `ended`.",
        "member", get_sale, reply=SaleView, params=(_SALE,), errors={404: ("not_found",)}, kind="read",
    ),
)
