"""Crossing slots: one two-phase operation for a redemption and for every game.

A step that involves an object shared by many members (a catalog item's stock, a flash sale, a
wheel's budget) and a member cannot be one script: their keys live in different slots. So:

1. **Intent.** Before a process sends its first object step of a second to an object, a job of
   kind ``cross`` for that object and second goes into the scheduler's sharded sets (a lease per
   shard), due after the grace: whatever happens to this process from then on, some scheduler
   looks at that object's entries of that second. Applied *before* the steps it covers
   (``Runner.run_chain``: on one server the first shares their write; the others of the second
   wait for its reply, which is in already, almost always), so no entry can exist without a job
   that will find it. A hot object costs one intent a second a process, not one a step.
2. **Object step.** The object's script (``object.lua`` before its own) decides: it takes what
   it takes (a unit, a prize) and opens an entry under ``<member>/<operation id>`` recording the
   member steps the decision implies (``Step``), fixed then, so whoever finishes it applies the
   terms the member was offered. A refusal writes nothing. A step whose time the object's sweep
   has looked at already (a request that stalled past it) is refused as stale, so no entry can
   appear where the sweep of its second will never look.
3. **Member steps**, through ``member.lua`` like every change to a member: the first under the
   client's operation id (a retry is a duplicate), the others under derived ids.
4. **Decision.** All applied (or duplicates of their own earlier application): *settle*. One
   refused: *release*, which gives back what the object step took.

**The object decides once.** Whoever settles or releases first (this request, or the sweep of a
request that died or stalled) fixes the outcome; the other is told the decision and follows it.
A member step that lands after its entry was released is reversed by a compensating member
operation (``rk:undo:<operation id>``, from the step kind's ``compensate``), never by taking from
the object again; a caller whose step was refused while the sweep's applied answers applied.

**The sweep** is the scheduler running due ``cross`` jobs (``run_job``): the object's entries
still pending from that second or before are finished as above. An entry pending longer than
the programme's dedupe retention is *not* finished: its member step may have applied before the
outage and been forgotten since, so applying it again could apply it twice. Its job goes to the
shard's dead list for an operator (``rekindle verify`` lists it), and its unit stays held.

No script touches two slots, so all of it runs unchanged on a cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

import msgpack

from engine import ids
from engine.clock import DAY_MS, Clock, SystemClock
from engine.config import CompiledProgram
from engine.errors import StoreError
from engine.jobs import DeadJob, Job, job_id, jobs_key, shard_of
from engine.keys import Keys
from engine.operations import MemberPlan
from engine.runner import Call, Runner
from engine.scripts import Command, LuaScript
from engine.store import OperationStore, OpResult, OpStatus

log = logging.getLogger("rekindle.crossing")

CROSS = "cross"  #: the scheduler job kind that finishes an object's entries of a second
_ZADD = Command("ZADD")
#: One intent covers an object's steps of this long, by the process's clock.
WINDOW_MS = 1000
#: Entries one sweep call reads (a job loops until it has seen them all).
DUE_BATCH = 200
#: An entry older than the dedupe retention less this is left to an operator, not finished.
HORIZON_MARGIN_MS = 3_600_000


class EntryState(IntEnum):
    PENDING = 0
    SETTLED = 1
    RELEASED = 2


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


def unpack_steps(raw: bytes, decided: bytes = b"") -> tuple[Step, ...]:
    """An entry's member steps; with what the object decided (``decided``, packed, non-empty),
    each gets it as its last term, as the request that opened the entry gave it (``with_decided``)."""
    steps = tuple(
        Step(kind, ids.MemberId(member), ids.EventId(op_id), int(at_ms), tuple(terms))
        for kind, member, op_id, at_ms, terms in msgpack.unpackb(raw, raw=False)
    )
    values = msgpack.unpackb(decided, raw=False) if decided else []
    return with_decided(steps, values) if values else steps


def with_decided(steps: Sequence[Step], decided: Sequence[Any]) -> tuple[Step, ...]:
    """``steps`` with the object's decision (a bargain help's cut...) as every step's last term."""
    return tuple(s._replace(terms=(*s.terms, tuple(decided))) for s in steps)


class ObjectRef(NamedTuple):
    """An object shared by many members: its kind names its script, its id its tag."""

    kind: str
    id: str

    def keys(self, keys: Keys) -> list[str]:
        """The three keys every object script starts with (``object.lua``)."""
        tag = keys.object(self.kind, self.id)
        return [f"{tag}:e", f"{tag}:n", f"{tag}:p"]


def entry_record(raw: bytes) -> tuple[EntryState, int, list[Any]]:
    """An entry's state, time and undo list from its stored value (the member steps that may
    follow the record are left unread)."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(raw)
    state, at_ms, undo = next(unpacker)[:3]  # then reason, and (later builds) decided
    return EntryState(state), int(at_ms), list(undo)


def entry_key(member: str, op_id: str) -> str:
    """``<member>/<op id>``: ``/`` is outside the id alphabet, so the split is unambiguous."""
    return f"{member}/{op_id}"


def intent_id(obj: ObjectRef, window: int) -> str:
    """The ``cross`` job of an object's steps of one second: ``rk:cross:<kind>.<id>:<second>``
    (a kind holds no ``.``; the job's shard is the object's)."""
    return job_id(CROSS, _object_name(obj), window)


def _object_name(obj: ObjectRef) -> str:
    return f"{obj.kind}.{obj.id}"


def parse_intent(job: Job) -> tuple[ObjectRef, int]:
    kind, _, object_id = job.member.partition(".")
    return ObjectRef(kind, object_id), int(job.param)


_DONE = (OpStatus.APPLIED, OpStatus.DUPLICATE)


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
        clock: Clock | None = None,
    ) -> None:
        self._runner = runner
        self._keys = keys
        self._ops = ops
        self._objects = objects  # object kind -> its script (object.lua first)
        self._steps = steps  # step kind -> its planner
        self.grace_ms = grace_ms
        #: The clock the scheduler runs the sweep by (the service's: a dev clock moves both).
        self._clock: Clock = clock or SystemClock()
        #: The intent of each (object, second) this process has sent steps in: its reply.
        self._intents: dict[tuple[ObjectRef, int], asyncio.Future[None]] = {}
        #: Settles sent without waiting, gathered per object until the loop's turn ends: one
        #: script call settles a hot object's entries of a turn (``settle_many``), not one each.
        self._settles: dict[ObjectRef, list[tuple[str, int]]] = {}

    def script(self, kind: str) -> LuaScript:
        """An object kind's script, for a game's own actions on its objects (a bargain's start)."""
        return self._objects[kind]

    # --- the request's side ------------------------------------------------------------------------

    async def open(self, obj: ObjectRef, now_ms: int, args: Sequence[Any], extra_keys: Sequence[str] = ()) -> Any:
        """The object's own step (``args``, its script's ARGV), after the intent of its second."""
        step: Call = (self._objects[obj.kind], [*obj.keys(self._keys), *extra_keys], args)
        self._settle_first(obj, args[1])  # a retry right after its answer finds its entry settled
        window = now_ms // WINDOW_MS
        key = (obj, window)
        intent = self._intents.get(key)
        if intent is None or (intent.done() and (intent.cancelled() or intent.exception() is not None)):
            intent = asyncio.get_running_loop().create_future()
            self._intents[key] = intent
            if len(self._intents) > 4096:
                self._forget_windows(window)
            job = intent_id(obj, window)
            call: Call = (_ZADD, [jobs_key(self._keys, shard_of(_object_name(obj)))],
                          ["NX", (window + 1) * WINDOW_MS + self.grace_ms, job])
            try:
                replies = await self._runner.run_chain([call, step])
            except BaseException as exc:  # cancelled, or the connection failed: the steps waiting on it try again
                _fail(intent, StoreError(f"the intent {job} was not confirmed: {exc!r}"))
                raise
            if isinstance(replies[0], Exception):
                _fail(intent, replies[0])
                raise replies[0]
            intent.set_result(None)
            reply = replies[1]
        else:
            try:
                await asyncio.shield(intent)  # almost always in already: the first step of the second is back
            except Exception:  # its sender failed before the intent was confirmed: send it again
                return await self.open(obj, now_ms, args, extra_keys)
            reply = await self._runner.call(*step)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _settle_soon(self, obj: ObjectRef, key: str, keep_ms: int) -> None:
        batch = self._settles.get(obj)
        if batch is None:
            batch = self._settles[obj] = []
            asyncio.get_running_loop().call_soon(self._send_settles, obj)
        batch.append((key, keep_ms))

    def _settle_first(self, obj: ObjectRef, key: Any) -> None:
        """Send the object's gathered settles now if one is ``key``'s (every object action names its
        entry in ARGV[2]), so a call about that entry reaches the object after its settle."""
        batch = self._settles.get(obj)
        if batch and any(k == key for k, _ in batch):
            self._send_settles(obj)

    def _send_settles(self, obj: ObjectRef) -> None:
        """The object's settles of this turn in one call, unawaited (lost, the sweep settles them)."""
        batch = self._settles.pop(obj, [])
        if batch:
            keep_ms = max(k for _, k in batch)  # one keep time for the batch: the latest (a few ms apart)
            self._runner.send(self._objects[obj.kind], obj.keys(self._keys), ["settle_many", keep_ms, *(k for k, _ in batch)])

    def _forget_windows(self, window: int) -> None:
        for key in [k for k in self._intents if k[1] < window - 1]:
            del self._intents[key]

    async def finish(self, program: CompiledProgram, obj: ObjectRef, steps: Sequence[Step], now_ms: int,
                     *, opened_now: bool) -> Outcome:
        """Apply the member steps, then settle or release, and follow the object's decision.

        ``opened_now``: the caller's own object step just opened the entry. While less than half
        the grace has passed since the entry's time (by the clock the sweep runs by), no sweep
        can have touched it: when every step applied, the settle is sent without waiting for its
        reply (lost, the sweep settles the entry); and a duplicate first step is an earlier
        operation's under the same id (released: the object takes nothing for it). Later, or for
        a sweep, a duplicate is the entry's own step applied by someone else (the sweep of a
        request that stalled): settled, which never gives out what the member did not get."""
        first = steps[0]
        key = entry_key(first.member, first.op_id)
        results: list[OpResult] = []
        for step in steps:
            result = await self._ops.apply(self._steps[step.kind].plan(program, step, now_ms), program)
            results.append(result)
            if result.status not in _DONE:
                break
        keep_ms = now_ms + program.retention_ms + DAY_MS
        fresh = opened_now and self._clock.now_ms() - first.at_ms < self.grace_ms // 2
        if fresh and len(results) == len(steps) and all(r.status is OpStatus.APPLIED for r in results):
            self._settle_soon(obj, key, keep_ms)
            return Outcome(results[0], EntryState.SETTLED)
        done = len(results) == len(steps) and all(r.status in _DONE for r in results)
        earlier = fresh and results[0].status is OpStatus.DUPLICATE
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
        """A retry of an entry the object already holds: pending, ``in_progress``;
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
        """Finish an object's entries pending from the job's second or before (see the module's
        docstring). Raises to be retried later (a store error), or ``DeadEntry`` for an operator
        once the others are finished."""
        obj, window = parse_intent(job)
        if obj.kind not in self._objects:
            raise LookupError(f"no object kind {obj.kind!r} in this build")
        before_ms = (window + 1) * WINDOW_MS - 1
        dead: list[str] = []
        seen: set[str] = set()
        while True:
            # The entries left for an operator stay pending, oldest first: skipped, or a job would
            # read them again and again and never reach the entries behind them.
            reply = await self._runner.call(self._objects[obj.kind], obj.keys(self._keys),
                                            ["due", before_ms, DUE_BATCH, len(dead)])
            batch = [(_text(reply[i]), int(reply[i + 1]), reply[i + 2], reply[i + 3]) for i in range(0, len(reply), 4)]
            fresh = [b for b in batch if b[0] not in seen]
            for key, at_ms, steps, decided in fresh:
                seen.add(key)
                if now_ms - at_ms > program.retention_ms - HORIZON_MARGIN_MS:
                    dead.append(key)
                    continue
                outcome = await self.finish(program, obj, unpack_steps(steps, decided), now_ms, opened_now=False)
                log.info("sweep: %s of %s:%s %s", key, obj.kind, obj.id, outcome.state.name.lower())
            if len(batch) < DUE_BATCH or not fresh:
                break
        if dead:
            raise DeadEntry(
                f"{obj.kind}:{obj.id}: entries {', '.join(dead[:5])} pending past the dedupe retention: "
                "their member steps may have applied and been forgotten"
            )

    async def status(self, obj: ObjectRef, key: str) -> Entry | None:
        self._settle_first(obj, key)
        reply = await self._runner.call(self._objects[obj.kind], obj.keys(self._keys), ["status", key])
        if not reply:
            return None
        state, at_ms, reason, steps, decided = reply
        return Entry(EntryState(int(state)), int(at_ms), _text(reason), unpack_steps(steps, decided) if steps else ())

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


def _fail(intent: asyncio.Future[None], exc: BaseException) -> None:
    if not intent.done():
        intent.set_exception(exc)
        intent.exception()  # retrieved: the next step of the second sends the intent again


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
