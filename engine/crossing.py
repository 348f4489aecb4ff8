"""Crossing slots: one two-phase operation for a redemption and for every game.

A step that involves an object shared by many members (a catalog item's stock, a flash sale, a
wheel's budget) and a member cannot be one script: their keys live in different slots. So:

1. **Intent.** A job of kind ``cross`` goes into the member's scheduler shard, due after a grace
   (``Keys.schedule``, the scheduler's sharded sets with a lease per shard): whatever happens to
   this process from here on, some scheduler finishes the entry. It is applied *before* the object
   step (``Runner.run_chain``: on one server the two share one write), so no entry can exist
   without its job.
2. **Object step.** The object's script (``object.lua`` before its own) decides: it takes what
   it takes (a unit, a prize) and opens an entry under ``<member>/<operation id>`` recording the
   member steps the decision implies (``Step``), fixed then, so whoever finishes it applies the
   terms the member was offered. A refusal writes nothing.
3. **Member steps**, through ``member.lua`` like every change to a member: the first under the
   client's operation id (a retry is a duplicate), the others under derived ids.
4. **Decision.** All applied (or duplicates of their own earlier application): *settle*. One
   refused: *release*, which gives back what the object step took. Then the intent goes.

**The object decides once.** Whoever settles or releases first (this request, or the sweep of a
request that died or stalled) fixes the outcome; the other is told the decision and follows it.
A member step that lands after its entry was released is reversed by a compensating member
operation (``rk:undo:<operation id>``, from the step kind's ``compensate``), never by taking from
the object again; a caller whose step was refused while the sweep's applied answers applied.

**The sweep** is the scheduler running due ``cross`` jobs (``run_job``): an entry still pending
is finished as above; one never opened (the object step never ran) is *abandoned*, closed for a
while so a stalled step cannot open it late; one decided is left alone. An entry pending longer
than the programme's dedupe retention is *not* finished: its member step may have applied before
the outage and been forgotten since, so applying it again could apply it twice. Its job goes to
the shard's dead list for an operator (``rekindle verify`` lists it), and its unit stays held.

No script touches two slots, so all of it runs unchanged on a cluster.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

import msgpack

from engine import ids
from engine.clock import DAY_MS
from engine.config import CompiledProgram
from engine.errors import StoreError
from engine.jobs import DeadJob, Job, job_id, jobs_key, shard_of
from engine.keys import Keys
from engine.operations import MemberPlan
from engine.runner import Call, Runner
from engine.scripts import Command, LuaScript
from engine.store import OperationStore, OpResult, OpStatus

log = logging.getLogger("rekindle.crossing")

CROSS = "cross"  #: the scheduler job kind that finishes an entry
#: How long an abandoned key stays closed: past it, a retry under the same id starts afresh.
ABANDONED_KEEP_MS = 10 * 60_000
#: An entry older than the dedupe retention less this is left to an operator, not finished.
HORIZON_MARGIN_MS = 3_600_000


class EntryState(IntEnum):
    PENDING = 0
    SETTLED = 1
    RELEASED = 2
    ABANDONED = 3


class Step(NamedTuple):
    """One member step an entry implies, fixed when the object decided."""

    kind: str  # the StepKind that plans it
    member: ids.MemberId
    op_id: ids.EventId  # the client's for the step it asked for; derived for the others
    at_ms: int  # the operation's time: the entry's, so every retry and sweep dedupes alike
    terms: tuple[Any, ...]  # what the kind plans from (msgpack-able: ints, strs, lists)


class StepKind(Protocol):
    """What a game (or the catalog) tells the seam about a member step of its own."""

    def plan(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        """The member plan of ``step`` (its id and time are the step's)."""
        ...

    def compensate(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        """The plan that reverses ``step`` once applied, under ``undo_id(step.op_id)``."""
        ...


def undo_id(op_id: str) -> ids.EventId:
    """The compensating operation of ``op_id``: derived, so it applies once."""
    return ids.derived_id("undo", op_id)


def pack_steps(steps: Sequence[Step]) -> bytes:
    return msgpack.packb([list(s) for s in steps], use_bin_type=False)


def unpack_steps(raw: bytes) -> tuple[Step, ...]:
    return tuple(
        Step(kind, ids.MemberId(member), ids.EventId(op_id), int(at_ms), tuple(terms))
        for kind, member, op_id, at_ms, terms in msgpack.unpackb(raw, raw=False)
    )


class ObjectRef(NamedTuple):
    """An object shared by many members: its kind names its script, its id its tag."""

    kind: str
    id: str

    def keys(self, keys: Keys) -> list[str]:
        """The two keys every object script starts with (``object.lua``)."""
        tag = keys.object(self.kind, self.id)
        return [f"{tag}:e", f"{tag}:n"]


def entry_key(member: str, op_id: str) -> str:
    """``<member>/<op id>``: ``/`` is outside the id alphabet, so the split is unambiguous."""
    return f"{member}/{op_id}"


def intent_id(obj: ObjectRef, member: str, op_id: str) -> str:
    """The ``cross`` job of an entry: ``rk:cross:<member>:<object and op id, base64url>``."""
    param = base64.urlsafe_b64encode(msgpack.packb([obj.kind, obj.id, op_id])).rstrip(b"=").decode()
    return job_id(CROSS, member, param)


def parse_intent(job: Job) -> tuple[ObjectRef, ids.EventId]:
    raw = base64.urlsafe_b64decode(job.param + "=" * (-len(job.param) % 4))
    kind, object_id, op_id = msgpack.unpackb(raw, raw=False)
    return ObjectRef(kind, object_id), ids.EventId(op_id)


class Decision(NamedTuple):
    state: EntryState
    now: bool  # decided by this call (else before it, by someone else)
    reason: str = ""


class Entry(NamedTuple):
    state: EntryState
    at_ms: int
    reason: str
    steps: tuple[Step, ...]


class Outcome(NamedTuple):
    """What a cross-slot operation came to, as the caller answers it."""

    result: OpResult  # the first member step's (applied, duplicate), or the refusal
    state: EntryState


class DeadEntry(DeadJob):
    """An entry pending past the dedupe retention: finishing it could apply a member step twice."""


class Crossing:
    """The seam's store: intents, object decisions, member steps, compensation."""

    def __init__(
        self,
        runner: Runner,
        keys: Keys,
        ops: OperationStore,
        objects: Mapping[str, LuaScript],
        steps: Mapping[str, StepKind],
        *,
        grace_ms: int = 30_000,
    ) -> None:
        self._runner = runner
        self._keys = keys
        self._ops = ops
        self._objects = objects  # object kind -> its script (object.lua first)
        self._steps = steps  # step kind -> its planner
        self.grace_ms = grace_ms
        self._background: set[asyncio.Task[Any]] = set()

    # --- the request's side ------------------------------------------------------------------------

    async def open(self, obj: ObjectRef, member: str, op_id: str, now_ms: int, args: Sequence[Any],
                   extra_keys: Sequence[str] = ()) -> Any:
        """The intent, then the object's own step (``args``, its script's ARGV); its reply."""
        intent: Call = (
            Command("ZADD"), [jobs_key(self._keys, shard_of(member))],
            ["NX", now_ms + self.grace_ms, intent_id(obj, member, op_id)],
        )
        step: Call = (self._objects[obj.kind], [*obj.keys(self._keys), *extra_keys], args)
        replies = await self._runner.run_chain([intent, step])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[1]

    def forget(self, obj: ObjectRef, member: str, op_id: str) -> None:
        """Drop the intent of an entry decided (or never opened: a refusal), in the background:
        left behind, its job finds the decision and does nothing."""
        call: Call = (Command("ZREM"), [jobs_key(self._keys, shard_of(member))], [intent_id(obj, member, op_id)])
        task = asyncio.get_running_loop().create_task(self._runner.call(*call))
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("dropping an intent failed (its job will find the entry decided): %s", task.exception())

    async def aclose(self) -> None:
        """Let the background calls finish (they are one round trip each)."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)

    async def finish(self, program: CompiledProgram, obj: ObjectRef, steps: Sequence[Step], now_ms: int,
                     *, opened_now: bool) -> Outcome:
        """Apply the member steps, then settle or release, and follow the object's decision.

        ``opened_now``: the caller's own object step just opened the entry, so no step of it can
        have applied yet and a duplicate is an earlier operation's under the same id (released:
        the object takes nothing for it). Otherwise (a sweep, a late request) a duplicate is the
        entry's own step, applied by someone else: settled."""
        first = steps[0]
        key = entry_key(first.member, first.op_id)
        results: list[OpResult] = []
        for step in steps:
            result = await self._ops.apply(self._steps[step.kind].plan(program, step, now_ms), program)
            results.append(result)
            if result.status not in (OpStatus.APPLIED, OpStatus.DUPLICATE):
                break
        done = len(results) == len(steps) and all(r.status in (OpStatus.APPLIED, OpStatus.DUPLICATE) for r in results)
        earlier = opened_now and results[0].status is OpStatus.DUPLICATE
        keep_ms = now_ms + program.retention_ms + DAY_MS
        if done and not earlier:
            decision = await self._decide(obj, key, "settle", keep_ms)
        else:
            reason = "duplicate" if earlier else (results[-1].refusal or results[-1].status.value)
            decision = await self._decide(obj, key, "release", keep_ms, reason)
        applied = [s for s, r in zip(steps, results) if r.status in (OpStatus.APPLIED, OpStatus.DUPLICATE)]
        if decision.state is EntryState.SETTLED:
            if not done:  # someone else's steps applied and settled it: ours are their duplicates
                results = [await self._ops.apply(self._steps[s.kind].plan(program, s, now_ms), program) for s in steps]
            return Outcome(results[0], EntryState.SETTLED)
        # Released (by us or before us): what applied of ours is reversed, the object keeps nothing.
        if not earlier:
            await self._compensate(program, applied, now_ms)
        if earlier:
            return Outcome(results[0], EntryState.RELEASED)
        refused = next((r for r in results if r.status not in (OpStatus.APPLIED, OpStatus.DUPLICATE)), None)
        if refused is None:
            refused = OpResult(OpStatus.REFUSED, refusal=decision.reason or "released")
        return Outcome(refused, EntryState.RELEASED)

    async def answer_existing(self, program: CompiledProgram, state: EntryState, reason: str,
                              steps: Sequence[Step], now_ms: int) -> Outcome:
        """A retry of an entry the object already holds: pending or abandoned, ``in_progress``;
        settled, the steps' duplicates (replaying what they applied); released, its refusal."""
        if state is EntryState.SETTLED:
            step = steps[0]
            result = await self._ops.apply(self._steps[step.kind].plan(program, step, now_ms), program)
            return Outcome(result, state)
        if state is EntryState.RELEASED:
            status = OpStatus.CONFLICT if reason == OpStatus.CONFLICT.value else OpStatus.REFUSED
            return Outcome(OpResult(status, refusal=reason if status is OpStatus.REFUSED else ""), state)
        return Outcome(OpResult(OpStatus.REFUSED, refusal="in_progress"), state)

    # --- the sweep's side: the scheduler's ``cross`` jobs ------------------------------------------

    async def run_job(self, job: Job, program: CompiledProgram, now_ms: int) -> None:
        """Finish one entry whose intent fell due (see the module's docstring). Raises to be
        retried later (a store error), or ``DeadEntry`` for an operator."""
        obj, op_id = parse_intent(job)
        if obj.kind not in self._objects:
            raise LookupError(f"no object kind {obj.kind!r} in this build")
        entry = await self.status(obj, entry_key(job.member, op_id))
        if entry is None:  # the object step never ran: close the key to a stalled one
            await self._decide(obj, entry_key(job.member, op_id), "abandon", now_ms + ABANDONED_KEEP_MS)
            return
        if entry.state is not EntryState.PENDING:
            return
        if now_ms - entry.at_ms > program.retention_ms - HORIZON_MARGIN_MS:
            raise DeadEntry(
                f"entry {entry_key(job.member, op_id)} of {obj.kind}:{obj.id} pending since {entry.at_ms}: "
                "past the dedupe retention its member step may have applied and been forgotten"
            )
        outcome = await self.finish(program, obj, entry.steps, now_ms, opened_now=False)
        log.info("sweep: %s of %s:%s %s", entry_key(job.member, op_id), obj.kind, obj.id, outcome.state.name.lower())

    async def status(self, obj: ObjectRef, key: str) -> Entry | None:
        reply = await self._runner.call(self._objects[obj.kind], obj.keys(self._keys), ["status", key])
        if not reply:
            return None
        state, at_ms, reason, steps = reply
        return Entry(EntryState(int(state)), int(at_ms), _text(reason), unpack_steps(steps) if steps else ())

    # --- inside ------------------------------------------------------------------------------------

    async def _decide(self, obj: ObjectRef, key: str, action: str, keep_until_ms: int, reason: str = "") -> Decision:
        args: list[Any] = [action, key, keep_until_ms] + ([reason] if action == "release" else [])
        reply = await self._runner.call(self._objects[obj.kind], obj.keys(self._keys), args)
        code = int(reply[0])
        if code == -1:  # the entry is gone: its decision outlived its keep time, long ago
            raise StoreError(f"{action} of {key} at {obj.kind}:{obj.id}: no such entry")
        state = EntryState(int(reply[1]))
        return Decision(state, code == 1, _text(reply[2]) if len(reply) > 2 else "")

    async def _compensate(self, program: CompiledProgram, applied: Sequence[Step], now_ms: int) -> None:
        for step in applied:
            plan = self._steps[step.kind].compensate(program, step, now_ms)
            result = await self._ops.apply(plan, program)
            if result.status is OpStatus.APPLIED:
                log.warning("member step %s of %s landed after its entry was released: reversed (%s)",
                            step.op_id, step.member, plan.op.id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
