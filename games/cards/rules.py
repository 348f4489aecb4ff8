"""The collect-cards rules, pure: the draw and its fallback, pity, combining, the split of the pool.

Every rule is a function of plain data, so it is property-tested (``tests/games/test_cards_rules.py``);
the random number comes from the caller (``secrets.randbelow(draw_range(...))`` in the service, a
seed in tests and the simulator).

How a draw goes, and who decides what:

1. The process reads today's issued count of each card (the campaign's object) and the member's
   pity counter, builds the ``slots`` and draws: ``draw(slots, u, pity_due)`` with ``u`` uniform in
   ``[0, draw_range(slots, pity_due))``. Nothing eligible (every budget spent today): no draw, and
   the chance is not spent.
2. The object's script makes the budget check final (a concurrent draw may have taken the last
   unit of the drawn type): it gets the drawn card and ``fallback_order(slots, drawn)``, and gives
   the first of them whose budget still has room, or nothing (the chance is then not spent and
   the process may draw again on fresh counts).
3. The member's counter moves by ``pity_after(draws_since_rare, got_rare)`` with what was *given*.

The odds a member is shown are per card type *while it is within today's budget*: a type whose
budget is spent is skipped, and its share goes to the others in proportion to their weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from games.cards.config import Campaign


class Slot(NamedTuple):
    """One card a draw can give, as the draw sees it now."""

    weight: int  # its relative odds
    room: int | None  # how many more may be issued today (None: no budget)
    rare: bool = False  # what pity gives
    universal: bool = False  # the universal card


# --- budgets ---------------------------------------------------------------------------------


def room_of(issued: int, budget: int | None) -> int | None:
    """What a daily budget still allows after ``issued`` today (None: no budget; never below 0)."""
    return None if budget is None else max(0, budget - issued)


def has_room(slot: Slot) -> bool:
    return slot.room is None or slot.room > 0


def issued_ok(issued: int, budget: int | None) -> bool:
    """The budget's invariant (``rekindle verify``): never more issued in a day than its budget."""
    return issued >= 0 and (budget is None or issued <= budget)


def slots(campaign: Campaign, issued: Mapping[str, int]) -> list[Slot]:
    """The campaign's ``deck`` (card types, then the universal card) as slots, given what each
    card has issued today (a card not in ``issued``: none)."""
    out = [Slot(card.weight, room_of(issued.get(card.name, 0), card.daily_budget), card.rare) for card in campaign.cards]
    if campaign.universal is not None:
        u = campaign.universal
        out.append(Slot(u.weight, room_of(issued.get(u.name, 0), u.daily_budget), universal=True))
    return out


# --- the draw --------------------------------------------------------------------------------


def eligible_weights(cards: Sequence[Slot], pity_due: bool) -> list[int]:
    """Each card's share of a draw now, by index: its weight if its budget has room, else 0.

    Under pity (``pity_due``) with a rare card that has room, only the rare cards with room share
    the draw, by weight, a rare card of weight 0 (given by pity alone) counting as 1; with no rare
    card in budget the draw is an ordinary one and the pity waits.
    """
    if pity_due:
        rare = [max(s.weight, 1) if s.rare and has_room(s) else 0 for s in cards]
        if any(rare):
            return rare
    return [s.weight if has_room(s) else 0 for s in cards]


def draw_range(cards: Sequence[Slot], pity_due: bool) -> int:
    """The bound ``u`` is drawn under: ``u`` uniform in ``[0, draw_range)``; 0: nothing can be drawn."""
    return sum(eligible_weights(cards, pity_due))


def draw(cards: Sequence[Slot], u: int, pity_due: bool) -> int | None:
    """The index of the card ``u`` lands on (``u`` uniform in ``[0, draw_range(cards, pity_due))``),
    or None when nothing is eligible (every budget spent today).

    Card ``i`` covers ``eligible_weights(...)[i]`` consecutive values of ``u``, so among the cards
    within today's budget each is drawn with exactly its weight's share; a card whose budget is
    spent is skipped (its odds go to the others). When pity is due and a rare card has room, the
    draw is among the rare cards with room (by weight).
    """
    shares = eligible_weights(cards, pity_due)
    total = sum(shares)
    if total == 0:
        return None
    if not 0 <= u < total:
        raise ValueError(f"u={u} is outside [0, {total})")
    for i, share in enumerate(shares):
        if u < share:
            return i
        u -= share
    raise AssertionError("unreachable: u < total")  # pragma: no cover


def fallback_order(cards: Sequence[Slot], drawn: int) -> list[int]:
    """What the object's script gives, in order, when the drawn card's budget was taken by a
    concurrent draw: the other *common* cards (neither rare nor the universal card) with a
    positive weight and room now, heaviest first, ties in the campaign's order. The script gives
    the first that still has room; none: nothing is given and the chance is not spent.

    A rare or universal card is never a fallback: those are given by their own odds or by pity,
    never by a race at the budget's edge (a pity draw that lost its rare card gives a common one,
    and the pity stays due).
    """
    others = [i for i, s in enumerate(cards) if i != drawn and not s.rare and not s.universal and s.weight > 0
              and has_room(s)]
    return sorted(others, key=lambda i: (-cards[i].weight, i))


def give(cards: Sequence[Slot], drawn: int, alternatives: Sequence[int]) -> int | None:
    """What the object's script decides, for the model and the tests: the drawn card if its
    budget has room, else the first alternative with room, else None."""
    for i in (drawn, *alternatives):
        if has_room(cards[i]):
            return i
    return None


# --- pity ------------------------------------------------------------------------------------


def pity_due(draws_since_rare: int, pity_draws: int | None) -> bool:
    """Whether the member's next draw is a pity draw: ``pity_draws`` draws or more in a row without
    a rare card (more: the pity waited for a rare card's budget). No pity: never."""
    return pity_draws is not None and draws_since_rare >= pity_draws


def pity_after(draws_since_rare: int, got_rare: bool) -> int:
    """The member's counter after a draw that gave a card: back to 0 with a rare card, else one
    more. A draw that gave nothing does not move it."""
    return 0 if got_rare else draws_since_rare + 1


# --- combining -------------------------------------------------------------------------------


def can_combine(held: Mapping[str, int], types: Sequence[str], universal: str | None,
                stands_for: int) -> dict[str, int] | None:
    """The cards one combine consumes, by card: one of each type of ``types``, universal cards
    standing in for the types the member lacks (one each, at most ``stands_for`` of them). Real
    cards always come first: a universal card is used only for a type the member holds none of.
    None when the member cannot make a full set."""
    if len(set(types)) != len(types) or (universal is not None and universal in types):
        raise ValueError("the types must be distinct and not include the universal card")
    missing = [t for t in types if held.get(t, 0) < 1]
    if not missing:
        return {t: 1 for t in types}
    if universal is None or len(missing) > stands_for or held.get(universal, 0) < len(missing):
        return None
    return {**{t: 1 for t in types if t not in missing}, universal: len(missing)}


def consume(held: Mapping[str, int], taken: Mapping[str, int]) -> dict[str, int]:
    """``held`` less ``taken`` (cards at 0 dropped); refused when a card would go below 0."""
    out = dict(held)
    for card, n in taken.items():
        left = out.get(card, 0) - n
        if n < 0 or left < 0:
            raise ValueError(f"cannot take {n} of {card!r} from {held.get(card, 0)}")
        out[card] = left
    return {card: n for card, n in out.items() if n}


# --- the split of the pool -------------------------------------------------------------------


def split_pool(pool: int, combiners_in_order: Sequence[str]) -> list[tuple[str, int]]:
    """The shares of ``pool`` (cents, or points: any whole unit) among the members who combined,
    earliest first: each gets ``pool // n``, and the first ``pool % n`` one unit more, so the
    shares add up to the pool exactly and differ by at most one. Nobody combined: ``[]``, and the
    pool stays with the shop (the settlement reports it as kept)."""
    if pool < 0:
        raise ValueError(f"a pool of {pool} is negative")
    if len(set(combiners_in_order)) != len(combiners_in_order):
        raise ValueError("a member shares the pool once: the combiners must be distinct")
    n = len(combiners_in_order)
    if n == 0:
        return []
    each, remainder = divmod(pool, n)
    return [(member, each + (1 if i < remainder else 0)) for i, member in enumerate(combiners_in_order)]


def points_of(cents: int, cents_per_point: int) -> int:
    """Whole points for ``cents``: rounded down (the cents short of one more point stay with the shop)."""
    if cents < 0 or cents_per_point < 1:
        raise ValueError(f"cannot convert {cents} cents at {cents_per_point} a point")
    return cents // cents_per_point


class Settlement(NamedTuple):
    """A points payout: what each member who combined gets, and what the shop keeps, in cents:
    ``sum(points) * cents_per_point + kept_cents == pool_cents`` exactly."""

    shares: list[tuple[str, int]]  # (member, points), earliest combiner first
    kept_cents: int  # the pool's cents short of a whole point, or the whole pool when nobody combined


def settle_points(pool_cents: int, combiners_in_order: Sequence[str], cents_per_point: int) -> Settlement:
    """The pool paid as points: converted to whole points once (``points_of``: rounded down), then
    split by ``split_pool`` (the earliest combiners get the remainder, one point each). The shop
    keeps less than one point's worth, or the whole pool when nobody combined."""
    points = points_of(pool_cents, cents_per_point)
    shares = split_pool(points, combiners_in_order)
    paid = sum(n for _, n in shares) * cents_per_point
    return Settlement(shares, pool_cents - paid)
