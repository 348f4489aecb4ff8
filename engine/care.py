"""Care moments (关怀) driven by what happens to a member: joining, a referral, a birthday.

The award path grants the purchase and holiday moments itself, as quests (``config._care_quests``).
The others are operations of their own, each on an id derived from its occasion, so that two
processes, a job run twice, a retry or a restart grant once:

- **welcome**: ``rk:welcome:<member>``, when the profile's ``joined_at`` is first set or at the
  programme's ``join_event``; with it, the referrer's ``on_join`` gift,
  ``rk:referral:<referrer>:join.<invitee>``;
- **the referrer's first-purchase gift**: ``rk:referral:<referrer>:purchase.<invitee>``, when the
  invitee's ``care.purchase.1`` quest completes (the events route sees it in the answer). A
  process that dies between the two loses that one gift (logged nowhere): the price of not
  putting a second member's write on the purchase's path;
- **dormancy**: a job a member (``engine.jobs.DormancyJobs`` schedules it with the member's first
  activity a process applies), due the programme's days later; it moves itself later while the
  member is active (the profile's ``la``), else marks the member dormant (``dm``), once a spell;
  the member's next return event ends it with the wake-up gift (in member.lua: one operation);
- **birthday**: a job a member (``rk:birthday:<member>:<year>``), due at the start of the
  birthday's day, week or month in the programme's time zone, scheduled when the profile's
  birthday is set or changed (moved, for that year) and, when it runs, for the next year. Its
  operation id is the job's: once a year however often the birthday changes.

A member's gift is planned here (``moment_plan``: the bundle's XP, points, coupons and items, and
a ``care`` effect naming the moment) and applied by ``member.lua`` like every change to a member.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from engine import ids
from engine.clock import DAY_MS
from engine.config import CareMoment, CompiledProgram
from engine.errors import InvalidInput
from engine.jobs import ZADD, Job, Task, job_id, jobs_key, shard_of
from engine.keys import Keys
from engine.members import MemberStore
from engine.operations import MemberPlan, Operation, fingerprint, member_plan, pack_effect
from engine.outreach import Message, enqueue
from engine.runner import Runner
from engine.store import OperationStore, OpResult, OpStatus

BIRTHDAY = "birthday"  #: the job kind, and the moment's name in the ``care`` effect
WELCOME = "welcome"
REFERRAL = "referral"
#: How far up a chain of referrers a new referral is checked for a loop.
REFERRAL_DEPTH = 32


def once_field(name: str, occasion: str = "") -> str:
    """The member's state field that makes a moment once per occasion for good: a limited counter
    (limit 1) the gift's plan takes, so a second gift is refused ``limit_reached`` even after the
    operation's id has left the dedupe retention (a profile sent again months later)."""
    return f"care:{name}:{occasion}" if occasion else f"care:{name}"


def moment_plan(program: CompiledProgram, op_id: str, member: str, at_ms: int, now_ms: int, moment: CareMoment,
                name: str, occasion: str = "", once_until_ms: int = 0) -> MemberPlan:
    """The gift of ``moment`` as one operation: its bundle, and a ``care`` effect first; once per
    occasion by its id and by ``once_field`` (kept until ``once_until_ms``; 0: for good)."""
    op = Operation(ids.EventId(op_id), ids.MemberId(member), at_ms, fingerprint("care", name, occasion))
    reason = f"care:{name}"
    r = moment.rewards
    grants: tuple[list[Any], ...] = tuple([kind, n, reason, "", 0, 0, 0] for kind, n in (("x", r.xp), ("p", r.points)) if n > 0)
    catalog = program.model.catalog
    coupons = tuple([item, catalog[item].valid_days * DAY_MS if item in catalog else 0, reason] for item in r.coupons)
    inventory = tuple([program.items[n].field, k, program.items[n].cap, 0, n] for n, k in r.items.items() if n in program.items)
    effect = pack_effect("care", {"moment": name, "title": moment.title, "occasion": occasion})
    return member_plan(program, op, now_ms, grants=grants, coupons=coupons, inventory=inventory, effects=(effect,),
                       counters=([once_field(name, occasion), 1, 1, once_until_ms],))


def welcome_id(member: str) -> str:
    return ids.derived_id(WELCOME, member)


def referral_id(referrer: str, kind: Literal["join", "purchase"], invitee: str) -> str:
    return ids.derived_id(REFERRAL, referrer, f"{kind}.{invitee}")


def welcome_plans(program: CompiledProgram, member: str, referrer: str | None, at_ms: int, now_ms: int) -> list[MemberPlan]:
    """A member joined at ``at_ms``: the welcome gift, and the referrer's ``on_join`` gift."""
    care = program.model.care
    plans = []
    if care.welcome is not None:
        plans.append(moment_plan(program, welcome_id(member), member, at_ms, now_ms, care.welcome, WELCOME))
    if referrer is not None and care.referral is not None and care.referral.on_join is not None:
        plans.append(moment_plan(program, referral_id(referrer, "join", member), referrer, at_ms, now_ms,
                                 care.referral.on_join, "referral_join", member))
    return plans


def first_purchase_plan(program: CompiledProgram, invitee: str, referrer: str, at_ms: int, now_ms: int) -> MemberPlan | None:
    referral = program.model.care.referral
    if referral is None or referral.on_first_purchase is None:
        return None
    return moment_plan(program, referral_id(referrer, "purchase", invitee), referrer, at_ms, now_ms,
                       referral.on_first_purchase, "referral_purchase", invitee)


def completed_first_purchase(program: CompiledProgram, effects: Any) -> bool:
    """Whether an answer's effects hold the completion of the referral's first-purchase quest."""
    referral = program.model.care.referral
    if referral is None:
        return False
    quest = referral.first_purchase_quest
    return any(e.get("type") == "quest_completed" and e.get("data", {}).get("quest") == quest for e in effects)


def cares(program: CompiledProgram, event: Any, result: Any) -> bool:
    """Whether an applied event starts a care moment (its join event, or the completion of the
    referral's first-purchase quest): checked before ``after_events`` is called, so that every
    other purchase costs a set lookup and a look at its effects, no call."""
    return event.type == program.model.care.join_event or completed_first_purchase(program, result.effects)


def check_referrer(member: str, referrer: str, chain: Mapping[str, str | None]) -> None:
    """Refuse a referral that closes a loop: ``chain`` maps each member up the referrer's chain
    (the referrer's referrer, and so on, as far as it was read) to its own referrer."""
    seen, at = {referrer}, referrer
    for _ in range(REFERRAL_DEPTH):
        up = chain.get(at)
        if up is None:
            return
        if up == member:
            raise InvalidInput(f"would close a loop of referrals ({member} -> {referrer} -> ... -> {member})",
                               field="referrer")
        if up in seen:
            return  # a loop above, among others: not this member's to close
        seen.add(up)
        at = up


# --- birthdays ---------------------------------------------------------------------------------


def birthday_window(birthday: str, when: str, year: int, tz: ZoneInfo) -> tuple[int, int]:
    """(start, end) ms of the birthday's day, week (Monday first) or month in ``year``, local. A
    29 February birthday falls on the 28th in a common year."""
    month, day = int(birthday[:2]), int(birthday[3:])
    day = min(day, calendar.monthrange(year, month)[1])
    on = date(year, month, day)
    if when == "week":
        first = on - timedelta(days=on.weekday())
        last = first + timedelta(days=7)
    elif when == "month":
        first = on.replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1)
    else:
        first, last = on, on + timedelta(days=1)
    return _local_ms(first, tz), _local_ms(last, tz)


def _local_ms(day: date, tz: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)


def birthday_job(member: str, birthday: str, when: str, now_ms: int, tz: ZoneInfo) -> tuple[str, int]:
    """(job id, due ms) of the member's next birthday gift: this year's while its day (week,
    month) has not ended, else next year's. Due at its start (now, when it has begun)."""
    year = datetime.fromtimestamp(now_ms / 1000, tz).year
    for y in (year, year + 1):
        start, end = birthday_window(birthday, when, y, tz)
        if now_ms < end:
            return job_id(BIRTHDAY, member, y), start
    raise AssertionError("unreachable: next year's window ends after now")  # pragma: no cover


def birthday_plan(job: Job, program: CompiledProgram, now_ms: int, birthday: str | None) -> MemberPlan | None:
    """The gift of a birthday job, on the job's id; None when the programme has no birthday gift
    or the member's birthday is gone from the profile."""
    moment = program.model.care.birthday
    if moment is None or birthday is None:
        return None
    year = int(job.param)
    until = _local_ms(date(year + 2, 1, 1), program.tz)  # the year's mark outlives any change of birthday in it
    return moment_plan(program, job.op_id, job.member, now_ms, now_ms, moment, BIRTHDAY, job.param, until)


# --- the I/O around them -------------------------------------------------------------------------

class CareMoments:
    """What the service does when a profile is written or events are applied, and the birthday
    job: reads by field through ``MemberStore``, every change through ``member.lua``."""

    def __init__(self, runner: Runner, keys: Keys, ops: OperationStore, members: MemberStore) -> None:
        self._runner, self._keys, self._ops, self._members = runner, keys, ops, members

    async def check_profile(self, member: ids.MemberId, fields: Mapping[str, str]) -> dict[str, str | None]:
        """Refuse what the profile write must not do (``InvalidInput`` naming the field, before
        anything is written): change a referrer once set, or close a loop of referrals. Returns the
        stored values of the fields the moments follow, for ``after_profile``."""
        before = dict(zip(_FOLLOWED, await self._members.profile_fields(member, _FOLLOWED)))
        referrer = fields.get("referrer")
        if referrer is not None:
            if before["referrer"] not in (None, referrer):
                raise InvalidInput(f"the member's referrer is {before['referrer']} already: it cannot change",
                                   field="referrer")
            chain: dict[str, str | None] = {}
            at: str | None = referrer
            for _ in range(REFERRAL_DEPTH):
                if at is None or at in chain:
                    break
                (up,) = await self._members.profile_fields(ids.MemberId(at), ["referrer"])
                chain[at] = up
                if up == member:
                    break
                at = up
            check_referrer(member, referrer, chain)
        return before

    async def after_profile(self, program: CompiledProgram, member: ids.MemberId, fields: Mapping[str, str],
                            before: Mapping[str, str | None], now_ms: int) -> None:
        """The moments a profile write starts: the welcome (``joined_at`` first set), the referrer's
        join gift (the referral known once the member has joined), the birthday job."""
        joined = fields.get("joined_at_ms") or before.get("joined_at_ms")
        referrer = fields.get("referrer") or before.get("referrer")
        plans: list[MemberPlan] = []
        if joined is not None and (before.get("joined_at_ms") is None or (referrer and not before.get("referrer"))):
            # At now, not at joined_at (which may be years back, past the dedupe retention: a
            # welcome dated then could not be told apart from a second one).
            plans = welcome_plans(program, member, referrer, now_ms, now_ms)
            if before.get("joined_at_ms") is not None:  # joined before: only the referral is new
                plans = [p for p in plans if p.op.member != member]
        birthday = program.model.care.birthday
        if "birthday" in fields and birthday is not None and fields["birthday"] != before.get("birthday"):
            job, due = birthday_job(member, fields["birthday"], birthday.when, now_ms, program.tz)
            await self._runner.call(ZADD, [jobs_key(self._keys, shard_of(member))], [due, job])
        for result in await self._ops.apply_many(plans, program) if plans else ():
            if isinstance(result, Exception):
                raise result

    async def after_batch(self, program: CompiledProgram, outcomes: Sequence[tuple[Any, Any]], now_ms: int) -> None:
        """A batch of events applied (or answered duplicate: a retry after a lost reply): the care
        moments those of ``care_events`` start (``after_events``). ``outcomes``: (event, its result)."""
        if not program.care_events:
            return
        cared = [(e, o) for e, o in outcomes
                 if e.type in program.care_events and isinstance(o, OpResult)
                 and o.status in (OpStatus.APPLIED, OpStatus.DUPLICATE) and cares(program, e, o)]
        if cared:
            await self.after_events(program, cared, now_ms)

    async def after_events(self, program: CompiledProgram, applied: list[tuple[Any, Any]], now_ms: int) -> None:
        """Events of the programme's ``care_events`` that applied: the welcome at the join event,
        the referrer's gift at an invitee's first purchase. ``applied``: (event, its result)."""
        care = program.model.care
        plans: list[MemberPlan] = []
        for event, result in applied:
            if event.type == care.join_event:
                (referrer,) = await self._members.profile_fields(event.member, ["referrer"])
                plans += welcome_plans(program, event.member, referrer, event.at_ms, now_ms)
            if completed_first_purchase(program, result.effects):
                (referrer,) = await self._members.profile_fields(event.member, ["referrer"])
                plan = first_purchase_plan(program, event.member, referrer, event.at_ms, now_ms) if referrer else None
                if plan is not None:
                    plans.append(plan)
        for result in await self._ops.apply_many(plans, program) if plans else ():
            if isinstance(result, Exception):
                raise result

    def birthday_task(self) -> Task:
        """The ``birthday`` job: next year's job first (a crash after it loses nothing), then the
        gift, once a year by the job's id."""

        async def run(job: Job, program: CompiledProgram, now_ms: int) -> None:
            moment = program.model.care.birthday
            (birthday,) = await self._members.profile_fields(job.member, ["birthday"])
            if moment is None or birthday is None:
                return
            _, end = birthday_window(birthday, moment.when, int(job.param), program.tz)
            following, due = birthday_job(job.member, birthday, moment.when, max(now_ms, end), program.tz)
            await self._runner.call(ZADD, [jobs_key(self._keys, shard_of(job.member))], ["NX", due, following])
            (given,) = await self._members.state_fields(job.member, [once_field(BIRTHDAY, job.param)])
            plan = birthday_plan(job, program, now_ms, birthday) if given is None else None
            if plan is not None:
                await self._tell(program, moment.outreach, Message(
                    job.op_id, job.member, BIRTHDAY, {"title": moment.title, "birthday": birthday, "year": int(job.param)},
                    now_ms))
                await self._ops.apply(plan, program)

        return run


    async def _tell(self, program: CompiledProgram, outreach: bool, message: Message) -> None:
        """The moment's webhook, when it asks for one and the programme has ``[webhooks]``: in the
        outbox (once by the message's id, the moment's own) before the gift is applied, so a crash
        between the two loses neither."""
        if outreach and program.model.webhooks is not None:
            await enqueue(self._runner, self._keys, message)

    def expiring_task(self) -> Task:
        """The ``expiring`` job, the programme's days before a lot's expiry: the notice of the
        points left in it (none left, nothing said), on the job's id: once."""

        async def run(job: Job, program: CompiledProgram, now_ms: int) -> None:
            notice = program.model.care.points_expiring
            expiry = int(job.param)
            if notice is None or now_ms >= expiry:
                return
            left = await self._members.points_expiring_at(job.member, expiry)
            if left <= 0:
                return
            op = Operation(job.op_id, job.member, now_ms, fingerprint("care", "points_expiring", str(expiry)))
            effect = pack_effect("care", {"moment": "points_expiring", "title": notice.title, "occasion": str(expiry),
                                          "points": left})
            await self._tell(program, notice.outreach, Message(
                job.op_id, job.member, "points_expiring", {"title": notice.title, "points": left, "expires_at_ms": expiry},
                now_ms))
            await self._ops.apply(member_plan(program, op, now_ms, effects=(effect,)), program)

        return run

    def dormancy_task(self) -> Task:
        """The ``dormancy`` job: active since it was due (``la``, written by member.lua), it moves
        itself to ``la`` + the programme's days (the scheduler leaves a job whose time moved);
        otherwise it marks the member dormant, once a spell (``rk:dormant:<member>:<la>``), which
        the member's return ends (member.lua's wake-up, ARGV[5])."""

        async def run(job: Job, program: CompiledProgram, now_ms: int) -> None:
            dormancy = program.model.care.dormancy
            if dormancy is None:
                return  # the programme dropped dormancy: the job is done
            last, mark = await self._members.profile_fields(job.member, ["la", "dm"])
            if mark is not None:
                return  # dormant already: its return schedules the job again
            span = dormancy.after_days * DAY_MS
            active_ms = int(last) if last is not None else job.due_ms - span
            if now_ms - active_ms < span:
                key = jobs_key(self._keys, shard_of(job.member))
                await self._runner.call(ZADD, [key], ["XX", active_ms + span, job.id])
                return
            plan = dormant_plan(program, job.member, active_ms, now_ms)
            await self._tell(program, dormancy.outreach, Message(
                plan.op.id, job.member, "dormant", {"title": dormancy.title, "last_active_ms": active_ms}, now_ms))
            await self._ops.apply(plan, program)

        return run


def dormant_id(member: str, active_ms: int) -> str:
    return ids.derived_id("dormant", member, active_ms)


def dormant_plan(program: CompiledProgram, member: str, active_ms: int, now_ms: int) -> MemberPlan:
    """A member marked dormant: the ``care`` effect ("we miss you") and the mark ``dm`` (since when
    the member was last active), which the return event's wake-up gift then ends."""
    dormancy = program.model.care.dormancy
    assert dormancy is not None
    op = Operation(ids.EventId(dormant_id(member, active_ms)), ids.MemberId(member), now_ms,
                   fingerprint("care", "dormant", str(active_ms)))
    effect = pack_effect("care", {"moment": "dormant", "title": dormancy.title, "occasion": str(active_ms)})
    return member_plan(program, op, now_ms, effects=(effect,), marks=(["dm", active_ms],))


_FOLLOWED = ["joined_at_ms", "referrer", "birthday"]
