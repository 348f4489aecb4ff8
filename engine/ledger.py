"""The points ledger: every grant, spend, expiry, refund and debt settlement is an entry; the
balance is their sum, and the sum of the member's lots.

``verify`` walks every member (SCAN: an offline tool, never a hot path) and checks, per member,
that the stored balance equals the sum of the lots and the sum of the ledger's deltas, that each
entry's running balance follows from the one before, and that no operation granted points twice
for the same reason (a doubled award is consistent arithmetic, so only the entries' operation
ids reveal it).

The ledger is trimmed after the programme's audit period (``[points] ledger_keep_days``); each
entry holds the balance after it, so a trimmed ledger opens at its oldest entry's balance before
it, and proves the rest from there. A ledger counts as trimmed only when the stream itself says
so: more entries were ever added than it holds, and the newest entry deleted by XDEL (a trim
leaves that mark alone) is older than the oldest kept and than the shortest audit period allows;
anything else (a recent entry deleted by hand) must still sum from zero.
It reads the ledger in pages, so a long ledger costs memory for one page only (and a set of
the event ids seen, per member).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from engine.ids import MemberId
from engine.keys import Keys

#: XRANGE's reply as this client gives it (decode_responses off); redis-py's hints are wider.
StreamPage = list[tuple[bytes, dict[bytes, bytes]]]

PAGE = 1000
DAY_MS = 86_400_000
#: The shortest audit period a programme may set (``Points.ledger_keep_days``'s bound).
MIN_KEEP_DAYS = 30


@dataclass(frozen=True, slots=True)
class Mismatch:
    member: MemberId
    balance: int
    ledger_sum: int
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    members: int
    entries: int
    mismatches: list[Mismatch]

    @property
    def ok(self) -> bool:
        return not self.mismatches


async def verify(redis: Redis, keys: Keys) -> VerifyReport:
    members = entries = 0
    mismatches: list[Mismatch] = []
    now_ms = await server_ms(redis)
    async for member in members_of(redis, keys):
        members += 1
        count, mismatch = await verify_member(redis, keys, member, now_ms)
        entries += count
        if mismatch is not None:
            mismatches.append(mismatch)
    return VerifyReport(members, entries, mismatches)


async def server_ms(redis: Redis) -> int:
    """The server's clock, in ms: ledger entry ids are its time."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def verify_member(redis: Redis, keys: Keys, member: MemberId, now_ms: int) -> tuple[int, Mismatch | None]:
    """One member: (ledger entries read, the first mismatch found or None)."""
    mk = keys.member(member)
    pipe = redis.pipeline(transaction=True)  # the balance and the ledger's end, at one instant
    pipe.hget(mk.profile, "pts")
    pipe.hvals(mk.lots)
    pipe.xrevrange(mk.ledger, count=1)
    pipe.xlen(mk.ledger)
    pipe.execute_command("XINFO", "STREAM", mk.ledger)
    # XINFO of a member with no ledger at all is an error reply: nothing was trimmed then.
    balance_raw, lot_amounts, last, length, info = await pipe.execute(raise_on_error=False)
    trimmed = _trimmed(info, length, now_ms)
    balance = int(balance_raw or 0)
    in_lots = sum(int(a) for a in lot_amounts)
    end = last[0][0].decode() if last else None
    entries = total = 0
    opened = False
    detail = ""
    start = "-"
    granted: set[tuple[bytes, bytes]] = set()
    while end is not None:
        page = cast(StreamPage, await redis.xrange(mk.ledger, min=start, max=end, count=PAGE))
        for entry_id, fields in page:
            if not opened:
                opened = True
                if trimmed:  # the balance before the oldest entry kept
                    total = int(fields[b"b"]) - int(fields[b"d"])
            total += int(fields[b"d"])
            entries += 1
            if not detail and int(fields[b"b"]) != total:
                detail = f"entry {entry_id.decode()} records balance {int(fields[b'b'])}; entries sum to {total}"
            if fields.get(b"k", b"g") != b"g":
                continue
            grant = (fields[b"e"], fields[b"r"])
            if not detail and grant in granted:
                detail = f"operation {grant[0].decode()} granted points twice for {grant[1].decode()}"
            granted.add(grant)
        if len(page) < PAGE:
            break
        start = "(" + page[-1][0].decode()  # exclusive: resume after the last entry read
    if not detail and in_lots != balance:
        detail = f"balance {balance} differs from the sum of its lots ({in_lots})"
    if total != balance or detail:
        return entries, Mismatch(member, balance, total, detail or "balance differs from ledger sum")
    return entries, None


def _trimmed(info: object, length: int, now_ms: int) -> bool:
    """Whether the audit-period trim removed the ledger's oldest entries (see the module doc)."""
    if not length or isinstance(info, Exception):
        return False
    pairs = info.items() if isinstance(info, dict) else zip(info[::2], info[1::2]) if isinstance(info, list) else ()
    fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in pairs}
    added = int(fields.get("entries-added", 0))
    deleted = _ms(fields.get("max-deleted-entry-id"))
    first = fields.get("first-entry")
    oldest = _ms(first[0]) if first else 0
    return added > length and deleted < oldest and deleted <= now_ms - MIN_KEEP_DAYS * DAY_MS


def _ms(entry_id: object) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id or "0-0")
    return int(text.split("-", 1)[0])


async def members_of(redis: Redis, keys: Keys) -> AsyncIterator[MemberId]:
    """Every member with a profile (SCAN: offline tools only)."""
    async for key in redis.scan_iter(match=keys.profile_pattern(), count=1000):
        yield keys.member_from_profile(key.decode())
