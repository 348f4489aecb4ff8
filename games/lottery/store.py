"""A spin on the cross-slot seam: the wheel decides the prize, the member pays a spin and gets it.

1. Draw (``rules.draw``, with the odds published) in the process; the wheel's script
   (``lua/wheel.lua``, after the seam's intent) gives that prize when a unit of it is released and
   not given and its cost fits the budget, else the fallback, and opens the entry naming the
   member step of the prize it gave. A retry finds the entry: the spin is never redrawn.
2. The member step (``plans.SpinStep``) under the spin's id: a spin spent, the prize given.
3. Settle, or release (the prize back to the wheel): ``engine.crossing`` as for every object.
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import Counter

from engine.config import CompiledProgram
from engine.crossing import Crossing, EntryState, ObjectRef, entry_key, pack_steps
from engine.errors import Refused
from engine.store import OpResult, OpStatus
from games.lottery.config import Prize, Wheel
from games.lottery.plans import LOTTERY, spin_step


#: The game's own metric (``/metrics`` serves it with the service's): what the wheels gave.
PRIZES = Counter("rekindle_lottery_prizes", "Prizes the lottery's wheels gave, the fallback for a prize out counted apart",
                 ["wheel", "prize", "fallback"])


class Spin(NamedTuple):
    wheel: str
    member: str
    op_id: str
    at_ms: int
    drawn: Prize  # the prize the draw landed on
    available: int  # its units released by now (-1: no stock)


async def spin(crossing: Crossing, program: CompiledProgram, wheel: Wheel, request: Spin) -> OpResult:
    """One spin end to end: the wheel's decision, the member step, settle or release."""
    fallback = wheel.prize(wheel.fallback)
    if request.drawn.name == fallback.name:
        drawn_step = fallback_step = spin_step(program, request.wheel, wheel, fallback, False, request.member,
                                               request.op_id, request.at_ms)
    else:
        drawn_step = spin_step(program, request.wheel, wheel, request.drawn, False, request.member, request.op_id,
                               request.at_ms)
        fallback_step = spin_step(program, request.wheel, wheel, fallback, True, request.member, request.op_id,
                                  request.at_ms)
    obj = ObjectRef(LOTTERY, request.wheel)
    budget = -1 if wheel.budget is None else wheel.budget
    reply = await crossing.open(obj, request.at_ms, [
        "spin", entry_key(request.member, request.op_id), request.at_ms,
        request.drawn.name, request.drawn.cost, request.available, pack_steps([drawn_step]),
        fallback.name, fallback.cost, pack_steps([fallback_step]), budget,
    ])
    code = int(reply[0])
    if code == 3:  # this request stalled past the sweep of its time: nothing taken
        raise TimeoutError("the spin took too long to reach its wheel; send it again")
    if code == 2:
        raise Refused("budget_spent", "this wheel's budget is spent", field="wheel")
    if code == 0:  # a retry: the entry's state answers it (the same spin, not a new draw)
        state, reason = EntryState(int(reply[1])), _text(reply[2])
        return (await crossing.answer_existing(program, state, reason, [drawn_step], request.at_ms)).result
    given_fallback = int(reply[1]) == 1
    step = fallback_step if given_fallback else drawn_step
    outcome = await crossing.finish(program, obj, [step], request.at_ms, opened_now=True)
    if outcome.result.status is OpStatus.APPLIED:
        PRIZES.labels(request.wheel, step.terms[1], "true" if given_fallback else "false").inc()
    return outcome.result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
