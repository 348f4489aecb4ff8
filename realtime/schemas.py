"""Every HTTP route: what it accepts (pydantic models of the bodies), what it answers (the reply
types the handlers build their replies with, ``realtime/replies.py``), its parameters and every
error code, from which ``realtime/openapi.py`` builds the OpenAPI document.

The request models describe what the handlers' parsers accept (``engine.events.parse_event``
and its kin, which give the caller's field paths in their messages); schemathesis holds the two
together in ``make test`` (schema-valid input is accepted, schema-invalid input refused). A key
left out where it does not apply (never null) is declared ``_omitted``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictInt, StrictStr, StringConstraints

from engine.clock import LATEST_ISO
from engine.plugins import Game, Link, Param, installed  # one shape for the service's routes and the games'

from realtime.replies import (
    ClockReply, ConfigPosted, ConfigReply, DeadWebhooksReply, EventsReply, HealthReply, OperationReply, ProfileReply,
    StatsReply,
    ReplayReply, Reply, Snapshot, TokenReply,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"  # engine/ids.py: what may reach a Redis key
MemberId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
OpId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
Time = Annotated[StrictInt, Field(ge=0, le=2**53 - 1)] | Annotated[StrictStr, Field(max_length=40)]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _omitted(description: str, **constraints: Any) -> Any:
    """A key that may be absent (never null): not required, and no default in the schema."""
    return Field(None, description=description, json_schema_extra=_no_default, **constraints)


class Closed(BaseModel):
    """A request body whose handler refuses any key it does not name (422 on that key)."""

    model_config = ConfigDict(extra="forbid")


# --- events ---------------------------------------------------------------------------------------


class EventIn(Closed):
    """One member event; `data` is checked against the active programme's declaration of `type`."""

    id: OpId = Field(description="idempotency key, unique per member (events and operations alike)")
    member: MemberId
    type: str = Field(description="an event type the active programme declares")
    at: Time | None = Field(None, description="ISO 8601 with an offset, or epoch milliseconds; absent or null: when it arrives")
    data: dict[str, Any] = Field(default_factory=dict, description="the fields the event type declares; unknown ones are refused")


class EventBatchIn(Closed):
    """Up to 1,000 events, applied in order, one result each."""

    events: list[EventIn] = Field(min_length=1, max_length=1000, description="a bad event is rejected in its own result, not the batch")


class EventsBody(RootModel[EventIn | EventBatchIn]):
    """`POST /v1/events`: one event, or a batch under `events`."""


# --- members --------------------------------------------------------------------------------------


class ProfileIn(Closed):
    """Profile facts; only the keys given are written (at least one)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    joined_at: Time = _omitted("ISO 8601 with an offset, or epoch milliseconds")
    birthday: Annotated[str, StringConstraints(pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")] = _omitted('month-day, "03-21" (02-29 allowed)')
    referrer: MemberId = _omitted("another member's id (not the member itself)")
    tags: list[Name] = _omitted("replaces the tags (kept sorted, deduplicated)", max_length=32)


# --- points, coupons, redemptions -----------------------------------------------------------------


class SpendIn(Closed):
    """Take points from the member, soonest-expiring lots first."""

    id: OpId = Field(description="idempotency key, unique per member")
    amount: StrictInt = Field(ge=1, le=10**9)
    reason: Name = Field("spend", description="shown in the effect and the ledger")


class CouponUseIn(Closed):
    """Mark the coupon in the path used for an order, once."""

    id: OpId = Field(description="idempotency key, unique per member")
    order: OpId


class RedeemIn(Closed):
    """Redeem one of a catalog item for its points cost."""

    id: OpId = Field(description="idempotency key, unique per member")
    item: Name = Field(description="a catalog item with a `points_cost` (the document lists the programme's)")


# --- tokens, programme, operations ----------------------------------------------------------------


class TokenIn(Closed):
    """Mint a member token."""

    member: MemberId
    ttl_s: StrictInt = Field(86400, ge=60, le=30 * 24 * 3600, description="lifetime in seconds")


class ClockIn(Closed):
    """The moment to move the dev clock to."""

    now: str = Field(description=f"ISO 8601 with a UTC offset, not earlier than the service's clock, not later than {LATEST_ISO}")


#: A webhook message's id (``engine.outreach.delivery_id``): ``rk:webhook:<member>:<32 hex digits>``.
WEBHOOK_ID_PATTERN = r"^rk:webhook:[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}:[0-9a-f]{32}$"
WebhookId = Annotated[str, StringConstraints(min_length=45, max_length=108, pattern=WEBHOOK_ID_PATTERN)]


class ReplayIn(Closed):
    """Which dead webhook messages to send again: `ids`, or `all` (exactly one of them)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1, "maxProperties": 1})

    ids: list[WebhookId] = _omitted("message ids from GET /v1/admin/webhooks/dead", min_length=1, max_length=500)
    all: Literal[True] = _omitted("true: every dead message (up to 10,000 a call; `more` says if others wait)")


# --- the routes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One HTTP route: what it takes, answers and refuses, for ``realtime/openapi.py``."""

    method: str  # "get", "post", "put"
    path: str  # OpenAPI path, e.g. "/v1/members/{member}"
    operation_id: str  # camelCase, unique
    summary: str  # one line
    description: str  # what it does, idempotency by id, what a retry gets
    tag: str  # "events" | "members" | "points" | "rewards" | "live" | "config" | "operations" | "auth"
    auth: str | None  # "shop", "member", "admin", or None
    body: type[BaseModel] | None
    reply: type[Reply] | None  # the success body: a TypedDict of realtime/replies.py
    status: int = 200
    params: tuple[Param, ...] = ()
    errors: dict[int, tuple[str, ...]] = field(default_factory=dict)  # HTTP status -> every `error.code`
    example_body: dict[str, Any] | None = None
    example_reply: dict[str, Any] | None = None
    text_body: str | None = None  # a body that is not JSON: its media type (the programme TOML: text/plain)
    #: Answers other than the success and the error bodies, by status (readiness's 503 has its own shape).
    replies: dict[int, type[Reply]] = field(default_factory=dict)
    links: tuple[Link, ...] = ()  # from the success answer


def _id_schema(max_len: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_len, "pattern": ID_PATTERN}


_MEMBER = Param("member", "path", _id_schema(64), "The member's id.", required=True)
_SAME_MEMBER = {"member": "$request.path.member"}
_TO_SNAPSHOT = Link("snapshot", "getMember", _SAME_MEMBER, "The member's snapshot after this operation.")
_TO_SPEND = Link("spend", "spendPoints", _SAME_MEMBER, "Spend the member's points.")
_BODY = {400: ("bad_json",), 413: ("payload_too_large",), 401: ("unauthorized",)}  # a body, behind a credential
_BUSY = {429: ("overloaded",), 503: ("unavailable",)}
_RETRY = " Nothing was written on a 429 or 503: send the same request again, with the same id, after Retry-After."
_ID = ("The id is the idempotency key, per member and shared with events: the same id and body again answers "
       "`duplicate`, writes nothing and replays the first call's effects; another body under it is 409 "
       "`idempotency_conflict`. A refusal writes nothing. Ids starting `rk:` are reserved for the engine's own "
       "operations (scheduled expiries, game steps) and answered 422.")
_EVENT = {"id": "order-9912-paid", "member": "m-42", "type": "purchase", "at": "2026-11-11T10:00:03+08:00",
          "data": {"amount": 19900, "sku": "tea-01"}}
_SNAPSHOT = {
    "member": "m-42", "xp": 299, "tier": {"id": "bronze", "name": "Bronze", "points_multiplier": 1.0,
                                          "next": {"id": "silver", "name": "Silver", "xp": 1000, "xp_to_go": 701}},
    "points": {"balance": 299, "expiring": [{"amount": 299, "expires_at_ms": 1830268800000}], "debt": 0},
    "quests": [{"id": "first_order", "title": "Place your first order", "kind": "once", "progress": 1, "target": 1,
                "state": "completed", "starts_at_ms": None, "deadline_ms": None,
                "rewards": {"xp": 100, "points": 100, "coupons": ["free-shipping"]}, "repeats": False}],
    "rewards": [{"coupon": "order-9912-paid:c1", "item": "free-shipping", "state": "granted",
                 "granted_at_ms": 1794362403000, "expires_at_ms": 1796954403000, "reason": "quest:first_order",
                 "event": "order-9912-paid", "kind": "coupon", "title": "Free shipping on your next order",
                 "value_cents": 1000, "min_spend_cents": 0}],
    "profile": {"joined_at_ms": None, "birthday": None, "referrer": None, "tags": []},
    "feed_id": "1794362403000-0-6", "program_hash": "3f0c2a9e1b7d4c55",
}


def _one(op_id: str, *effects: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """An example reply: one applied result with these effects."""
    return {"results": [{"id": op_id, "member": "m-42", "status": "applied",
                         "effects": [{"id": f"1794362403000-0-{i}", "type": t, "data": d} for i, (t, d) in enumerate(effects)]}]}


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post", "/v1/events", "postEvents", "Post one member event, or a batch of up to 1,000",
        "Applies each event's rules, quests and tiers to its member and answers the effects, one result per "
        "event in order. The id is the idempotency key, per member: the same id and body again answers "
        "`duplicate`, writes nothing and replays the first effects while the feed keeps them; another body "
        "under it is `idempotency_conflict`, 409 for a single event. A refund that cannot apply is 422 with its "
        "code. In a batch both are that event's `rejected` result, as is an invalid event; a batch whose store "
        "calls fail is 503 as a whole: retry it as is. `dry_run=1` answers what one event would do now "
        "(effects without ids, `dry_run: true`, a refusal as a `rejected` result in a 200), writing nothing." + _RETRY,
        "events", "shop", EventsBody, EventsReply,
        params=(Param("dry_run", "query", {"type": "string", "enum": ["1", "true", "0", "false"]},
                      "1 or true: a dry run of one event (a batch is refused); nothing is written."),),
        errors={**_BODY, 409: ("idempotency_conflict",),
                422: ("invalid", "invalid_event", "event_out_of_window", "unknown_original", "already_refunded",
                      "refund_window_passed", "amount_exceeds_original", "no_amount"),
                **_BUSY, 500: ("internal", "store_error")},
        example_body=_EVENT,
        example_reply=_one("order-9912-paid", ("xp", {"amount": 199, "total": 199, "reason": "purchase_xp"}),
                           ("points", {"amount": 199, "balance": 199, "reason": "purchase_points"})),
        links=(Link("snapshot", "getMember", {"member": "$response.body#/results/0/member"},
                    "The snapshot of the (first) event's member, with what the event earned."),
               Link("spend", "spendPoints", {"member": "$response.body#/results/0/member"},
                    "Spend the points the (first) event's member earned.")),
    ),
    Operation(
        "put", "/v1/members/{member}", "putMember", "Write a member's profile facts",
        "Writes the fields given (joined_at, birthday, referrer, tags) and keeps the others as stored; "
        "`updated` names them as the snapshot's `profile` does. Idempotent: the same body again writes the same." + _RETRY,
        "members", "shop", ProfileIn, ProfileReply, params=(_MEMBER,),
        errors={**_BODY, 422: ("invalid",), **_BUSY, 500: ("internal",)},
        example_body={"joined_at": "2025-03-01T09:30:00+08:00", "birthday": "03-21", "tags": ["vip"]},
        example_reply={"member": "m-42", "updated": ["birthday", "joined_at_ms", "tags"]},
        links=(_TO_SNAPSHOT,),
    ),
    Operation(
        "get", "/v1/members/{member}", "getMember", "A member's snapshot",
        "XP, tier, points and their expiry, quests, coupons and profile as of now, read in one transaction. "
        "A valid id with no history answers an empty snapshot, not 404. Reads are shed first under load (429).",
        "members", "shop", None, Snapshot, params=(_MEMBER,),
        errors={401: ("unauthorized",), 422: ("invalid",), **_BUSY, 500: ("internal",)}, example_reply=_SNAPSHOT,
        links=(Link("use_coupon", "useCoupon", {**_SAME_MEMBER, "coupon": "$response.body#/rewards/0/coupon"},
                    "Use the member's first coupon (its id from `rewards`)."), _TO_SPEND),
    ),
    Operation(
        "post", "/v1/members/{member}/points/spend", "spendPoints", "Spend a member's points",
        "Takes `amount` points, soonest-expiring lots first: a `points` effect with a negative amount. " + _ID + _RETRY,
        "points", "shop", SpendIn, OperationReply, params=(_MEMBER,),
        errors={**_BODY, 409: ("insufficient_points", "idempotency_conflict"), 422: ("invalid",),
                **_BUSY, 500: ("internal", "store_error")},
        example_body={"id": "spend-1", "amount": 120, "reason": "checkout"},
        example_reply=_one("spend-1", ("points", {"amount": -120, "balance": 179, "reason": "checkout"})),
        links=(_TO_SNAPSHOT,),
    ),
    Operation(
        "post", "/v1/members/{member}/coupons/{coupon}/use", "useCoupon", "Mark a member's coupon used",
        "Marks a coupon the member holds (its id from the snapshot's `rewards`) used for an order, once: a "
        "`coupon_used` effect; another use under another id is 409 `already_used`. " + _ID + _RETRY,
        "rewards", "shop", CouponUseIn, OperationReply,
        params=(_MEMBER, Param("coupon", "path", _id_schema(136), "The coupon's id.", required=True)),
        errors={**_BODY, 404: ("not_found",), 409: ("already_used", "expired", "revoked", "idempotency_conflict"),
                422: ("invalid",), **_BUSY, 500: ("internal", "store_error")},
        example_body={"id": "use-1", "order": "order-77"},
        example_reply=_one("use-1", ("coupon_used", {"coupon": "order-9912-paid:c1", "item": "free-shipping",
                                                     "order": "order-77"})),
        links=(_TO_SNAPSHOT,),
    ),
    Operation(
        "get", "/v1/me", "getMe", "The calling member's snapshot",
        "The snapshot of the member the token names, as `GET /v1/members/{member}` answers it. "
        "Reads are shed first under load (429).",
        "members", "member", None, Snapshot, errors={401: ("unauthorized",), **_BUSY, 500: ("internal",)},
        example_reply=_SNAPSHOT,
    ),
    Operation(
        "post", "/v1/me/redeem", "redeemItem", "Redeem points for a catalog item",
        "Spends the item's `points_cost` for one of it, within its stock and per-member limit, and grants its "
        "coupon: `points` and `reward` effects. " + _ID + " The same id again takes no stock. `in_progress`: "
        "the same redemption is being applied or finished; send the same request again shortly." + _RETRY,
        "rewards", "member", RedeemIn, OperationReply,
        errors={**_BODY, 409: ("insufficient_points", "out_of_stock", "limit_reached", "not_eligible", "in_progress",
                               "idempotency_conflict"),
                422: ("invalid",), **_BUSY, 500: ("internal", "store_error")},
        example_body={"id": "r-1", "item": "tea-voucher-20"},
    ),
    Operation(
        "post", "/v1/tokens", "createToken", "Mint a member token",
        "A member token for the member app (HS256 JWT, `sub` the member). Writes nothing; each call mints a "
        "new token. Never shed under load.",
        "auth", "shop", TokenIn, TokenReply, errors={**_BODY, 422: ("invalid",), 500: ("internal",)},
        example_body={"member": "m-42", "ttl_s": 86400},
    ),
    Operation(
        "get", "/v1/config", "getConfig", "The active programme and its history",
        "The active programme's version, hash, name and origin, and the last 20 activated versions, newest first.",
        "config", "admin", None, ConfigReply, errors={401: ("unauthorized",), 500: ("internal",), 503: ("unavailable",)},
    ),
    Operation(
        "post", "/v1/config", "postConfig", "Activate a programme",
        "The request body is the programme's TOML text, not JSON (`curl --data-binary @file.toml`), up to 1 MiB. "
        "Valid: activated as the next version on every process. Posting the active source again changes "
        "nothing and answers the active version. Invalid: 422 `invalid_config`, every mistake in `error.problems`.",
        "config", "admin", None, ConfigPosted,
        errors={**_BODY, 422: ("invalid_config",), 500: ("internal",), 503: ("unavailable",)},
        text_body="text/plain",  # the TOML text; any content type is read as it
    ),
    Operation(
        "get", "/healthz", "getHealth", "Readiness",
        "200 once the store answers and the live feed's subscription is up; otherwise 503 with `Retry-After: 2` "
        'and this shape, not an error body: `{"status": "unavailable", "redis": "down"}` or '
        '`{"status": "unavailable", "live_feed": "reconnecting"}`. No credentials; never shed.',
        "operations", None, None, HealthReply, errors={500: ("internal",)}, replies={503: HealthReply},
        example_reply={"status": "ok", "program_version": 3, "live_sockets": 12},
    ),
    Operation(
        "get", "/metrics", "getMetrics", "Prometheus metrics",
        "Prometheus text exposition format (text/plain), not JSON: events by outcome and type, award and store "
        "latency, live sockets, frames sent, award-to-socket lag, shed requests, store errors, the active "
        "programme version. No credentials; never shed.",
        "operations", None, None, None, errors={500: ("internal",)},
    ),
    Operation(
        "get", "/docs", "getDocs", "This API's documentation page",
        "An HTML page (text/html), not JSON: Swagger UI reading `openapi.json`, the active programme's document, "
        "with its assets served by this service under `/docs/static`. No credentials.",
        "operations", None, None, None,
    ),
    Operation(
        "get", "/", "getMemberPage", "The member page",
        "An HTML page (text/html), not JSON: the reference member app (docs/member-page.md), its script and styles "
        "served by this service under `/page`. It reads `GET /v1/me` and follows `/v1/live` with the member token "
        "it is given (`?token=` in development, moved out of the address bar at once). No credentials.",
        "operations", None, None, None,
    ),
    Operation(
        "get", "/v1/admin/clock", "getClock", "Read the dev clock",
        "Exists only on a service started with `rekindle serve --dev-clock` (one worker); elsewhere it is 404 "
        "like any unknown path. The service's clock now, in UTC; `jobs_run` is 0 (reading runs no job).",
        "operations", "admin", None, ClockReply,
        errors={401: ("unauthorized",), 404: ("not_found",), 500: ("internal",)},
        example_reply={"now": "2027-01-01T00:00:05.250+00:00", "now_ms": 1798761605250, "jobs_run": 0},
    ),
    Operation(
        "post", "/v1/admin/clock", "setClock", "Move the dev clock forward",
        "Exists only on a service started with `rekindle serve --dev-clock` (one worker); elsewhere it is 404 "
        "like any unknown path. Moves the service's clock forward (never back: 422), no later than "
        f"{LATEST_ISO} (422: every date the engine computes, such as a lot's expiry, holds up to "
        "there), runs every scheduled job now due before answering, and keeps ticking from there; a restart is "
        "back at real time. Member tokens are checked against this clock.",
        "operations", "admin", ClockIn, ClockReply,
        errors={**_BODY, 404: ("not_found",), 422: ("invalid",), 500: ("internal", "store_error"), 503: ("unavailable",)},
        example_body={"now": "2027-01-01T00:00:00+08:00"},
        example_reply={"now": "2027-01-01T00:00:00.000+08:00", "now_ms": 1798732800000, "jobs_run": 1},
    ),
    Operation(
        "get", "/v1/admin/webhooks/dead", "listDeadWebhooks", "The webhook messages given up",
        "Outreach messages (points expiring, birthday, we miss you) go to the programme's `[webhooks] url` as "
        "signed webhooks (docs/webhooks.md), retried with exponential backoff and jitter; after `max_attempts` a "
        "message is given up and kept here, oldest given up first, until it is replayed. A page holds `limit` "
        "messages at most (1 to 500, default 100); `next`, when not null, is the `after` of the next page. "
        "A message's `id` is the one the receiver saw in `Rekindle-Id`. Reading changes nothing.",
        "operations", "admin", None, DeadWebhooksReply,
        params=(Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
                      "The most messages in the page."),
                Param("after", "query", {"type": "string", "maxLength": 359,
                                         "pattern": r"^[0-9]{1,16}\.[A-Za-z0-9_-]{1,342}$"},
                      "The `next` of the previous page (opaque).")),
        errors={401: ("unauthorized",), 422: ("invalid",), 500: ("internal",), 503: ("unavailable",)},
        example_reply={"messages": [{"id": "rk:webhook:m-42:9f2c4e0a1b7d4c55aa01e3f6b2d8c901", "member": "m-42",
                                     "type": "birthday", "data": {"coupon": "bday-2026"}, "attempts": 12,
                                     "dead_at_ms": 1798732800000}], "next": None},
    ),
    Operation(
        "post", "/v1/admin/webhooks/dead/replay", "replayDeadWebhooks", "Send given-up webhook messages again",
        'Moves the dead messages named in `ids` (from `GET /v1/admin/webhooks/dead`), or every one with `"all": '
        "true`, back to be delivered now, their attempts reset: the scheduler sends them on its next tick, with "
        "the same ids (a receiver that got one before dedupes it). An id that is not on the dead list (delivered, "
        "replayed already) is left alone and not counted; replaying again is harmless. `all` moves up to 10,000 "
        "a call; `more` says whether others wait.",
        "operations", "admin", ReplayIn, ReplayReply,
        errors={**_BODY, 422: ("invalid",), 500: ("internal",), 503: ("unavailable",)},
        example_body={"ids": ["rk:webhook:m-42:9f2c4e0a1b7d4c55aa01e3f6b2d8c901"]},
        example_reply={"replayed": 1, "more": False},
    ),
    Operation(
        "get", "/v1/stats", "getStats", "The programme's KPIs, a day at a time",
        "Daily active members, buyers, new members, members marked dormant and woken up, points issued, spent and "
        "expired, coupons granted and each game's players, for each local day from `from` to `to` (at most 92; "
        "default the last 7 days); churn and repurchase over `window` days (the last `window` days of the range "
        "against the `window` before them); the points outstanding and the members dormant now. Counted as "
        "operations apply (members by HyperLogLog: estimates within about 1%), by the operation's local day; read "
        "in a fixed number of reads a day, whatever the number of members. A process's last second of counts is "
        "lost if it dies.",
        "operations", "admin", None, StatsReply,
        params=(Param("from", "query", {"type": "string", "format": "date"}, "The first local day (YYYY-MM-DD)."),
                Param("to", "query", {"type": "string", "format": "date"}, "The last local day (default: today)."),
                Param("window", "query", {"type": "integer", "minimum": 1, "maximum": 90, "default": 30},
                      "Days of each of churn's and repurchase's two windows.")),
        errors={401: ("unauthorized",), 422: ("invalid",), 500: ("internal",), 503: ("unavailable",)},
    ),
)

LIVE_DESCRIPTION = (
    "`GET /v1/live`, upgraded to a WebSocket (subprotocol `rekindle.json` or `rekindle.msgpack`), pushes every "
    "effect of one member's awards to that member's app, once and in order, also across reconnects. "
    "Authenticate with the member token as `?token=` in the URL or a first frame "
    '`{"op": "auth", "token", "since"}` within 10 s. '
    "Give `since=<feed id>` (the snapshot's `feed_id` from `GET /v1/me`) to receive every effect after it; "
    "without it the feed starts when the socket is accepted. "
    "Feed frames are `{id, type, data}` as in the effects of an HTTP reply (with `data.event`); control frames "
    "are `pong`, `reset` (refetch the snapshot) and `error`. "
    "Close codes say what to do: 4401 get a fresh token, 4408/4409/1012/1013 reconnect with `since=<last id>`, "
    "4400 fix the request, 4429 close one of the member's 16 sockets; see docs/live-feed.md."
)


def game_operations(games: Sequence[Game]) -> tuple[Operation, ...]:
    """The installed games' routes as the document describes every route: their own errors, and
    those every route of the service may answer (credentials, the body, load, the store)."""
    out: list[Operation] = []
    for game in games:
        for route in game.routes:
            errors: dict[int, tuple[str, ...]] = dict(_BODY) if route.method == "post" else {401: ("unauthorized",)}
            for status, codes in route.errors.items():
                errors[status] = tuple(dict.fromkeys((*errors.get(status, ()), *codes)))
            if route.reply is None:  # a member operation: its id may be taken by another body
                errors[409] = tuple(dict.fromkeys((*errors.get(409, ()), "idempotency_conflict")))
            errors.update({**_BUSY, 500: ("internal", "store_error")})
            out.append(Operation(
                route.method, route.path, route.operation_id, route.summary, route.description + _RETRY, game.name,
                route.caller, route.body, route.reply or OperationReply, route.status, route.params, errors,
                example_body=route.example_body, links=route.links,
            ))
    return tuple(out)


def all_operations() -> tuple[Operation, ...]:
    """Every route of the service: its own, then the installed games'."""
    return OPERATIONS + game_operations(installed())
