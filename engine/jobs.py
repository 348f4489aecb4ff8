"""Scheduled jobs, the pure part: ids, shards, and what each kind of job plans.

A job is an operation waiting for its time. Its id is deterministic and parseable,
``rk:<kind>:<member>:<param>`` (``rk:expire:m-42:1798732800000``), and it is also the id of the
operation it applies, so a job run twice (two workers, a retry after a crash) applies once. The
``rk:`` prefix is the engine's own (``ids.DERIVED_PREFIX``): no client operation can take a job's
id before the job runs.
The kind names a handler, a pure function from the job and the time to a ``MemberPlan`` (or
None: nothing to do); the scheduler (``engine/scheduler.py``) does the I/O around it.

Jobs wait in sorted sets, one per shard, under the shard's own hash tag
(``Keys.schedule(shard)``); a member's jobs always land in the same shard, by a stable hash of
its id.
"""

from __future__ import annotations

import logging
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from engine import ids
from engine.clock import DAY_MS
from engine.config import CompiledProgram
from engine.keys import Keys
from engine.operations import MemberPlan, Operation, fingerprint, member_plan
from engine.runner import Call
from engine.scripts import Command

log = logging.getLogger("rekindle.jobs")

#: Shards of the job sets. A member's shard is ``crc32(member) % SHARDS``: this must NEVER
#: change once a server holds jobs, or every waiting job would sit in a shard nobody looks up
#: for its member (a new value needs a migration that moves every job). 16 lets up to 16
#: processes share the work and spreads the sets over a cluster's nodes.
SHARDS = 16

EXPIRE = "expire"
DORMANCY = "dormancy"  #: a member's dormancy job (engine/care.py): moved later while the member is active
EXPIRING = "expiring"  #: the notice before a lot of points expires (engine/care.py)
TIER = "tier"  #: the review of a member's tier at its expiry (engine/tiering.py)


class Job(NamedTuple):
    id: str
    kind: str
    member: ids.MemberId
    param: str  # the kind's own parameter (expire: the lots' expiry in epoch ms)
    due_ms: int  # its score when it was read: when it was due (or retried, after a failure)

    @property
    def op_id(self) -> ids.EventId:
        """The id of the operation the job applies: always in the engine's namespace."""
        return ids.EventId(job_id(self.kind, self.member, self.param))


#: What a job does, by kind: the job and the time in, the plan to apply out (None: nothing to
#: do, the job is done). Pure: no I/O, no clock; it may raise, and the job is retried later.
Handler = Callable[[Job, CompiledProgram, int], "MemberPlan | None"]
#: A job kind that does its own I/O (a cross-slot entry finished by the seam): done when it
#: returns; ``DeadJob`` sends it to the dead list; any other error retries it later.
Task = Callable[[Job, CompiledProgram, int], Awaitable[None]]


def shard_of(member: str) -> int:
    """The member's shard: stable across processes, hosts and Python versions (not ``hash()``)."""
    return zlib.crc32(member.encode()) % SHARDS


def job_id(kind: str, member: str, param: object) -> str:
    return ids.derived_id(kind, member, param)


def parse_job(raw: str, due_ms: int) -> Job:
    """The job named by ``raw``. Member ids may hold ``:``, kinds and parameters never do, so
    the kind ends at the first colon after the prefix and the parameter starts after the last.
    Raises ValueError for an id of no known shape. An id without the prefix was scheduled by a
    build that had none: it still parses, and its operation takes the prefixed id
    (``Job.op_id``), which no client can have used."""
    body = raw[len(ids.DERIVED_PREFIX):] if raw.startswith(ids.DERIVED_PREFIX) else raw
    kind, sep, rest = body.partition(":")
    member, sep2, param = rest.rpartition(":")
    if not (sep and sep2 and kind and member and param):
        raise ValueError(f"not a job id: {raw!r}")
    return Job(raw, kind, ids.MemberId(member), param, due_ms)


def jobs_key(keys: Keys, shard: int) -> str:
    """The shard's sorted set: job id -> due ms."""
    return keys.schedule(shard) + ":z"


def lease_key(keys: Keys, shard: int) -> str:
    """Which process works the shard now (a token, with an expiry)."""
    return keys.schedule(shard) + ":lease"


def dead_key(keys: Keys, shard: int) -> str:
    """Jobs given up for an operator (sorted set: job id -> when), never run again by themselves."""
    return keys.schedule(shard) + ":dead"


class DeadJob(Exception):
    """A job that must not run again by itself (retrying could do harm): it goes to the dead list."""


def tries_key(keys: Keys, shard: int) -> str:
    """Hash: job id -> failed attempts so far (the backoff's exponent); gone once a job is done."""
    return keys.schedule(shard) + ":tries"


# --- kinds ----------------------------------------------------------------------------------------


def expire_job_id(member: str, expiry_ms: int) -> str:
    """The job that writes off the member's points expiring at ``expiry_ms``."""
    return job_id(EXPIRE, member, expiry_ms)


def plan_expire(job: Job, program: CompiledProgram, now_ms: int) -> MemberPlan:
    """An empty plan at the lots' expiry: ``member.lua`` expires every lot due by the operation's
    time whenever an operation proceeds, and an empty one proceeds when the profile's soonest
    expiry (``nx``) is due, writing the ledger entries (kind x) and the feed's points_expired.

    The operation's time is the expiry, not the time the job happens to run, so the outcome
    does not depend on how late the scheduler is: a late run expires exactly the lots that were
    due then (a later lot has a job of its own). Lots an operation already expired since leave
    nothing to do, and a run twice is a duplicate: the job is idempotent by id and by state.
    """
    expiry_ms = int(job.param)
    if expiry_ms <= 0:
        raise ValueError(f"{job.id}: expiry must be a positive epoch ms")
    op = Operation(job.op_id, job.member, expiry_ms, fingerprint(EXPIRE, expiry_ms))
    return member_plan(program, op, expiry_ms)


def tier_job_id(member: str, expiry_ms: int) -> str:
    """The review of the member's tier held until ``expiry_ms``: one per expiry, so a review that
    a climb made stale (the member's expiry moved) finds another expiry and does nothing."""
    return job_id(TIER, member, expiry_ms)


def plan_tier_review(job: Job, program: CompiledProgram, now_ms: int) -> MemberPlan | None:
    """A review of the member's tier as of its expiry (``engine/tiering.py``): the operation's
    time is the expiry, so a late run decides as a punctual one would."""
    rules = program.tier_rules
    if rules is None or not rules.reviewed:
        return None  # the programme keeps tiers for good now: nothing to review
    expiry_ms = int(job.param)
    if expiry_ms <= 0:
        raise ValueError(f"{job.id}: the expiry must be a positive epoch ms")
    op = Operation(job.op_id, job.member, expiry_ms, fingerprint(TIER, expiry_ms))
    return member_plan(program, op, expiry_ms, review_ms=expiry_ms)


#: Effects that hold a tier until an expiry (``until_ms``): each schedules that expiry's review.
TIER_HELD = frozenset({"tier_up", "tier_kept", "tier_grace", "tier_down"})


def tier_reviews(keys: Keys, member: str, effects: Any) -> Call | None:
    """The ``tier`` jobs an operation's effects need (``ZADD NX``; None: none)."""
    pairs: list[Any] = []
    for e in effects:
        if e["type"] in TIER_HELD and e["data"].get("until_ms"):
            until = int(e["data"]["until_ms"])
            pairs += [until, tier_job_id(member, until)]
    if not pairs:
        return None
    return ZADD, [jobs_key(keys, shard_of(member))], ["NX", *pairs]


#: The kinds this build knows. The lifecycle adds its own (``birthday``, ``wakeup``) here; a
#: kind a process does not know (a newer build's, during a rolling deploy) waits, with backoff.
HANDLERS: Mapping[str, Handler] = {EXPIRE: plan_expire, TIER: plan_tier_review}


# --- scheduling expiry jobs as lots are created (engine/store.py) ---------------------------------

#: (member, expiry) pairs a process remembers having scheduled: about 250 bytes each, so at most
#: ~16 MB; past it the oldest are forgotten (their next grant schedules again, harmlessly).
SCHEDULED_CACHE = 65_536
#: A remembered job is trusted only while its expiry is more than this far ahead (clocks differ).
CACHE_TRUST_MS = DAY_MS


#: Adds a job to its shard's set; ``NX``: a job already waiting keeps its time (and backoff).
ZADD = Command("ZADD")


class ExpiryJobs:
    """The ``expire`` job of each lot a plan may create, scheduled before the plan is applied.

    The store chains this call before the member call (``Runner.run_chain``: on one server both
    go in one write, as one transaction), so the job exists before the lot: a crash between the
    two leaves a job with nothing to expire (harmless), and a schedule that fails leaves the
    member call unapplied, never a lot with no job. A plain ``ZADD NX`` (what ``schedule.lua``'s
    "keep" does), not a script: it cannot be answered NOSCRIPT and sent again after the member
    call. Scheduling again is a no-op, and leaves a failed job's backoff alone.

    The process remembers which (member, expiry) it has scheduled, so repeat awards of the same
    member and expiry period (every purchase of the year, under "end_of_next_year") skip the call
    and keep the award path at one script call. That is safe because a job leaves its set only
    once it has run, and it runs only when due: while the expiry is still ahead it is certainly
    still waiting. Within a day of the expiry (another host's clock may run ahead, and an event
    may arrive with an old ``at``) the cache is not trusted and the call is made again. Redis
    losing writes (a failover with asynchronous replicas) can lose a job the cache remembers;
    the lot is then still written off by the member's next operation, and the snapshot never
    counts expired points.
    """

    def __init__(self, keys: Keys, size: int = SCHEDULED_CACHE) -> None:
        self._keys = keys
        self._size = size
        self._scheduled: OrderedDict[tuple[str, int], None] = OrderedDict()

    def call(self, plan: MemberPlan) -> Call | None:
        """The schedule call ``plan`` needs first, or None (no lot with an expiry, or known)."""
        a = plan.args  # every award comes here: attribute reads and one lookup, nothing more
        expiry = a.lot_expiry_ms
        # What may add points to a lot: rule grants, quest rewards, and the tier rewards XP from
        # either can reach; coupons too, for whatever a granted coupon may come to carry. A plan
        # field added later that can fill a lot (a refund restoring points) belongs here.
        if not expiry or not (a.grants or a.quests or a.coupons):
            return None
        member = plan.op.member
        if expiry > a.now_ms + CACHE_TRUST_MS and (member, expiry) in self._scheduled:
            return None
        return ZADD, [jobs_key(self._keys, shard_of(member))], ["NX", expiry, expire_job_id(member, expiry)]

    def settle(self, plan: MemberPlan, reply: Any) -> None:
        """Remember a job that was scheduled; log one that was not (its member call was not
        applied, and the next grant of that expiry schedules it again)."""
        key = (plan.op.member, plan.args.lot_expiry_ms)
        if isinstance(reply, Exception):
            log.error("could not schedule expire job member=%s expiry_ms=%d: %s", key[0], key[1], type(reply).__name__)
            return
        if key not in self._scheduled:
            self._scheduled[key] = None
            if len(self._scheduled) > self._size:
                self._scheduled.popitem(last=False)


def expiring_job_id(member: str, expiry_ms: int) -> str:
    """The notice of the member's points expiring at ``expiry_ms``: scheduled with the lot's
    expire job, in the same call."""
    return job_id(EXPIRING, member, expiry_ms)


def dormancy_job_id(member: str) -> str:
    """The member's one dormancy job: moved later while the member is active, gone once it has
    marked the member dormant, scheduled again by the member's return."""
    return job_id(DORMANCY, member, 0)


class DormancyJobs:
    """The ``dormancy`` job of each member, scheduled before the first activity of theirs this
    process applies (chained before the member call, as the expire jobs are): ``NX``, so a job
    already waiting keeps its time. The job moves itself later when it finds the member active
    since (``engine/care.py``), so activity costs no call once a member is known to the process:
    the award path stays one script call. Forgotten past ``SCHEDULED_CACHE`` members (the next
    activity schedules again: NX, harmless)."""

    def __init__(self, keys: Keys, size: int = SCHEDULED_CACHE) -> None:
        self._keys = keys
        self._size = size
        self._known: OrderedDict[str, None] = OrderedDict()

    def pair(self, plan: MemberPlan, program: CompiledProgram) -> list[Any] | None:
        """(due ms, job id) the plan needs scheduled first, or None."""
        if not program.dormancy_ms:  # the usual programme: one attribute read
            return None
        member = plan.op.member
        if member in self._known or plan.op.id.startswith(ids.DERIVED_PREFIX):
            return None
        return [plan.args.now_ms + program.dormancy_ms, dormancy_job_id(member)]

    def again(self, plan: MemberPlan, program: CompiledProgram) -> Call:
        """The job of a member who came back (its ``wake_up``): scheduled anew."""
        member = plan.op.member
        return ZADD, [jobs_key(self._keys, shard_of(member))], ["NX", plan.args.now_ms + program.dormancy_ms,
                                                                 dormancy_job_id(member)]

    def forget(self, member: str) -> None:
        self._known.pop(member, None)

    def settle(self, plan: MemberPlan, reply: Any) -> None:
        member = plan.op.member
        if isinstance(reply, Exception):
            log.error("could not schedule the dormancy job of member=%s: %s", member, type(reply).__name__)
            return
        self._known[member] = None
        if len(self._known) > self._size:
            self._known.popitem(last=False)


def with_pair(call: Call | None, pair: list[Any], keys: Keys, member: str) -> Call:
    """``call`` (a ``ZADD NX`` to the member's shard, or None) with one more (due, job) pair."""
    if call is None:
        return ZADD, [jobs_key(keys, shard_of(member))], ["NX", *pair]
    return call[0], call[1], [*call[2], *pair]
