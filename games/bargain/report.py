"""The bargain's anti-collusion report: help rings, owners helped mostly by new members, heavy
devices, each flag with the numbers behind it (``GET /v1/admin/games/bargain/report``).

**Counters, kept as helps happen** (``lua/report.lua``, one tag per campaign,
``{bargain_report:<campaign>}``): each help that applied adds one to its directed pair
``helper>owner``, to the owner's helps received (and to those from new members, by the campaign's
own rule for new: ``rules.new_member``), moves the owner in a zset by new-member share once it has
``MIN_HELPS`` helps, and adds one to the helper's device (when the shop passed a hash) in a zset of
the local day. One script call a help, each step O(log n), sent without waiting for its reply
(``count_help``): statistics, not state. A count is lost when the process dies between the help's
settle and the send, when the store refuses it, or while the server has lost the script (restart,
``SCRIPT FLUSH``, failover: the first count of each minute of a process is a call, which loads it
again). No help is ever refused or slowed for the report's sake. A help finished by the seam's
sweep (its process died mid-way) is not counted either.

**The report reads a bounded top**, never the bargains played: at most ``TOP_PAIRS`` pairs with
``RING_MIN`` helps or more, ``TOP_OWNERS`` owners from the share zset's top, ``TOP_DEVICES``
devices of today; ``flags`` (pure) turns them into flags:

- **rings**: members who helped each other, every two of them in both directions at least
  ``RING_MIN`` times each way: the reciprocal pairs among the top pairs, grouped (union-find),
  each group of at most ``RING_MAX`` members split into its maximal such groups (cliques); a larger
  group is reported whole by its size, with its ``RING_MAX`` busiest members;
- **new-member owners**: at least ``MIN_HELPS`` helps received, a share ``NEW_SHARE`` or more from
  members new when they helped;
- **devices**: ``DEVICE_DAY_HELPS`` helps or more today from one device or address hash.

**Caps.** A helper's helps a day are capped exactly (the campaign's ``helps_per_day``, in the
helper's own slot), and a device's helps of one bargain (``routes.DEVICE_HELPS``, in the bargain's
object). A device's helps a day *across* bargains are not capped: an exact cap would need a check
in another slot (the device's) before each help, one more cross-slot step on the hot path for a
hash the shop may not even pass. The report's device list flags heavy devices instead, for an
operator to look at.
"""

from __future__ import annotations

import logging
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Annotated, Any, NamedTuple

from pydantic import Field
from redis.exceptions import RedisError
from typing_extensions import TypedDict

from engine.config import CompiledProgram
from engine.plugins import Context
from engine.scripts import LuaScript

log = logging.getLogger("rekindle.bargain")

REPORT = "bargain_report"  #: the counters' tag kind: ``{bargain_report:<campaign>}``
SCRIPT = LuaScript.from_package("report.lua", package="games.bargain")

RING_MIN = 3  #: helps each way, at least, for two members to be ring mates
RING_MAX = 8  #: members of a group split into rings; a larger group is reported by its size
TOP_PAIRS = 1000  #: pairs the report reads, most helps first
MIN_HELPS = 5  #: helps an owner needs before the share of new members means anything
NEW_SHARE = Fraction(4, 5)  #: an owner is flagged from this share of helps by new members
DEVICE_DAY_HELPS = 20  #: a device is flagged from this many helps in a local day
TOP_OWNERS = 1000  #: flagged owners the report lists at most
TOP_DEVICES = 1000  #: flagged devices the report lists at most
KEEP_MS = 90 * 86_400_000  #: a campaign's counters expire this long after its latest help
DAY_KEEP_MS = 3_600_000  #: a day's device counts expire this long after the day's end
MINUTE_MS = 60_000


class Thresholds(NamedTuple):
    """What makes a flag (``MIN_HELPS`` also decides, when counting, who enters the share zset:
    a smaller value here finds no more owners)."""

    ring_min: int = RING_MIN
    ring_max: int = RING_MAX
    top_pairs: int = TOP_PAIRS
    min_helps: int = MIN_HELPS
    new_share: Fraction = NEW_SHARE
    device_day: int = DEVICE_DAY_HELPS
    top_owners: int = TOP_OWNERS
    top_devices: int = TOP_DEVICES


# --- the reply ------------------------------------------------------------------------------------


class PairHelps(TypedDict):
    """Helps one member gave another's bargains."""

    helper: Annotated[str, Field(description="the member who helped")]
    owner: Annotated[str, Field(description="the member whose bargains were helped")]
    helps: Annotated[int, Field(description="helps, over every bargain of the campaign")]


class Ring(TypedDict):
    """Members who helped one another's bargains again and again."""

    members: Annotated[list[str], Field(description="the ring's members, sorted (at most `ring_max_members`)")]
    size: Annotated[int, Field(description="members of the group: more than `members` lists only for a group larger "
                                           "than `ring_max_members`, listed by its busiest members")]
    helps: Annotated[list[PairHelps], Field(description="helps each way between the members listed, most first")]


class NewMemberOwner(TypedDict):
    """An owner whose helps came mostly from members new when they helped."""

    owner: Annotated[str, Field(description="the member whose bargains were helped")]
    helps: Annotated[int, Field(description="helps received, over every bargain of the campaign")]
    from_new: Annotated[int, Field(description="of them, by members new when they helped (the campaign's rule)")]
    share: Annotated[float, Field(description="from_new / helps")]


class HeavyDevice(TypedDict):
    """A device (or address) hash that helped more than a household would today."""

    device: Annotated[str, Field(description="the hash the service keeps of the shop's device hash")]
    helps_today: Annotated[int, Field(description="helps from it today (the programme's local day)")]


class ReportThresholds(TypedDict):
    """What made the flags."""

    ring_min_helps: Annotated[int, Field(description="helps each way, at least, between two ring members")]
    ring_max_members: Annotated[int, Field(description="members a ring lists at most")]
    top_pairs: Annotated[int, Field(description="pairs read, most helps first")]
    min_helps: Annotated[int, Field(description="helps an owner needs to be flagged")]
    new_share: Annotated[float, Field(description="share of helps by new members that flags an owner")]
    device_helps_today: Annotated[int, Field(description="helps today that flag a device")]


class ReportTruncated(TypedDict):
    """Whether a list stopped at its limit (more was there to read)."""

    pairs: Annotated[bool, Field(description="more than `top_pairs` pairs qualified: some rings may be missing")]
    owners: Annotated[bool, Field(description="more flagged owners than listed")]
    devices: Annotated[bool, Field(description="more flagged devices than listed")]


class BargainReport(TypedDict):
    """A campaign's anti-collusion report, from counters kept as helps happen."""

    campaign: Annotated[str, Field(description="the campaign reported on")]
    day: Annotated[str, Field(description="the local day the device counts are of")]
    rings: list[Ring]
    new_member_owners: list[NewMemberOwner]
    devices: list[HeavyDevice]
    thresholds: ReportThresholds
    truncated: ReportTruncated


# --- the flags, pure ------------------------------------------------------------------------------


class Counts(NamedTuple):
    """What the report read: each list from the top, as the counters hold it."""

    pairs: Mapping[tuple[str, str], int]  # (helper, owner) -> helps
    owners: Sequence[tuple[str, int, int]]  # (owner, helps, from new members)
    devices: Sequence[tuple[str, int]]  # (device hash, helps today)


def rings(pairs: Mapping[tuple[str, str], int], ring_min: int = RING_MIN, ring_max: int = RING_MAX) -> list[Ring]:
    """The help rings among ``pairs``: see the module's docstring. Each ring's members helped
    each other, every two of them, at least ``ring_min`` times each way, and no member outside it
    did so with all of them (a maximal group); most helps first."""
    mutual: dict[str, set[str]] = defaultdict(set)
    for (helper, owner), helps in pairs.items():
        if helper != owner and helps >= ring_min and pairs.get((owner, helper), 0) >= ring_min:
            mutual[helper].add(owner)
    parent = {member: member for member in mutual}

    def root(member: str) -> str:
        while parent[member] != member:
            parent[member] = parent[parent[member]]
            member = parent[member]
        return member

    for member, mates in mutual.items():
        for mate in mates:
            a, b = root(member), root(mate)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[str, list[str]] = defaultdict(list)
    for member in mutual:
        groups[root(member)].append(member)
    def weight(member: str) -> int:
        return sum(pairs[(member, mate)] + pairs[(mate, member)] for mate in mutual[member])

    out: list[Ring] = []
    for group in groups.values():
        if len(group) <= ring_max:
            out += [_ring(sorted(clique), len(clique), pairs, mutual) for clique in _cliques(set(group), mutual)]
        else:
            busiest = sorted(group, key=lambda m: (-weight(m), m))[:ring_max]
            out.append(_ring(sorted(busiest), len(group), pairs, mutual))
    out.sort(key=lambda r: (-sum(h["helps"] for h in r["helps"]), r["members"]))
    return out


def _cliques(nodes: set[str], mutual: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """The maximal cliques of two members or more (Bron-Kerbosch with a pivot; ``nodes`` are a
    handful, ``RING_MAX`` at most)."""
    found: list[frozenset[str]] = []

    def extend(r: frozenset[str], p: set[str], x: set[str]) -> None:
        if not p and not x:
            if len(r) >= 2:
                found.append(r)
            return
        pivot = max(p | x, key=lambda v: (len(mutual[v] & p), v))
        for v in sorted(p - mutual[pivot]):
            extend(r | {v}, p & mutual[v], x & mutual[v])
            p = p - {v}
            x = x | {v}

    extend(frozenset(), set(nodes), set())
    return found


def _ring(members: list[str], size: int, pairs: Mapping[tuple[str, str], int], mutual: Mapping[str, set[str]]) -> Ring:
    """A ring of ``members`` (of a group of ``size``), with the helps each way of each mutual pair."""
    helps = [PairHelps(helper=a, owner=b, helps=pairs[(a, b)]) for a in members for b in members if b in mutual[a]]
    helps.sort(key=lambda h: (-h["helps"], h["helper"], h["owner"]))
    return Ring(members=members, size=size, helps=helps)


def new_member_owners(owners: Iterable[tuple[str, int, int]], min_helps: int = MIN_HELPS,
                      share: Fraction = NEW_SHARE) -> list[NewMemberOwner]:
    """The owners with ``min_helps`` helps or more, a ``share`` or more of them by new members
    (exact: no rounding decides a flag); highest share first, then most helps."""
    out = [NewMemberOwner(owner=owner, helps=helps, from_new=new, share=round(new / helps, 4))
           for owner, helps, new in owners if helps >= min_helps and Fraction(new, helps) >= share]
    out.sort(key=lambda o: (-Fraction(o["from_new"], o["helps"]), -o["helps"], o["owner"]))
    return out


def heavy_devices(devices: Iterable[tuple[str, int]], least: int = DEVICE_DAY_HELPS) -> list[HeavyDevice]:
    """The devices with ``least`` helps today or more, most first."""
    out = [HeavyDevice(device=device, helps_today=helps) for device, helps in devices if helps >= least]
    out.sort(key=lambda d: (-d["helps_today"], d["device"]))
    return out


def flags(campaign: str, day: str, counts: Counts, thresholds: Thresholds = Thresholds(),
          truncated: ReportTruncated | None = None) -> BargainReport:
    """The report of what was read (pure: every flag from ``counts`` and ``thresholds``)."""
    return BargainReport(
        campaign=campaign, day=day,
        rings=rings(counts.pairs, thresholds.ring_min, thresholds.ring_max),
        new_member_owners=new_member_owners(counts.owners, thresholds.min_helps, thresholds.new_share),
        devices=heavy_devices(counts.devices, thresholds.device_day),
        thresholds=ReportThresholds(
            ring_min_helps=thresholds.ring_min, ring_max_members=thresholds.ring_max, top_pairs=thresholds.top_pairs,
            min_helps=thresholds.min_helps, new_share=float(thresholds.new_share),
            device_helps_today=thresholds.device_day),
        truncated=truncated or ReportTruncated(pairs=False, owners=False, devices=False),
    )


# --- the store ------------------------------------------------------------------------------------


def report_keys(ctx: Context, campaign: str, day: str) -> list[str]:
    """The campaign's pairs, owners and shares, and the devices of ``day``."""
    tag = ctx.keys.object(REPORT, campaign)
    return [f"{tag}:pairs", f"{tag}:owners", f"{tag}:shares", f"{tag}:d:{day}"]


#: The minute of each runner's latest count sent as a call (``count_help``).
_called: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


async def count_help(ctx: Context, program: CompiledProgram, campaign: str, helper: str, owner: str,
                     is_new: bool, device: str, at_ms: int) -> None:
    """Count one help that applied (see the module's docstring): sent without waiting, but for the
    first of each minute of this process, a call (which loads the script again if the server lost
    it, so a lost script costs at most a minute of counts). Never raises a store error."""
    day, day_end = program.calendar.day(at_ms)
    call = (SCRIPT, report_keys(ctx, campaign, day),
            ["count", helper, owner, 1 if is_new else 0, device, day_end + DAY_KEEP_MS, at_ms + KEEP_MS, MIN_HELPS])
    if not _first_of_minute(ctx.runner, at_ms // MINUTE_MS):
        ctx.runner.send(*call)
        return
    try:
        await ctx.runner.call(*call)
    except (RedisError, OSError) as exc:
        log.warning("bargain report: a help of %s not counted (%s)", campaign, exc)


def _first_of_minute(runner: Any, minute: int) -> bool:
    try:
        if _called.get(runner) == minute:
            return False
        _called[runner] = minute
    except TypeError:  # a runner that takes no weak reference: a call each time
        pass
    return True


async def read(ctx: Context, program: CompiledProgram, campaign: str, now_ms: int,
               thresholds: Thresholds = Thresholds()) -> BargainReport:
    """The campaign's report now: one script call reading a bounded top of each counter."""
    day, _ = program.calendar.day(now_ms)
    least_share = float(thresholds.new_share) - 1e-9  # the exact test is ``new_member_owners``'s
    reply = await ctx.runner.call(SCRIPT, report_keys(ctx, campaign, day), [
        "read", thresholds.ring_min, thresholds.top_pairs + 1, repr(least_share), thresholds.top_owners + 1,
        thresholds.device_day, thresholds.top_devices + 1])
    raw_pairs, raw_owners, raw_devices = reply
    pairs: dict[tuple[str, str], int] = {}
    for member, score in zip(raw_pairs[::2][: thresholds.top_pairs], raw_pairs[1::2]):
        helper, _, owner = _text(member).partition(">")
        pairs[(helper, owner)] = int(float(score))
    owners = [(_text(o), int(h), int(n)) for o, h, n in zip(raw_owners[::3], raw_owners[1::3], raw_owners[2::3])]
    devices = [(_text(d), int(float(s))) for d, s in zip(raw_devices[::2], raw_devices[1::2])]
    truncated = ReportTruncated(pairs=len(raw_pairs) // 2 > thresholds.top_pairs,
                                owners=len(owners) > thresholds.top_owners,
                                devices=len(devices) > thresholds.top_devices)
    counts = Counts(pairs, owners[: thresholds.top_owners], devices[: thresholds.top_devices])
    return flags(campaign, day, counts, thresholds, truncated)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
