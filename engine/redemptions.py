"""Points redemption across two slots: the item's stock, then the member, then the outbox settled.

1. Reserve (``catalog.lua`` under the item's tag): a unit of stock and an outbox record of what
   the member step needs. A redemption already pending, already delivered or out of stock takes
   nothing.
2. The member step (``member.lua`` through ``OperationStore``): the client's operation id, so
   member.lua's dedupe makes every retry and every sweep apply it once.
3. Settle (applied, or a duplicate of this reservation's own step) or release (refused,
   conflicting, or a duplicate of a redemption delivered earlier): the outbox entry goes; a
   release gives the unit back.

A process that dies between the steps leaves the outbox entry; ``sweep`` finds entries pending
longer than a grace and finishes them from their record: the member step again (applied or
duplicate, then settle; refused, then release). A store error during the member step or a
release leaves the entry too (the step may have applied), and the caller answers 503: a retry
answers ``in_progress`` until the sweep has finished it, then what the sweep did.

No script touches two slots, so all of it runs unchanged on a cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis.exceptions import RedisError

from engine.clock import Clock
from engine.config import CompiledProgram
from engine.errors import StoreError
from engine.keys import Keys
from engine.programs import ProgramRegistry
from engine.redeem import SETTLED_KEEP_MS, RedeemRequest, Redemption, plan_redeem_member, redemption_of, stock_of
from engine.runner import Runner
from engine.scripts import Scripts
from engine.store import OperationStore, OpResult, OpStatus

log = logging.getLogger("rekindle.redemptions")

#: Test-only: ``REKINDLE_TEST_CRASH=redeem_reserved`` kills the process right after the object
#: step, to prove a redemption survives ``kill -9`` between the slots.
CRASH_AFTER_RESERVE = "redeem_reserved"
#: Outbox entries one sweep finishes per item (the next sweep takes the rest).
SWEEP_BATCH = 100


class Reserve(Enum):
    RESERVED = 1  # a unit taken and the record written
    OUT_OF_STOCK = 0  # nothing written
    PENDING = 2  # another call (or a crashed one, for the sweep) holds this redemption
    SETTLED = 3  # delivered already (within SETTLED_KEEP_MS): a retry
    LIMIT_REACHED = 4  # the member holds their limit of the item already: nothing written


class Settle(Enum):
    SETTLED = 1
    ALREADY = 0
    LATE = 2  # released while its member step applied after all: the unit taken again


def catalog_keys(keys: Keys, item: str) -> list[str]:
    """catalog.lua's KEYS (see its header): every one under the item's tag."""
    tag = keys.object("cat", item)
    return [f"{tag}:sold", f"{tag}:o", f"{tag}:oz", f"{tag}:done", f"{tag}:held"]


@dataclass(frozen=True, slots=True)
class SweepReport:
    settled: int = 0
    released: int = 0
    failed: int = 0


class RedemptionStore:
    def __init__(
        self, runner: Runner, keys: Keys, scripts: Scripts, ops: OperationStore, *, crash_point: str = ""
    ) -> None:
        self._runner = runner
        self._keys = keys
        self._scripts = scripts
        self._ops = ops
        self._crash_point = crash_point

    # --- the object's steps -----------------------------------------------------------------------

    async def reserve(self, redemption: Redemption, stock: int | None) -> tuple[Reserve, int]:
        """Take a unit for ``redemption`` unless it is pending, delivered, over the member's limit
        or out of stock; the stock comes from the caller's programme, so a programme change
        applies at once. The limit is the record's, checked before the stock."""
        args = ["reserve", redemption.key, redemption.at_ms, -1 if stock is None else stock, redemption.pack(),
                redemption.member, redemption.limit]
        reply = await self._call(redemption.item, args)
        status = Reserve(int(reply[0]))
        return status, int(reply[1]) if len(reply) > 1 else 0

    async def settle(self, redemption: Redemption) -> Settle:
        """The member step applied (or had applied): the outbox entry goes, the unit stays sold."""
        args = ["settle", redemption.key, redemption.at_ms + SETTLED_KEEP_MS]
        status = Settle(int(await self._call(redemption.item, args)))
        if status is Settle.LATE:
            log.warning("redemption %s of %s settled after its release: its unit was taken again", redemption.key, redemption.item)
        return status

    async def release(self, redemption: Redemption) -> bool:
        """Compensate: give the unit back, if the redemption is still pending (else nothing)."""
        return bool(int(await self._call(redemption.item, ["release", redemption.key])))

    async def _call(self, item: str, args: Sequence[Any]) -> Any:
        return await self._runner.call(self._scripts.catalog, catalog_keys(self._keys, item), args)

    # --- a redemption, end to end ------------------------------------------------------------------

    async def redeem(self, program: CompiledProgram, request: RedeemRequest, now_ms: int) -> OpResult:
        """Reserve, apply the member step, settle or release. Refusals come back as ``REFUSED``
        with the reason (``out_of_stock``, ``in_progress``, or the member script's)."""
        redemption = redemption_of(program, request)
        status, _ = await self.reserve(redemption, stock_of(program, redemption.item))
        if status is Reserve.OUT_OF_STOCK:
            return OpResult(OpStatus.REFUSED, refusal="out_of_stock")
        if status is Reserve.PENDING:
            return OpResult(OpStatus.REFUSED, refusal="in_progress")
        if status is Reserve.LIMIT_REACHED:
            return OpResult(OpStatus.REFUSED, refusal="limit_reached")
        if status is Reserve.RESERVED and self._crash_point == CRASH_AFTER_RESERVE:
            os.kill(os.getpid(), signal.SIGKILL)
        # A store error here propagates and leaves the entry: the step may have applied.
        result = await self._ops.apply(plan_redeem_member(program, redemption, now_ms), program)
        if status is Reserve.SETTLED:
            return result  # a retry of a delivered redemption: its duplicate, and no unit taken
        if result.status is OpStatus.APPLIED:
            try:
                await self.settle(redemption)
            except (RedisError, OSError):  # the member has it; the sweep settles the entry later
                log.warning("settling redemption %s of %s failed; the sweep will", redemption.key, redemption.item)
        else:
            # Refused or conflicting: the member step wrote nothing. A duplicate: no entry was
            # pending, so the redemption it repeats was delivered and settled before this unit.
            await self.release(redemption)
        return result

    async def complete(self, program: CompiledProgram, redemption: Redemption, now_ms: int) -> OpResult:
        """Finish a pending redemption from its record (the sweep): the member step again, then
        settle when it applied now or before (a duplicate: this entry's own step), else release."""
        result = await self._ops.apply(plan_redeem_member(program, redemption, now_ms), program)
        if result.status in (OpStatus.APPLIED, OpStatus.DUPLICATE):
            await self.settle(redemption)
        else:
            await self.release(redemption)
        return result

    async def sweep(self, program: CompiledProgram, now_ms: int, grace_ms: int) -> SweepReport:
        """Finish every entry pending longer than ``grace_ms``, over the programme's catalog items.

        Safe to run anywhere at any time, in several processes at once: every step is
        idempotent, and the member step applies once whoever runs it."""
        items = list(program.model.catalog)
        if not items:
            return SweepReport()
        before_ms = now_ms - grace_ms
        script = self._scripts.catalog
        replies = await self._runner.run_many(
            [(script, catalog_keys(self._keys, item), ["due", before_ms, SWEEP_BATCH]) for item in items]
        )
        unread = [r for r in replies if isinstance(r, Exception)]
        if unread:  # one line, not one per item: an outage fails them all
            log.warning("sweep: reading %d of %d outboxes failed: %s", len(unread), len(items), type(unread[0]).__name__)
        settled = released = 0
        failed = len(unread)
        for item, reply in zip(items, replies):
            if isinstance(reply, Exception):
                continue
            for i in range(0, len(reply), 2):
                try:
                    result = await self.complete(program, Redemption.unpack(reply[i + 1]), now_ms)
                except Exception as exc:  # the entry stays; the next sweep tries again
                    if not failed:  # the first only: an outage would fail every one
                        log.warning("sweep: redemption %s of %s failed: %s", reply[i].decode(), item, type(exc).__name__)
                    failed += 1
                    continue
                if result.status in (OpStatus.APPLIED, OpStatus.DUPLICATE):
                    settled += 1
                else:
                    released += 1
        if settled or released or failed:
            log.info("sweep: %d redemptions delivered, %d released, %d failed", settled, released, failed)
        return SweepReport(settled, released, failed)


class Sweeper:
    """Runs ``RedemptionStore.sweep`` at start-up and every ``interval_s`` after, in the background."""

    def __init__(
        self, store: RedemptionStore, programs: ProgramRegistry, clock: Clock, *, interval_s: float, grace_s: float
    ) -> None:
        self._store = store
        self._programs = programs
        self._clock = clock
        self._interval_s = interval_s
        self._grace_ms = int(grace_s * 1000)
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> SweepReport:
        return await self._store.sweep(self._programs.current.program, self._clock.now_ms(), self._grace_ms)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="redemption-sweep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store outage: the next round tries again
                log.warning("sweep failed: %s", exc if isinstance(exc, StoreError) else type(exc).__name__)
            await asyncio.sleep(self._interval_s)
