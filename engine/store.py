"""Applying member plans: one ``member.lua`` call per operation, through a ``Runner``.

A thin typed wrapper, in the manner of ``limits``: ``member_call`` builds KEYS and ARGV, the
runner calls the script, ``decode_reply`` turns its return codes into ``OpResult``s. Every
decision that depends on stored state is made inside the script, so nothing here reads before
it writes.
"""

from __future__ import annotations

import asyncio
import logging

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack

from engine.config import CompiledProgram
from engine.errors import StoreError
from engine.jobs import DormancyJobs, ExpiryJobs, expiring_job_id, tier_reviews, with_pair
from engine.keys import Keys
from engine.kpis import KpiRecorder
from engine.operations import MemberPlan, values_of
from engine.runner import Call, ChainBroken, Runner
from engine.scripts import Scripts
from engine.views import Effect


log = logging.getLogger("rekindle.store")


class OpStatus(str, Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"  # the id was seen with another body: reported as rejected
    REFUSED = "refused"  # a check failed (balance, coupon state, a limit): nothing was written


@dataclass(frozen=True, slots=True)
class OpResult:
    status: OpStatus
    effects: list[Effect] = field(default_factory=list)
    #: A duplicate's original operation: its feed entry id ("" when it had no effect). Its
    #: effects are replayed while the member's feed still keeps the entry.
    original: str = ""
    #: Why a refused operation was refused (insufficient_points, already_used, ...), and which
    #: debit, coupon use or counter of the plan failed.
    refusal: str = ""
    refused_index: int = 0


def member_call(keys: Keys, plan: MemberPlan, program: CompiledProgram, publish: bool = True) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of member.lua for one plan (see the script's header)."""
    script_keys, channel = keys.member_script_keys(plan.op.member, plan.dedupe_bucket, plan.lookup_buckets, plan.record_buckets)
    return script_keys, member_args(plan, program, channel if publish else "")


def member_args(plan: MemberPlan, program: CompiledProgram, channel: str) -> list[Any]:
    """member.lua's ARGV for ``plan``; ``channel`` "" publishes nothing."""
    args = [plan.script_arg(), _tier_values(program.tiers_packed), channel, program.tier_rewards_packed]
    if plan.wakes and program.wake_packed:
        args.append(program.wake_packed)  # a return event: the wake-up gift of a dormant member
    rules = program.tier_rules
    if rules is not None:  # ARGV[6]: the tier policy's window, as of the operation's time
        if len(args) == 4:
            args.append("")
        args.append(rules.script_arg(plan.op.at_ms, plan.qualify, plan.review_ms))
    return args


@functools.lru_cache(maxsize=8)
def _tier_values(tiers_packed: bytes) -> bytes:
    """The programme's tiers as member.lua reads them (its ARGV[2]): the values of the packed
    array, once a programme (a bytes object keeps its hash, so a call is one lookup)."""
    return values_of(tiers_packed)


class OperationStore:
    """Applies plans; a plan that may create a points lot with an expiry first schedules the
    lot's ``expire`` job (``engine.jobs.ExpiryJobs``): the member call is applied only once the
    job is in, so no lot is ever without its job."""

    def __init__(self, runner: Runner, keys: Keys, scripts: Scripts) -> None:
        self._runner = runner
        self._keys = keys
        self._scripts = scripts
        self._expiries = ExpiryJobs(keys)
        self._dormancy = DormancyJobs(keys)
        #: Counts every applied operation for the KPIs (``engine/kpis.py``), when the service sets one.
        self.kpis: KpiRecorder | None = None

    def _schedule(self, plan: MemberPlan, program: CompiledProgram) -> tuple[Call | None, bool]:
        """The jobs ``plan`` needs first, as one call (the lot's expire job, the member's dormancy
        job: the same shard), and whether the dormancy job is among them."""
        call = self._expiries.call(plan)
        if call is not None and program.expiring_notice_ms:  # the lot's notice rides with its expire job
            expiry = plan.args.lot_expiry_ms
            call = with_pair(call, [expiry - program.expiring_notice_ms, expiring_job_id(plan.op.member, expiry)],
                             self._keys, plan.op.member)
        pair = self._dormancy.pair(plan, program)
        if pair is None:
            return call, False
        return with_pair(call, pair, self._keys, plan.op.member), True

    def _settle(self, plan: MemberPlan, call: Call, dormancy: bool, reply: Any) -> None:
        if not dormancy or len(call[2]) > 3:  # an expire job was in it (pairs after "NX": 2 a job)
            self._expiries.settle(plan, reply)
        if dormancy:
            self._dormancy.settle(plan, reply)

    async def apply(self, plan: MemberPlan, program: CompiledProgram) -> OpResult:
        keys, args = member_call(self._keys, plan, program)
        schedule, dormancy = self._schedule(plan, program)
        if schedule is None:  # the usual case: one call, batched with the tick's others
            result = decode_reply(await self._runner.call(self._scripts.member, keys, args))
        else:
            # A chain, not a run_many: the job's slot is not the member's, and a run_many orders
            # calls within a slot only. On one server the two still share one write (a ZADD, then
            # the script, in one transaction); on a cluster the member call waits for the ZADD.
            scheduled, reply = await self._runner.run_chain([schedule, (self._scripts.member, keys, args)])
            self._settle(plan, schedule, dormancy, scheduled)
            if isinstance(reply, Exception):
                raise reply
            result = decode_reply(reply)
        if result.status is OpStatus.APPLIED:
            if self.kpis is not None:
                self.kpis.record(plan, program, result.effects, plan.event)
            if plan.wakes and woke(result):
                await self._rescheduled(plan, program)
        if program.tier_rules is not None and result.effects:
            review = tier_reviews(self._keys, plan.op.member, result.effects)
            if review is not None:
                await self._review(plan.op.member, review)
        return result

    async def _review(self, member: str, review: Call) -> None:
        """Schedule a tier review after the operation that set its expiry, trying again on a
        transient failure. The operation stands, applied, whatever happens here: a review still
        unscheduled is logged, and ``rekindle backfill`` schedules the review of every expiry
        that has none (its id is the expiry's: scheduling it twice is harmless)."""
        for wait_s in (0.05, 0.2, 0.0):
            try:
                await self._runner.call(*review)
                return
            except Exception as exc:  # noqa: BLE001
                if not wait_s:
                    log.error("could not schedule the tier review of member=%s: %s (run `rekindle backfill`)",
                              member, type(exc).__name__)
                    return
                await asyncio.sleep(wait_s)

    async def _rescheduled(self, plan: MemberPlan, program: CompiledProgram) -> None:
        """A dormant member came back: its dormancy job again (the old one is gone). A failure is
        logged and the member forgotten, so its next activity schedules the job (chained): the
        return itself stands, applied."""
        try:
            await self._runner.call(*self._dormancy.again(plan, program))
        except Exception as exc:  # noqa: BLE001
            log.error("could not schedule the dormancy job of member=%s again: %s", plan.op.member, type(exc).__name__)
            self._dormancy.forget(plan.op.member)

    async def apply_many(self, plans: Sequence[MemberPlan], program: CompiledProgram) -> list[OpResult | Exception]:
        """Apply plans in one pipeline; a failed call is returned, not raised. A member's plans
        are applied in order (one slot), but for a call answered NOSCRIPT, sent again after the
        rest (``Runner.run_many``); different members' have no order.

        The jobs the plans need (a lot's expire job, a member's dormancy job) are scheduled first,
        once each, by a ``run_many`` of their own that is answered before any member call is sent
        (one round trip more, only when a job is new to this process): jobs and members live in
        different slots, so one ``run_many`` of both would not order them on a cluster. A plan
        whose job could not be scheduled is not sent; its result is a ``ChainBroken`` naming the
        failed schedule."""
        member = self._scripts.member
        schedules: dict[tuple[Any, ...], tuple[MemberPlan, Call, bool]] = {}
        needs: list[tuple[Any, ...] | None] = []  # per plan: the jobs it needs first, if any
        for p in plans:
            call, dormancy = self._schedule(p, program)
            need: tuple[Any, ...] | None = None
            if call is not None:
                need = (p.op.member, *call[2])
                schedules.setdefault(need, (p, call, dormancy))
            needs.append(need)
        broken: dict[tuple[Any, ...], ChainBroken] = {}
        if schedules:
            scheduled = await self._runner.run_many([call for _, call, _ in schedules.values()])
            for (need, (p, call, dormancy)), reply in zip(schedules.items(), scheduled):
                self._settle(p, call, dormancy, reply)
                if isinstance(reply, Exception):
                    broken[need] = ChainBroken(0, call[0], reply)
        sent = [p for p, need in zip(plans, needs) if need not in broken]
        replies = iter(await self._runner.run_many([(member, *member_call(self._keys, p, program)) for p in sent]))
        results: list[OpResult | Exception] = []
        for p, need in zip(plans, needs):
            reply = broken[need] if need is not None and need in broken else next(replies)
            result = reply if isinstance(reply, Exception) else decode_reply(reply)
            if not isinstance(result, Exception) and result.status is OpStatus.APPLIED:
                if self.kpis is not None:
                    self.kpis.record(p, program, result.effects, p.event)
                if p.wakes and woke(result):
                    await self._rescheduled(p, program)
            results.append(result)
        if program.tier_rules is not None:
            await self._reviews(plans, results)
        return results

    async def _reviews(self, plans: Sequence[MemberPlan], results: list[OpResult | Exception]) -> None:
        """Schedule the tier reviews the results need; a plan whose review could not be scheduled
        is answered with the failure (a job is then retried: its duplicate schedules again)."""
        calls: list[tuple[int, Call]] = []
        for n, (p, result) in enumerate(zip(plans, results)):
            if isinstance(result, OpResult) and result.effects:
                call = tier_reviews(self._keys, p.op.member, result.effects)
                if call is not None:
                    calls.append((n, call))
        if not calls:
            return
        for (n, call), reply in zip(calls, await self._runner.run_many([call for _, call in calls])):
            if isinstance(reply, Exception):
                log.error("could not schedule the tier review of member=%s: %s", plans[n].op.member,
                          type(reply).__name__)
                results[n] = reply


def woke(result: OpResult) -> bool:
    """A dormant member came back (member.lua's ``wake_up``): its dormancy job is scheduled anew."""
    return any(e["type"] == "wake_up" for e in result.effects)


def decode_reply(raw: bytes) -> OpResult:
    """member.lua's reply (see its header): applied ``[entry, op, effects]``, duplicate
    ``[0, entry?, effects?]``, conflict ``[2]``, refused ``[3, reason, index]``."""
    reply = msgpack.unpackb(raw, raw=False, strict_map_key=False, use_list=False)
    head = reply[0]
    if isinstance(head, str):
        return OpResult(OpStatus.APPLIED, _effects(head, reply[2]))
    if head == 0:
        original = reply[1] if len(reply) > 1 else ""
        return OpResult(OpStatus.DUPLICATE, _effects(original, reply[2]) if len(reply) > 2 else [], original)
    if head == 2:
        return OpResult(OpStatus.CONFLICT)
    if head == 3:
        return OpResult(OpStatus.REFUSED, refusal=reply[1], refused_index=int(reply[2]))
    raise StoreError(f"member.lua returned unknown code {head!r}")


def _effects(entry: str, effects: Any) -> list[Effect]:
    return [Effect(id=f"{entry}-{i}", type=kind, data=data) for i, (kind, data) in enumerate(effects)]
