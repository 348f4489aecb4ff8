"""Points redemption on the cross-slot seam (``engine/crossing.py``): the item decides, the member pays.

1. Intent and reservation (``catalog.lua`` under the item's tag, after the intent job): a unit of
   stock and the member's count of the item, unless the member holds their limit or the stock is
   gone (a refusal writes nothing); the entry records the member step with the terms offered.
2. The member step (``member.lua``): the client's operation id, so every retry and every sweep
   applies it once: debit the points, count the limit, grant the coupon.
3. Settle, or release (the unit back): the item's decision stands, whoever makes it first.

A process that dies between the steps leaves the entry and its intent: the scheduler's ``cross``
job finishes it after the grace, from the entry's record, whatever the programme says by then
(the item may even have left the catalog). A retry meanwhile answers ``in_progress``; after, what
was decided.
"""

from __future__ import annotations

import logging
import os
import signal
from enum import Enum
from typing import NamedTuple

from engine.config import CompiledProgram
from engine.crossing import Crossing, EntryState, ObjectRef, Step, entry_key, pack_steps
from engine.keys import Keys
from engine.redeem import CATALOG, RedeemRequest, Redemption, redemption_of, redemption_step, stock_of
from engine.store import OpResult, OpStatus

log = logging.getLogger("rekindle.redemptions")

#: Test-only: ``REKINDLE_TEST_CRASH=redeem_reserved`` kills the process right after the object
#: step, to prove a redemption survives ``kill -9`` between the slots.
CRASH_AFTER_RESERVE = "redeem_reserved"


def catalog_object(item: str) -> ObjectRef:
    return ObjectRef(CATALOG, item)


def catalog_keys(keys: Keys, item: str) -> list[str]:
    """The item's entries hash and counters hash (``object.lua``): ``sold``, ``held:<member>``."""
    return catalog_object(item).keys(keys)


class Reserve(Enum):
    RESERVED = 1  # a unit taken and the entry opened
    EXISTS = 0  # the item holds an entry under this key already (state: Reserved.state)
    REFUSED = 2  # out of stock, or the member holds their limit: nothing written


class Reserved(NamedTuple):
    status: Reserve
    sold: int = 0  # RESERVED, or out of stock: units taken of the item
    state: EntryState = EntryState.PENDING  # EXISTS: the entry's
    reason: str = ""  # REFUSED: out_of_stock | limit_reached; EXISTS and released: why


async def reserve_unit(crossing: Crossing, obj: ObjectRef, step: Step, stock: int | None, limit: int,
                       now_ms: int) -> Reserved:
    """A stock object's step (``catalog.lua``, after its intent): a unit for ``step``, unless the
    object holds this entry already, the member holds ``limit`` (0: none), or the ``stock`` (the
    caller's programme's, so a change applies at once; None: unlimited) is gone."""
    args = ["reserve", entry_key(step.member, step.op_id), step.at_ms, -1 if stock is None else stock,
            pack_steps([step]), step.member, limit]
    reply = await crossing.open(obj, now_ms, args)
    if int(reply[0]) == 3:  # this request stalled past the sweep of its time: nothing taken
        raise TimeoutError("the step took too long to reach its object; send it again")
    status = Reserve(int(reply[0]))
    if status is Reserve.RESERVED:
        return Reserved(status, sold=int(reply[1]))
    if status is Reserve.REFUSED:
        return Reserved(status, sold=int(reply[2]), reason=_text(reply[1]))
    return Reserved(status, state=EntryState(int(reply[1])), reason=_text(reply[2]))


async def claim_unit(crossing: Crossing, program: CompiledProgram, obj: ObjectRef, step: Step, stock: int | None,
                     limit: int, now_ms: int, *, crash_point: str = "") -> OpResult:
    """One unit of a stock object for a member, end to end: reserve, the member step, settle or
    release (the catalog's redemption and a flash sale's claim alike). Refusals come back as
    ``REFUSED`` with the reason (``out_of_stock``, ``limit_reached``, ``in_progress``, or the
    member script's); a store error propagates and leaves the entry to the sweep."""
    reserved = await reserve_unit(crossing, obj, step, stock, limit, now_ms)
    if reserved.status is Reserve.REFUSED:  # nothing written
        return OpResult(OpStatus.REFUSED, refusal=reserved.reason)
    if reserved.status is Reserve.EXISTS:  # a retry: the entry's state answers it
        return (await crossing.answer_existing(program, reserved.state, reserved.reason, [step], now_ms)).result
    if crash_point == CRASH_AFTER_RESERVE:
        os.kill(os.getpid(), signal.SIGKILL)
    outcome = await crossing.finish(program, obj, [step], now_ms, opened_now=True)
    return outcome.result


class RedemptionStore:
    def __init__(self, crossing: Crossing, *, crash_point: str = "") -> None:
        self._crossing = crossing
        self._crash_point = crash_point

    async def reserve(self, redemption: Redemption, stock: int | None, now_ms: int) -> Reserved:
        """The item's step alone (tests, and a look at what a reservation does)."""
        return await reserve_unit(self._crossing, catalog_object(redemption.item), redemption_step(redemption),
                                  stock, redemption.limit, now_ms)

    async def redeem(self, program: CompiledProgram, request: RedeemRequest, now_ms: int) -> OpResult:
        """Reserve a unit of the item, apply the member step, settle or release."""
        redemption = redemption_of(program, request)
        return await claim_unit(self._crossing, program, catalog_object(redemption.item), redemption_step(redemption),
                                stock_of(program, redemption.item), redemption.limit, now_ms,
                                crash_point=self._crash_point)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
