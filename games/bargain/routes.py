"""Bargain routes: start one (the owner), help one (a friend), read one (anyone with its link), and
the campaign's anti-collusion report (an admin). Thin: the rules are ``rules``, the object's
decisions ``store``, the report's counters and flags ``report``."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from engine import ids
from engine.config import CompiledProgram
from engine.errors import InvalidInput
from engine.operations import request_object
from engine.plugins import (Answer, Context, GameCall, Link, Param, Route, Window, epoch_ms, name_param, require_open,
                            window)
from games.bargain import report
from games.bargain.config import Campaigns
from games.bargain.plans import BARGAIN
from games.bargain.report import BargainReport
from games.bargain.rules import help_weight, new_member
from games.bargain.store import HelpRequest, Round, campaign_for_help, campaign_of, help_, latest_bargain, start, view

#: How many helps one device (or address) may give one bargain, when the shop passes its hash.
DEVICE_HELPS = 2


class StartIn(BaseModel):
    """A bargain to start: the campaign (and its item, which must match when given)."""

    model_config = ConfigDict(extra="forbid")
    campaign: str = Field(description="the campaign in the programme")
    item: str | None = Field(None, description="the campaign's item, as the app shows it (checked when given)")


class HelpIn(BaseModel):
    """A help: its idempotency key, and optionally the helper's device."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="the help's idempotency key: the same id again answers duplicate")
    device: str | None = Field(None, description="a hash of the helper's device or address, from the shop's app: "
                                                 f"at most {DEVICE_HELPS} helps of one bargain from one device")


class HelpView(TypedDict):
    helper: str
    cut_cents: int
    at_ms: int


class BargainView(TypedDict):
    """A bargain as its page shows it."""

    id: str
    owner: str
    campaign: str
    item: str
    price_cents: int
    floor_cents: int
    current_cents: int
    state: Literal["open", "done", "expired"]
    expires_at_ms: int
    helps: list[HelpView]


def view_of(round_: Round, now_ms: int) -> BargainView:
    """The bargain's page: its own terms (the record's item, price and floor), its helps."""
    state: Literal["open", "done", "expired"] = round_.state(now_ms)  # type: ignore[assignment]
    return BargainView(id=round_.id, owner=round_.owner, campaign=round_.campaign, item=round_.item,
                       price_cents=round_.price,
                       floor_cents=round_.floor, current_cents=round_.current, state=state,
                       expires_at_ms=round_.expires_ms,
                       helps=[HelpView(helper=h, cut_cents=c, at_ms=t) for h, c, t in round_.helps])


async def post_start(call: GameCall) -> Answer:
    assert call.member is not None
    body = call.body
    if not isinstance(body, dict):
        raise InvalidInput(f"must be a JSON object, not {ids.kind_of(body)}", field="body")
    for key in body:
        if key not in ("campaign", "item"):
            raise InvalidInput("unknown key (expected campaign, item)", field=str(key))
    if "campaign" not in body:
        raise InvalidInput("is required: the campaign in the programme", field="campaign")
    name = ids.check_id(body["campaign"], "campaign", ids.NAME_MAX)
    campaign = campaign_of(call.program, name)
    if body.get("item") is not None and body["item"] != campaign.item:
        raise InvalidInput(f"this campaign's item is {campaign.item!r}", field="item")
    require_open(campaign.opens_at, campaign.ends_at, call.now_ms, "campaign", "campaign")
    started, value = await start(call.ctx, call.program, name, call.member, call.now_ms)
    return Answer(view_of(await view(call.ctx, value), call.now_ms), status=201 if started else 200)


async def post_help(call: GameCall) -> Answer:
    assert call.member is not None
    body = request_object(call.body, ("id", "device"), "the help's idempotency key")
    op_id = ids.event_id(body["id"], "id")
    device = body.get("device")
    if device is not None and (not isinstance(device, str) or not 1 <= len(device) <= 128):
        raise InvalidInput("must be a string of 1 to 128 characters (a hash, never the device's id itself)",
                           field="device")
    value = call.params["bargain"]
    # An id of no bargain's shape: 404 naming the bargain; its campaign gone: campaign_removed.
    campaign = await campaign_for_help(call.ctx, call.program, value)
    # Whether the helper is new: read here only when it sets the help's units; otherwise the store
    # reads it for the report once the object took the help (a refused help never reads it).
    is_new: bool | None = None
    if campaign.new_member_units > 1:
        is_new = new_member(await call.ctx.members.joined_at_ms(call.member), call.now_ms, campaign.new_member_days)
    weight = help_weight(campaign, bool(is_new))
    request = HelpRequest(value, call.member, op_id, call.now_ms, weight,
                          hashlib.blake2b(device.encode(), digest_size=8).hexdigest() if device else "", DEVICE_HELPS,
                          is_new)
    return Answer(operation=(op_id, await help_(call.ctx, call.program, request)))


class CampaignView(TypedDict):
    """A bargain campaign the member may start, and the member's latest bargain of it."""

    campaign: str
    title: str
    item: str
    price_cents: int
    floor_cents: int
    helpers: int
    duration_hours: int
    state: Window  # whether bargains may start: upcoming, open, ended
    eligible: bool  # whether the member may start one (the campaign's audience): a member who left it still sees their own
    opens_at_ms: int | None
    ends_at_ms: int | None
    bargain: str | None  # the member's latest bargain of the campaign (open, done or expired): read it by its id


class CampaignsView(TypedDict):
    campaigns: list[CampaignView]


async def list_campaigns(call: GameCall) -> Answer:
    assert call.member is not None
    section = call.program.games.get(BARGAIN)
    terms = list(section.root.items()) if isinstance(section, Campaigns) else []
    shown = await call.ctx.members.in_audiences(call.member, [call.program.audience(c.audience) for _, c in terms],
                                                call.now_ms)
    campaigns = []
    for (name, c), eligible in zip(terms, shown):
        latest = await latest_bargain(call.ctx, name, call.member)
        if not eligible and latest is None:
            continue  # not for the member, and never started by them: not shown
        campaigns.append(CampaignView(
            campaign=name, title=c.title, item=c.item, price_cents=c.price_cents, floor_cents=c.floor_cents,
            helpers=c.helpers, duration_hours=c.duration_hours, state=window(c.opens_at, c.ends_at, call.now_ms),
            eligible=eligible, opens_at_ms=epoch_ms(c.opens_at), ends_at_ms=epoch_ms(c.ends_at),
            bargain=latest))
    return Answer(CampaignsView(campaigns=campaigns))


async def get_bargain(call: GameCall) -> Answer:
    return Answer(view_of(await view(call.ctx, call.params["bargain"]), call.now_ms))


async def get_report(call: GameCall) -> Answer:
    value = call.params.get("campaign")
    if value is None:
        raise InvalidInput("is required: the campaign to report on", field="campaign")
    campaign_of(call.program, value)  # not in the programme: 404 naming the campaign
    return Answer(await report.read(call.ctx, call.program, value, call.now_ms))


class BargainState(TypedDict):
    """The member's bargain of one campaign (the snapshot's ``games.bargain.<campaign>``)."""

    id: str
    state: Literal["open", "done", "expired"]
    current_cents: int
    expires_at_ms: int


async def snapshot(ctx: Context, program: CompiledProgram, member: ids.MemberId) -> dict[str, BargainState] | None:
    section = program.games.get(BARGAIN)
    if not isinstance(section, Campaigns) or not section.root:
        return None
    out: dict[str, BargainState] = {}
    now = ctx.clock.now_ms()
    for name in section.root:
        latest = await latest_bargain(ctx, name, member)
        if latest is None:
            continue
        round_ = await view(ctx, latest)
        out[name] = BargainState(id=round_.id, state=round_.state(now), current_cents=round_.current,  # type: ignore[typeddict-item]
                                 expires_at_ms=round_.expires_ms)
    return out


_BARGAIN = Param("bargain", "path", {"type": "string", "minLength": 5, "maxLength": 128,
                                     "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]*\\.[0-9]+\\.[A-Za-z0-9][A-Za-z0-9._:@-]*$"},
                 "The bargain's id, `<campaign>.<n>.<owner>`, as its start answered.", required=True)
_CAMPAIGN = Param("campaign", "query", name_param("campaign", "").schema,
                  "The campaign to report on, by its name in the programme.", required=True)
REFUSALS: dict[str, tuple[str, str]] = {
    "helper_quota": ("the member has helped as many bargains today as the campaign allows", "bargain"),
    "in_progress": ("this help is being applied; send the same request again shortly", "id"),
}

ROUTES = (
    Route(
        "post", "/v1/games/bargain", "startBargain", "Start a bargain (砍价)",
        "Starts a bargain on the campaign's item at its price, open for the campaign's duration; friends help cut "
        "it to the floor (share its id). One open bargain per member and campaign: while one is open, this answers "
        "it (200) instead of starting another (201). Its cut schedule is drawn now and kept with it, as are the "
        "campaign's terms: a bargain keeps the programme it started under. A campaign with an `audience` is "
        "started by its members only: anyone else is refused `not_eligible` (helpers are anyone).",
        "member", post_start, reply=BargainView, body=StartIn, status=201,
        errors={404: ("not_found",), 409: ("not_open", "ended", "not_eligible"), 422: ("invalid",)},
        example_body={"campaign": "member-day-tea"},
        links=(Link("help", "helpBargain", {"bargain": "$response.body#/id"}, "Help this bargain (as a friend)."),
               Link("read", "getBargain", {"bargain": "$response.body#/id"}, "Read this bargain.")),
    ),
    Route(
        "post", "/v1/games/bargain/{bargain}/help", "helpBargain", "Help a friend's bargain",
        "The calling member cuts the bargain's price by the next cut of its schedule (a member new to the programme, "
        "by the shop's `joined_at`, takes the campaign's `new_member_units` at once): effects `bargain_helped` for "
        "the helper, and on the owner's feed; the help that reaches the floor gives the owner the item "
        "(`bargain_done`, `reward`). Once per helper per bargain, at most the campaign's `helps_per_day` a day. "
        "Refusals write nothing: `own_bargain`, `already_helped`, `helper_quota`, `bargain_closed` (at its "
        "floor), `expired`, `device_limit`, `in_progress`, `campaign_removed` (the bargain's campaign has left the "
        "programme). The owner's reward is the item and floor the bargain started with; the helper's daily quota "
        "is the programme's now.",
        "member", post_help, body=HelpIn, params=(_BARGAIN,),
        errors={409: ("own_bargain", "already_helped", "helper_quota", "bargain_closed", "expired", "device_limit",
                      "in_progress", "campaign_removed", "idempotency_conflict"), 404: ("not_found",),
                422: ("invalid",)},
        example_body={"id": "help-1"}, refusals=REFUSALS,
        links=(Link("read", "getBargain", {"bargain": "$request.path.bargain"}, "The bargain after this help."),),
    ),
    Route(
        "get", "/v1/games/bargain", "listBargainCampaigns", "The bargain campaigns the member may start",
        "The programme's bargain campaigns for this member, in the programme's order (a campaign with an `audience` "
        "is listed to its members, and to a member who started a bargain of it before leaving it, with `eligible` "
        "false): each with its title, item, price, floor, helpers, duration, whether bargains may start now (`state`: "
        "`upcoming`, `open`, `ended`), and `bargain`, the id of the member's latest "
        "bargain of it (open, done or expired; null: none yet), to read with `GET /v1/games/bargain/{bargain}`. "
        "What a member page draws its bargain card from.",
        "member", list_campaigns, reply=CampaignsView, kind="read",
        links=(Link("start", "startBargain", {}, "Start a bargain of one of these campaigns."),),
    ),
    Route(
        "get", "/v1/games/bargain/{bargain}", "getBargain", "A bargain: its price now and its helps",
        "What the bargain's page shows, to its owner and to the friends who opened its link: the price, the floor, "
        "the price now, the state (`open`, `done` at its floor, `expired`), when it expires, and each help.",
        "member", get_bargain, reply=BargainView, params=(_BARGAIN,), errors={404: ("not_found",)}, kind="read",
    ),
    Route(
        "get", "/v1/admin/games/bargain/report", "bargainReport", "A bargain campaign's anti-collusion report",
        "Flags, each with the numbers behind it: help rings (members who helped one another's bargains, every two "
        f"of them at least {report.RING_MIN} times each way; a group of more than {report.RING_MAX} is listed by its "
        f"size and busiest members), owners helped mostly by new members (at least {report.MIN_HELPS} helps, "
        f"{float(report.NEW_SHARE):.0%} or more by members new when they helped), and devices (or addresses, by the "
        f"hash the shop passes) with {report.DEVICE_DAY_HELPS} helps or more today. Read from counters kept as helps "
        "apply (statistics: a help whose count was lost, or that the sweep finished, is missing), at most "
        f"{report.TOP_PAIRS} pairs and {report.TOP_OWNERS} owners and devices: its cost does not grow with the "
        "bargains played. A member's helps a day are capped exactly (the campaign's `helps_per_day`), and a "
        f"device's helps of one bargain ({DEVICE_HELPS}); a device's helps a day across bargains are not capped "
        "(that would be a check in another slot before every help): this list flags heavy devices instead.",
        "admin", get_report, reply=BargainReport, params=(_CAMPAIGN,),
        errors={404: ("not_found",), 422: ("invalid",)}, kind="read",
    ),
)
