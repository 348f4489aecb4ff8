"""Bargain plans, pure: the member steps a help implies, and their reversals.

A help is one decision of the bargain's object (``lua/bargain.lua``: its cut, from the schedule
drawn when the bargain started; the entry records it, and every member step gets it as its last
term, ``(cut, price after it, reached, item, floor)``: the item and the floor are the round's
record's, the terms the bargain started under, whatever the programme says by the time the help
comes or a sweep finishes it) and two member steps on the seam:

- the helper's (``BARGAIN``), under the help's own id: one help of the helper's daily quota (a
  limited counter in the helper's state, refused whole past ``helps_per_day``: the quota lives in
  the helper's slot, so no other process can race it), and a ``bargain_helped`` effect;
- the owner's (``OWNER``), under a derived id: the ``bargain_helped`` effect on the owner's feed
  and, for the help that reaches the floor, the item as a coupon and ``bargain_done``: the
  completion is one decision of the object, so its reward is given once.

A reversal (a step that landed after its help was released) gives the quota back, and takes the
coupon back from the owner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from engine import ids
from engine.clock import DAY_MS
from engine.config import CompiledProgram
from engine.crossing import Step, undo_id
from engine.operations import MemberPlan, Operation, fingerprint, member_plan, pack_effect

BARGAIN = "bargain"  #: the object kind (tag {bargain:<campaign>.<owner>}) and the helper's step kind
OWNER = "bargain_owner"  #: the owner's step kind


def bargain_id(campaign: str, round_: int, owner: str) -> str:
    """``<campaign>.<round>.<owner>``: a campaign name and a number hold no ``.``, an owner may."""
    return f"{campaign}.{round_}.{owner}"


def parse_bargain_id(value: str) -> tuple[str, int, str]:
    """(campaign, round, owner), or ValueError for an id of no such shape."""
    campaign, _, rest = value.partition(".")
    round_, _, owner = rest.partition(".")
    if not (campaign and owner and round_.isdigit() and int(round_) >= 1):
        raise ValueError(f"not a bargain id: {value!r}")
    return campaign, int(round_), owner


def quota_field(day: str) -> str:
    return f"bq:{day}"


def helped(bargain: str, helper: str, decided: tuple[Any, ...]) -> dict[str, Any]:
    cut, current = decided[0], decided[1]
    return {"bargain": bargain, "helper": helper, "cut_cents": cut, "current_cents": current}


def helper_step(bargain: str, helper: str, op_id: str, at_ms: int, day: str, day_end_ms: int, quota: int) -> Step:
    return Step(BARGAIN, ids.MemberId(helper), ids.EventId(op_id), at_ms, (bargain, day, day_end_ms, quota))


def owner_step(bargain: str, owner: str, helper: str, op_id: str, at_ms: int, reward: tuple[str, int, int]) -> Step:
    """``reward``: (catalog item, its validity ms, the price paid) by the programme when the help
    came; what is given if the help reaches the floor is the decision's item and floor (``reward_of``)."""
    return Step(OWNER, ids.MemberId(owner), owner_op_id(owner, helper, op_id), at_ms, (bargain, helper, list(reward)))


def owner_op_id(owner: str, helper: str, op_id: str) -> ids.EventId:
    """The owner's step of a help: derived from the helper and the help's id (two friends may both
    send ``help-1``; ids are per member), through a digest to stay within an id's length."""
    digest = hashlib.blake2b(f"{helper}\0{op_id}".encode(), digest_size=16).hexdigest()
    return ids.derived_id("bargain", owner, digest)


class HelperStep:
    """The helper's step: a help of the daily quota, and the effect (``engine.crossing.StepKind``)."""

    def plan(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        bargain, day, day_end_ms, quota, decided = step.terms
        op = Operation(step.op_id, step.member, step.at_ms, fingerprint(BARGAIN, bargain))
        return member_plan(program, op, now_ms,
                           counters=([quota_field(day), 1, quota, day_end_ms + program.retention_ms],),
                           effects=(pack_effect("bargain_helped", helped(bargain, step.member, decided)),))

    def compensate(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        bargain, day, day_end_ms, quota, _ = step.terms
        op = Operation(undo_id(step.op_id), step.member, now_ms, fingerprint("undo", step.op_id))
        return member_plan(program, op, now_ms,
                           counters=([quota_field(day), -1, quota, day_end_ms + program.retention_ms],))


class OwnerStep:
    """The owner's step: the help on the owner's feed; the reward when it reaches the floor."""

    def plan(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        bargain, helper, reward, decided = step.terms
        op = Operation(step.op_id, step.member, step.at_ms, fingerprint(OWNER, bargain))
        effects = [pack_effect("bargain_helped", helped(bargain, helper, decided))]
        coupons: tuple[list[Any], ...] = ()
        if decided[2]:
            item, valid_ms, price = reward_of(program, reward, decided)
            effects.append(pack_effect("bargain_done", {"bargain": bargain, "item": item, "price_cents": price}))
            coupons = ([item, valid_ms, f"bargain:{bargain}"],)
        return member_plan(program, op, now_ms, effects=tuple(effects), coupons=coupons)

    def compensate(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        *_, decided = step.terms
        op = Operation(undo_id(step.op_id), step.member, now_ms, fingerprint("undo", step.op_id))
        return member_plan(program, op, now_ms, revokes=(f"{step.op_id}:c1",) if decided[2] else ())


def coupon_terms(program: CompiledProgram, item: str, floor_cents: int) -> tuple[str, int, int]:
    return item, program.model.catalog[item].valid_days * DAY_MS, floor_cents


def reward_of(program: CompiledProgram, reward: Sequence[Any], decided: Sequence[Any]) -> tuple[str, int, int]:
    """(item, validity ms, price paid) of a help that reached the floor: the round's item at its
    floor, as the object decided (an entry of an earlier build, which decided the cut only: the
    terms packed with the step); valid for the item's ``valid_days`` in ``program``'s catalog, or,
    for an item no longer in it, as long as the packed terms said."""
    packed_item, packed_ms, packed_price = reward
    if len(decided) < 5 or not decided[3]:
        return packed_item, int(packed_ms), int(packed_price)
    item, price = str(decided[3]), int(decided[4])
    entry = program.model.catalog.get(item)
    return item, entry.valid_days * DAY_MS if entry is not None else int(packed_ms), price
