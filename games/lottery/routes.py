"""Lottery routes: spin a wheel (member), read a wheel with its published odds and the member's
spins. Thin: the draw is ``rules.draw``, the spin ``store.spin`` on the seam."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from engine import ids
from engine.config import CompiledProgram, item_field
from engine.crossing import ObjectRef
from engine.operations import request_object
from engine.plugins import Answer, Context, GameCall, Link, Route, Window, epoch_ms, name_param, require_open, window, section_entry
from games.lottery.config import PPM, Wheel, Wheels
from games.lottery.plans import LOTTERY, spin_item
from games.lottery.rules import draw, released
from games.lottery.store import Spin, spin


class SpinIn(BaseModel):
    """A spin: its idempotency key."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="the spin's idempotency key: the same id again answers duplicate, never a new draw")


class PrizeView(TypedDict):
    """A prize as the wheel publishes it."""

    prize: str
    title: str
    probability: float
    stock: int | None
    left: int | None


class WheelView(TypedDict):
    """A wheel as an app shows it: its prizes with their odds, and the member's spins."""

    wheel: str
    title: str
    state: Window
    prizes: list[PrizeView]
    fallback: str
    spins: int
    opens_at_ms: int | None
    ends_at_ms: int | None


class WheelState(TypedDict):
    """A member's spins of one wheel (the snapshot's ``games.lottery.<wheel>``)."""

    title: str
    spins: int


def wheel_of(program: CompiledProgram, name: str) -> Wheel:
    return section_entry(program, LOTTERY, Wheels, name, "wheel", "wheel")


def available(program: CompiledProgram, wheel: Wheel, stock: int | None, now_ms: int) -> int:
    """A prize's units released by now (-1: no stock): all of it, or today's share of it."""
    if stock is None:
        return -1
    if wheel.release == "all":
        return stock
    local = datetime.fromtimestamp(now_ms / 1000, program.tz)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)  # wall-clock arithmetic: the next local midnight (a DST day is 23 or 25 h)
    return released(stock, int(start.timestamp() * 1000), int(end.timestamp() * 1000), now_ms)


async def post_spin(call: GameCall) -> Answer:
    name = call.params["wheel"]
    wheel = wheel_of(call.program, name)
    assert call.member is not None
    body = request_object(call.body, ("id",), "the spin's idempotency key")
    op_id = ids.event_id(body["id"], "id")
    require_open(wheel.opens_at, wheel.ends_at, call.now_ms, "wheel", "wheel")
    chance = call.ctx.draws(f"{call.member}:{op_id}").randbelow(PPM)
    drawn = wheel.prizes[draw([p.ppm for p in wheel.prizes], chance)]
    request = Spin(name, call.member, op_id, call.now_ms, drawn, available(call.program, wheel, drawn.stock, call.now_ms))
    return Answer(operation=(op_id, await spin(call.ctx.crossing, call.program, wheel, request)))


async def get_wheel(call: GameCall) -> Answer:
    name = call.params["wheel"]
    wheel = wheel_of(call.program, name)
    assert call.member is not None
    counters = ObjectRef(LOTTERY, name).keys(call.ctx.keys)[1]
    given = await call.ctx.redis.hmget(counters, [f"given:{p.name}" for p in wheel.prizes])
    (spins,) = await call.ctx.members.state_fields(call.member, [item_field(spin_item(name))])
    prizes = [
        PrizeView(prize=p.name, title=p.title, probability=p.probability, stock=p.stock,
                  left=None if p.stock is None else max(0, p.stock - int(g or 0)))
        for p, g in zip(wheel.prizes, given)
    ]
    return Answer(WheelView(wheel=name, title=wheel.title, state=window(wheel.opens_at, wheel.ends_at, call.now_ms), prizes=prizes,
                            fallback=wheel.fallback, spins=int(spins or 0), opens_at_ms=epoch_ms(wheel.opens_at),
                            ends_at_ms=epoch_ms(wheel.ends_at)))


async def snapshot(ctx: Context, program: CompiledProgram, member: ids.MemberId) -> dict[str, WheelState] | None:
    section = program.games.get(LOTTERY)
    if not isinstance(section, Wheels) or not section.root:
        return None
    names = list(section.root)
    counts = await ctx.members.state_fields(member, [item_field(spin_item(n)) for n in names])
    return {n: WheelState(title=section.root[n].title, spins=int(c or 0)) for n, c in zip(names, counts)}


_WHEEL = name_param("wheel", "The wheel's name in the programme.")
REFUSALS: dict[str, tuple[str, str]] = {
    "insufficient_items": ("the member has no spin of this wheel left", "wheel"),
    "not_eligible": ("this wheel is not for this member (its audience: tiers, tags, new or dormant members)", "wheel"),
    "in_progress": ("this spin is being applied; send the same request again shortly", "id"),
}

ROUTES = (
    Route(
        "post", "/v1/games/lottery/{wheel}/spin", "spinWheel", "Spin a lottery wheel",
        "Spends one of the member's spins of the wheel (the item `lottery:<wheel>`, earned from rules, quests, tiers "
        "and streak rewards) and gives the prize drawn with the published odds; when that prize is out of stock, not "
        "yet released or past the wheel's budget, the wheel's fallback prize instead. The answer's effects say which: "
        "`prize` (`fallback` true when it replaced the one drawn), `inventory` (the spin spent) and the prize's own "
        "(`xp`, `points`, `reward`). The same id again answers `duplicate` with the same prize: a spin is never "
        "redrawn. Refusals write nothing: `insufficient_items` (no spin left), `not_eligible` (the wheel is for its "
        "`audience` only: the spin is kept), `not_open`, `ended`, `budget_spent`, `in_progress` (send the same "
        "request again shortly).",
        "member", post_spin, body=SpinIn, params=(_WHEEL,),
        errors={409: ("insufficient_items", "not_eligible", "not_open", "ended", "budget_spent", "in_progress",
                      "idempotency_conflict"),
                404: ("not_found",), 422: ("invalid",)},
        example_body={"id": "spin-1"}, refusals=REFUSALS,
        links=(Link("wheel", "getWheel", {"wheel": "$request.path.wheel"}, "The wheel after this spin: stocks, spins left."),
               Link("snapshot", "getMe", {}, "The member's snapshot after this spin: the prize, the spins.")),
    ),
    Route(
        "get", "/v1/games/lottery/{wheel}", "getWheel", "A lottery wheel: its prizes, their odds, the member's spins",
        "The wheel's prizes in display order with their published `probability`, each limited prize's `stock` and "
        "what is `left` of it (given, pending or delivered, counts as gone), the fallback prize, the member's "
        "`spins`, and the wheel's state: `upcoming`, `open` or `ended`.",
        "member", get_wheel, reply=WheelView, params=(_WHEEL,), errors={404: ("not_found",)}, kind="read",
    ),
)
