"""What the engine answers, as plain data: one definition that the code building it and the API
document share (the member snapshot, an operation's effects, an error's detail).

``engine.members`` builds every part of a snapshot through these types (mypy checks each key and
value in CI: ``tests/test_types.py``), and ``realtime/openapi.py`` derives the published schema
from the same classes through pydantic, so the document cannot describe a snapshot the code does
not build. They are TypedDicts, not models, because a reply is plain data on its way to orjson:
building one costs a dict, nothing is validated twice. A key that may be absent (never null) is
``NotRequired``; one that may be null says so in its type.

``typing_extensions.TypedDict`` because pydantic reads field descriptions from it on Python 3.11.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

EffectType = Literal["xp", "points", "quest_progress", "quest_completed", "tier_up", "reward", "points_expired",
                     "coupon_used", "reward_revoked", "debt", "debt_settled", "inventory", "streak", "care",
                     "wake_up", "tier_kept", "tier_grace", "tier_down"]
QuestKindName = Literal["once", "daily", "weekly", "window"]
QuestState = Literal["upcoming", "active", "completed", "ended"]
CouponState = Literal["granted", "used", "revoked", "expired"]


class ConfigProblem(TypedDict):
    """One mistake in a posted programme: where (file, key path) and why."""

    file: str
    path: Annotated[str, Field(description='the key path ("" for the file as a whole)')]
    reason: str


class ErrorDetail(TypedDict):
    """What went wrong: a stable `code`, a message for people, the input to blame."""

    code: Annotated[str, Field(description="stable, machine-readable: see each response's list")]
    message: str
    field: NotRequired[Annotated[str, Field(description="the path of the input that is wrong, in the caller's terms (`events[3].data.amount`)")]]
    problems: NotRequired[Annotated[list[ConfigProblem], Field(description="`invalid_config` only: every mistake found")]]


# --- what each effect's `data` holds (the live feed adds `event` to each) -------------------------
# member.lua builds these tables; tests/engine/test_views.py holds them to the keys it writes.

_REASON = "the rule id, `quest:<id>`, `tier:<id>`, a spend's reason, `redeem:<item>`, `redeem_undo:<item>` (a reversed redemption), `streak:<name>:<days>` or `refund`"
_COUPON = "the coupon id (`<operation id>:c<n>`), for `/coupons/{coupon}/use`"


class XpData(TypedDict):
    """XP granted, or taken back by a refund."""

    amount: Annotated[int, Field(description="XP added; negative when a refund takes it back")]
    total: Annotated[int, Field(description="lifetime XP after it")]
    reason: Annotated[str, Field(description="the rule id, `quest:<id>`, `tier:<id>` or `refund`")]


class PointsData(TypedDict):
    """Points granted, spent, redeemed or taken back by a refund."""

    amount: Annotated[int, Field(description="points added; negative for a spend, a redemption or a refund")]
    balance: Annotated[int, Field(description="the live balance after it")]
    reason: Annotated[str, Field(description=_REASON)]


class QuestData(TypedDict):
    """A quest moved: an event counted toward it (or a refund of one took that back)."""

    quest: Annotated[str, Field(description="the quest id")]
    progress: Annotated[int, Field(description="count or sum in the current period, at most `target`")]
    target: int


class QuestCompletedData(QuestData):
    """A quest reached its target (once per period); its rewards follow."""


TierUpData = TypedDict("TierUpData", {
    "from": Annotated[str, Field(description="the tier id left")],
    "to": Annotated[str, Field(description="the tier id reached")],
    "until_ms": NotRequired[Annotated[int, Field(description="under a `[tier_policy]` window: when the tier is "
                                                             "reviewed (0: held for good)")]],
})
TierUpData.__doc__ = """The member reached a higher tier (once per rung climbed)."""


class TierKeptData(TypedDict):
    """The member keeps the tier (a review found it reached, or it was reached again in grace)."""

    tier: str
    until_ms: Annotated[int, Field(description="when it is reviewed next")]


class TierGraceData(TypedDict):
    """A review found the tier no longer reached: it is held until the grace ends."""

    tier: str
    until_ms: Annotated[int, Field(description="when the grace ends")]
    need: Annotated[int, Field(description="what the window still needs to keep it (XP or spend)")]


TierDownData = TypedDict("TierDownData", {
    "from": Annotated[str, Field(description="the tier id left")],
    "to": Annotated[str, Field(description="the tier id held now (one level down at most)")],
    "until_ms": Annotated[int, Field(description="when the new tier is reviewed (0: the first tier, never)")],
})
TierDownData.__doc__ = """A review dropped the member a level: the window did not reach the tier by its expiry
(and its grace)."""


class RewardData(TypedDict):
    """A coupon granted: a quest's or a tier's reward, or a redemption."""

    kind: Literal["coupon"]
    item: Annotated[str, Field(description="the catalog item")]
    coupon: Annotated[str, Field(description=_COUPON)]
    reason: Annotated[str, Field(description="`quest:<id>`, `tier:<id>` or `redeem`")]
    expires_at_ms: Annotated[int, Field(description="when it expires (0: never)")]


class PointsExpiredData(TypedDict):
    """A lot of points reached its expiry and left the balance."""

    amount: Annotated[int, Field(description="points that expired")]
    balance: Annotated[int, Field(description="the live balance after it")]
    expired_at_ms: Annotated[int, Field(description="the lot's expiry")]


class CouponUsedData(TypedDict):
    """A coupon was used on an order."""

    coupon: Annotated[str, Field(description="the coupon id")]
    item: Annotated[str, Field(description="the catalog item")]
    order: Annotated[str, Field(description="the order it was used for")]


class RewardRevokedData(TypedDict):
    """A coupon not yet used was taken back by a refund of the order that earned it."""

    coupon: Annotated[str, Field(description="the coupon id")]
    item: Annotated[str, Field(description="the catalog item")]
    reason: Annotated[str, Field(description="`refund`, or `undo` when a member step that landed after its item released it is reversed")]


class DebtData(TypedDict):
    """A refund took back more points than the balance held: the rest is owed."""

    amount: Annotated[int, Field(description="points added to the debt")]
    debt: Annotated[int, Field(description="points owed after it")]


class DebtSettledData(TypedDict):
    """Points just granted went to the debt first (follows the `points` effect that granted them)."""

    amount: Annotated[int, Field(description="points taken for the debt")]
    balance: Annotated[int, Field(description="the live balance after it")]
    debt: Annotated[int, Field(description="points still owed")]


class InventoryData(TypedDict):
    """A count of something a member holds for a game (spins, make-up cards) changed."""

    item: Annotated[str, Field(description="`<game>:<item>`, e.g. `checkin:makeup`")]
    amount: Annotated[int, Field(description="the change: negative when spent; a grant past the cap counts only what fitted")]
    count: Annotated[int, Field(description="how many the member holds after it")]


class StreakData(TypedDict):
    """A check-in (or a make-up of a missed day) moved a streak."""

    streak: Annotated[str, Field(description="the streak's name")]
    current: Annotated[int, Field(description="consecutive days, ending at the last day checked in")]
    longest: Annotated[int, Field(description="the longest the member has had")]
    day: Annotated[int, Field(description="the day checked in or made up: days since 1970-01-01 in the programme's time zone")]
    made_up: Annotated[bool, Field(description="a make-up repaired a missed day")]


#: Each effect type's `data`, in ``EffectType``'s order: the API document's description of
#: ``Effect.data`` and the frame table of docs/live-feed.md (``realtime.live_doc``) are built from it.
class CareData(TypedDict):
    """A care moment's gift (its bundle's effects follow): a welcome, a birthday, a referral's."""

    moment: Annotated[str, Field(description="welcome | birthday | referral_join | referral_purchase | dormant | "
                                             "points_expiring")]
    title: Annotated[str, Field(description="the moment's title in the programme, to show")]
    occasion: Annotated[str, Field(description="what it is once for: the year of a birthday, the invitee of a "
                                               "referral, the last activity (ms) of a dormancy, the expiry (ms) of "
                                               "points expiring; \"\" for a welcome")]
    points: NotRequired[Annotated[int, Field(description="points_expiring: the points that expire then")]]


class WakeUpData(TypedDict):
    """A dormant member came back (the programme's return event): the wake-up gift's effects follow."""

    dormant_since_ms: Annotated[int, Field(description="when the member had last been active before")]


EFFECT_DATA: dict[str, type] = {
    "xp": XpData, "points": PointsData, "quest_progress": QuestData, "quest_completed": QuestCompletedData,
    "tier_up": TierUpData, "reward": RewardData, "points_expired": PointsExpiredData,
    "coupon_used": CouponUsedData, "reward_revoked": RewardRevokedData, "debt": DebtData,
    "debt_settled": DebtSettledData, "inventory": InventoryData, "streak": StreakData, "care": CareData,
    "wake_up": WakeUpData, "tier_kept": TierKeptData, "tier_grace": TierGraceData, "tier_down": TierDownData,
}


def effect_data_text(effect_data: Mapping[str, type] = EFFECT_DATA) -> str:
    """``by type: xp {amount, total, reason}; ...``: neighbours with the same keys are named together
    (the engine's types, or those and the installed games', ``engine.plugins.effect_data``)."""
    groups: list[tuple[list[str], list[str]]] = []
    for kind, shape in effect_data.items():
        keys = list(shape.__annotations__)
        if groups and groups[-1][1] == keys:
            groups[-1][0].append(kind)
        else:
            groups.append(([kind], keys))
    return "by type: " + "; ".join(f"{', '.join(kinds)} {{{', '.join(keys)}}}" for kinds, keys in groups)


_EFFECT_DATA_TEXT = effect_data_text()


class Effect(TypedDict):
    """One consequence of an operation, as the live feed sends it (without `data.event`)."""

    id: NotRequired[Annotated[str, Field(description="feed id `<ms>-<seq>-<i>`; absent in a dry run, which makes no feed entry")]]
    type: EffectType
    data: Annotated[dict[str, Any], Field(description=_EFFECT_DATA_TEXT)]


class TierNext(TypedDict):
    """The tier above, and the XP still to earn for it."""

    id: str
    name: str
    xp: int
    xp_to_go: int


class TierKeep(TypedDict):
    """What keeps the tier at its review ("keep Gold: ¥1,200 more by 2027-03-31")."""

    need: Annotated[int, Field(description="XP or spend the window still needs (0: already kept)")]
    by_ms: Annotated[int, Field(description="when the tier is reviewed")]


class TierChange(TypedDict):
    """One entry of the tier log."""

    at_ms: int
    change: Annotated[Literal["up", "kept", "grace", "down"], Field(description="what happened")]
    from_tier: str
    to_tier: str
    version: Annotated[str, Field(description="the programme's hash when it happened")]


class TierView(TypedDict):
    """The member's tier."""

    id: str
    name: str
    points_multiplier: float
    next: Annotated[TierNext | None, Field(description="null at the top tier")]
    qualify_on: Annotated[Literal["xp", "spend"], Field(description="what reaches a tier (`[tier_policy]`)")]
    qualified: Annotated[int, Field(description="lifetime XP, or what the policy's window holds now")]
    until_ms: Annotated[int | None, Field(description="when the tier is reviewed (null: held for good)")]
    grace: Annotated[bool, Field(description="held past its expiry, in grace: reaching it again keeps it")]
    keep: Annotated[TierKeep | None, Field(description="what keeps it at its review (null: never reviewed)")]
    changes: Annotated[list[TierChange], Field(description="the tier log: the last 20 changes, oldest first")]


class PointsLot(TypedDict):
    """Points granted together that expire together."""

    amount: int
    expires_at_ms: int


class PointsView(TypedDict):
    """The live balance (expired lots not counted), what expires when (soonest first), and debt."""

    balance: int
    expiring: list[PointsLot]
    debt: Annotated[int, Field(description="points a refund could not take back; the next grants settle it first")]


class QuestRewards(TypedDict):
    """What completing a quest grants."""

    xp: int
    points: int
    coupons: Annotated[list[str], Field(description="catalog items")]


class QuestView(TypedDict):
    """One quest of the programme, in its current period."""

    id: str
    title: str
    kind: QuestKindName
    progress: int
    target: int
    state: QuestState
    starts_at_ms: int | None
    deadline_ms: Annotated[int | None, Field(description="end of the current period or of the quest's window, whichever is first")]
    rewards: QuestRewards
    repeats: Annotated[bool, Field(description="daily and weekly quests")]


_CATALOG = "from the catalog; absent if the item left it"


class CouponView(TypedDict):
    """A coupon the member was granted, and its state."""

    coupon: Annotated[str, Field(description="the coupon id (`<operation id>:c<n>`), for `/coupons/{coupon}/use`")]
    item: str
    state: CouponState
    granted_at_ms: int
    expires_at_ms: int | None
    reason: Annotated[str, Field(description="`quest:<id>`, `tier:<id>`, `redeem`")]
    event: Annotated[str, Field(description="the id of the operation that granted it")]
    used_at_ms: NotRequired[Annotated[int, Field(description="used only")]]
    order: NotRequired[Annotated[str, Field(description="used only: the order it was used for")]]
    kind: NotRequired[Annotated[Literal["coupon"], Field(description=_CATALOG)]]
    title: NotRequired[Annotated[str, Field(description=_CATALOG)]]
    value_cents: NotRequired[Annotated[int, Field(description=_CATALOG)]]
    min_spend_cents: NotRequired[Annotated[int, Field(description=_CATALOG)]]


class ProfileView(TypedDict):
    """The profile facts held for the member."""

    joined_at_ms: int | None
    birthday: str | None
    referrer: str | None
    tags: list[str]


class Snapshot(TypedDict):
    """Everything an app shows about a member; a member with no history answers an empty one."""

    member: str
    xp: int
    tier: TierView
    points: PointsView
    quests: list[QuestView]
    rewards: Annotated[list[CouponView], Field(
        description="by grant time: the coupons still usable (at most 100, the soonest to end first) and the "
                    "history (used, revoked or past their end; at most 20, the newest), each kept for the "
                    "programme's `coupon_history_days` after it became history")]
    profile: ProfileView
    games: Annotated[dict[str, Any], Field(
        description="the member's state in each game of the programme, by game (`checkin`: the streak, "
                    "make-up cards, whether today is checked in)")]
    feed_id: Annotated[str, Field(description='the newest effect\'s id ("0-0" for none): connect the live feed with since=<feed_id>')]
    program_hash: str


class ConfigVersion(TypedDict):
    """One activated version of the programme."""

    program_version: int
    program_hash: str
    origin: Annotated[str, Field(description='"api" or "file:<path>"')]
    activated_at_ms: int
