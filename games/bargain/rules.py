"""The bargain's rules, pure: a bargain's cut schedule, each help's cut, who is new, the seed.

A bargain cuts ``amount = price_cents - floor_cents`` in ``units`` units (the campaign's
``helpers``). When it starts, the whole schedule is drawn once from the bargain's seed
(``unit_cuts``); the bargain's object keeps its prefix sums (``prefix_sums``) and gives each help
its cut with ``help_cut``, which is plain integer arithmetic so the object's Lua script can do the
same. The same seed always draws the same schedule, so ``replay`` shows a designer any bargain's
cuts from its seed and its helps' weights.

Every draw comes from ``Draws(seed)``: SHA-256 of the seed and a counter, block after block, read
as bits, integers below ``n`` by rejection (exactly uniform), no floats. Not ``random.Random``:
Python promises only ``random()`` stays the same across versions, not ``randrange`` or ``sample``,
and a replay must give the cuts a bargain had, whatever Python replays it.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from fractions import Fraction

from games.bargain.config import ALGORITHMS, Campaign

DAY_MS = 86_400_000
#: The "schedule" shape's weights are squares of uniform integers in ``[1, SHAPE]``.
SHAPE = 1 << 16
SEED_TAG = b"rekindle:bargain:v1"


# --- the schedule, drawn once when a bargain starts --------------------------------------------


class Draws:
    """A seed's stream of uniform integers: the bits of ``SHA-256(seed || counter)`` for counter
    0, 1, 2... (8 bytes, big-endian), each block's integer (big-endian) above the bits left, taken
    from the low end; an integer below ``n`` takes ``(n - 1).bit_length()`` bits, again while it
    is not below ``n``. Fully specified, so any language can replay it."""

    def __init__(self, seed: bytes) -> None:
        self._seed = bytes(seed)
        self._counter = 0
        self._pool = 0
        self._bits = 0

    def bits(self, k: int) -> int:
        while self._bits < k:
            block = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._pool |= int.from_bytes(block, "big") << self._bits
            self._bits += 256
            self._counter += 1
        out = self._pool & ((1 << k) - 1)
        self._pool >>= k
        self._bits -= k
        return out

    def below(self, n: int) -> int:
        """Uniform in ``[0, n)``, ``n >= 1``."""
        if n < 1:
            raise ValueError(f"n={n}: nothing below it to draw")
        k = (n - 1).bit_length()
        while True:
            r = self.bits(k)
            if r < n:
                return r

    def between(self, lo: int, hi: int) -> int:
        """Uniform in ``[lo, hi]``."""
        return lo + self.below(hi - lo + 1)

    def sample(self, n: int, k: int) -> list[int]:
        """``k`` distinct integers of ``[0, n)``, every ``k``-subset equally likely (Floyd's
        algorithm: ``k`` draws, whatever ``n``), in the order Floyd's algorithm adds them."""
        if not 0 <= k <= n:
            raise ValueError(f"cannot draw {k} distinct integers below {n}")
        chosen: list[int] = []
        seen: set[int] = set()
        for j in range(n - k, n):
            t = self.below(j + 1)
            pick = j if t in seen else t
            seen.add(pick)
            chosen.append(pick)
        return chosen


def unit_cuts(algorithm: str, seed: bytes, amount: int, units: int, first_cut_share: float | None = None) -> list[int]:
    """The cents each of ``units`` units cuts of ``amount``, in the order helps take them: every
    one at least 1 cent, ``units`` of them, adding up to ``amount``; a function of its arguments
    alone (the seed's own ``Draws``, never a global generator).

    - ``"schedule"``: non-increasing. Each unit gets 1 cent, and the rest is split in proportion
      to weights ``u * u`` (``u`` uniform in ``[1, 65536]``) sorted in decreasing order, rounded
      down, the cents left by rounding one each to the first units: big cuts first and a long tail
      of small ones. With ``first_cut_share`` the first unit cuts ``share_cents(amount, share)``
      (raised to an even split, lowered to leave a cent a unit) and the others split the rest
      the same way, none above the first (water-filled from the front when the shape would be).
    - ``"red_packet"``: the red-packet draw (二倍均值法): with ``left`` cents for ``k`` units still
      to draw, a unit cuts uniform in ``[1, min(2 * left // k, left - (k - 1))]`` (twice the mean
      left, and a cent left for each unit after it); the last unit cuts what is left.
    - ``"line"``: ``units - 1`` distinct cut points uniform on ``1 .. amount - 1`` (line cutting,
      线段切割); the pieces between them, in order along the line.

    Refused (``ValueError``): an unknown algorithm, ``units < 1``, ``amount < units`` (a cent a
    unit), a ``first_cut_share`` outside ``(0, 1)`` or with another algorithm than "schedule".
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")
    if units < 1:
        raise ValueError(f"units={units}: a bargain has at least one unit")
    if amount < units:
        raise ValueError(f"amount={amount} cannot give each of units={units} at least 1 cent")
    if first_cut_share is not None:
        if algorithm != "schedule":
            raise ValueError(f"first_cut_share is for the schedule algorithm, not {algorithm!r}")
        if not 0 < first_cut_share < 1:  # NaN too
            raise ValueError(f"first_cut_share={first_cut_share} is not in (0, 1)")
    rng = Draws(seed)
    if algorithm == "red_packet":
        return _red_packet(rng, amount, units)
    if algorithm == "line":
        return _line(rng, amount, units)
    if first_cut_share is None or units == 1:
        return _decreasing(rng, amount, units)
    first = first_cut(amount, units, first_cut_share)
    return [first, *_capped(_decreasing(rng, amount - first, units - 1), first)]


def share_cents(amount: int, share: float) -> int:
    """``amount`` x ``share`` in whole cents, rounded down, the share read as the decimal it is
    written as (0.29 is 29/100, not the float just below it, whose product rounds down a cent less)."""
    return int(amount * Fraction(repr(share)))


def first_cut(amount: int, units: int, share: float) -> int:
    """The first unit's cut under ``first_cut_share``: ``share_cents``, raised to an even split
    (``ceil(amount / units)``: the units after it can then decrease) and lowered to
    ``amount - (units - 1)`` (a cent for each unit after it). ``rekindle check`` refuses a share
    that either bound moves."""
    return min(max(share_cents(amount, share), -(-amount // units)), amount - (units - 1))


def _decreasing(rng: Draws, amount: int, units: int) -> list[int]:
    """``amount`` in ``units`` non-increasing cuts of at least 1 (``amount >= units``)."""
    weights = sorted((u * u for u in (rng.between(1, SHAPE) for _ in range(units))), reverse=True)
    extra, total = amount - units, sum(weights)
    shares = [extra * w // total for w in weights]  # non-increasing, as the weights are
    left = extra - sum(shares)  # < units: each share lost less than 1 to rounding
    return [1 + s + (1 if i < left else 0) for i, s in enumerate(shares)]  # still non-increasing


def _capped(cuts: list[int], cap: int) -> list[int]:
    """Non-increasing ``cuts`` with none above ``cap``, the same sum: what is above the cap is
    moved to the first cuts below it, each filled up to the cap in turn (the sum must be at most
    ``cap * len(cuts)``), so the list stays non-increasing."""
    excess = sum(max(0, c - cap) for c in cuts)
    out = [min(c, cap) for c in cuts]
    for i, c in enumerate(out):
        if excess == 0:
            break
        room = min(cap - c, excess)
        out[i] += room
        excess -= room
    return out


def _red_packet(rng: Draws, amount: int, units: int) -> list[int]:
    cuts: list[int] = []
    left = amount
    for k in range(units, 1, -1):  # k units still to draw, this one included
        cut = rng.between(1, min(2 * left // k, left - (k - 1)))
        cuts.append(cut)
        left -= cut
    cuts.append(left)
    return cuts


def _line(rng: Draws, amount: int, units: int) -> list[int]:
    points = sorted(p + 1 for p in rng.sample(amount - 1, units - 1))  # in 1 .. amount - 1
    return [b - a for a, b in itertools.pairwise([0, *points, amount])]


def prefix_sums(cuts: Sequence[int]) -> list[int]:
    """What a bargain's object keeps: ``prefix[i]`` is what the first ``i`` units cut
    (``len(cuts) + 1`` of them, from 0 to the amount)."""
    return list(itertools.accumulate(cuts, initial=0))


# --- a help ------------------------------------------------------------------------------------


def help_cut(prefix: Sequence[int], amount: int, units: int, used: int, taken: int, weight: int) -> tuple[int, int]:
    """A help worth ``weight`` units on a bargain that has ``used`` units and ``taken`` cents
    taken: the units it takes and the cents it cuts (the object's script does the same).

    It takes ``w = min(weight, units - used)`` units. The help taking the last unit cuts what is
    left, ``amount - taken``: it lands exactly on the floor. Any other cuts its units' share of the
    schedule, ``prefix[used + w] - prefix[used]``, at least ``w`` (a cent a unit) and at most what
    leaves a cent for each unit still to come. ``taken`` is ``prefix[used]`` unless a help was
    released (its units and cents given back) out of order; the two bounds keep every later
    help's cut at least a cent a unit and the floor reached exactly, whatever the order.

    Preconditions (``ValueError``): ``used < units`` (a bargain at its floor is closed),
    ``weight >= 1``, and the object's invariant ``amount - taken >= units - used``.
    """
    if not 0 <= used < units:
        raise ValueError(f"used={used} of units={units}: a bargain at its floor takes no help")
    if weight < 1:
        raise ValueError(f"weight={weight}: a help is worth at least one unit")
    if amount - taken < units - used:
        raise ValueError(f"taken={taken} of amount={amount} leaves less than a cent for each of {units - used} units")
    w = min(weight, units - used)
    if used + w == units:
        return w, amount - taken
    cut = prefix[used + w] - prefix[used]
    cut = max(cut, w)
    cut = min(cut, (amount - taken) - (units - used - w))
    return w, cut


def replay(algorithm: str, seed: bytes, amount: int, units: int, weights: Sequence[int],
           first_cut_share: float | None = None) -> list[tuple[int, int]]:
    """A bargain's helps, for a designer: ``(units, cents)`` of each help of ``weights`` in turn
    (1 for a member, the campaign's ``new_member_units`` for a new one) on the schedule the seed
    draws, none released. It stops at the floor: helps after it are refused by the object."""
    prefix = prefix_sums(unit_cuts(algorithm, seed, amount, units, first_cut_share))
    out: list[tuple[int, int]] = []
    used = taken = 0
    for weight in weights:
        if used == units:
            break
        w, cut = help_cut(prefix, amount, units, used, taken, weight)
        out.append((w, cut))
        used, taken = used + w, taken + cut
    return out


# --- who helps, and the seed -------------------------------------------------------------------


def new_member(first_seen_ms: int | None, now_ms: int, days: int) -> bool:
    """Whether a member counts as new: no operation in the programme yet (``first_seen_ms`` is
    None), or the first one less than ``days`` days before ``now_ms``."""
    return first_seen_ms is None or now_ms - first_seen_ms < days * DAY_MS


def help_weight(campaign: Campaign, is_new: bool) -> int:
    """The units a help takes: the campaign's ``new_member_units`` for a new member, else 1."""
    return campaign.new_member_units if is_new else 1


def bargain_seed(campaign: str, owner: str, start_op_id: str) -> bytes:
    """A bargain's seed: SHA-256 of a version tag and the campaign, the owner and the id of the
    operation that started it, each length-prefixed (no two different triples share an encoding).

    A function of the start alone, so a retried start (the same operation id) draws the same
    schedule: the retry replays the bargain instead of drawing a new one, and a designer replays
    any bargain from the three. A new start by the same owner (a new operation id) is a new draw.
    """
    digest = hashlib.sha256(SEED_TAG)
    for part in (campaign, owner, start_op_id):
        data = part.encode()
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return digest.digest()
