"""Care moments through the service (the example programme's `[care]`): the shop's profile write
welcomes a member once and rewards the referrer once, a referral loop or a changed referrer is
refused with nothing written, the invitee's first order rewards the referrer, and a birthday set
for this week is granted by the scheduler, once."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import httpx

from tests.realtime.conftest import error_of, purchase, unique

SHANGHAI = timezone(timedelta(hours=8))


def points(shop: httpx.Client, member: str) -> int:
    return shop.get(f"/v1/members/{member}").json()["points"]["balance"]  # type: ignore[no-any-return]


def test_joining_welcomes_once_and_rewards_the_referrer_once(shop: httpx.Client) -> None:
    member, referrer = unique("m"), unique("r")
    body = {"joined_at": "2026-12-01T10:00:00+08:00", "referrer": referrer}
    for _ in range(2):  # the shop sends the same PUT again: nothing more
        reply = shop.put(f"/v1/members/{member}", json=body)
        assert reply.status_code == 200, reply.text
    assert points(shop, member) == 150  # [care.welcome]
    assert points(shop, referrer) == 100  # [care.referral.on_join]
    # The invitee's first order (the quest first_order): the referrer's second gift, once.
    for n in range(2):
        assert shop.post("/v1/events", json=purchase(member, 1_000)).status_code == 200
    assert points(shop, referrer) == 400


def test_a_referral_loop_or_a_changed_referrer_is_refused_with_nothing_written(shop: httpx.Client) -> None:
    a, b = unique("a"), unique("b")
    assert shop.put(f"/v1/members/{b}", json={"referrer": a}).status_code == 200
    loop = shop.put(f"/v1/members/{a}", json={"referrer": b, "tags": ["vip"]})
    assert loop.status_code == 422 and error_of(loop)["field"] == "referrer"
    assert shop.get(f"/v1/members/{a}").json()["profile"]["tags"] == []  # nothing written
    changed = shop.put(f"/v1/members/{b}", json={"referrer": unique("c")})
    assert changed.status_code == 422 and "cannot change" in error_of(changed)["message"]


def test_a_birthday_this_week_is_granted_by_the_scheduler_once(shop: httpx.Client) -> None:
    member = unique("m")
    today = datetime.now(SHANGHAI).strftime("%m-%d")
    assert shop.put(f"/v1/members/{member}", json={"birthday": today}).status_code == 200
    deadline = time.monotonic() + 30  # the scheduler ticks every second: a guard against a hang, not a speed check
    while points(shop, member) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert points(shop, member) == 500
    assert shop.put(f"/v1/members/{member}", json={"birthday": today}).status_code == 200  # set again: once a year
    time.sleep(2.5)  # two ticks of the scheduler: a second gift would be in by now
    assert points(shop, member) == 500
