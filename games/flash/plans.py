"""Flash-sale plans, pure: a claim's member step and its reversal.

The sale's stock is an object on the cross-slot seam (``engine/crossing.py``) under the tag
``{flash:<sale>}``, kept by the same stock script as a catalog item's (``catalog.lua``: a unit and
the member's count under the per-member limit, or a refusal writing nothing). The member step
pays the price and grants the coupon, under the claim's own id, for a member of the sale's
audience only (anyone else: refused ``not_eligible``, writing nothing, and the unit goes back); its
reversal, should it land after the sale released the unit, gives both back under ``rk:undo:<id>``.
"""

from __future__ import annotations

from typing import Any

from engine.config import CompiledProgram
from engine.clock import DAY_MS
from engine.crossing import Step, undo_id
from engine.operations import MemberPlan, Operation, fingerprint, member_plan
from engine.targeting import Packed
from games.flash.config import FlashSales

FLASH = "flash"  #: the object kind (tag {flash:<sale>}) and the member step's kind


def claim_fingerprint(sale: str) -> bytes:
    """A retry is the same claim when it names the same sale."""
    return fingerprint("flash", sale)


def claim_step(program: CompiledProgram, sale_name: str, member: str, op_id: str, at_ms: int) -> Step:
    """The member step of a claim, with the terms of now (the price, the coupon's validity)."""
    sale = program.games["flash"].root[sale_name]
    valid_ms = program.model.catalog[sale.item].valid_days * DAY_MS
    return Step(FLASH, member, op_id, at_ms, (sale_name, sale.price_points, sale.item, valid_ms))  # type: ignore[arg-type]


def sale_audience(program: CompiledProgram, sale_name: str) -> Packed | None:
    """Who may claim the sale, as ``program`` says (None: everyone, or a sale no longer in it)."""
    section = program.games.get(FLASH)
    sale = section.root.get(sale_name) if isinstance(section, FlashSales) else None
    return program.audience(sale.audience) if sale is not None else None


class ClaimStep:
    """The flash sale's member step (``engine.crossing.StepKind``), planned from the entry's terms."""

    def plan(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        sale, price, item, valid_ms = step.terms
        op = Operation(step.op_id, step.member, step.at_ms, claim_fingerprint(sale))
        debits: tuple[list[Any], ...] = ([price, f"flash:{sale}"],) if price else ()
        # The audience is not among the terms packed in the entry: it is read from the programme
        # the step is planned under (as a catalog redemption's is, engine/redeem.py), so an entry
        # of an earlier build plans alike. Refused ``not_eligible``, the claim releases its unit.
        return member_plan(program, op, now_ms, debits=debits, coupons=([item, valid_ms, f"flash:{sale}"],),
                           audience=sale_audience(program, sale))

    def compensate(self, program: CompiledProgram, step: Step, now_ms: int) -> MemberPlan:
        sale, price, _, _ = step.terms
        op = Operation(undo_id(step.op_id), step.member, now_ms, fingerprint("undo", step.op_id))
        grants: tuple[list[Any], ...] = (["p", price, f"flash_undo:{sale}", "", 0, 0, 0],) if price else ()
        return member_plan(program, op, now_ms, grants=grants, revokes=(f"{step.op_id}:c1",))
