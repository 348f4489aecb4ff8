"""Members: the profile facts the shop sends, and the snapshot an app draws from.

``parse_profile`` is pure validation. ``MemberStore`` writes profiles and reads snapshots, each
in one round trip (a MULTI pipeline, so a snapshot never shows half of an award).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgpack
import orjson
from redis.asyncio import Redis

from engine import ids
from engine.awards import Periods, quest_done_field, quest_field, quest_period
from engine.config import CompiledProgram, CompiledQuest, QuestKind
from engine.errors import InvalidInput
from engine.events import parse_time
from engine.keys import Keys
from engine.runner import Runner
from engine.scripts import Command
from engine.targeting import Packed, eligible
from engine.tiering import LOG_FIELD
from engine.views import (CouponState, CouponView, PointsLot, PointsView, ProfileView, QuestRewards, QuestState, QuestView,
                          Snapshot, TierChange, TierKeep, TierNext, TierView)

_BIRTHDAY = re.compile(r"([0-9]{2})-([0-9]{2})")
_PROFILE_KEYS = frozenset({"joined_at", "birthday", "referrer", "tags"})
MAX_TAGS = 32


@dataclass(frozen=True, slots=True)
class Profile:
    """Only the fields given are written; the rest keep their stored values."""

    fields: dict[str, str]


def parse_profile(raw: object, member: ids.MemberId) -> Profile:
    if not isinstance(raw, dict):
        raise InvalidInput(f"must be a JSON object, not {ids.kind_of(raw)}", field="body")
    for key in raw:
        if key not in _PROFILE_KEYS:
            raise InvalidInput("unknown key (expected joined_at, birthday, referrer, tags)", field=str(key))
    out: dict[str, str] = {}
    if "joined_at" in raw:
        try:
            out["joined_at_ms"] = str(parse_time(raw["joined_at"], "joined_at"))
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field="joined_at") from None
    if "birthday" in raw:
        value = raw["birthday"]
        match = _BIRTHDAY.fullmatch(value) if isinstance(value, str) else None
        if match is None or not _valid_month_day(int(match[1]), int(match[2])):
            raise InvalidInput("must be a month-day such as 03-21", field="birthday")
        out["birthday"] = value
    if "referrer" in raw:
        referrer = ids.member_id(raw["referrer"], "referrer")
        if referrer == member:
            raise InvalidInput("a member cannot refer itself", field="referrer")
        out["referrer"] = referrer
    if "tags" in raw:
        tags = raw["tags"]
        if not isinstance(tags, list) or len(tags) > MAX_TAGS:
            raise InvalidInput(f"must be an array of at most {MAX_TAGS} tags", field="tags")
        for i, tag in enumerate(tags):
            ids.check_id(tag, f"tags[{i}]", ids.NAME_MAX)
        out["tags"] = orjson.dumps(sorted(set(tags))).decode()
    if not out:
        raise InvalidInput("give at least one of joined_at, birthday, referrer, tags", field="body")
    return Profile(out)


def _valid_month_day(month: int, day: int) -> bool:
    try:
        datetime(2024, month, day)  # a leap year, so 02-29 is a birthday
    except ValueError:
        return False
    return True


_HMGET, _HGET, _EXISTS = Command("HMGET"), Command("HGET"), Command("EXISTS")
JOINED_TTL_S = 60.0  #: how long a member's join date is remembered by a process
JOINED_CACHE = 100_000  #: members remembered at most (then forgotten at once: a read each again)


class MemberStore:
    """A member's state read by field, for games (never by key). With a ``runner`` (the service's
    pipeline) the reads a game's request path makes share its connection and its batches, as the
    writes do, instead of taking a pooled connection each."""

    def __init__(self, redis: Redis, keys: Keys, runner: Runner | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._runner = runner
        self._joined: dict[str, tuple[float, int | None]] = {}  # member -> (until, joined_at_ms)

    async def _read(self, command: Command, key: str, args: Sequence[Any]) -> Any:
        if self._runner is not None:
            reply = await self._runner.call(command, [key], args)
            if isinstance(reply, Exception):
                raise reply
            return reply
        return await self._redis.execute_command(command.name, key, *args)

    async def state_fields(self, member: ids.MemberId, fields: Sequence[str]) -> list[str | None]:
        """Fields of the member's state hash (a game's streak, its inventory counts): games name
        the fields their plans write, never the member's keys."""
        values = await self._read(_HMGET, self._keys.member(member).state, list(fields))
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    async def profile_fields(self, member: ids.MemberId, fields: Sequence[str]) -> list[str | None]:
        """Facts of the member's profile as the shop wrote them (``joined_at_ms``, ``birthday``,
        ``referrer``), read by field: the care moments follow them."""
        values = await self._read(_HMGET, self._keys.member(member).profile, list(fields))
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    async def in_audiences(self, member: ids.MemberId, audiences: Sequence[Packed | None], now_ms: int) -> list[bool]:
        """Whether each audience (``CompiledProgram.audience``; None: everyone) holds the member as
        it stands (the stored tier, the profile's tags and join time, the dormancy mark), as
        member.lua tests it: read only when one is set. For what no member step tests (a bargain's
        start) and what a member is shown (the snapshot's games)."""
        if all(a is None for a in audiences):
            return [True] * len(audiences)
        values = await self.profile_fields(member, _AUDIENCE_FIELDS)
        p = {name: v for name, v in zip(_AUDIENCE_FIELDS, values) if v is not None}
        return [a is None or _for_member(a, p, now_ms) for a in audiences]

    async def points_expiring_at(self, member: ids.MemberId, expiry_ms: int) -> int:
        """The points of the member's lot that expires at ``expiry_ms`` (0: none left)."""
        raw = await self._read(_HGET, self._keys.member(member).lots, [str(expiry_ms)])
        return int(raw) if raw is not None else 0

    async def joined_at_ms(self, member: ids.MemberId) -> int | None:
        """When the shop says the member joined (``PUT /v1/members/{member}``), or None: a game's
        rule for new members (a bargain's larger cuts, its report's new helpers) reads it, never
        the profile's key. Remembered for ``JOINED_TTL_S`` (a join date seldom changes; a PUT
        through this process forgets it at once, one through another is seen within the TTL)."""
        now = time.monotonic()
        hit = self._joined.get(member)
        if hit is not None and hit[0] > now:
            return hit[1]
        raw = await self._read(_HGET, self._keys.member(member).profile, ["joined_at_ms"])
        value = int(raw) if raw is not None else None
        if len(self._joined) >= JOINED_CACHE:
            self._joined.clear()
        self._joined[member] = (now + JOINED_TTL_S, value)
        return value

    async def exists(self, member: ids.MemberId) -> bool:
        """Whether the engine knows the member: one operation applied, or a profile the shop put
        (a gift to a member who is not is refused, rather than given to a typo)."""
        return bool(await self._read(_EXISTS, self._keys.member(member).profile, []))

    async def put_profile(self, member: ids.MemberId, profile: Profile) -> None:
        await self._redis.hset(self._keys.member(member).profile, mapping=profile.fields)  # type: ignore[arg-type]  # Mapping's key is invariant in redis-py's hints
        self._joined.pop(member, None)  # after the write: a read meanwhile cannot keep the old date

    async def snapshot(self, member: ids.MemberId, program: CompiledProgram, now_ms: int) -> Snapshot:
        """Everything an app shows about one member, as of ``now_ms``."""
        mk = self._keys.member(member)
        periods = Periods(program, now_ms)
        today = periods.day()[0]
        # A holiday's quest is shown on its days only (``[care.holidays]``).
        quest_fields = [(q, *quest_period(q, periods)) for q in program.quests
                        if not q.days or today in q.days or today[4:] in q.days]
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(mk.profile)
        fields = [quest_field(q.id, period) for q, period, _ in quest_fields]
        rules = program.tier_rules
        window = rules.period(now_ms)[2] if rules is not None else ()
        pipe.hmget(mk.state, [*fields, *map(quest_done_field, fields), *window, LOG_FIELD])
        pipe.hgetall(mk.coupons)
        pipe.hgetall(mk.lots)
        pipe.xrevrange(mk.feed, count=1)
        # A member with no history is a member all the same: tier one, nothing earned yet.
        profile, state, coupons, lots, last_feed = await pipe.execute()
        n = len(fields)
        progress, done = state[:n], state[n : 2 * n]
        p = {k.decode(): v.decode() for k, v in profile.items()}
        xp = int(p.get("xp", 0))
        qualified = sum(int(v or 0) for v in state[2 * n : 2 * n + len(window)]) if rules is not None else xp
        tier = await self._tier_view(program, member, p, qualified, state[-1])
        return Snapshot(
            member=member,
            xp=xp,
            tier=tier,
            points=_points_view(int(p.get("pts", 0)), int(p.get("debt", 0)), lots, now_ms),
            quests=[
                _quest_view(q, int(raw or 0), marker is not None, period_end_ms, now_ms)
                for (q, _, period_end_ms), raw, marker in zip(quest_fields, progress, done)
                if q.audience is None or _for_member(q.audience, p, now_ms)  # a quest for others is not shown
            ],
            rewards=_rewards_view([_coupon_view(cid.decode(), raw, program, now_ms) for cid, raw in coupons.items()]),
            profile=ProfileView(
                joined_at_ms=int(p["joined_at_ms"]) if "joined_at_ms" in p else None,
                birthday=p.get("birthday"),
                referrer=p.get("referrer"),
                tags=orjson.loads(p["tags"]) if "tags" in p else [],
            ),
            games={},  # each game's part is the service's to add (engine.plugins.Game.snapshot)
            feed_id=_last_feed_id(last_feed),
            program_hash=program.program_hash,
        )

    async def _tier_view(self, program: CompiledProgram, member: ids.MemberId, p: dict[str, str], qualified: int,
                         log: bytes | None) -> TierView:
        """The tier as member.lua holds it: the stored tier if the programme still has it, else where
        the qualifying amount reaches; under a window, its review and what keeps it."""
        tiers, rules = program.tiers, program.tier_rules
        spend = rules is not None and rules.spend
        thresholds = [(t.spend or 0) if spend else t.xp for t in tiers]
        index = next((i for i, t in enumerate(tiers) if t.id == p.get("tier")), None)
        if index is None:
            index = max(i for i, v in enumerate(thresholds) if qualified >= v)
        tier = tiers[index]
        nxt = index + 1 if index + 1 < len(tiers) else None
        until = int(p.get("te", 0)) if rules is not None and rules.reviewed else 0
        keep = None
        if until and index > 0:
            # As the review will count (member.lua): the window ending with the expiry, or the year
            # the tier was held for, whichever holds more.
            assert rules is not None
            ending = rules.period(until - 1)[2]
            extra = [f for f in rules.review_fields(until) if f not in ending]
            values = await self._redis.hmget(self._keys.member(member).state, [*ending, *extra])
            counts = [int(v or 0) for v in values]
            counted = max(sum(counts[: len(ending)]), sum(counts[len(ending):]))
            keep = TierKeep(need=max(0, thresholds[index] - counted), by_ms=until)
        return TierView(
            id=tier.id,
            name=tier.name,
            points_multiplier=tier.points_multiplier,
            next=None if nxt is None else TierNext(id=tiers[nxt].id, name=tiers[nxt].name, xp=thresholds[nxt],
                                                   xp_to_go=max(0, thresholds[nxt] - qualified)),
            qualify_on="spend" if spend else "xp",
            qualified=qualified,
            until_ms=until or None,
            grace="tg" in p,
            keep=keep,
            changes=_tier_changes(log),
        )


_AUDIENCE_FIELDS = ("tier", "tags", "joined_at_ms", "dm")  #: the profile's facts an audience tests


def _for_member(audience: Packed, p: dict[str, str], now_ms: int) -> bool:
    """Whether ``audience`` holds the member of profile ``p``, as member.lua would decide."""
    joined = p.get("joined_at_ms")
    return eligible(audience, p.get("tier"), orjson.loads(p["tags"]) if "tags" in p else [],
                    int(joined) if joined is not None else None, "dm" in p, now_ms)


def _tier_changes(raw: bytes | None) -> list[TierChange]:
    if not raw:
        return []
    return [TierChange(at_ms=int(at), change=change, from_tier=a, to_tier=b, version=v)
            for at, change, a, b, v in msgpack.unpackb(raw, raw=False)]


def _last_feed_id(last: list[Any]) -> str:
    """The id of the newest effect (the frame a client last saw, if it is up to date)."""
    if not last:
        return "0-0"
    entry_id, fields = last[0]
    count = len(msgpack.unpackb(fields[b"d"]))
    return f"{entry_id.decode()}-{count - 1}"


def _quest_view(q: CompiledQuest, progress: int, completed: bool, period_end_ms: int, now_ms: int) -> QuestView:
    if q.starts_ms is not None and now_ms < q.starts_ms:
        state: QuestState = "upcoming"
    elif completed:
        state = "completed"
    elif q.ends_ms is not None and now_ms >= q.ends_ms:
        state = "ended"
    else:
        state = "active"
    deadlines = [d for d in (period_end_ms or None, q.ends_ms) if d is not None]
    return QuestView(
        id=q.id,
        title=q.title,
        kind=q.kind.value,
        progress=q.target if completed else min(progress, q.target),
        target=q.target,
        state=state,
        starts_at_ms=q.starts_ms,
        deadline_ms=min(deadlines) if deadlines else None,
        rewards=QuestRewards(xp=q.rewards.xp, points=q.rewards.points, coupons=list(q.rewards.coupons)),
        repeats=q.kind in (QuestKind.DAILY, QuestKind.WEEKLY),
    )

def _points_view(balance: int, debt: int, lots: dict[bytes, bytes], now_ms: int) -> PointsView:
    """The balance as of ``now_ms`` (lots already past their expiry do not count, even before
    the member script has written their expiry) and what expires when, soonest first."""
    expiring: list[PointsLot] = []
    for raw_expiry, raw_amount in lots.items():
        expiry, amount = int(raw_expiry), int(raw_amount)
        if expiry and amount > 0:
            if expiry <= now_ms:
                balance -= amount
            else:
                expiring.append(PointsLot(amount=amount, expires_at_ms=expiry))
    expiring.sort(key=lambda lot: lot["expires_at_ms"])
    return PointsView(balance=balance, expiring=expiring, debt=debt)


_COUPON_STATES: dict[int, CouponState] = {0: "granted", 1: "used", 2: "revoked"}

#: What a snapshot shows of a member's coupons: every app screen fits in these, and the reply
#: stays small however many a member holds (the record itself forgets history on its own).
SNAPSHOT_USABLE_MAX = 100
SNAPSHOT_HISTORY_MAX = 20


def _rewards_view(coupons: list[CouponView]) -> list[CouponView]:
    """The usable coupons that end soonest and the newest history, in grant order."""
    usable = [c for c in coupons if c["state"] == "granted"]
    history = [c for c in coupons if c["state"] != "granted"]
    usable.sort(key=lambda c: (c["expires_at_ms"] or 2**63, c["granted_at_ms"], c["coupon"]))
    history.sort(key=lambda c: (c.get("used_at_ms") or c["expires_at_ms"] or c["granted_at_ms"], c["coupon"]), reverse=True)
    shown = usable[:SNAPSHOT_USABLE_MAX] + history[:SNAPSHOT_HISTORY_MAX]
    return sorted(shown, key=_grant_order)


def _grant_order(coupon: CouponView) -> tuple[int, str, int]:
    """Grant time, then the operation and the n of ``<operation id>:c<n>`` (c10 after c9)."""
    op, _, n = coupon["coupon"].rpartition(":c")
    return coupon["granted_at_ms"], op, int(n) if n.isdigit() else 0


def _coupon_view(coupon: str, raw: bytes, program: CompiledProgram, now_ms: int) -> CouponView:
    item, at_ms, reason, op_id, state, until_ms, used_at_ms, order = msgpack.unpackb(raw, raw=False)
    label: CouponState = _COUPON_STATES.get(state, "granted")
    if label == "granted" and until_ms and until_ms <= now_ms:
        label = "expired"
    entry = CouponView(
        coupon=coupon,
        item=item,
        state=label,
        granted_at_ms=at_ms,
        expires_at_ms=until_ms or None,
        reason=reason,
        event=op_id,
    )
    if state == 1:
        entry["used_at_ms"], entry["order"] = used_at_ms, order
    catalog = program.model.catalog.get(item)
    if catalog is not None:
        entry["kind"], entry["title"] = catalog.kind, catalog.title
        entry["value_cents"], entry["min_spend_cents"] = catalog.value_cents, catalog.min_spend_cents
    return entry
