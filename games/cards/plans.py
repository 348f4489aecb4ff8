"""Collect-cards plans, pure: the member steps of a draw, a gift and a combine, and their reversals.

A member's cards are counted items in the member's state (``card_field``: ``i:cards:<campaign>:<card>``)
that no rule, quest or tier may grant (the game declares only the draw chances, ``cards:<campaign>``):
a card comes into the game by a draw only, so what was issued is what the campaign's object counted.

- **Draw** (``DRAW``, under the draw's id): one chance spent, the card the campaign's object gave
  (the entry's decision, the last term: its index in the campaign's deck) added, and the member's
  pity counter moved (``rules.pity_after``: back to 0 with a rare card, else one more); refused
  whole (``not_eligible``) for a member outside the campaign's audience, the card back to the
  day's budget. Gifts and combines are anyone's.
- **Gift**: the giver's step (``GIVE``, under the gift's id) takes the card, refused whole when the
  giver holds none; the receiver's (``RECEIVE``, a derived id) adds it. Between the two the card is
  *in transfer*: counted by ``rekindle verify`` from the gift's pending entry.
- **Combine** (``COMBINE``, under the combine's id): one full set taken (``rules.can_combine``:
  one card of each type, universal cards standing in), refused whole when a card is missing.
- **Payout**: the share of the pool, granted by the split job under a derived id (not on the seam:
  the pool is the campaign's, counted in its object before a member is paid).

A reversal (a step that landed after its entry was released) gives back what the step took and
takes back what it gave; a card given on since cannot be taken back (refused whole, logged), which
``rekindle verify``'s conservation check then names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine import ids
from engine.clock import DAY_MS
from engine.config import CompiledProgram, item_field
from engine.crossing import Step, undo_id
from engine.operations import MemberPlan, Operation, fingerprint, member_plan, pack_effect
from engine.targeting import Packed
from games.cards.config import GAME_NAME, Campaign, Campaigns, draw_item

CARDS = GAME_NAME  #: the campaign's object kind (tag {cards:<campaign>}): budgets, combines, the split
GIFTS = "card_gifts"  #: a giver's object kind (tag {card_gifts:<campaign>.<giver>}): gifts in transfer
DRAW, GIVE, RECEIVE, COMBINE = "cards_draw", "cards_give", "cards_receive", "cards_combine"  #: member step kinds
#: A pity counter never reaches this (a limited counter's limit: the member script needs one).
PITY_LIMIT = 2**31


def card_label(campaign: str, card: str) -> str:
    """A card as the feed's ``inventory`` effects name it: ``cards:<campaign>:<card>``."""
    return f"{draw_item(campaign)}:{card}"


def card_field(campaign: str, card: str) -> str:
    """The member state field counting a card held: never a declared item, so nothing else grants it."""
    return item_field(card_label(campaign, card))


def pity_field(campaign: str) -> str:
    """The member's draws since a rare card, in the member's state."""
    return f"cp:{campaign}"


def _card_line(campaign: str, card: str, delta: int) -> list[Any]:
    return [card_field(campaign, card), delta, 0, 0, card_label(campaign, card)]


def _chance_line(campaign: str, delta: int, cap: int) -> list[Any]:
    return [item_field(draw_item(campaign)), delta, cap, 0, draw_item(campaign)]


# --- draw ------------------------------------------------------------------------------------


def draw_step(campaign: str, terms: Campaign, member: str, op_id: str, at_ms: int, pity_before: int) -> Step:
    """A draw's member step; the card is the object's decision (its deck index, the last term)."""
    deck = [[c.name, c.title, int(c.rare), 0] for c in terms.cards]
    if terms.universal is not None:
        deck.append([terms.universal.name, terms.universal.title, 0, 1])
    return Step(DRAW, ids.MemberId(member), ids.EventId(op_id), at_ms,
                (campaign, terms.chances_cap, pity_before, deck))


def drawn(step: Step) -> tuple[str, str, bool, bool]:
    """(card, title, rare, universal) the object gave a draw step."""
    _, _, _, deck, decided = step.terms
    name, title, rare, universal = deck[decided[0]]
    return name, title, bool(rare), bool(universal)


def _pity_delta(step: Step, rare: bool) -> int:
    pity_before = step.terms[2]
    return -pity_before if rare else 1  # rules.pity_after, as a change of the counter read before


def draw_audience(program: CompiledProgram, campaign: str) -> Packed | None:
    """Who may draw, as ``program`` says (None: everyone, or a campaign no longer in it)."""
    section = program.games.get(GAME_NAME)
    terms = section.root.get(campaign) if isinstance(section, Campaigns) else None
    return program.audience(terms.audience) if terms is not None else None


class DrawStep:
    """A draw: a chance spent, the card given, the pity counter moved (``engine.crossing.StepKind``)."""

    def plan(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        campaign, cap, pity_before, _, _ = step.terms
        card, title, rare, universal = drawn(step)
        op = Operation(step.op_id, step.member, step.at_ms, fingerprint(DRAW, campaign))
        effect = pack_effect("card_drawn", {"campaign": campaign, "card": card, "title": title, "rare": rare,
                                            "universal": universal, "pity": pity_before})
        # The audience is not among the terms fixed in the entry: it is read from the programme the
        # step is planned under (as a catalog redemption's is, engine/redeem.py), so an entry of an
        # earlier build plans alike. Refused ``not_eligible``, the draw releases its card.
        return member_plan(program, op, now_ms, inventory=(_chance_line(campaign, -1, cap), _card_line(campaign, card, 1)),
                           counters=([pity_field(campaign), _pity_delta(step, rare), PITY_LIMIT, 0],), effects=(effect,),
                           audience=draw_audience(program, campaign))

    def compensate(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        campaign, cap, _, _, _ = step.terms
        card, _, rare, _ = drawn(step)
        op = Operation(undo_id(step.op_id), step.member, now_ms, fingerprint("undo", step.op_id))
        return member_plan(program, op, now_ms, inventory=(_chance_line(campaign, 1, cap), _card_line(campaign, card, -1)),
                           counters=([pity_field(campaign), -_pity_delta(step, rare), PITY_LIMIT, 0],))


# --- gift ------------------------------------------------------------------------------------


def gift_steps(campaign: str, card: str, giver: str, receiver: str, op_id: str, at_ms: int) -> tuple[Step, Step]:
    """The giver's step under the gift's id, the receiver's under an id derived from it."""
    return (Step(GIVE, ids.MemberId(giver), ids.EventId(op_id), at_ms, (campaign, card, receiver)),
            Step(RECEIVE, ids.MemberId(receiver), receive_id(giver, op_id), at_ms, (campaign, card, giver)))


def receive_id(giver: str, op_id: str) -> ids.EventId:
    """The receiver's step of a gift: derived from the giver and the gift's id (ids are per member)."""
    return ids.derived_id("card_gift", giver, op_id)


class GiveStep:
    """The giver's step: the card taken (refused whole when none is held), ``card_given``."""

    def plan(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        campaign, card, receiver = step.terms
        op = Operation(step.op_id, step.member, step.at_ms, fingerprint(GIVE, campaign, card, receiver))
        effect = pack_effect("card_given", {"campaign": campaign, "card": card, "to": receiver})
        return member_plan(program, op, now_ms, inventory=(_card_line(campaign, card, -1),), effects=(effect,))

    def compensate(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        campaign, card, _ = step.terms
        op = Operation(undo_id(step.op_id), step.member, now_ms, fingerprint("undo", step.op_id))
        return member_plan(program, op, now_ms, inventory=(_card_line(campaign, card, 1),))


class ReceiveStep:
    """The receiver's step: the card added, ``card_received``."""

    def plan(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        campaign, card, giver = step.terms
        op = Operation(step.op_id, step.member, step.at_ms, fingerprint(RECEIVE, campaign, card, giver))
        effect = pack_effect("card_received", {"campaign": campaign, "card": card, "from": giver})
        return member_plan(program, op, now_ms, inventory=(_card_line(campaign, card, 1),), effects=(effect,))

    def compensate(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        campaign, card, _ = step.terms
        op = Operation(undo_id(step.op_id), step.member, now_ms, fingerprint("undo", step.op_id))
        return member_plan(program, op, now_ms, inventory=(_card_line(campaign, card, -1),))


# --- combine ---------------------------------------------------------------------------------


def combine_step(campaign: str, member: str, op_id: str, at_ms: int, taken: Mapping[str, int]) -> Step:
    """The combine's member step: the set ``rules.can_combine`` chose, fixed in the entry."""
    return Step(COMBINE, ids.MemberId(member), ids.EventId(op_id), at_ms,
                (campaign, [[card, n] for card, n in sorted(taken.items())]))


class CombineStep:
    """A combine: one full set taken (refused whole when a card is missing), ``cards_combined``."""

    def plan(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        campaign, taken = step.terms
        op = Operation(step.op_id, step.member, step.at_ms, fingerprint(COMBINE, campaign))
        effect = pack_effect("cards_combined", {"campaign": campaign, "consumed": {card: n for card, n in taken}})
        return member_plan(program, op, now_ms, inventory=tuple(_card_line(campaign, c, -n) for c, n in taken),
                           effects=(effect,))

    def compensate(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        campaign, taken = step.terms
        op = Operation(undo_id(step.op_id), step.member, now_ms, fingerprint("undo", step.op_id))
        return member_plan(program, op, now_ms, inventory=tuple(_card_line(campaign, c, n) for c, n in taken))


# --- payout ----------------------------------------------------------------------------------


def payout_id(campaign: str, deadline_ms: int) -> ids.EventId:
    """A member's share of one split: derived, so a split run again pays nobody twice."""
    return ids.derived_id("cards_payout", campaign, str(deadline_ms))


def payout_plan(program: CompiledProgram, campaign: str, member: str, deadline_ms: int, now_ms: int, points: int,
                coupon: str | None, rank: int, combiners: int) -> MemberPlan:
    """A member's share: ``points`` (a points payout) or one ``coupon``, at the deadline's time."""
    op = Operation(payout_id(campaign, deadline_ms), ids.MemberId(member), deadline_ms, fingerprint("cards_payout", campaign))
    reason = f"{GAME_NAME}:{campaign}"
    grants: tuple[list[Any], ...] = (["p", points, reason, "", 0, 0, 0],) if points > 0 else ()
    coupons: tuple[list[Any], ...] = ()
    if coupon is not None:
        coupons = ([coupon, program.model.catalog[coupon].valid_days * DAY_MS, reason],)
    effect = pack_effect("cards_payout", {"campaign": campaign, "points": points, "coupon": coupon,
                                          "rank": rank, "combiners": combiners})
    return member_plan(program, op, now_ms, grants=grants, coupons=coupons, effects=(effect,))

