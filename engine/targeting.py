"""Who a benefit is for (专属): the pure part of an ``audience`` and of ``[member_days]``.

A rule, a quest, a catalog item or a game's campaign may name its audience: tiers, profile tags,
members who joined lately, dormant members (or members who are not). The facts live in the
member's profile, so ``member.lua`` decides, with the profile it reads anyway (plus one HMGET of
``tags`` and ``joined_at_ms`` when a plan carries an audience): a rule or quest not for the
member earns nothing and moves nothing; a redemption or a game step not for the member is refused
``not_eligible``, writing nothing. The member stands as before the operation: the tier held, the
dormancy mark before a return wakes it.

An audience travels as ``[tier ids, tags, joined within ms (0: any), dormant (-1 any, 0 not,
1 only)]``. The first tier's id goes with "" as well: a member with no stored tier is in it.
``eligible`` is the same test in Python, for what the snapshot shows.

A member day (``[member_days.<name>]``) multiplies the points rules grant on its days, for its
tiers (all when none are named): a boost ``[multiplier in thousandths, tier ids]`` the plan
carries on those days only; the largest boost that applies is taken, on top of the tier's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.clock import DAY_MS

#: An audience as member.lua reads it (see the module doc).
Packed = list[Any]


def pack(first_tier: str, tiers: Sequence[str] | None, tags: Sequence[str] | None, new_days: int | None,
         dormant: bool | None) -> Packed:
    tier_ids = list(tiers or ())
    if first_tier in tier_ids:
        tier_ids.append("")
    return [tier_ids, list(tags or ()), (new_days or 0) * DAY_MS, -1 if dormant is None else int(dormant)]


def eligible(audience: Packed, tier: str | None, tags: Sequence[str], joined_at_ms: int | None, dormant: bool,
             now_ms: int) -> bool:
    """member.lua's test, for the member whose stored tier (None: none yet), tags, join time and
    dormancy mark these are."""
    tiers, wanted, new_ms, want_dormant = audience
    if tiers and (tier or "") not in tiers:
        return False
    if wanted and not set(wanted) & set(tags):
        return False
    if new_ms and not (joined_at_ms is not None and now_ms - joined_at_ms < new_ms):
        return False
    return want_dormant == -1 or bool(want_dormant) == dormant


def targeting(require: Packed | None, targets: Sequence[tuple[str, int, Packed]], boosts: Sequence[list[Any]],
              grant_sizes: Sequence[int], quest_sizes: Sequence[int]) -> list[Any]:
    """member.lua's targeting part: [the audience required (-1: none), targets flat (kind "g" or
    "q", offset of the grant's or quest's first value, audience index), audiences, boosts].
    ``targets`` name a grant or a quest by its index; the sizes turn indexes into offsets."""
    audiences: list[Packed] = []

    def index(a: Packed) -> int:
        for i, known in enumerate(audiences):
            if known is a or known == a:
                return i
        audiences.append(a)
        return len(audiences) - 1

    flat: list[Any] = []
    for kind, n, a in targets:
        sizes = grant_sizes if kind == "g" else quest_sizes
        flat += [kind, sum(sizes[:n]), index(a)]
    return [-1 if require is None else index(require), flat, audiences, [list(b) for b in boosts]]
