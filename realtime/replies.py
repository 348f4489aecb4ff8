"""Every JSON body the HTTP API answers: the one definition that handlers build replies with and
the OpenAPI document is derived from (``realtime/schemas.py`` names them per route).

A handler answers through ``json_response``, which takes only a ``Reply``: a body no type here
describes, or a key or value that a type does not declare, fails mypy (``tests/test_types.py``,
in ``make test``), and ``tests/realtime/contract.py`` holds every reply the suite receives to the
document at run time. TypedDicts rather than models, as ``engine.views`` explains: a reply costs a
dict and is not validated on its way out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypeAlias

from pydantic import Field
from typing_extensions import TypedDict

from engine.views import ConfigProblem, ConfigVersion, Effect, ErrorDetail, Snapshot

__all__ = [
    "ClockReply", "ConfigPosted", "ConfigProblem", "ConfigReply", "ConfigVersion", "DeadWebhook", "DeadWebhooksReply",
    "Effect", "ErrorBody", "ErrorDetail", "EventsReply", "HealthReply", "OperationReply", "OperationResult",
    "ProfileReply", "ReplayReply", "Reply", "Snapshot", "StatsReply", "TokenReply",
]


class OperationResult(TypedDict):
    """The outcome of one event or operation (``realtime.http.result_view``)."""

    id: Annotated[str | None, Field(description="the event's or operation's id; null for a batch entry with no string id")]
    member: NotRequired[Annotated[str, Field(description="absent when rejected")]]
    status: Literal["applied", "duplicate", "rejected"]
    effects: NotRequired[Annotated[list[Effect], Field(
        description="absent when rejected; a duplicate replays the first call's while the feed keeps them, else []")]]
    original: NotRequired[Annotated[str | None, Field(
        description="duplicate only: the first call's feed entry id, null if it had no effect")]]
    error: NotRequired[Annotated[ErrorDetail, Field(
        description="rejected only: idempotency_conflict, a refund refusal, or (in a batch) why the event is invalid")]]
    dry_run: NotRequired[Annotated[Literal[True], Field(description="present (true) on a dry run's result")]]


class ErrorBody(TypedDict):
    """Every error reply: ``{"error": {"code", "message", "field"?}}``."""

    error: ErrorDetail
    results: NotRequired[Annotated[list[OperationResult], Field(
        description="a single event or operation's 409 idempotency_conflict, or an event's 422 refund refusal: its rejected result")]]


class EventsReply(TypedDict):
    """One result per event posted, in order."""

    results: list[OperationResult]


class OperationReply(TypedDict):
    """The one result of a spend, coupon use or redemption."""

    results: Annotated[list[OperationResult], Field(min_length=1, max_length=1)]


class ProfileReply(TypedDict):
    """Which profile fields were written (by their snapshot names)."""

    member: str
    updated: Annotated[list[Literal["birthday", "joined_at_ms", "referrer", "tags"]], Field(description="sorted")]


class TokenReply(TypedDict):
    """A member token (HS256 JWT, `sub` the member) and its expiry."""

    member: str
    token: str
    expires_at_ms: int


class ConfigReply(ConfigVersion):
    """The active programme and the last 20 versions, newest first."""

    name: str
    history: list[ConfigVersion]


class ConfigPosted(TypedDict):
    """The version now active."""

    program_version: int
    program_hash: str
    name: str


class HealthReply(TypedDict):
    """200 ready; the same shape answers 503 (with Retry-After 2) when a dependency is down."""

    status: Literal["ok", "unavailable"]
    program_version: NotRequired[Annotated[int, Field(description="ok only")]]
    live_sockets: NotRequired[Annotated[int, Field(description="ok only: sockets open on this process")]]
    redis: NotRequired[Annotated[Literal["down"], Field(description="503: the store does not answer")]]
    live_feed: NotRequired[Annotated[Literal["reconnecting"], Field(description="503: the live feed's store subscription is down")]]


class ClockReply(TypedDict):
    """The dev clock's time (after a move: the new time, in the offset sent) and how many scheduled
    jobs the call ran (reading it runs none)."""

    now: str
    now_ms: int
    jobs_run: int


class DeadWebhook(TypedDict):
    """A webhook message given up after its most attempts (docs/webhooks.md)."""

    id: Annotated[str, Field(description="the message's id, as sent in `Rekindle-Id` and the body: what a replay names")]
    member: str
    type: Annotated[str | None, Field(description="the message's type; null: the outbox no longer holds the message")]
    data: Annotated[dict[str, Any] | None, Field(description="the message's data; null as for `type`")]
    attempts: Annotated[int, Field(description="delivery attempts made")]
    dead_at_ms: Annotated[int, Field(description="when it was given up, epoch ms")]


class DeadWebhooksReply(TypedDict):
    """A page of the dead webhook messages, oldest given up first."""

    messages: list[DeadWebhook]
    next: Annotated[str | None, Field(description="pass as `after` for the next page; null: this is the last")]


class ReplayReply(TypedDict):
    """How many dead webhook messages are due again now."""

    replayed: Annotated[int, Field(description="messages moved back to be delivered now, their attempts reset "
                                               "(an id not on the dead list is not counted)")]
    more: Annotated[bool, Field(description='`"all": true` only: more dead messages wait (call again)')]


class DayFigures(TypedDict):
    """One local day's figures."""

    day: Annotated[str, Field(description="the programme's local day, YYYY-MM-DD")]
    active: Annotated[int, Field(description="members active that day (an event or a game step of theirs; estimated: HyperLogLog, ±1%)")]
    buyers: Annotated[int, Field(description="members who made a purchase that day (estimated)")]
    new: Annotated[int, Field(description="members welcomed that day ([care.welcome])")]
    dormant: Annotated[int, Field(description="members marked dormant that day ([care.dormancy])")]
    woken: Annotated[int, Field(description="dormant members who came back that day")]
    points_issued: int
    points_spent: Annotated[int, Field(description="points taken: spends, and refunds' take-backs")]
    points_expired: int
    rewards: Annotated[int, Field(description="coupons granted")]
    games: Annotated[dict[str, int], Field(description="members who played each game that day (estimated)")]


class WindowFigures(TypedDict):
    """Of the members counted in the window before the last one, how many were counted again in the last."""

    window_days: int
    before: Annotated[int, Field(description="members in the earlier window")]
    again: Annotated[int, Field(description="of them, members in the later window too (estimated)")]
    rate: Annotated[float, Field(description="again / before (0 when before is 0)")]


class StatsReply(TypedDict):
    """The programme's KPIs over a range of days, from counters the operations maintain."""

    days: list[DayFigures]
    churn: Annotated[WindowFigures, Field(description="active members of the window before the range's last `window` "
                                                      "days who were not active in it: rate = 1 - again/before")]
    repurchase: Annotated[WindowFigures, Field(description="buyers of the earlier window who bought again in the last")]
    points_outstanding: Annotated[int, Field(description="points issued less spent and expired, ever")]
    dormant_now: Annotated[int, Field(description="members marked dormant less those who came back, ever")]


#: What ``json_response`` may send.
Reply: TypeAlias = (ErrorBody | EventsReply | OperationReply | ProfileReply | Snapshot | TokenReply | ConfigReply | ConfigPosted
         | HealthReply | ClockReply | DeadWebhooksReply | ReplayReply | StatsReply)
