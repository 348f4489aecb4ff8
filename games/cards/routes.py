"""Collect-cards routes: draw, gift, combine (member operations), and the member's view of a
campaign. Thin: the rules are ``rules``, the decisions ``store``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from engine import ids
from engine.config import CompiledProgram, item_field
from engine.errors import InvalidInput, Refused
from engine.operations import request_object
from engine.plugins import Answer, Context, GameCall, Link, Route, Window, epoch_ms, name_param, require_open, window
from games.cards import rules
from games.cards.config import Campaign, Campaigns, draw_item
from games.cards.plans import CARDS, card_field, pity_field
from games.cards.store import (
    CombineRequest, DrawRequest, GiftRequest, budgets, campaign_keys, campaign_of, combine, draw, gift, holdings,
)


class DrawIn(BaseModel):
    """A draw: its idempotency key."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="the draw's idempotency key: the same id again answers duplicate, never a new draw")


class GiftIn(BaseModel):
    """A gift of one card to another member."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="the gift's idempotency key")
    to: str = Field(description="the member who receives the card (not the giver)")
    card: str = Field(description="the card given: a card type of the campaign, or its universal card")


class CombineIn(BaseModel):
    """A combine of one full set: its idempotency key."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="the combine's idempotency key")


class CardView(TypedDict):
    card: str
    title: str
    rare: bool
    universal: bool
    held: int
    weight: int
    left_today: int | None  # None: no daily budget
    probability: float  # its chance in an ordinary draw now (0 while its budget is spent today)


class ShareView(TypedDict):
    points: int
    coupon: str | None
    sharers: int


class CampaignView(TypedDict):
    """A collect-cards campaign as the member's page shows it."""

    campaign: str
    title: str
    state: Window
    opens_at_ms: int | None
    deadline_ms: int
    cards: list[CardView]
    chances: int
    draws_since_rare: int
    pity_draws: int | None
    combined: bool
    share: ShareView | None


def view_of(name: str, terms: Campaign, held: dict[str, int], chances: int, pity: int, reply: list[int],
            now_ms: int) -> CampaignView:
    combined, share, frozen, sharers = reply[:4]
    issued = dict(zip(terms.deck, reply[4:]))
    slots = rules.slots(terms, issued)
    shares = rules.eligible_weights(slots, False)
    total = sum(shares)
    limits = budgets(terms)
    universal = terms.universal.name if terms.universal is not None else None
    titles = {c.name: (c.title, c.rare, c.weight) for c in terms.cards}
    if terms.universal is not None:
        titles[terms.universal.name] = (terms.universal.title, False, terms.universal.weight)
    cards = [CardView(card=card, title=titles[card][0], rare=titles[card][1], universal=card == universal,
                      held=held.get(card, 0), weight=titles[card][2],
                      left_today=None if limits[i] is None else max(0, (limits[i] or 0) - issued.get(card, 0)),
                      probability=round(shares[i] / total, 6) if total else 0.0)
             for i, card in enumerate(terms.deck)]
    paid = ShareView(points=share if share >= 0 else 0, coupon=terms.coupon if terms.payout == "coupon" else None,
                     sharers=sharers) if frozen and share >= 0 else None
    deadline = epoch_ms(terms.deadline)
    assert deadline is not None
    return CampaignView(campaign=name, title=terms.title, state=window(terms.opens_at, terms.deadline, now_ms),
                        opens_at_ms=epoch_ms(terms.opens_at), deadline_ms=deadline, cards=cards, chances=chances,
                        draws_since_rare=pity, pity_draws=terms.pity_draws, combined=bool(combined), share=paid)


async def read_view(ctx: Context, program: CompiledProgram, name: str, member: ids.MemberId, now_ms: int) -> CampaignView:
    terms = campaign_of(program, name)
    held = await holdings(ctx, name, terms, member)
    chances, pity = await ctx.members.state_fields(member, [item_field(draw_item(name)), pity_field(name)])
    day, _ = program.calendar.day(now_ms)
    reply = await ctx.runner.call(ctx.crossing.script(CARDS), campaign_keys(ctx, name), ["view", member, day, *terms.deck])
    return view_of(name, terms, held, int(chances or 0), int(pity or 0), [int(v) for v in reply], now_ms)


def _open(call: GameCall) -> tuple[str, Campaign]:
    name = call.params["campaign"]
    terms = campaign_of(call.program, name)
    require_open(terms.opens_at, terms.deadline, call.now_ms, "campaign", "campaign")
    return name, terms


async def post_draw(call: GameCall) -> Answer:
    assert call.member is not None
    name, _ = _open(call)
    body = request_object(call.body, ("id",), "the draw's idempotency key")
    op_id = ids.event_id(body["id"], "id")
    return Answer(operation=(op_id, await draw(call.ctx, call.program, DrawRequest(name, call.member, op_id, call.now_ms))))


async def post_gift(call: GameCall) -> Answer:
    assert call.member is not None
    name, terms = _open(call)
    body = request_object(call.body, ("id", "to", "card"), "the gift's idempotency key")
    op_id = ids.event_id(body["id"], "id")
    for key in ("to", "card"):
        if key not in body:
            raise InvalidInput("is required", field=key)
    receiver = ids.member_id(body["to"], "to")
    card = body["card"]
    if not isinstance(card, str) or card not in terms.deck:
        raise InvalidInput(f"is not a card of this campaign (one of {', '.join(terms.deck)})", field="card")
    if receiver == call.member:
        raise Refused("self_gift", "a member cannot give a card to themselves", field="to")
    if not await call.ctx.members.exists(receiver):
        raise Refused("unknown_member", "no such member: a card is given only to a member the programme knows", field="to")
    request = GiftRequest(name, call.member, receiver, card, op_id, call.now_ms)
    return Answer(operation=(op_id, await gift(call.ctx, call.program, request)))


async def post_combine(call: GameCall) -> Answer:
    assert call.member is not None
    name, _ = _open(call)
    body = request_object(call.body, ("id",), "the combine's idempotency key")
    op_id = ids.event_id(body["id"], "id")
    request = CombineRequest(name, call.member, op_id, call.now_ms)
    return Answer(operation=(op_id, await combine(call.ctx, call.program, request)))


async def get_campaign(call: GameCall) -> Answer:
    assert call.member is not None
    return Answer(await read_view(call.ctx, call.program, call.params["campaign"], call.member, call.now_ms))


class CardsState(TypedDict):
    """The member's cards of one campaign (the snapshot's ``games.cards.<campaign>``)."""

    cards: dict[str, int]
    chances: int
    combined: bool


async def snapshot(ctx: Context, program: CompiledProgram, member: ids.MemberId) -> dict[str, CardsState] | None:
    section = program.games.get(CARDS)
    if not isinstance(section, Campaigns) or not section.root:
        return None
    out: dict[str, CardsState] = {}
    for name, terms in section.root.items():
        *held, chances = await ctx.members.state_fields(member, [*(card_field(name, c) for c in terms.deck),
                                                                 item_field(draw_item(name))])
        combined = await ctx.redis.hget(campaign_keys(ctx, name)[1], f"cmb:{member}")
        out[name] = CardsState(cards={c: int(n) for c, n in zip(terms.deck, held) if n and int(n)},
                               chances=int(chances or 0), combined=int(combined or 0) > 0)
    return out


_CAMPAIGN = name_param("campaign", "The collect-cards campaign's name in the programme.")
REFUSALS: dict[str, tuple[str, str]] = {
    "no_chance": ("the member has no draw of this campaign left", "campaign"),
    "not_eligible": ("this campaign's draws are not for this member (its audience: tiers, tags, new or dormant "
                     "members)", "campaign"),
    "card_not_held": ("the member holds no such card to give", "card"),
    "no_full_set": ("the member does not hold a full set", "campaign"),
    "in_progress": ("this operation is being applied; send the same request again shortly", "id"),
}
_COMMON_409 = ("not_open", "ended", "in_progress", "idempotency_conflict")

ROUTES = (
    Route(
        "post", "/v1/games/cards/{campaign}/draw", "drawCard", "Draw a card (集卡)",
        "Spends one of the member's draws of the campaign (the item `cards:<campaign>`, earned from rules, quests, "
        "tiers and streak rewards) on a card drawn with the published odds among the cards within today's issue "
        "budget; after the campaign's `pity_draws` draws without a rare card, the draw is a rare card if one has "
        "budget left today. Effects: `card_drawn`, `inventory` (the draw spent, the card added). The same id again "
        "answers `duplicate` with the same card: a draw is never redrawn. Refusals write nothing: `no_chance`, "
        "`no_cards_today` (every budget spent today), `not_eligible` (draws are for the campaign's `audience` "
        "only: the chance is kept; gifts and combines are anyone's), `not_open`, `ended`, `in_progress`.",
        "member", post_draw, body=DrawIn, params=(_CAMPAIGN,),
        errors={409: ("no_chance", "no_cards_today", "not_eligible", *_COMMON_409), 404: ("not_found",),
                422: ("invalid",)},
        example_body={"id": "draw-1"}, refusals=REFUSALS,
        links=(Link("cards", "getCards", {"campaign": "$request.path.campaign"}, "The member's cards after this draw."),
               Link("gift", "giftCard", {"campaign": "$request.path.campaign"}, "Give a card of this campaign."),),
    ),
    Route(
        "post", "/v1/games/cards/{campaign}/gift", "giftCard", "Give a card to another member",
        "Takes one `card` from the member and gives it to the member `to` (`card_given` on the giver's feed, "
        "`card_received` on the receiver's). The two steps cross members: a crash between them is finished by the "
        "sweep, so a card is never lost or doubled. Refusals write nothing: `card_not_held`, `self_gift`, "
        "`unknown_member` (a member the programme has never seen), `not_open`, `ended`, `in_progress`.",
        "member", post_gift, body=GiftIn, params=(_CAMPAIGN,),
        errors={409: ("card_not_held", "self_gift", "unknown_member", *_COMMON_409), 404: ("not_found",),
                422: ("invalid",)},
        example_body={"id": "gift-1", "to": "m-2", "card": "fu"}, refusals=REFUSALS,
        links=(Link("cards", "getCards", {"campaign": "$request.path.campaign"}, "The giver's cards after this gift."),),
    ),
    Route(
        "post", "/v1/games/cards/{campaign}/combine", "combineCards", "Combine a full set",
        "Takes one card of each type of the campaign (universal cards standing in for missing types, at most "
        "`universal_stands_for` of them; real cards first) and enters the member among those who share the prize "
        "pool at the deadline: `cards_combined`. Once per member and campaign. Refusals write nothing: "
        "`no_full_set`, `already_combined`, `not_open`, `ended`, `in_progress`.",
        "member", post_combine, body=CombineIn, params=(_CAMPAIGN,),
        errors={409: ("no_full_set", "already_combined", *_COMMON_409), 404: ("not_found",), 422: ("invalid",)},
        example_body={"id": "combine-1"}, refusals=REFUSALS,
        links=(Link("cards", "getCards", {"campaign": "$request.path.campaign"}, "The member's cards after combining."),),
    ),
    Route(
        "get", "/v1/games/cards/{campaign}", "getCards", "A collect-cards campaign: the member's cards and chances",
        "The campaign's cards in display order with the member's count of each, its weight, what its budget has "
        "left today and its chance in a draw now; the member's draws left (`chances`), the draws since a rare card, "
        "whether the member combined a set; after the deadline, once the split has paid it, the member's `share`.",
        "member", get_campaign, reply=CampaignView, params=(_CAMPAIGN,), errors={404: ("not_found",)}, kind="read",
    ),
)
