"""Lottery plans, pure: a spin's member step and its reversal.

The member step spends one spin (the inventory item ``lottery:<wheel>``, refused whole when the
member holds none, or is not in the wheel's audience: ``not_eligible``) and gives the prize the
wheel decided, under the spin's own id, with a ``prize`` effect naming it. Its reversal, should it land after the wheel released the entry
(a request stalled past the sweep, whose own step was refused), gives the spin back and takes
back the prize's coupons under ``rk:undo:<id>``; the prize's points, XP and items stay with the
member (taking them back could be refused whole once spent, leaving the spin unreturned too) and
the reversal is logged for an operator.
"""

from __future__ import annotations

from typing import Any

from engine.clock import DAY_MS
from engine.config import CompiledProgram, item_field
from engine.crossing import Step, undo_id
from engine.operations import MemberPlan, Operation, fingerprint, member_plan, pack_effect
from engine.targeting import Packed
from games.lottery.config import Prize, Wheel, Wheels

LOTTERY = "lottery"  #: the object kind (tag {lottery:<wheel>}) and the member step's kind


def spin_item(wheel: str) -> str:
    """The inventory item a spin of ``wheel`` costs: ``lottery:<wheel>``."""
    return f"{LOTTERY}:{wheel}"


def spin_fingerprint(wheel: str) -> bytes:
    """A retry is the same spin when it names the same wheel (whatever the draw: it is not redrawn)."""
    return fingerprint(LOTTERY, wheel)


def spin_step(program: CompiledProgram, wheel_name: str, wheel: Wheel, prize: Prize, fallback: bool,
              member: str, op_id: str, at_ms: int) -> Step:
    """The member step of a spin that gives ``prize``, with the terms of now, fixed in the entry."""
    catalog = program.model.catalog
    coupons = [[item, catalog[item].valid_days * DAY_MS] for item in prize.rewards.coupons]
    items = [[item_field(name), n, program.items[name].cap, 0, name] for name, n in prize.rewards.items.items()]
    terms = (wheel_name, prize.name, prize.title, fallback, wheel.spins_cap, prize.rewards.xp, prize.rewards.points,
             coupons, items)
    return Step(LOTTERY, member, op_id, at_ms, terms)  # type: ignore[arg-type]


def wheel_audience(program: CompiledProgram, wheel_name: str) -> Packed | None:
    """Who may spin the wheel, as ``program`` says (None: everyone, or a wheel no longer in it)."""
    section = program.games.get(LOTTERY)
    wheel = section.root.get(wheel_name) if isinstance(section, Wheels) else None
    return program.audience(wheel.audience) if wheel is not None else None


class SpinStep:
    """The lottery's member step (``engine.crossing.StepKind``), planned from the entry's terms."""

    def plan(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        wheel, prize, title, fallback, spins_cap, xp, points, coupons, items = step.terms
        op = Operation(step.op_id, step.member, step.at_ms, spin_fingerprint(wheel))
        reason = f"{LOTTERY}:{wheel}"
        both: tuple[list[Any], ...] = (["x", xp, reason, "", 0, 0, 0], ["p", points, reason, "", 0, 0, 0])
        inventory = ([item_field(spin_item(wheel)), -1, spins_cap, 0, spin_item(wheel)], *items)
        effect = pack_effect("prize", {"wheel": wheel, "prize": prize, "title": title, "fallback": bool(fallback)})
        # The audience is not among the terms fixed in the entry: it is read from the programme the
        # step is planned under (as a catalog redemption's is, engine/redeem.py), so an entry of an
        # earlier build plans alike. Refused ``not_eligible``, the spin releases its prize.
        return member_plan(program, op, now_ms, grants=tuple(g for g in both if g[1] > 0),
                           coupons=tuple([c[0], c[1], reason] for c in coupons), inventory=inventory,
                           effects=(effect,), audience=wheel_audience(program, wheel))

    def compensate(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        wheel, _, _, _, _, _, _, coupons, _ = step.terms
        op = Operation(undo_id(step.op_id), step.member, now_ms, fingerprint("undo", step.op_id))
        return member_plan(program, op, now_ms, inventory=([item_field(spin_item(wheel)), 1, 0, 0, spin_item(wheel)],),
                           revokes=tuple(f"{step.op_id}:c{i + 1}" for i in range(len(coupons))))
