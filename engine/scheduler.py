"""The scheduler: due work in sorted sets sharded by member, a lease per shard, jobs as operations.

Jobs (``engine/jobs.py``) wait in one sorted set per shard, scored by when they are due. Each
process that runs a ``Scheduler`` (every service worker, on every host) ticks: it takes or
renews the lease of every shard it can (``lease.lua``: SET NX PX with its token, renewed while
held, gone by itself when the holder dies) and gets the jobs due by its clock in the same call;
runs each job's handler to a ``MemberPlan`` and applies them all through the ``OperationStore``
in one pipeline; then settles the shard (``schedule_done.lua``): a job done is removed only if
its score is unchanged, so a job moved meanwhile stays as it now stands, and a job that failed
(unknown kind, a handler that raised, a store error) is due again after a growing delay, so it
can never spin nor hold up the others.

Retries are bounded. A failed job is due again after 1 s, 2 s, 4 s ... never more than an hour
later, each delay shortened by a random share (``jitter``: 0.5 by default, "equal jitter", so a
delay lies between half and all of its exponential value) so that jobs which failed together
(a webhook receiver that was down) do not all come back in the same second. The randomness is
one value from Python per settle call (Lua's ``math.random`` is seeded alike on every call),
from which the script derives each job's own. After its most attempts (``max_tries``, 20 by
default: four to eight hours of retries; a kind may have its own, ``tries_by_kind``, read from the
active programme: the outreach webhooks' ``[webhooks] max_attempts``) a job goes to its shard's
dead list (``jobs.dead_key``), as a task that raises ``DeadJob`` does at once: never run again
by itself, its attempts kept beside it, and a breach ``rekindle verify`` reports until an
operator replays or clears it (the webhooks' are replayed with ``POST
/v1/admin/webhooks/dead/replay``).

The lease makes one process work a shard at a time; it is not what makes a job run once. A job
is an operation whose id is the job id, so a job that two processes run (a lease lost while its
holder was slow, a crash between applying and settling) applies once: the second run is a
duplicate. Shards go to whoever asks first; nothing balances them between processes yet.

Time comes from the injected clock (the service's, the dev clock, a test's ``ManualClock``); the
lease's expiry alone is Redis's real time, which is what tells a dead holder from a live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from engine.clock import Clock
from engine.config import CompiledProgram
from engine.ids import DERIVED_PREFIX
from engine.jobs import (
    HANDLERS, SHARDS, DeadJob, Handler, Job, Task, dead_key, jobs_key, lease_key, parse_job, shard_of, tries_key,
)
from engine.keys import Keys
from engine.operations import MemberPlan
from engine.runner import Call, Runner
from engine.scripts import Scripts
from engine.store import OperationStore, OpStatus

log = logging.getLogger("rekindle.scheduler")

#: Jobs read from one shard per tick; a fuller backlog is worked by the ticks that follow at once.
BATCH = 200
#: How long a lease lasts without renewal: a tick renews it, so it only runs out when its holder
#: stops ticking (died, hung, lost Redis) and another process then takes the shard over.
LEASE_MS = 15_000
#: The share of a process's time the scheduler may take while a backlog is due (the rest is its
#: requests'): measured by ``make bench``'s phase [9] (the award path beside a million due jobs).
DUTY = 0.1
#: A failed job is due again after 1 s, 2 s, 4 s ... and never more than an hour later.
RETRY_FIRST_MS = 1_000
RETRY_LONGEST_MS = 3_600_000
#: The share of each retry delay that is random: a delay lies in [(1 - JITTER) * d, d].
JITTER = 0.5
#: Attempts before a failing job goes to the dead list: the delays add up to four to eight hours
#: (1 s, 2 s ... 34 min, then an hour each, jitter taking up to half of each), time for an
#: operator to fix what fails.
MAX_TRIES = 20


@dataclass(frozen=True, slots=True)
class TickReport:
    ran: int  # jobs done: applied, a duplicate, refused, or nothing to do
    failed: int  # jobs that failed and wait for their retry
    dead: int  # jobs given up for an operator (the shard's dead list): by their task, or at their most attempts
    shards: int  # shards this scheduler held
    more: bool  # a shard had a full batch due: more work may be waiting


class Scheduler:
    def __init__(
        self,
        runner: Runner,
        keys: Keys,
        scripts: Scripts,
        ops: OperationStore,
        clock: Clock,
        program: Callable[[], CompiledProgram],
        *,
        handlers: Mapping[str, Handler] = HANDLERS,
        tasks: Mapping[str, Task] | None = None,
        batch: int = BATCH,
        lease_ms: int = LEASE_MS,
        retry_first_ms: int = RETRY_FIRST_MS,
        retry_longest_ms: int = RETRY_LONGEST_MS,
        jitter: float = JITTER,
        max_tries: int = MAX_TRIES,
        tries_by_kind: Mapping[str, Callable[[CompiledProgram], int]] | None = None,
        duty: float = DUTY,
    ) -> None:
        if not 0 <= jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if max_tries < 1:
            raise ValueError("max_tries must be at least 1")
        if not 0 < duty <= 1:
            raise ValueError("duty must be above 0 and at most 1")
        self._duty = duty
        self._runner = runner
        self._keys = keys
        self._scripts = scripts
        self._ops = ops
        self._clock = clock
        self._program = program  # the active programme, read once per tick (it may be reloaded)
        self._handlers = handlers
        self._tasks: Mapping[str, Task] = tasks or {}
        self._batch = batch
        self._lease_ms = lease_ms
        self._retry = (retry_first_ms, retry_longest_ms)
        self._jitter = jitter
        self._max_tries = max_tries
        #: A kind's own most attempts, read from the programme of the tick (it may be reloaded).
        self._tries_by_kind: Mapping[str, Callable[[CompiledProgram], int]] = tries_by_kind or {}
        #: Who holds a lease, as an operator reading the key sees it.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = asyncio.Lock()  # one tick at a time: the loop's and one asked for (dev clock)
        self._task: asyncio.Task[None] | None = None

    # --- adding jobs -------------------------------------------------------------------------------

    async def schedule(self, jobs: Iterable[tuple[str, int]], *, move: bool = False) -> int:
        """Add (job id, due ms) pairs, each to its member's shard; returns how many were new.
        ``move``: a job already waiting takes the new time (else it keeps its own)."""
        # No order needed: one call per shard, and the shards' jobs are independent of each other.
        replies = await self._runner.run_many(schedule_calls(self._keys, self._scripts, jobs, move=move))
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return sum(int(r) for r in replies)

    # --- working -----------------------------------------------------------------------------------

    async def tick(self) -> TickReport:
        """One round: lease, read what is due, run it, settle it. Store errors raise (the loop
        logs them and tries again next tick); a job's own failure never does."""
        async with self._lock:
            return await self._tick()

    async def run_due(self, max_ticks: int = 1000) -> int:
        """Tick until no shard has a full batch due (or ``max_ticks``): every job due now has
        run or is waiting for its retry. How many jobs ran."""
        ran = 0
        for _ in range(max_ticks):
            report = await self.tick()
            ran += report.ran
            if not report.more:
                break
        return ran

    def start(self, interval_s: float) -> None:
        """Tick every ``interval_s`` in the background until ``stop``; the lease lasts at least
        three intervals, so a live holder never loses it between two ticks."""
        self._lease_ms = max(self._lease_ms, int(interval_s * 3000))
        self._task = asyncio.get_running_loop().create_task(self._loop(interval_s), name="scheduler")

    async def stop(self) -> None:
        """Stop ticking and give the leases up, so another process takes the shards at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):  # unreachable store: the leases run out by themselves
            await self.release()

    async def release(self) -> None:
        calls: list[Call] = [
            (self._scripts.lease, [lease_key(self._keys, s), jobs_key(self._keys, s)], [self.owner, 0, 0, 0])
            for s in range(SHARDS)
        ]
        await self._runner.run_many(calls)  # one lease per shard, each on its own: no order needed

    async def _loop(self, interval_s: float) -> None:
        failing = False
        loop = asyncio.get_running_loop()
        while True:
            more = False
            started = loop.time()
            try:
                more = (await self.tick()).more
                failing = False
            except Exception as exc:  # Redis down or busy: said once, tried again every tick
                if not failing:
                    log.warning("scheduler tick failed (%s: %s); retrying every %g s", type(exc).__name__, exc, interval_s)
                failing = True
            # A backlog is worked at the scheduler's duty cycle: after a tick that left more due, it
            # rests (1 - duty) / duty times as long as the tick took, so the process's requests keep
            # the rest of its time (a million jobs due at once take minutes, not the award path).
            took = loop.time() - started
            await asyncio.sleep(min(10 * interval_s, took * (1 - self._duty) / self._duty) if more else interval_s)

    async def _tick(self) -> TickReport:
        now_ms = self._clock.now_ms()
        keys, scripts = self._keys, self._scripts
        leases: list[Call] = [
            (scripts.lease, [lease_key(keys, s), jobs_key(keys, s)], [self.owner, self._lease_ms, now_ms, self._batch])
            for s in range(SHARDS)
        ]
        # Each shard's lease and its due jobs are one call in the shard's slot: shards need no order.
        replies = await self._runner.run_many(leases)
        due: list[tuple[int, str, str]] = []  # shard, job id, score as read
        held = 0
        more = False
        for shard, reply in enumerate(replies):
            if isinstance(reply, Exception):
                raise reply
            if int(reply[0]) != 1:
                continue
            held += 1
            flat = reply[1]
            more = more or len(flat) // 2 >= self._batch
            due += [(shard, _text(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat), 2)]
        if not due:
            return TickReport(0, 0, 0, held, more)

        program = self._program()
        limits: dict[str, int] = {}

        def limit(raw: str) -> int:
            """The job's most attempts: its kind's, by the programme of this tick, or the default."""
            kind = raw[len(DERIVED_PREFIX):] if raw.startswith(DERIVED_PREFIX) else raw
            kind = kind.partition(":")[0]
            if kind not in limits:
                of_kind = self._tries_by_kind.get(kind)
                try:
                    limits[kind] = max(1, int(of_kind(program))) if of_kind is not None else self._max_tries
                except Exception as exc:  # a defect in the kind's reader: the default bounds it still
                    log.error("most attempts of job kind %r unknown (%s: %s); using %d", kind, type(exc).__name__, exc,
                              self._max_tries)
                    limits[kind] = self._max_tries
            return limits[kind]

        done: dict[int, list[str]] = {}
        failed: dict[int, list[object]] = {}  # triples: job id, score as read, most attempts
        dead: dict[int, list[str]] = {}
        plans: list[MemberPlan] = []
        planned: list[tuple[int, str, str]] = []
        tasks: list[tuple[int, str, str, Job, Task]] = []
        for n, (shard, raw, score) in enumerate(due):
            if n and n % 100 == 0:
                await asyncio.sleep(0)  # a full tick plans thousands: the requests waiting go in between
            try:
                job = parse_job(raw, int(float(score)))
                task = self._tasks.get(job.kind)
                if task is not None:
                    tasks.append((shard, raw, score, job, task))
                    continue
                handler = self._handlers.get(job.kind)
                if handler is None:
                    raise LookupError(f"no handler for job kind {job.kind!r} in this build")
                plan = handler(job, program, now_ms)
            except Exception as exc:
                log.error("job %s failed: %s: %s", raw, type(exc).__name__, exc)
                failed.setdefault(shard, []).extend((raw, score, limit(raw)))
                continue
            if plan is None:
                done.setdefault(shard, []).extend((raw, score))
            else:
                plans.append(plan)
                planned.append((shard, raw, score))

        if plans:
            results = await self._ops.apply_many(plans, program)
            for (shard, raw, score), result in zip(planned, results):
                if isinstance(result, Exception):
                    log.error("job %s failed in the store: %s", raw, type(result).__name__)
                    failed.setdefault(shard, []).extend((raw, score, limit(raw)))
                    continue
                if result.status is OpStatus.CONFLICT:
                    # Its id was applied with another body. No client can use the namespace, so
                    # this is a bug (two kinds of job minting one id, a fingerprint changed
                    # between builds): the job fails, stays in its set and is retried with the
                    # backoff, logged every time, rather than dropped with its work undone.
                    log.error("job %s failed: its operation id was applied before with another body", raw)
                    failed.setdefault(shard, []).extend((raw, score, limit(raw)))
                    continue
                done.setdefault(shard, []).extend((raw, score))

        if tasks:
            outcomes = await asyncio.gather(
                *(task(job, program, now_ms) for _, _, _, job, task in tasks), return_exceptions=True
            )
            for (shard, raw, score, _, _), outcome in zip(tasks, outcomes):
                if isinstance(outcome, DeadJob):
                    log.error("job %s given up for an operator (the shard's dead list): %s", raw, outcome)
                    dead.setdefault(shard, []).extend((raw, score))
                elif isinstance(outcome, BaseException):
                    log.error("job %s failed: %s: %s", raw, type(outcome).__name__, outcome)
                    failed.setdefault(shard, []).extend((raw, score, limit(raw)))
                else:
                    done.setdefault(shard, []).extend((raw, score))

        settle: list[Call] = []
        first_ms, longest_ms = self._retry
        for shard in sorted(done.keys() | failed.keys() | dead.keys()):
            ok, gone, bad = done.get(shard, []), dead.get(shard, []), failed.get(shard, [])
            settle.append((
                scripts.schedule_done,
                [jobs_key(keys, shard), tries_key(keys, shard), dead_key(keys, shard)],
                # One random seed per call: the script derives each job's jitter from it and the id.
                [now_ms, first_ms, longest_ms, repr(self._jitter), f"{random.getrandbits(64):016x}",
                 len(ok) // 2, len(gone) // 2, *ok, *gone, *bad],
            ))
        # One settle per shard, in its own slot; sent after the jobs' replies are in, so the
        # jobs are applied before they are removed (a run_many orders nothing across slots).
        exhausted = 0
        for reply in await self._runner.run_many(settle):
            if isinstance(reply, Exception):  # the jobs stay due: the next tick runs them again (duplicates)
                raise reply
            for job in reply[3]:
                exhausted += 1
                raw = _text(job)
                log.error("job %s given up after %d attempts: it is in the shard's dead list for an operator",
                          raw, limit(raw))
        ran = sum(len(v) // 2 for v in done.values())
        failures = sum(len(v) // 3 for v in failed.values())
        return TickReport(ran, failures - exhausted, sum(len(v) // 2 for v in dead.values()) + exhausted, held, more)


def schedule_calls(keys: Keys, scripts: Scripts, jobs: Iterable[tuple[str, int]], *, move: bool = False) -> list[Call]:
    """``schedule.lua`` calls adding (job id, due ms) pairs: one call per shard they fall in."""
    by_shard: dict[int, list[object]] = {}
    for job, due_ms in jobs:
        shard = shard_of(parse_job(job, due_ms).member)
        by_shard.setdefault(shard, []).extend((int(due_ms), job))
    mode = "move" if move else "keep"
    return [(scripts.schedule, [jobs_key(keys, s)], [mode, *pairs]) for s, pairs in sorted(by_shard.items())]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

