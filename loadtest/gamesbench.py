"""``make bench`` phase [8]: the games' paths over HTTP, each beside the single-event award path.

- flash sale, opening: claims of one sale (one hot key) by many members, each claim a unit taken
  by the sale, the member step, the settle — every claim wins (a sale of a billion units);
- flash sale, sold out: claims of a sale whose one unit is gone: refusals, which need no member
  step (and, once the sale said so, no round trip for 0.1 s);
- check-in: one member operation with a streak, as the member.

Each run is closed-loop over the same connections as the award path's runs, so the ratio to the
award path's median is what one process does on these cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loadtest.httpload import LoadResult, LoadSpec

#: Added to the bench service's programme: a sale that never runs out, one that has.
BENCH_SALES_TOML = """
[games.flash.bench-open]
title = "Bench: never runs out"
item = "free-shipping"
stock = 10_000_000
per_member_limit = 1_000
price_points = 0

[games.flash.bench-gone]
title = "Bench: one unit"
item = "free-shipping"
stock = 1
per_member_limit = 1
price_points = 0
"""
CLAIMANTS = 1_000  #: distinct members claiming


@dataclass
class Games:
    opening: LoadResult
    sold_out: LoadResult


def run_games(http_load: Callable[..., LoadResult], describe: Callable[[str, LoadResult], str], *, port: int,
              token_secret: str, connections: int, warmup_s: float, duration_s: float, run_id: str) -> Games:
    print(f"\n[8] games: {connections} connections, closed loop, {warmup_s:g} s warm-up + {duration_s:g} s measured each",
          flush=True)
    common = dict(host="127.0.0.1", port=port, connections=connections, warmup_s=warmup_s, duration_s=duration_s,
                  members=CLAIMANTS, token_secret=token_secret, mode="claim")
    opening = http_load(LoadSpec(item="bench-open", run_id=f"{run_id}fo", seed=11,  # type: ignore[arg-type]
                                 count_token='"status":"applied"', **common))
    print(describe(f"flash claims, {CLAIMANTS:,} members", opening) + f"  won {opening.counted:,}/{opening.requests:,}",
          flush=True)
    gone = http_load(LoadSpec(item="bench-gone", run_id=f"{run_id}fg", seed=12, **common),  # type: ignore[arg-type]
                     refusals=True)
    print(f"  flash claims, sold out    {refusals_per_s(gone):9,.0f} refusals/s (409 sold_out: "
          f"{gone.statuses.get('409', 0):,} of {sum(gone.statuses.values()):,} answers)", flush=True)
    return Games(opening, gone)


def refusals_per_s(result: LoadResult) -> float:
    """409 answers a second: the load tool counts them as errors, not as requests."""
    return result.statuses.get("409", 0) / result.window_s if result.window_s else 0.0
