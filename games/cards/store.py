"""Collect cards on the cross-slot seam: objects decide, member steps follow (``engine.crossing``).

- **Draw**: the process draws (``rules.draw``, odds over the cards within today's budget, pity
  read from the member's state) on the issued counts of the day it last saw; the campaign's object
  (``lua/cards.lua``) makes the budget final: it gives the card drawn if its budget has room, else
  the first fallback with room (``rules.fallback_order``), else nothing (the chance is not spent;
  the process draws once more on the counts the object answered). The entry records the card;
  the member step spends the chance and adds the card.
- **Gift**: the giver's object (one per campaign and giver) opens the gift's entry; the giver's
  step takes the card (refused whole when none is held: the gift is released), the receiver's
  adds it. A kill -9 between them leaves the entry pending: the sweep finishes it, so a card is
  never lost or doubled, and until then ``rekindle verify`` counts it as in transfer.
- **Combine**: the campaign's object takes the member's place among the combiners (once per
  member) and the cards of the set; the member step takes the set. The split job at the deadline
  is scheduled before the first combine a process sends.
- **Split** (``cards_split``, at the deadline): the object freezes the combiners (once no entry
  is pending), then each member's share (``rules.split_pool`` by place, so a batch needs no other)
  is paid by the member script under a derived id, a batch at a time, each batch recorded in the
  object after it is paid: a restart half-way pays the rest, and nobody twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from engine import ids
from engine.config import CompiledProgram, item_field
from engine.crossing import EntryState, ObjectRef, entry_key, pack_steps, with_decided
from engine.errors import Refused
from engine.jobs import ZADD, DeadJob, Job, job_id, jobs_key, shard_of
from engine.plugins import Context, epoch_ms, section_entry
from engine.scripts import Command
from engine.store import OpResult, OpStatus
from games.cards import rules
from games.cards.config import Campaign, Campaigns, draw_item
from games.cards.plans import (
    CARDS, GIFTS, card_field, combine_step, draw_step, gift_steps, payout_plan, pity_field,
)

SPLIT = "cards_split"  #: the job kind that splits a campaign's pool at its deadline
SPLIT_BATCH = 200  #: shares paid (one pipeline) and recorded per step of the split
_HMGET = Command("HMGET")


def campaign_of(program: CompiledProgram, name: str) -> Campaign:
    return section_entry(program, CARDS, Campaigns, name, "collect-cards campaign", "campaign")


def campaign_object(name: str) -> ObjectRef:
    return ObjectRef(CARDS, name)


def gifts_object(name: str, giver: str) -> ObjectRef:
    return ObjectRef(GIFTS, f"{name}.{giver}")


def campaign_keys(ctx: Context, name: str) -> list[str]:
    """The seam's three keys, then the campaign's state, combiners and sharers (``lua/cards.lua``)."""
    obj = campaign_object(name)
    tag = ctx.keys.object(obj.kind, obj.id)
    return [*obj.keys(ctx.keys), f"{tag}:b", f"{tag}:c", f"{tag}:w"]


class Issued:
    """Each card's issued count of a day, as this process last heard it from the campaign's object
    (every draw's answer carries them): what the next draw's odds are built on. Stale by at most
    the draws of other processes since; the object's script has the last word on every budget."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], list[int]] = {}

    def get(self, name: str, day: str) -> list[int] | None:
        return self._counts.get((name, day))

    def forget(self, name: str, day: str) -> None:
        self._counts.pop((name, day), None)

    def put(self, name: str, day: str, counts: Sequence[Any]) -> None:
        if len(self._counts) > 1024:
            self._counts.clear()
        self._counts[(name, day)] = [int(c) for c in counts]


ISSUED = Issued()
#: The split jobs this process has scheduled (a combine schedules its campaign's before its step).
_SPLITS: set[tuple[str, str]] = set()


async def issued_today(ctx: Context, name: str, terms: Campaign, day: str) -> list[int]:
    cached = ISSUED.get(name, day)
    if cached is not None and len(cached) == len(terms.deck):
        return cached
    counters = campaign_keys(ctx, name)[1]
    raw = await ctx.runner.call(_HMGET, [counters], [f"iss:{day}:{card}" for card in terms.deck])
    counts = [int(v or 0) for v in raw]
    ISSUED.put(name, day, counts)
    return counts


def budgets(terms: Campaign) -> list[int | None]:
    out: list[int | None] = [c.daily_budget for c in terms.cards]
    if terms.universal is not None:
        out.append(terms.universal.daily_budget)
    return out


class DrawRequest(NamedTuple):
    campaign: str
    member: ids.MemberId
    op_id: ids.EventId
    at_ms: int


async def draw(ctx: Context, program: CompiledProgram, request: DrawRequest) -> OpResult:
    """One draw end to end (see the module's docstring); refusals are ``Refused`` (nothing written)
    or a ``REFUSED`` result (``no_chance`` when the chance went meanwhile: released)."""
    name, member = request.campaign, request.member
    terms = campaign_of(program, name)
    obj = campaign_object(name)
    key = entry_key(member, request.op_id)
    chances, pity = await ctx.members.state_fields(member, [item_field(draw_item(name)), pity_field(name)])
    step = draw_step(name, terms, member, request.op_id, request.at_ms, int(pity or 0))
    if int(chances or 0) < 1:
        return await _existing_or(ctx, program, obj, key, with_decided([step], (0,)), request.at_ms,
                                  Refused("no_chance", "the member has no draw of this campaign left", field="campaign"))
    day, _ = program.calendar.day(request.at_ms)
    deck, limits = terms.deck, budgets(terms)
    due = rules.pity_due(int(pity or 0), terms.pity_draws)
    counts = await issued_today(ctx, name, terms, day)
    fresh = False
    source = ctx.draws(f"{request.member}:{request.op_id}")
    for _ in range(3):  # the object found no room on the counts drawn from: again, on its counts
        slots = rules.slots(terms, dict(zip(deck, counts)))
        total = rules.draw_range(slots, due)
        if total == 0:
            if fresh:
                break
            ISSUED.forget(name, day)  # the counts heard may be stale (a released draw gave a unit back)
            counts, fresh = await issued_today(ctx, name, terms, day), True
            continue
        chosen = rules.draw(slots, source.randbelow(total), due)
        assert chosen is not None
        order = [chosen, *rules.fallback_order(slots, chosen)]
        candidates = [v for i in order for v in (i, deck[i], -1 if limits[i] is None else limits[i])]
        reply = await ctx.crossing.open(obj, request.at_ms, [
            "draw", key, request.at_ms, day, pack_steps([step]), len(order), *candidates, *deck,
        ], extra_keys=campaign_keys(ctx, name)[3:])
        code = int(reply[0])
        if code == 3:
            raise TimeoutError("the draw took too long to reach its campaign; send it again")
        if code == 0:
            return await _answer_existing(ctx, program, int(reply[1]), _text(reply[2]), with_decided([step], (0,)),
                                          request.at_ms, "no_chance")
        if code == 2:
            reason = _text(reply[1])
            if reason == "ended":
                raise Refused("ended", "this campaign's pool is being split: draws have ended", field="campaign")
            counts, fresh = [int(c) for c in reply[2:]], True
            ISSUED.put(name, day, counts)
            continue
        ISSUED.put(name, day, reply[2:])
        decided = with_decided([step], (int(reply[1]),))
        outcome = await ctx.crossing.finish(program, obj, decided, request.at_ms, opened_now=True)
        return _renamed(outcome.result, "no_chance")
    # A retry of a draw that took the day's last unit finds its entry, and is answered by it.
    return await _existing_or(ctx, program, obj, key, with_decided([step], (0,)), request.at_ms, Refused(
        "no_cards_today", "every card's issue budget for today is spent: draw again tomorrow", field="campaign"))


class GiftRequest(NamedTuple):
    campaign: str
    giver: ids.MemberId
    receiver: ids.MemberId
    card: str
    op_id: ids.EventId
    at_ms: int


async def gift(ctx: Context, program: CompiledProgram, request: GiftRequest) -> OpResult:
    """One gift end to end: the giver's object opens it, the giver's and the receiver's steps."""
    name = request.campaign
    obj = gifts_object(name, request.giver)
    key = entry_key(request.giver, request.op_id)
    (held,) = await ctx.members.state_fields(request.giver, [card_field(name, request.card)])
    steps = gift_steps(name, request.card, request.giver, request.receiver, request.op_id, request.at_ms)
    if int(held or 0) < 1:
        return await _existing_or(ctx, program, obj, key, tuple(steps), request.at_ms,
                                  Refused("card_not_held", "the member holds no such card to give", field="card"))
    reply = await ctx.crossing.open(obj, request.at_ms, ["gift", key, request.at_ms, request.card, pack_steps(steps)])
    code = int(reply[0])
    if code == 3:
        raise TimeoutError("the gift took too long to reach its outbox; send it again")
    decided = tuple(steps)  # nothing decided: a gift's steps are its terms alone
    if code == 0:
        return await _answer_existing(ctx, program, int(reply[1]), _text(reply[2]), decided, request.at_ms,
                                      "card_not_held")
    outcome = await ctx.crossing.finish(program, obj, decided, request.at_ms, opened_now=True)
    return _renamed(outcome.result, "card_not_held")


class CombineRequest(NamedTuple):
    campaign: str
    member: ids.MemberId
    op_id: ids.EventId
    at_ms: int


async def combine(ctx: Context, program: CompiledProgram, request: CombineRequest) -> OpResult:
    """One combine end to end: the set chosen from what the member holds (``rules.can_combine``)."""
    name, member = request.campaign, request.member
    terms = campaign_of(program, name)
    obj = campaign_object(name)
    key = entry_key(member, request.op_id)
    held = await holdings(ctx, name, terms, member)
    universal = terms.universal.name if terms.universal is not None else None
    taken = rules.can_combine(held, terms.types, universal, terms.universal_stands_for)
    if taken is None:
        placeholder = [combine_step(name, member, request.op_id, request.at_ms, {})]
        return await _existing_or(ctx, program, obj, key, placeholder, request.at_ms,
                                  Refused("no_full_set", "the member does not hold a full set", field="campaign"))
    await schedule_split(ctx, name, terms)
    step = combine_step(name, member, request.op_id, request.at_ms, taken)
    pairs = [v for card, n in sorted(taken.items()) for v in (card, n)]
    reply = await ctx.crossing.open(obj, request.at_ms, [
        "combine", key, request.at_ms, member, pack_steps([step]), len(taken), *pairs,
    ], extra_keys=campaign_keys(ctx, name)[3:])
    code = int(reply[0])
    if code == 3:
        raise TimeoutError("the combine took too long to reach its campaign; send it again")
    decided = (step,)
    if code == 0:
        return await _answer_existing(ctx, program, int(reply[1]), _text(reply[2]), decided, request.at_ms,
                                      "no_full_set")
    if code == 2:
        reason = _text(reply[1])
        raise Refused(reason, _REASONS[reason], field="campaign")
    outcome = await ctx.crossing.finish(program, obj, decided, request.at_ms, opened_now=True)
    return _renamed(outcome.result, "no_full_set")


_REASONS = {
    "already_combined": "the member has combined a set of this campaign already",
    "ended": "this campaign's pool is being split: combining has ended",
}


async def holdings(ctx: Context, name: str, terms: Campaign, member: ids.MemberId) -> dict[str, int]:
    """The member's cards of the campaign, by card (those at 0 included)."""
    values = await ctx.members.state_fields(member, [card_field(name, card) for card in terms.deck])
    return {card: int(v or 0) for card, v in zip(terms.deck, values)}


async def _existing_or(ctx: Context, program: CompiledProgram, obj: ObjectRef, key: str, steps: Sequence[Any],
                       at_ms: int, refusal: Refused) -> OpResult:
    """A request the member's state refuses may be the retry of one that spent what it needed:
    its entry answers it (the duplicate of what it applied, or its decision); without one, the
    refusal, nothing written."""
    entry = await ctx.crossing.status(obj, key)
    if entry is None:
        raise refusal
    result = (await ctx.crossing.answer_existing(program, entry.state, entry.reason, steps, at_ms)).result
    return _renamed(result, _GAME_REASON.get(refusal.code, refusal.code))


async def _answer_existing(ctx: Context, program: CompiledProgram, state: int, reason: str, steps: Sequence[Any],
                           at_ms: int, refusal: str) -> OpResult:
    """A retry of an entry the object holds, answered as the first answer was (the member
    script's ``insufficient_items`` under the game's own reason)."""
    outcome = await ctx.crossing.answer_existing(program, EntryState(state), reason, steps, at_ms)
    return _renamed(outcome.result, refusal)


#: The reason a retry's released entry is answered with, by the pre-check's refusal.
_GAME_REASON = {"no_chance": "no_chance", "no_cards_today": "no_chance", "card_not_held": "card_not_held",
                "no_full_set": "no_full_set"}


def _renamed(result: OpResult, refusal: str) -> OpResult:
    """The member script's ``insufficient_items`` is the game's own reason for it."""
    if result.status is OpStatus.REFUSED and result.refusal == "insufficient_items":
        return OpResult(OpStatus.REFUSED, refusal=refusal)
    return result


# --- the split at the deadline -----------------------------------------------------------------


def split_job_id(name: str, deadline_ms: int) -> str:
    return job_id(SPLIT, name, deadline_ms)


async def schedule_split(ctx: Context, name: str, terms: Campaign) -> None:
    """The campaign's split job, due at its deadline: in before the first combine this process sends."""
    deadline = epoch_ms(terms.deadline)
    assert deadline is not None
    job, key = split_job_id(name, deadline), jobs_key(ctx.keys, shard_of(name))
    if (key, job) in _SPLITS:
        return
    await ctx.runner.call(ZADD, [key], ["NX", deadline, job])
    _SPLITS.add((key, job))


def share_of(terms: Campaign, place: int, sharers: int) -> int:
    """The points of the member at ``place`` (0: the earliest combiner) among ``sharers``
    (``rules.split_pool`` over the pool's whole points, the remainder to the earliest); 0 for a
    coupon payout."""
    if terms.payout != "points" or sharers == 0:
        return 0
    points = rules.points_of(terms.pool_cents, terms.cents_per_point)
    each, remainder = divmod(points, sharers)
    return each + (1 if place < remainder else 0)


def split_task(ctx: Context) -> Any:
    """The ``cards_split`` job: freeze the combiners, pay each share, a batch at a time."""

    async def run(job: Job, program: CompiledProgram, now_ms: int) -> None:
        name, deadline = job.member, int(job.param)
        terms = campaign_of(program, name)
        moved = epoch_ms(terms.deadline)
        if moved != deadline:  # the designer moved the deadline: the split is the new one's
            assert moved is not None
            await ctx.runner.call(ZADD, [jobs_key(ctx.keys, shard_of(name))], ["NX", moved, split_job_id(name, moved)])
            return
        script, keys = ctx.crossing.script(CARDS), campaign_keys(ctx, name)
        reply = await ctx.runner.call(script, keys, ["freeze", "", now_ms, deadline])
        if int(reply[0]) == 0:
            raise RuntimeError(f"cards campaign {name}: {_text(reply[1])} at its split; splitting later")
        sharers, paid = int(reply[1]), int(reply[2])
        while paid < sharers:
            members = [_text(m) for m in await ctx.runner.call(script, keys, ["sharers", "", paid, paid + SPLIT_BATCH])]
            if not members:  # the sharers' list lost members (a key deleted by hand): an operator's to look at
                raise DeadJob(f"cards campaign {name}: {sharers} sharers recorded, the list ends at {paid}")
            shares = [share_of(terms, paid + i, sharers) for i in range(len(members))]
            plans = [payout_plan(program, name, m, deadline, now_ms, points, terms.coupon if terms.payout == "coupon" else None,
                                 paid + i + 1, sharers)
                     for i, (m, points) in enumerate(zip(members, shares))]
            for result in await ctx.ops.apply_many(plans, program):
                if isinstance(result, Exception):
                    raise result  # retried later: the batch's paid shares answer duplicate then
                if result.status not in (OpStatus.APPLIED, OpStatus.DUPLICATE):
                    raise RuntimeError(f"cards campaign {name}: a share was refused ({result.status.value} "
                                       f"{result.refusal}); splitting later")
            pairs = [v for m, points in zip(members, shares) for v in (m, points)]
            paid = int(await ctx.runner.call(script, keys, ["paid", "", paid, sum(shares), *pairs]))

    return run


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
