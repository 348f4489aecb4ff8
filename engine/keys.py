"""Every Redis key and channel the engine uses, built in one place.

All keys of one member share the hash tag ``{m:<id>}``, so one script call touches one slot and
the layout works unchanged on Redis Cluster. Objects shared by many members (a bargain, a card
campaign's budget) will get tags of their own beside these. The prefix lets tests and
several programmes share a server without seeing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.clock import DAY_MS
from engine.ids import MemberId

#: Dedupe entries live in per-member hashes, one per bucket of this many days of event time,
#: each expiring as a whole: small hashes stay listpack-encoded (about 30 bytes an entry)
#: where one key per event would cost over 100.
DEDUPE_BUCKET_MS = 7 * DAY_MS


@dataclass(frozen=True, slots=True)
class MemberKeys:
    tag: str
    profile: str  # hash: xp, pts (balance), tier, debt, nx (next lot expiry), profile facts
    state: str  # hash: quest progress and markers, cap and limited counters, field expiry per period
    ledger: str  # stream: one entry per points movement (k kind, d delta, b balance after)
    feed: str  # stream: the member's progress, capped, resumable by id
    coupons: str  # hash: coupon id -> msgpack [item, at_ms, reason, op id, state, valid until, used at, order]
    lots: str  # hash: expiry ms ("0" never) -> points left that expire then
    channel: str  # pub/sub: one message per applied operation, for the live feed

    def dedupe(self, bucket: int) -> str:
        return f"{self.tag}:d:{bucket}"

    def records(self, bucket: int) -> str:
        """Grant records (what each refundable operation granted) of a bucket of operation time."""
        return f"{self.tag}:g:{bucket}"


class Keys:
    def __init__(self, prefix: str = "rk") -> None:
        self.prefix = prefix

    def member_tag(self, member: MemberId) -> str:
        """The prefix every key of the member starts with; ``member()`` names what follows it
        (the award path builds its keys from the tag directly, in the same shapes)."""
        return f"{self.prefix}:{{m:{member}}}"

    def member_script_keys(
        self, member: MemberId, bucket: int, lookup: tuple[int, ...], records: tuple[int, ...] = ()
    ) -> tuple[list[str], str]:
        """member.lua's KEYS (see its header) and the member's channel, built from the tag
        directly: the hot path's copy of ``member()``, which tests hold to the same names.
        ``records``: the grant-record buckets a refund looks in, last."""
        tag = self.member_tag(member)
        keys = [f"{tag}:p", f"{tag}:s", f"{tag}:l", f"{tag}:f", f"{tag}:cp", f"{tag}:lt", f"{tag}:g:{bucket}", f"{tag}:d:{bucket}"]
        keys += [f"{tag}:d:{b}" for b in lookup if b != bucket]
        keys += [f"{tag}:g:{b}" for b in records]
        return keys, f"{tag}:ch"

    def member(self, member: MemberId) -> MemberKeys:
        tag = self.member_tag(member)
        return MemberKeys(
            tag=tag,
            profile=f"{tag}:p",
            state=f"{tag}:s",
            ledger=f"{tag}:l",
            feed=f"{tag}:f",
            coupons=f"{tag}:cp",
            lots=f"{tag}:lt",
            channel=f"{tag}:ch",
        )

    def profile_pattern(self) -> str:
        """SCAN pattern for every member's profile hash (offline tools only, never a hot path)."""
        return f"{self.prefix}:{{m:*}}:p"

    def member_from_profile(self, key: str) -> MemberId:
        start = len(self.prefix) + 4
        return MemberId(key[start : key.rindex("}")])

    def object(self, kind: str, object_id: str) -> str:
        """The tag of an object shared by many members (``rk:{cat:<item>}`` a catalog item's
        stock and outbox, ``rk:{bg:<id>}`` a bargain): its keys are this plus a suffix, changed
        only by the object's own script. ``object_id`` must already be a checked id."""
        return f"{self.prefix}:{{{kind}:{object_id}}}"

    def schedule(self, shard: int) -> str:
        """The tag of one scheduler shard: ``<tag>:z`` due jobs, ``<tag>:lease`` its worker."""
        return f"{self.prefix}:{{sch:{shard}}}"

    def config(self, part: str) -> str:
        """Programme versions shared by every process: ``active``, ``v:<n>``, ``seq``."""
        return f"{self.prefix}:{{cfg}}:{part}"
