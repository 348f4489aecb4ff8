"""``make bench`` phase [8]: the games' routes over HTTP, each beside the single-event award path.

One row a route under load (``LOADS``, a ``GameLoad`` each), every call made as a member (a
token each, verified once per token as an app's is):

- flash sale, opening: claims of one sale (one hot key) by many members, each claim a unit taken
  by the sale, the member step, the settle: every claim wins (a sale of ten million units);
- flash sale, sold out: claims of a sale whose one unit is gone: refusals, which need no member
  step (and, once the sale said so, no round trip for 0.1 s);
- daily check-in (``POST /v1/me/checkin``, no body): one member operation with a streak. The
  bench's service has no dev clock, so only each member's first check-in of the day applies and
  every later one answers ``duplicate`` (the member script finds the day's operation and replays
  its effects: one round trip all the same). The row counts every answered check-in, and says how
  many were first ones;
- lottery spins: one wheel (one hot key, as a sale), each spin a prize taken from a stock or the
  fallback by the wheel, the member step (a spin spent, the prize given), the settle. Each member
  is given a million spins first (a login, under a rule the bench's programme adds);
- bargain helps: over 1,000 bargains, and on one hot bargain at a time;
- card draws: one campaign (one hot key for its budgets), each draw the member's chances and pity
  read, a card given by the campaign within its budget, the member step, the settle;
- card gifts: each member gives the next (a ring) a common card drawn in the row before: the
  giver's outbox opens the gift, the giver's step, the receiver's step, the settle.

Each run is closed-loop over as many connections as the award path's runs, so its ratio to the
award path's median (the service's own rate for one event a request, measured in the same run) is
what one process does on these cores. Another game's row is one more ``GameLoad`` in ``LOADS``
(and its section in ``BENCH_GAMES_TOML``).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadtest.httpload import LoadResult, LoadSpec

#: Added to the bench service's programme: a sale that never runs out, one that has. (The
#: example programme's own ``[games.checkin]`` serves the check-ins.)
BENCH_GAMES_TOML = """
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

[games.lottery.bench]
title = "Bench: half win points from a stock, half the fallback"
fallback = "thanks"
budget = 1_000_000_000

[[games.lottery.bench.prizes]]
name = "points"
title = "10 points"
probability = 0.5
cost = 1
stock = 100_000_000
rewards = { points = 10 }

[[games.lottery.bench.prizes]]
name = "thanks"
title = "1 XP"
probability = 0.5
rewards = { xp = 1 }

[games.bargain.bench]
title = "Bench: a million cents, 200 helpers a bargain"
item = "free-shipping"
price_cents = 1_000_000
floor_cents = 0
helpers = 200
algorithm = "red_packet"
helps_per_day = 1_000
duration_hours = 720

[games.bargain.hot]
title = "Bench: 200 helpers a bargain, one bargain at a time"
item = "free-shipping"
price_cents = 1_000_000
floor_cents = 0
helpers = 200
algorithm = "schedule"
helps_per_day = 1_000
duration_hours = 720

[games.cards.bench]
title = "Bench: three cards, the common one drawn 998 times in 1,000, pity for the rare one"
deadline = 2099-01-01T00:00:00+08:00
pool_cents = 100_000
pity_draws = 50
cards = [
  { name = "a", title = "Common", weight = 998 },
  { name = "b", title = "Uncommon", weight = 1, daily_budget = 1_000_000_000 },
  { name = "c", title = "Rare", weight = 1, daily_budget = 1_000_000_000, rare = true },
]

# A login (posted once for each bench member before the spins' and the draws' rows) gives a
# million spins and a million draws.
[rules.bench_spins]
event = "login"
grant = "item"
item = "lottery:bench"
fixed = 1_000_000

[rules.bench_draws]
event = "login"
grant = "item"
item = "cards:bench"
fixed = 1_000_000
"""
MEMBERS = 1_000  #: distinct members calling, a token each
APPLIED = '"status":"applied"'


@dataclass(frozen=True)
class GameLoad:
    """One row of phase [8]: a game's route under load as ``MEMBERS`` members, and its target."""

    name: str  # the line printed while it runs
    figure: str  # the summary row's figure: what a second counts, and what the count means
    path: str  # the route as requested
    target: float  # the rate counted must be at least this times the award path's
    unit: str = "req/s"
    id_body: bool = True  # body {"id": "<unique>"} (an idempotency key); False: no body
    #: The answer every request should get: 200, or 409 for a route refused by design (a
    #: sold-out sale); the rate counts answers of this status a second.
    expect: int = 200
    #: 2xx answers whose body must hold ``"status":"applied"``: any other is a failure (claims
    #: of a sale that never runs out all win). False: applied ones are counted and reported only.
    all_applied: bool = False
    rest: str = ""  # what the 2xx answers that did not apply are, for the line printed
    seed: int = 0
    #: An event type posted once for each member before the row (by the shop: its rules give
    #: what the row's calls spend, as the spins a wheel's spins cost); "": none.
    setup_event: str = ""
    campaign: str = "bench"  #: the bench campaign its bargains are started in
    #: Refusals by design that are no error, counted apart (a bargain's last help answered
    #: in_progress while others are pending: an app sends it again; the bench moves on).
    tolerated: tuple[int, ...] = ()
    #: Bargains started before the row, by owners ``o0``... (not among the members who call): the
    #: row's path names them as ``{n}``; 0: none.
    bargains: int = 0
    target_order: str = "spread"  # "each": one bargain at a time, every member helping it (``LoadSpec``)
    members: int = 0  # members calling, when not ``MEMBERS`` (a bargain's helpers: as many as its units)
    body_extra: str = ""  # more of the body after the id (``LoadSpec.body_extra``)

    def spec(self, **common: Any) -> LoadSpec:
        if self.members:
            common = {**common, "members": self.members}
        return LoadSpec(mode="member", path=self.path, id_body=self.id_body, count_token=APPLIED, seed=self.seed,
                        targets=self.bargains, target_order=self.target_order, body_extra=self.body_extra, **common)


    def rate(self, result: LoadResult) -> float:
        """What the row counts, a second: 2xx answers, or answers of the expected refusal."""
        if 200 <= self.expect < 300:
            return result.requests_per_s
        return result.statuses.get(str(self.expect), 0) / result.window_s if result.window_s else 0.0

    def errors(self, result: LoadResult) -> int:
        """Answers other than expected, and lost connections (a refusal by design is no error)."""
        expected = 0 if 200 <= self.expect < 300 else result.statuses.get(str(self.expect), 0)
        return result.errors - expected - sum(result.statuses.get(str(s), 0) for s in self.tolerated)

    def not_applied(self, result: LoadResult) -> int:
        return result.requests - result.counted if self.all_applied else 0

    def outcome(self, result: LoadResult) -> str:
        """What the answers were, for the line printed while it runs."""
        if 200 <= self.expect < 300:
            tolerated = "".join(f", {result.statuses.get(str(s), 0):,} answered {s} (by design)" for s in self.tolerated)
            return f"applied {result.counted:,}/{result.requests:,}" + (f" ({self.rest})" if self.rest else "") + tolerated
        return f"{self.expect}: {result.statuses.get(str(self.expect), 0):,} of {sum(result.statuses.values()):,} answers"


LOADS: tuple[GameLoad, ...] = (
    GameLoad("flash claims", f"HTTP flash-sale claims, req/s ({MEMBERS:,} members, one sale, every claim won)",
             "/v1/games/flash/bench-open/claim", 0.8, all_applied=True, seed=11),
    GameLoad("flash claims, sold out", "HTTP flash-sale claims once sold out, refusals/s (409 sold_out)",
             "/v1/games/flash/bench-gone/claim", 2.0, unit="refusals/s", expect=409, seed=12),
    GameLoad("daily check-ins", f"HTTP daily check-ins, req/s ({MEMBERS:,} members: the first of each applies, "
             "the rest answer duplicate)", "/v1/me/checkin", 0.8, id_body=False,
             rest="the rest duplicates: each member's first of the day applied, most in the warm-up", seed=13),
    GameLoad("lottery spins", f"HTTP lottery spins, req/s ({MEMBERS:,} members with spins, one wheel, every spin "
             "won: half a prize from its stock, half the fallback)", "/v1/games/lottery/bench/spin", 0.8,
             all_applied=True, seed=14, setup_event="login"),
    GameLoad("bargain helps", f"HTTP bargain helps, req/s ({MEMBERS:,} members helping 1,000 bargains, each help a "
             "cut by the bargain, the helper's quota, the owner's feed: three slots)",
             "/v1/games/bargain/bench.1.o{n}/help", 0.8, all_applied=True, seed=15, bargains=1_000),
    GameLoad("bargain helps, one hot", "HTTP bargain helps, req/s (one bargain at a time, its 200 helpers crowding it "
             "over 64 connections, then the next)", "/v1/games/bargain/hot.1.o{n}/help", 0.5, all_applied=True,
             seed=16, bargains=1_000, target_order="each", members=200, campaign="hot", tolerated=(409,)),
    GameLoad("card draws", f"HTTP card draws, req/s ({MEMBERS:,} members with draws, one campaign: each draw a card "
             "within its daily budget by the campaign, the draw spent and the card given)",
             "/v1/games/cards/bench/draw", 0.8, all_applied=True, seed=17, setup_event="login"),
    GameLoad("card gifts", f"HTTP card gifts, req/s ({MEMBERS:,} members each giving the next a common card drawn in "
             "the row before: the giver's outbox, the giver's step, the receiver's: three slots)",
             "/v1/games/cards/bench/gift", 0.5, seed=18, body_extra='"to":"m{next}","card":"a"',
             rest="the rest card_not_held: a member who had given every card it drew", tolerated=(409,)),
)


@dataclass
class Games:
    """Phase [8]'s runs, in ``LOADS`` order, and the award path's rate they are compared with."""

    award_rps: float
    runs: list[tuple[GameLoad, LoadResult]] = field(default_factory=list)

    def ratio(self, load: GameLoad, result: LoadResult) -> float:
        return load.rate(result) / self.award_rps if self.award_rps else 0.0

    @property
    def errors(self) -> int:
        return sum(load.errors(r) for load, r in self.runs)

    @property
    def not_applied(self) -> int:
        return sum(load.not_applied(r) for load, r in self.runs)

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """The summary's rows: figure, value, baseline (the award path's req/s), ratio, target, verdict."""
        out = []
        for load, result in self.runs:
            ratio = self.ratio(load, result)
            out.append((load.figure, f"{load.rate(result):,.0f}", f"{self.award_rps:,.0f}", f"{ratio:.2f}x",
                        f">= {load.target:.2f}x", "MET" if ratio >= load.target else "MISSED"))
        return out


def setup(port: int, api_key: str, event: str, run_id: str) -> None:
    """``event`` once for each bench member (``m0``...), in batches, before a row's clock starts."""
    for start in range(0, MEMBERS, 1000):
        batch = [{"id": f"{run_id}-setup-{m}", "member": f"m{m}", "type": event}
                 for m in range(start, min(MEMBERS, start + 1000))]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/events", data=json.dumps({"events": batch}).encode(),
                                         headers={"authorization": f"Bearer {api_key}", "content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            results = json.loads(reply.read())["results"]
        refused = [r for r in results if r["status"] not in ("applied", "duplicate")]
        if refused:
            raise RuntimeError(f"setup {event}: {len(refused)} refused, first {refused[0]}")


def start_bargains(port: int, token_secret: str, n: int, campaign: str = "bench") -> None:
    """``n`` bargains of the bench campaign, one each for owners ``o0``..., before a row's clock starts."""
    import jwt

    exp = int(time.time()) + 3600
    for owner in range(n):
        token = jwt.encode({"sub": f"o{owner}", "iat": exp - 3600, "exp": exp}, token_secret, algorithm="HS256")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/games/bargain",
                                         data=json.dumps({"campaign": campaign}).encode(),
                                         headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            if json.loads(reply.read())["id"] != f"{campaign}.1.o{owner}":
                raise RuntimeError(f"bargain of o{owner}: not the first of its owner")


def run_games(http_load: Callable[..., LoadResult], describe: Callable[[str, LoadResult], str], *, port: int,
              token_secret: str, connections: int, warmup_s: float, duration_s: float, run_id: str,
              award_rps: float, api_key: str = "", loads: tuple[GameLoad, ...] = LOADS) -> Games:
    """Each of ``loads`` in turn; ``award_rps``: the award path's median req/s in this run."""
    print(f"\n[8] games: {connections} connections, closed loop, {warmup_s:g} s warm-up + {duration_s:g} s measured "
          f"each, {MEMBERS:,} members; ratios to the award path's {award_rps:,.0f} req/s", flush=True)
    common = dict(host="127.0.0.1", port=port, connections=connections, warmup_s=warmup_s, duration_s=duration_s,
                  members=MEMBERS, token_secret=token_secret)
    games = Games(award_rps)
    for n, load in enumerate(loads):
        if load.setup_event:
            setup(port, api_key, load.setup_event, f"{run_id}g{n}")
        if load.bargains:
            start_bargains(port, token_secret, load.bargains, load.campaign)
        result = http_load(load.spec(run_id=f"{run_id}g{n}", **common), refusals=not 200 <= load.expect < 300)
        games.runs.append((load, result))
        ratio = games.ratio(load, result)
        line = describe(load.name, result) if 200 <= load.expect < 300 else (
            f"  {load.name:<22} {load.rate(result):>10,.0f} {load.unit}")
        print(f"{line}  {load.outcome(result)}  ratio {ratio:.2f}x (target >= {load.target:.2f}x: "
              f"{'MET' if ratio >= load.target else 'MISSED'})", flush=True)
        for sample in result.error_samples if load.errors(result) else []:
            print(f"      error: {sample}")
    return games
