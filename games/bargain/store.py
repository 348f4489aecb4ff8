"""A bargain on the cross-slot seam: the object decides each cut, the helper and the owner follow.

- **Start**: the bargain's object (``lua/bargain.lua``, one per campaign and owner) opens a new
  round with its unit schedule drawn now (``rules.unit_cuts`` from a fresh seed, kept in the
  round's record so a designer can replay it) and the terms of the programme now (a bargain keeps
  the version it started under), unless a round is open: one open bargain per member and item.
  Its close job (``bargain_close``) goes into the scheduler in the same chain, before the start.
  A campaign with an ``audience`` is started by its members only (``not_eligible``, nothing
  written): a start has no member step, so the owner's profile is read and tested here, as
  member.lua would (``engine.targeting.eligible``). Helpers are anyone.
- **Help**: the object takes the help's units and cut (refusing a closed or expired bargain, a
  second help by the same member, a device past its cap) and opens an entry naming the helper's
  step and the owner's (``plans``), its decision carrying the round's item and floor (the owner's
  reward is the terms the bargain started under); ``engine.crossing`` applies them, then settles
  or releases. The helper's daily quota is the helper's step: refused, the help is released (its
  units and cents given back to the bargain), and the helper told ``helper_quota``. The quota and
  a new member's units are the programme's now (they are the helper's day, not the bargain's), so
  a bargain whose campaign has left the programme takes no more helps (``campaign_removed``); its
  close job still expires it. A help that applied is counted for the anti-collusion report
  (``report.count_help``: one script call, sent without waiting but for the first of each minute;
  statistics, a count lost on a crash is not made good).
- **Close**: at the bargain's expiry its job asks the object to close the round (not when it
  reached its floor, not while a help is pending: then it runs again later), and tells the owner.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import msgpack
from redis.exceptions import RedisError

from engine import ids
from engine.config import CompiledProgram
from engine.crossing import EntryState, ObjectRef, entry_key, pack_steps, with_decided
from engine.errors import NotFound, Refused
from engine.jobs import Job, job_id, jobs_key, shard_of
from engine.operations import Operation, fingerprint, member_plan, pack_effect
from engine.plugins import Context, section_entry
from engine.scripts import Command
from engine.store import OpResult, OpStatus
from games.bargain.config import Campaign, Campaigns
from games.bargain.plans import BARGAIN, bargain_id, coupon_terms, helper_step, owner_step, parse_bargain_id
from games.bargain.report import count_help
from games.bargain.rules import new_member, prefix_sums, unit_cuts

CLOSE = "bargain_close"  #: the job kind that closes a bargain at its expiry
HOUR_MS = 3_600_000
_ZADD = Command("ZADD")


class Round(NamedTuple):
    """One bargain as its object keeps it."""

    id: str
    campaign: str
    owner: str
    price: int
    floor: int
    units: int
    started_ms: int
    expires_ms: int
    program_hash: str
    closed: bool
    prefix: list[int]
    seed: str
    used: int
    taken: int
    helps: list[tuple[str, int, int]]  # (helper, cut, at ms)
    item: str  # the catalog item the bargain is for: its record's, the terms it started under

    @property
    def current(self) -> int:
        return self.price - self.taken

    def state(self, now_ms: int) -> str:
        if self.used >= self.units:
            return "done"
        return "expired" if self.closed or now_ms >= self.expires_ms else "open"


def object_of(campaign: str, owner: str) -> ObjectRef:
    return ObjectRef(BARGAIN, f"{campaign}.{owner}")


def object_keys(ctx: Context, obj: ObjectRef) -> list[str]:
    """The seam's three keys, the rounds' state hash, the latest round's helps."""
    base = obj.keys(ctx.keys)
    tag = ctx.keys.object(obj.kind, obj.id)
    return [*base, f"{tag}:b", f"{tag}:l"]


async def latest_bargain(ctx: Context, name: str, owner: str) -> str | None:
    """The id of the owner's latest bargain of campaign ``name`` (open, done or expired), or None."""
    round_ = await ctx.redis.hget(object_keys(ctx, object_of(name, owner))[3], "round")
    return None if round_ is None else bargain_id(name, int(round_), owner)


def campaign_of(program: CompiledProgram, name: str) -> Campaign:
    return section_entry(program, BARGAIN, Campaigns, name, "bargain campaign", "campaign")


async def start(ctx: Context, program: CompiledProgram, name: str, owner: str, now_ms: int) -> tuple[bool, str]:
    """(started now, the bargain's id): a new round, or the one open. An owner outside the
    campaign's audience is refused ``not_eligible`` (even with a round open: it stays readable)."""
    campaign = campaign_of(program, name)
    if campaign.audience is not None:
        await require_audience(ctx, program, campaign, owner, now_ms)
    seed = ctx.draws(f"bargain:{name}:{owner}:{now_ms}").token_bytes(16)
    prefix = prefix_sums(unit_cuts(campaign.algorithm, seed, campaign.amount, campaign.helpers, campaign.first_cut_share))
    expires = now_ms + campaign.duration_hours * HOUR_MS
    record = msgpack.packb([campaign.price_cents, campaign.floor_cents, campaign.helpers, now_ms, expires,
                            program.program_hash, 0, prefix, seed.hex(), campaign.item])
    obj = object_of(name, owner)
    script = ctx.crossing.script(BARGAIN)
    # In the shard of the job's own name (its id's member part), as every job is.
    close: Any = (_ZADD, [jobs_key(ctx.keys, shard_of(obj.id))], ["NX", expires, close_job_id(obj, expires)])
    replies = await ctx.runner.run_chain([close, (script, object_keys(ctx, obj), ["start", now_ms, record])])
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    started, round_ = int(replies[1][0]) == 1, int(replies[1][1])
    return started, bargain_id(name, round_, owner)


async def require_audience(ctx: Context, program: CompiledProgram, campaign: Campaign, owner: str, now_ms: int) -> None:
    """Refuse (``not_eligible``, 409 naming the campaign) an owner outside the campaign's audience:
    the stored tier ("" or none: the first tier), the profile's tags and join time, the dormancy
    mark, as member.lua tests them. A start writes nothing on the member, so a read is enough: a
    profile changed meanwhile decides the next start."""
    (held,) = await ctx.members.in_audiences(ids.MemberId(owner), [program.audience(campaign.audience)], now_ms)
    if not held:
        raise Refused("not_eligible", "this campaign is not for this member (its audience: tiers, tags, new or "
                                      "dormant members)", field="campaign")


def close_job_id(obj: ObjectRef, expires_ms: int) -> str:
    return job_id(CLOSE, obj.id, expires_ms)


def parse(value: str, field: str = "bargain") -> tuple[str, int, str]:
    try:
        return parse_bargain_id(value)
    except ValueError:
        raise NotFound("no such bargain", field=field) from None


async def view(ctx: Context, value: str) -> Round:
    name, round_, owner = parse(value)
    obj = object_of(name, owner)
    reply = await ctx.runner.call(ctx.crossing.script(BARGAIN), object_keys(ctx, obj), ["view", round_])
    if not reply:
        raise NotFound("no such bargain", field="bargain")
    price, floor, units, started, expires, program_hash, closed, prefix, seed, item = msgpack.unpackb(reply[0], raw=False)
    helps = [msgpack.unpackb(h, raw=False) for h in reply[3:]]
    return Round(value, name, owner, price, floor, units, started, expires, program_hash, bool(closed), prefix, seed,
                 int(reply[1]), int(reply[2]), [(h[1], h[2], h[4]) for h in helps], item)


async def campaign_for_help(ctx: Context, program: CompiledProgram, value: str) -> Campaign:
    """The campaign of the bargain ``value`` in ``program``: a bargain whose campaign has left the
    programme is refused ``campaign_removed`` (409, nothing written), one that never was is a 404."""
    name, _, _ = parse(value)
    section = program.games.get(BARGAIN)
    campaign = section.root.get(name) if isinstance(section, Campaigns) else None
    if campaign is not None:
        return campaign
    await view(ctx, value)  # no such bargain: 404 naming it
    raise Refused("campaign_removed", _REASONS["campaign_removed"], field="bargain")


class HelpRequest(NamedTuple):
    bargain: str
    helper: ids.MemberId
    op_id: ids.EventId
    at_ms: int
    weight: int  # units the help takes: more for a new member when the campaign says so
    device: str  # a hash of the helper's device or address, "" when the shop passed none
    device_cap: int
    #: Whether the helper is new (``rules.new_member``), when the caller read it for the weight;
    #: None: ``help_`` reads it for the report, only for a help the object took, beside its steps.
    is_new: bool | None = None


async def help_(ctx: Context, program: CompiledProgram, request: HelpRequest) -> OpResult:
    """One help end to end; refusals come back as ``Refused`` (nothing written) or ``REFUSED``.
    The owner's reward is decided by the object from the round's record; the quota is the
    programme's now; the packed ``coupon_terms`` are only the validity's fallback (``plans.reward_of``)."""
    name, round_, owner = parse(request.bargain)
    if owner == request.helper:
        raise Refused("own_bargain", "a member cannot help their own bargain", field="bargain")
    campaign = await campaign_for_help(ctx, program, request.bargain)
    obj = object_of(name, owner)
    day, day_end = program.calendar.day(request.at_ms)
    steps = (helper_step(request.bargain, request.helper, request.op_id, request.at_ms, day, day_end,
                         campaign.helps_per_day),
             owner_step(request.bargain, owner, request.helper, request.op_id, request.at_ms,
                        coupon_terms(program, campaign.item, campaign.floor_cents)))
    reply = await ctx.crossing.open(obj, request.at_ms, [
        "help", entry_key(request.helper, request.op_id), request.at_ms, round_, request.helper, request.weight,
        pack_steps(steps), request.device, request.device_cap,
    ], extra_keys=object_keys(ctx, obj)[3:])
    code = int(reply[0])
    if code == 3:
        raise TimeoutError("the help took too long to reach its bargain; send it again")
    if code == 2:
        reason = _text(reply[1])
        raise Refused(reason, _REASONS.get(reason, "refused"), field="id" if reason == "in_progress" else "bargain")
    if code == 0:  # a retry: the script answers a duplicate from the original (the decision is not needed)
        state, reason = EntryState(int(reply[1])), _text(reply[2])
        retry = with_decided(steps, (0, 0, 0))
        return _renamed((await ctx.crossing.answer_existing(program, state, reason, retry, request.at_ms)).result)
    # (cut, price after it, reached, item, floor): as the entry records it, for the sweep to plan alike
    decided = with_decided(steps, (int(reply[1]), int(reply[6]), int(reply[5]), _text(reply[7]), int(reply[8])))
    joined = None
    if request.is_new is None:  # read beside the member steps: no wait of its own
        joined = asyncio.ensure_future(ctx.members.joined_at_ms(request.helper))
        joined.add_done_callback(_retrieved)
    outcome = await ctx.crossing.finish(program, obj, decided, request.at_ms, opened_now=True)
    if outcome.result.status is OpStatus.APPLIED:
        is_new = request.is_new
        if joined is not None:
            try:
                is_new = new_member(await joined, request.at_ms, campaign.new_member_days)
            except (RedisError, OSError):
                is_new = None  # not counted: statistics
        if is_new is not None:
            await count_help(ctx, program, name, request.helper, owner, is_new, request.device, request.at_ms)
    return _renamed(outcome.result)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a read nobody awaited (the help failed) logs nothing


_REASONS = {
    "in_progress": "the bargain's last help is waiting for the others to be applied; send the same request again shortly",
    "bargain_closed": "this bargain has reached its floor",
    "expired": "this bargain has expired",
    "already_helped": "this member has helped this bargain already",
    "device_limit": "this device has helped this bargain as often as it may",
    "campaign_removed": "this bargain's campaign is no longer in the programme: it takes no more helps",
}


def _renamed(result: OpResult) -> OpResult:
    """The helper's quota is the member script's limited counter: ``limit_reached`` is ``helper_quota``."""
    if result.status is OpStatus.REFUSED and result.refusal == "limit_reached":
        return OpResult(OpStatus.REFUSED, refusal="helper_quota")
    return result


def close_task(ctx: Context) -> Any:
    """The ``bargain_close`` job: close the round expiring then, and tell its owner."""

    async def run(job: Job, program: CompiledProgram, now_ms: int) -> None:
        name, _, owner = job.member.partition(".")
        obj = object_of(name, owner)
        # The round whose expiry scheduled this job (a newer round may have started since).
        reply = await ctx.runner.call(ctx.crossing.script(BARGAIN), object_keys(ctx, obj), ["close", int(job.param), now_ms])
        if int(reply[0]) == 0:
            if _text(reply[1]) == "pending":
                raise RuntimeError(f"bargain {name}.*.{owner}: helps still pending at its expiry; closing later")
            return
        round_ = int(reply[1])
        bargain = bargain_id(name, round_, owner)
        current = await view(ctx, bargain)
        op = Operation(ids.derived_id("bargain_expired", owner, f"{name}.{round_}"), ids.MemberId(owner),
                       current.expires_ms, fingerprint("bargain_expired", bargain))
        plan = member_plan(program, op, now_ms, effects=(pack_effect(
            "bargain_expired", {"bargain": bargain, "current_cents": current.current, "price_cents": current.price}),))
        await ctx.ops.apply(plan, program)

    return run


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
