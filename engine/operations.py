"""Operations: everything that changes a member, planned in pure Python for ``member.lua``.

An operation has an id (its dedupe key, unique per member), a member, a time and a fingerprint
(what makes a retry "the same operation"). A shop event is one source of operations; a spend, a
coupon use, a game step, a redemption's member side or a scheduled care moment are others.
Operations the engine derives (a scheduled expiry, a game's member step) get derived ids in a
namespace no client id may enter (``ids.derived_id``: ``rk:expire:<member>:<ms>``), so every
retry and every double sweep applies once, and no client can take the id first.

Each ``plan_*`` function is pure: programme, operation and time in, a ``MemberPlan`` out. The
store applies a plan with one ``member.lua`` call, which decides whatever depends on stored
state (caps left, the balance a debit needs, whether a coupon is still unused) and refuses a
whole operation, writing nothing, when a check fails. Games and the lifecycle build plans here;
none of them writes member keys itself.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack
import orjson

from engine import ids
from engine.clock import DAY_MS
from engine.config import CompiledProgram
from engine.errors import InvalidInput
from engine.keys import DEDUPE_BUCKET_MS
from engine.targeting import Packed, targeting

#: 80 bits: two ids of one member colliding in one bucket, even among a million, is about 1 in
#: 10^12; every byte saved here is saved once per retained operation.
DEDUPE_DIGEST_BYTES = 10
#: 48 bits tell a retry from another operation under a reused id (a client's bug, answered
#: `idempotency_conflict`) but for 1 in 10^14; every byte is stored once per retained operation.
FINGERPRINT_BYTES = 6
#: Most points one spend moves, as for one rule's grant: totals stay exact in a Lua double.
SPEND_MAX = 10**9


class Operation(NamedTuple):
    id: ids.EventId
    member: ids.MemberId
    at_ms: int  # the operation's own time: its dedupe bucket and its periods
    fingerprint: bytes


def fingerprint(*parts: Any) -> bytes:
    """What makes a retry the same operation: a digest of its parts (sorted JSON)."""
    return hashlib.blake2b(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS), digest_size=FINGERPRINT_BYTES).digest()


# Wire shapes inside MemberArgs (member.lua's header documents each):
Grant = list[Any]  # [currency "x"|"p", amount, reason, cap field, cap (0 none), cap expiry ms, multiplied 0|1]
QuestStep = list[Any]  # [id, field, increment, target, field expiry ms (0 never), xp, points, [[item, valid ms]]]
Debit = list[Any]  # [points, reason]
CouponUse = list[Any]  # [coupon id, order]
Counter = list[Any]  # [state field, increment, limit, field expiry ms (0 never)]
Effect = bytes  # msgpack [type, data] (pack_effect): member.lua passes it to the feed untouched
InventoryLine = list[Any]  # [state field, delta, cap (0 none), field expiry ms (0 never), item label]
StreakStep = list[Any]  # [] or [state field, day, make-up day (0: check-in), max age days, thresholds, name]
CouponGrant = list[Any]  # [catalog item, valid ms (0: no end), reason]
Record = list[Any]  # [] or [kept until ms, the operation's amount (0: none), its time ms, type tag]
Reversal = list[Any]  # [] or [id digest of the original, amount (0: all that remains), window ms, type tag, buckets]


class MemberArgs(NamedTuple):
    """member.lua's ARGV[1], field for field (a NamedTuple packs as the array the script reads)."""

    op_id: str
    fingerprint: bytes
    now_ms: int
    dedupe_field: bytes
    dedupe_expire_ms: int
    feed_length: int
    grants: tuple[Grant, ...]
    quests: tuple[QuestStep, ...]
    lot_expiry_ms: int
    debits: tuple[Debit, ...]
    coupon_uses: tuple[CouponUse, ...]
    counters: tuple[Counter, ...]
    effects: tuple[Effect, ...]
    coupons: tuple[CouponGrant, ...]
    record: Record
    reverse: Reversal
    ledger_keep_ms: int
    coupon_history_ms: int
    revokes: tuple[str, ...]  # coupon ids to revoke if still unused (a compensation)
    inventory: tuple[InventoryLine, ...]
    streak: StreakStep
    #: Profile fields the operation sets ("" removes one): the dormancy mark ``dm`` (engine/care.py)
    marks: tuple[list[Any], ...] = ()
    #: Who it is for (``engine.targeting.targeting``): [] for everyone
    targeting: list[Any] = []


@dataclass(frozen=True, slots=True)
class MemberPlan:
    """One operation's plan: the script's arguments and the keys they need."""

    op: Operation
    args: MemberArgs
    dedupe_bucket: int  # bucket of the operation's time, where a first sighting is recorded
    lookup_buckets: tuple[int, ...]  # every bucket an earlier sighting could be in
    #: A refund's: every bucket of grant records the original's could be in.
    record_buckets: tuple[int, ...] = ()
    #: An event of the programme's dormancy return type: a dormant member's return earns the
    #: wake-up gift (member.lua's ARGV[5]).
    wakes: bool = False
    event: str = ""  #: the event type, for an event's plan (the KPIs' buyers)
    #: Under ``[tier_policy]`` counting spend: the spend this operation counts (-1: a refund's
    #: amount taken back). ``review_ms``: a ``tier`` job's review of the expiry at that time.
    qualify: int = 0
    review_ms: int = 0

    @property
    def now_ms(self) -> int:
        return self.args.now_ms

    def script_arg(self) -> bytes:
        """member.lua's ARGV[1] (its header has the layout): the plan's values back to back, not
        in an array, every grant and quest spelled out flat (a table the script unpacks costs it
        more than the scalars in it), the rarer parts only when one of them is not empty."""
        a = self.args
        values: list[Any] = [
            a.op_id, a.fingerprint, a.now_ms, a.dedupe_field, a.dedupe_expire_ms, self.dedupe_bucket * DEDUPE_BUCKET_MS,
            a.feed_length, a.lot_expiry_ms, a.ledger_keep_ms, a.coupon_history_ms, *(a.record or _NO_RECORD),
        ]
        grants = [x for g in a.grants for x in g]
        values.append(len(grants))
        values += grants
        quests: list[Any] = []
        for q in a.quests:
            quests += q[:7]
            quests.append(len(q[7]))
            for coupon in q[7]:
                quests += coupon
            items = q[8] if len(q) > 8 else ()
            quests.append(len(items))
            for line in items:
                quests += line
        values.append(len(quests))
        values += quests
        if (a.debits or a.coupon_uses or a.counters or a.effects or a.coupons or a.reverse or a.revokes or a.inventory
                or a.streak or a.marks or a.targeting):
            values += (a.debits, a.coupon_uses, a.counters, a.effects, a.coupons, a.reverse, a.revokes, a.inventory,
                       a.streak)
            if a.marks or a.targeting:  # the rarest parts: sent only when set, so older plans keep their length
                values.append(a.marks)
            if a.targeting:
                values.append(a.targeting)
        return values_of(msgpack.packb(values, use_bin_type=False))  # the server's cmsgpack predates bin types

    def is_empty(self) -> bool:
        """Nothing for the script to do but remember the id."""
        a = self.args
        return not (
            a.grants or a.quests or a.debits or a.coupon_uses or a.counters or a.effects or a.coupons or a.reverse
            or a.revokes or a.inventory or a.streak or a.marks or a.targeting
        )


def member_plan(
    program: CompiledProgram,
    op: Operation,
    now_ms: int,
    *,
    grants: tuple[Grant, ...] = (),
    quests: tuple[QuestStep, ...] = (),
    debits: tuple[Debit, ...] = (),
    coupon_uses: tuple[CouponUse, ...] = (),
    counters: tuple[Counter, ...] = (),
    effects: tuple[Effect, ...] = (),
    coupons: tuple[CouponGrant, ...] = (),
    record: tuple[int, int] | None = None,
    reverse: tuple[str, int, int] | None = None,
    revokes: tuple[str, ...] = (),
    inventory: tuple[InventoryLine, ...] = (),
    streak: StreakStep | None = None,
    marks: tuple[list[Any], ...] = (),
    event: str = "",
    wakes: bool = False,
    qualify: int = 0,
    review_ms: int = 0,
    audience: Packed | None = None,
    targets: tuple[tuple[str, int, Packed], ...] = (),
    boosts: list[list[Any]] | None = None,
) -> MemberPlan:
    """The plan for ``op``, with its dedupe and its points' lot expiry worked out.

    ``record``: keep what this operation grants, as (its type's tag, its ``amount``, 0 when it has
    none), for a refund within the programme's refund window. ``reverse``: take back what the
    operation (its id, the amount refunded, 0 for all that remains, its type's tag) granted.
    ``audience``: the member it is for, else it is refused ``not_eligible``; ``targets``: the
    grants and quests (by index) for an audience only; ``boosts``: the member days' (see
    ``engine/targeting.py``)."""
    retention = program.retention_ms
    # A day of margin each side: another host whose clock is off by up to a day still looks
    # in every bucket this operation's first sighting could be in (an empty bucket costs little).
    first = (now_ms - retention - DAY_MS) // DEDUPE_BUCKET_MS
    last = (now_ms + program.skew_ms + DAY_MS) // DEDUPE_BUCKET_MS
    bucket = op.at_ms // DEDUPE_BUCKET_MS
    args = MemberArgs(
        op_id=op.id,
        fingerprint=op.fingerprint,
        now_ms=now_ms,
        dedupe_field=id_digest(op.id),
        # Every entry outlives its operation's time by the retention, plus slack for a server
        # clock that runs ahead of ours: an operation old enough to be forgotten is refused (422).
        dedupe_expire_ms=(bucket + 1) * DEDUPE_BUCKET_MS + retention + DAY_MS,
        feed_length=program.feed_length,
        grants=grants,
        quests=quests,
        lot_expiry_ms=program.lot_expiry_ms(op.at_ms),
        debits=debits,
        coupon_uses=coupon_uses,
        counters=counters,
        effects=effects,
        coupons=coupons,
        record=[] if record is None else [_record_until_ms(program, bucket), record[1], op.at_ms, record[0]],
        reverse=[] if reverse is None else [id_digest(reverse[0]), reverse[1], program.refund_window_ms, reverse[2]],
        ledger_keep_ms=program.ledger_keep_ms,
        coupon_history_ms=program.coupon_history_ms,
        revokes=revokes,
        inventory=inventory,
        streak=[] if streak is None else streak,
        marks=marks,
        targeting=targeting(audience, targets, boosts or (), [len(g) for g in grants], [_quest_size(q) for q in quests])
        if audience is not None or targets or boosts else [],
    )
    record_buckets: tuple[int, ...] = ()
    if reverse is not None:
        # The original was applied within the refund window (and its skew) before now.
        oldest = (now_ms - program.refund_window_ms - DAY_MS) // DEDUPE_BUCKET_MS
        record_buckets = tuple(range(oldest, last + 1))
        args.reverse.append(len(record_buckets))
    return MemberPlan(op, args, bucket, tuple(range(first, last + 1)), record_buckets, wakes, event, qualify, review_ms)


def _quest_size(q: QuestStep) -> int:
    """The values a quest takes in ARGV[1] (``MemberPlan.script_arg``)."""
    return 9 + 2 * len(q[7]) + 5 * (len(q[8]) if len(q) > 8 else 0)


#: A plan without a record: its four values in ``MemberPlan.script_arg`` (kept until 0: none).
_NO_RECORD = (0, 0, 0, 0)
#: Bytes of a msgpack array's header, by its first byte: fixarray, array 16, array 32.
_ARRAY_HEADER = {**{0x90 + n: 1 for n in range(16)}, 0xDC: 3, 0xDD: 5}


def values_of(packed_array: bytes) -> bytes:
    """A msgpack array's values back to back, without the array's header: what member.lua reads
    with ``{cmsgpack.unpack(...)}``, one table made at its size (cmsgpack grows the table of an
    array it unpacks one element at a time)."""
    return packed_array[_ARRAY_HEADER[packed_array[0]] :]


def pack_effect(kind: str, data: Any) -> Effect:
    """A game's effect for ``member_plan(effects=...)``, packed here: the script never unpacks
    it, so a ``{}`` stays a map and an integer past 2**53 stays exact on the feed."""
    return msgpack.packb([kind, data], use_bin_type=False)


def id_digest(op_id: str) -> bytes:
    """An operation id in 10 bytes: its dedupe entry's field, and its grant record's."""
    return hashlib.blake2b(op_id.encode(), digest_size=DEDUPE_DIGEST_BYTES).digest()


def type_tag(event_type: str) -> int:
    """A grant record names its event type by this (a refund type finds only what it reverses):
    two types of one programme share a tag 1 time in 4 billion."""
    return zlib.crc32(event_type.encode())


#: Records outlive the refund window by a week, so a refund a little too late is told so
#: (``refund_window_passed``) rather than that its original is unknown.
RECORD_GRACE_MS = 7 * DAY_MS


def _record_until_ms(program: CompiledProgram, bucket: int) -> int:
    return (bucket + 1) * DEDUPE_BUCKET_MS + program.refund_window_ms + RECORD_GRACE_MS


# --- requests the shop and the member make ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpendRequest:
    op: Operation
    amount: int
    reason: str


def parse_spend(raw: object, member: ids.MemberId, now_ms: int) -> SpendRequest:
    """``{"id", "amount", "reason"}`` of ``POST /v1/members/{id}/points/spend``."""
    body = request_object(raw, ("id", "amount", "reason"))
    op_id = ids.event_id(body.get("id"), "id")
    amount = ids.whole(body.get("amount"))
    if amount is None or amount < 1:
        raise InvalidInput(f"must be an integer from 1 to {SPEND_MAX:,}", field="amount")
    if amount > SPEND_MAX:
        raise InvalidInput(f"is above the maximum, {SPEND_MAX:,}", field="amount")
    reason = body.get("reason", "spend")
    ids.check_id(reason, "reason", ids.NAME_MAX)
    return SpendRequest(Operation(op_id, member, now_ms, fingerprint("spend", amount, reason)), amount, reason)


def plan_spend(program: CompiledProgram, request: SpendRequest, now_ms: int) -> MemberPlan:
    return member_plan(program, request.op, now_ms, debits=([request.amount, request.reason],))


@dataclass(frozen=True, slots=True)
class CouponUseRequest:
    op: Operation
    coupon: str
    order: str


def parse_coupon_use(raw: object, member: ids.MemberId, coupon: object, now_ms: int) -> CouponUseRequest:
    """``{"id", "order"}`` of ``POST /v1/members/{id}/coupons/{coupon}/use``."""
    coupon_id = ids.check_id(coupon, "coupon", ids.EVENT_ID_MAX + 8)
    body = request_object(raw, ("id", "order"))
    op_id = ids.event_id(body.get("id"), "id")
    order = ids.check_id(body.get("order"), "order", ids.EVENT_ID_MAX)
    return CouponUseRequest(Operation(op_id, member, now_ms, fingerprint("use", coupon_id, order)), coupon_id, order)


def plan_coupon_use(program: CompiledProgram, request: CouponUseRequest, now_ms: int) -> MemberPlan:
    return member_plan(program, request.op, now_ms, coupon_uses=([request.coupon, request.order],))


def request_object(raw: object, keys: tuple[str, ...], id_role: str = "the operation's idempotency key") -> dict[str, Any]:
    """A request body: a JSON object with only ``keys``, ``id`` among them required."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"must be a JSON object, not {ids.kind_of(raw)}", field="body")
    for key in raw:
        if key not in keys:
            raise InvalidInput(f"unknown key (expected {', '.join(keys)})", field=str(key))
    if "id" not in raw:
        raise InvalidInput(f"is required: {id_role}", field="id")
    return raw
