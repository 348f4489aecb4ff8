"""Points redemption of catalog items, the pure part: the request, the outbox record, the member plan.

A redemption crosses two slots (DESIGN.md "Crossing slots"): the item's stock under its own tag
(``catalog.lua``), then the member's side (a ``member.lua`` operation: debit the points, count
the member's redemptions of the item, grant the coupon). The record written to the item's outbox
at reservation holds everything the member step needs, so a sweep can finish a redemption whose
process died between the steps with the terms the member was offered, whatever the programme
says by then.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from engine import ids
from engine.clock import DAY_MS
from engine.config import CompiledProgram
from engine.errors import InvalidInput
from engine.crossing import Step, undo_id
from engine.operations import MemberPlan, Operation, fingerprint, member_plan, request_object

BODY_KEYS = ("id", "item")
#: The catalog's object kind (its tag ``{cat:<item>}``) and its member step's kind.
CATALOG = "cat"
REDEEM = "redeem"


class RedeemRequest(NamedTuple):
    """``{"id", "item"}`` of ``POST /v1/me/redeem``, checked against the programme."""

    op: Operation
    item: str


class Redemption(NamedTuple):
    """One redemption's outbox record (packed as the array ``catalog.lua`` stores), fixed at
    reservation: the member step is planned from it, on the request path and in the sweep alike."""

    member: ids.MemberId
    op_id: ids.EventId
    at_ms: int  # reservation time: the operation's time (its dedupe bucket)
    points_cost: int
    limit: int  # the member's most redemptions of the item (0: no limit)
    valid_ms: int  # the coupon's validity from its grant
    item: str

    @property
    def key(self) -> str:
        """The redemption's key in the item's outbox: unique per member and operation id."""
        return redemption_key(self.member, self.op_id)

    def pack(self) -> bytes:
        return msgpack.packb(tuple(self), use_bin_type=False)

    @classmethod
    def unpack(cls, raw: bytes) -> "Redemption":
        member, op_id, at_ms, cost, limit, valid_ms, item = msgpack.unpackb(raw, raw=False)
        return cls(ids.MemberId(member), ids.EventId(op_id), int(at_ms), int(cost), int(limit), int(valid_ms), item)


def redemption_step(r: Redemption) -> Step:
    """The member step of a redemption, as its item's entry records it."""
    return Step(REDEEM, r.member, r.op_id, r.at_ms, (r.points_cost, r.limit, r.valid_ms, r.item))


def redemption_of_step(step: Step) -> Redemption:
    points_cost, limit, valid_ms, item = step.terms
    return Redemption(step.member, step.op_id, step.at_ms, int(points_cost), int(limit), int(valid_ms), str(item))


class RedeemStep:
    """The catalog's member step (``engine.crossing.StepKind``): planned from the entry's terms."""

    def plan(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        return plan_redeem_member(program, redemption_of_step(step), now_ms)

    def compensate(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        return plan_redeem_undo(program, redemption_of_step(step), now_ms)


def redemption_key(member: str, op_id: str) -> str:
    """``<member>/<op id>``: ``/`` is outside the id alphabet, so the split is unambiguous."""
    return f"{member}/{op_id}"


def parse_redeem(raw: object, member: ids.MemberId, program: CompiledProgram, now_ms: int) -> RedeemRequest:
    """Check the body before anything reaches Redis: exactly ``id`` and ``item``; the item must
    be in the programme's catalog and carry a ``points_cost``."""
    raw = request_object(raw, BODY_KEYS, "the redemption's idempotency key")
    op_id = ids.event_id(raw["id"], "id")
    if "item" not in raw:
        raise InvalidInput("is required: the catalog item to redeem", field="item")
    item = raw["item"]
    if not isinstance(item, str):
        raise InvalidInput(f"must be a string, not {ids.kind_of(item)}", field="item")
    entry = program.model.catalog.get(item)
    if entry is None:
        raise InvalidInput("no such item in the catalog", field="item")
    if entry.points_cost is None:
        raise InvalidInput("this item is not redeemable for points", field="item")
    return RedeemRequest(Operation(op_id, member, now_ms, redeem_fingerprint(item)), item)


def redeem_fingerprint(item: str) -> bytes:
    """A retry is the same redemption when it names the same item, whatever the price is by then."""
    return fingerprint("redeem", item)


def redemption_of(program: CompiledProgram, request: RedeemRequest) -> Redemption:
    """The record of ``request`` under the programme's current terms for its item."""
    entry = program.model.catalog[request.item]
    assert entry.points_cost is not None  # parse_redeem refused the others
    return Redemption(
        member=request.op.member,
        op_id=request.op.id,
        at_ms=request.op.at_ms,
        points_cost=entry.points_cost,
        limit=entry.per_member_limit or 0,
        valid_ms=entry.valid_days * DAY_MS,
        item=request.item,
    )


def stock_of(program: CompiledProgram, item: str) -> int | None:
    """The item's stock under ``program`` (None: unlimited, or not in the catalog any more)."""
    entry = program.model.catalog.get(item)
    return None if entry is None else entry.stock


def limit_field(item: str) -> str:
    """The member's state field counting their redemptions of ``item`` (never expires)."""
    return f"n:redeem:{item}"


def plan_redeem_member(program: CompiledProgram, redemption: Redemption, now_ms: int) -> MemberPlan:
    """The member step: debit the points, count the redemption against the member's limit, grant
    the coupon, all or nothing (``member.lua`` refuses the whole operation when the balance or
    the limit does not allow it). The operation keeps the reservation's id and time, so every
    retry and every sweep of one redemption applies it once."""
    op = Operation(redemption.op_id, redemption.member, redemption.at_ms, redeem_fingerprint(redemption.item))
    counters: tuple[list[Any], ...] = ()
    if redemption.limit:
        counters = ([limit_field(redemption.item), 1, redemption.limit, 0],)
    return member_plan(
        program,
        op,
        now_ms,
        debits=([redemption.points_cost, f"redeem:{redemption.item}"],),
        counters=counters,
        coupons=([redemption.item, redemption.valid_ms, "redeem"],),
        # Who may redeem it, as the programme says now (refused ``not_eligible``: the unit goes back).
        audience=program.audience(item.audience) if (item := program.model.catalog.get(redemption.item)) else None,
    )


def plan_redeem_undo(program: CompiledProgram, redemption: Redemption, now_ms: int) -> MemberPlan:
    """Reverse a redemption whose member step applied after its item released the unit: the
    points back (as a grant of now, into the lot of now), the limit's count back, the coupon
    revoked if still unused. Under ``rk:undo:<operation id>``, so it applies once."""
    r = redemption
    op = Operation(undo_id(r.op_id), r.member, now_ms, fingerprint("undo", r.op_id))
    counters: tuple[list[Any], ...] = ([limit_field(r.item), -1, r.limit, 0],) if r.limit else ()
    return member_plan(
        program,
        op,
        now_ms,
        grants=(["p", r.points_cost, f"redeem_undo:{r.item}", "", 0, 0, 0],),
        counters=counters,
        revokes=(f"{r.op_id}:c1",),
    )
