"""What ``rekindle verify`` checks of collect cards, from Redis alone.

- **Conservation**, for every card of every campaign: issued == held + in transfer + consumed.
  *Issued* is what the campaign's draws settled plus its pending draws whose member step applied;
  *held* the members' counts (the totals verify gathers over every member); *in transfer* the
  pending gifts whose giver's step applied and whose receiver's has not; *consumed* what settled
  combines took plus the pending combines whose member step applied. A pending entry is counted
  by whether its member steps are in the members' dedupe (``engine.verify.step_applied``), so the
  check holds at any moment a crash leaves, not only once the sweep has run.
- **Budgets**: no card issued past its daily budget on any day (``budgets_kept``, per object).
- **Payouts**: a split recorded whole pays the pool exactly: the shares recorded add up to the
  pool's whole points, and those points' cents plus what the shop keeps are the pool.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import msgpack

from engine.config import CompiledProgram
from engine.crossing import EntryState
from engine.keys import Keys
from engine.verify import step_applied
from games.cards import rules
from games.cards.config import Campaign, Campaigns
from games.cards.plans import CARDS, COMBINE, DRAW, GIFTS, GIVE, card_field
from games.cards.store import budgets


def _entries(raw: Mapping[bytes, bytes]) -> list[tuple[list[Any], list[Any]]]:
    """The pending entries of an object: (record, member steps) each."""
    out = []
    for value in raw.values():
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(value)
        record = next(unpacker)
        if EntryState(record[0]) is EntryState.PENDING:
            out.append((record, next(unpacker)))
    return out


async def _applied(redis: Any, keys: Keys, step: list[Any]) -> bool:
    _, member, op_id, at_ms, _ = step
    return await step_applied(redis, keys, member, op_id, at_ms)


async def conservation(redis: Any, keys: Keys, program: CompiledProgram | None, held: Mapping[str, int]) -> list[str]:
    section = program.games.get(CARDS) if program is not None else None
    if not isinstance(section, Campaigns):
        return []
    out: list[str] = []
    for name, terms in section.root.items():
        out += await _campaign(redis, keys, name, terms, held)
    return out


async def _campaign(redis: Any, keys: Keys, name: str, terms: Campaign, held: Mapping[str, int]) -> list[str]:
    tag = keys.object(CARDS, name)
    pipe = redis.pipeline(transaction=True)  # counters and entries as of one moment (a settle moves both)
    pipe.hgetall(f"{tag}:n")
    pipe.hgetall(f"{tag}:e")
    raw_counters, raw_entries = await pipe.execute()
    counters = {_text(k): int(v) for k, v in raw_counters.items()}
    issued: Counter[str] = Counter()
    consumed: Counter[str] = Counter()
    for field, value in counters.items():
        if field.startswith("s:iss:"):
            issued[field.rsplit(":", 1)[1]] += value
        elif field.startswith("s:used:"):
            consumed[field[len("s:used:"):]] += value
    for record, steps in _entries(raw_entries):
        undo = record[2]
        for step in steps:
            if step[0] in (DRAW, COMBINE) and await _applied(redis, keys, step):
                for field, delta in zip(undo[::2], undo[1::2]):
                    if field.startswith("iss:"):
                        issued[field.rsplit(":", 1)[1]] += int(delta)
                    elif field.startswith("used:"):
                        consumed[field[len("used:"):]] += int(delta)
    in_transfer: Counter[str] = Counter()
    # (Counts and members are read at different moments: the check is exact on a store at rest,
    # as after a rehearsal or a crash; under traffic a draw settling between reads may show.)
    async for key in redis.scan_iter(match=f"{keys.prefix}:{{{GIFTS}:{name}.*}}:e", count=1000):
        for _, steps in _entries(await redis.hgetall(key)):
            give, receive = steps
            if give[0] == GIVE and await _applied(redis, keys, give) and not await _applied(redis, keys, receive):
                in_transfer[give[4][1]] += 1
    out = []
    for card in terms.deck:
        holding = held.get(card_field(name, card), 0)
        if issued[card] != holding + in_transfer[card] + consumed[card]:
            out.append(f"{name}: card {card!r} issued {issued[card]}, but held {holding} + in transfer "
                       f"{in_transfer[card]} + consumed {consumed[card]} = {holding + in_transfer[card] + consumed[card]}")
    out += _payouts(name, terms, {_text(k): _text(v) for k, v in (await redis.hgetall(f"{tag}:b")).items()})
    return out


def _payouts(name: str, terms: Campaign, state: Mapping[str, str]) -> list[str]:
    if "split:n" not in state:
        return []
    sharers, paid, total = int(state["split:n"]), int(state.get("split:paid", 0)), int(state.get("split:sum", 0))
    recorded = sum(int(v) for k, v in state.items() if k.startswith("share:"))
    out = []
    if recorded != total:
        out.append(f"{name}: the shares recorded add up to {recorded}, the split's total says {total}")
    if paid > sharers:
        out.append(f"{name}: {paid} shares recorded for {sharers} members")
    if paid == sharers and terms.payout == "points":
        settled = rules.settle_points(terms.pool_cents, [str(i) for i in range(sharers)], terms.cents_per_point)
        points = sum(n for _, n in settled.shares)
        if total != points or points * terms.cents_per_point + settled.kept_cents != terms.pool_cents:
            out.append(f"{name}: {total} points paid for a pool of {terms.pool_cents} cents among {sharers} "
                       f"(its split is {points} points, {settled.kept_cents} cents kept)")
    return out


def budgets_kept(program: CompiledProgram | None, kind: str, obj: str, counters: Mapping[str, int]) -> list[str]:
    """No card issued past its daily budget on any day (a campaign's object; a giver's has none)."""
    if kind != CARDS or program is None:
        return []
    section = program.games.get(CARDS)
    terms = section.root.get(obj) if isinstance(section, Campaigns) else None
    if terms is None:
        return []
    limits = dict(zip(terms.deck, budgets(terms)))
    out = []
    for field, value in counters.items():
        if field.startswith("iss:"):
            _, day, card = field.split(":", 2)
            if not rules.issued_ok(value, limits.get(card)):
                out.append(f"card {card!r}: {value} issued on {day}, budget {limits.get(card)}")
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
