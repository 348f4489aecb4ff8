"""Applying award plans: one EVALSHA of ``award.lua`` per event, pipelined when batched.

A thin typed wrapper, in the manner of ``limits``: it builds KEYS and ARGV, calls the script,
and turns its return codes into ``AwardResult``s. All decisions that depend on stored state
are made inside the script, so nothing here reads before it writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack

from engine.awards import AwardPlan
from engine.config import CompiledProgram
from engine.errors import StoreError
from engine.keys import Keys
from engine.pipelining import AutoPipeline
from engine.scripts import Scripts


class AwardStatus(str, Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"  # the id was seen with another body: reported as rejected


@dataclass(frozen=True, slots=True)
class AwardResult:
    status: AwardStatus
    effects: list[dict[str, Any]] = field(default_factory=list)
    #: A duplicate's original award: its feed entry id ("" when it had no effect). Its
    #: effects are replayed while the member's feed still keeps the entry.
    original: str = ""


class AwardStore:
    def __init__(self, pipeline: AutoPipeline, keys: Keys, scripts: Scripts) -> None:
        self._pipeline = pipeline
        self._keys = keys
        self._scripts = scripts

    def call_for(self, plan: AwardPlan, program: CompiledProgram) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of award.lua for one plan (see the script's header)."""
        keys, channel = self._keys.award_keys(plan.event.member, plan.dedupe_bucket, plan.lookup_buckets)
        return keys, [plan.pack(), program.tiers_packed, channel]

    async def apply(self, plan: AwardPlan, program: CompiledProgram) -> AwardResult:
        keys, args = self.call_for(plan, program)
        return decode_reply(await self._pipeline.call(self._scripts.award, keys, args))

    async def apply_many(self, plans: Sequence[AwardPlan], program: CompiledProgram) -> list[AwardResult | Exception]:
        """Apply plans in order in one pipeline; a failed call is returned, not raised."""
        award = self._scripts.award
        replies = await self._pipeline.run_many([(award, *self.call_for(p, program)) for p in plans])
        return [r if isinstance(r, Exception) else decode_reply(r) for r in replies]


def decode_reply(raw: bytes) -> AwardResult:
    """award.lua's reply (see its header): applied ``[entry, event, effects]``, duplicate
    ``[0, entry?, effects?]``, conflict ``[2]``."""
    reply = msgpack.unpackb(raw, raw=False, strict_map_key=False, use_list=False)
    head = reply[0]
    if isinstance(head, str):
        return AwardResult(AwardStatus.APPLIED, _effects(head, reply[2]))
    if head == 0:
        original = reply[1] if len(reply) > 1 else ""
        return AwardResult(AwardStatus.DUPLICATE, _effects(original, reply[2]) if len(reply) > 2 else [], original)
    if head == 2:
        return AwardResult(AwardStatus.CONFLICT)
    raise StoreError(f"award.lua returned unknown code {head!r}")


def _effects(entry: str, effects: Any) -> list[dict[str, Any]]:
    return [{"id": f"{entry}-{i}", "type": kind, "data": data} for i, (kind, data) in enumerate(effects)]
