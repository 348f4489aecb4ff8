"""The member page at ``/`` in a real browser: headless Chromium (Debian's package) driven by
Playwright, against a real ``rekindle serve`` process (see test_docs_page.py for the browser's
setup; without a Chromium these tests skip and say why).

The page loads a member's snapshot, follows the live feed, resumes after a dropped connection with
no effect missed or shown twice, takes a game action and shows its result live, raises no script
error and fetches nothing from outside the service. A screenshot is kept under ``.artifacts/``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.realtime.conftest import Service
from tests.realtime.test_docs_page import CHROMIUM, HOST, browser  # noqa: F401  (the browser fixture)

ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on this machine: `apt-get install chromium` (Debian's package; .ci/run installs it) "
           "or set REKINDLE_CHROMIUM to a Chromium binary",
)


def watched(page: Any, base_url: str) -> tuple[list[str], list[str]]:
    requested: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("websocket", lambda ws: requested.append(ws.url))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    return requested, problems


def outside(requested: list[str], base_url: str) -> list[str]:
    ws_base = base_url.replace("http://", "ws://")
    return [url for url in requested if not url.startswith((base_url + "/", ws_base + "/", "data:"))]


def test_the_page_follows_the_member_live_and_resumes_without_a_gap(service: Service, shop: httpx.Client,
                                                                   browser: Any) -> None:  # noqa: F811
    member = f"page-{uuid.uuid4().hex[:8]}"
    token = shop.post("/v1/tokens", json={"member": member}).json()["token"]
    base_url = service.base_url.replace("127.0.0.1", HOST)
    page = browser.new_page()
    requested, problems = watched(page, base_url)
    effects = 0

    def post(order: str, amount: int) -> int:
        nonlocal effects
        reply = shop.post("/v1/events", json={"id": order, "member": member, "type": "purchase", "data": {"amount": amount}})
        result = reply.json()["results"][0]
        assert result["status"] == "applied", result
        effects += len(result["effects"])
        return [e for e in result["effects"] if e["type"] == "xp"][-1]["data"]["total"]

    try:
        page.goto(f"{base_url}/?token={token}")
        page.wait_for_function("() => document.querySelector('#xp').textContent === '0'", timeout=15_000)
        assert "token=" not in page.url  # moved out of the address bar at once
        page.wait_for_function("() => rekindle.state.ws && rekindle.state.ws.readyState === 1", timeout=10_000)
        assert page.title() == "会员中心 · rekindle"
        assert "每日签到" in page.locator("#games").inner_text()  # the programme's UTF-8 names

        total = post(f"{member}-o1", 19_900)
        page.wait_for_function(f"() => document.querySelector('#xp').textContent === '{total:,}'", timeout=10_000)
        assert "Quest done: first_order" in page.locator("#feed").inner_text()

        # Drop the connection and award meanwhile: the page reconnects from the last effect it showed.
        page.evaluate("() => rekindle.drop()")
        total = post(f"{member}-o2", 5_000)
        page.wait_for_function(f"() => document.querySelector('#xp').textContent === '{total:,}'", timeout=15_000)
        page.wait_for_function(f"() => rekindle.state.frames === {effects}", timeout=10_000)
        ids = page.eval_on_selector_all("#feed li", "items => items.map(li => li.dataset.id)")
        assert len(ids) == len(set(ids)) == effects  # every effect shown once: no gap
        received = page.evaluate("() => rekindle.state.received")
        assert len(received) == len(set(received)) == effects  # and the feed sent each once: no repeat
        snapshot = shop.get(f"/v1/members/{member}").json()
        assert page.evaluate("() => rekindle.state.lastId") == snapshot["feed_id"]

        # A game action on the page shows its result live.
        page.click("#checkin")
        page.wait_for_function("() => document.querySelector('#checkin') && document.querySelector('#checkin').disabled "
                               "&& document.querySelector('#games').textContent.includes('Streak: 1 days')",
                               timeout=10_000)
        assert "Check-in streak: 1 days" in page.locator("#feed").inner_text()
        page.wait_for_load_state("networkidle")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "member-page.png"), full_page=True)
    finally:
        page.close()
    assert not problems, problems
    assert not outside(requested, base_url), f"the page fetched from outside the service: {outside(requested, base_url)}"


@pytest.mark.parametrize("query, said", [("", "No member token"), ("?token=not-a-token", "")])
def test_without_a_valid_token_the_page_says_so_and_offers_nothing_else(service: Service, browser: Any,  # noqa: F811
                                                                       query: str, said: str) -> None:
    base_url = service.base_url.replace("127.0.0.1", HOST)
    page = browser.new_page()
    requested, problems = watched(page, base_url)
    try:
        page.goto(f"{base_url}/{query}")
        page.wait_for_selector("#signed-out:not([hidden])", timeout=10_000)
        assert said in page.locator("#signed-out").inner_text()
        assert page.locator("#member").is_hidden()
        page.wait_for_load_state("networkidle")
    finally:
        page.close()
    api = [url for url in requested if "/v1/" in url]
    assert api == ([] if not query else [f"{base_url}/v1/me"])  # the one read that found the token refused
    assert not [p for p in problems if "401" not in p], problems  # the refused read is the console's only line


def test_a_friend_helps_a_bargain_from_its_share_link_and_both_pages_see_it_live(service: Service, shop: httpx.Client,
                                                                                 browser: Any) -> None:  # noqa: F811
    """The owner's page starts a bargain and gives its share link; the friend's page, opened from
    it, helps: the friend's page shows the cut (its own feed, and the watch of the bargain), and the
    owner's page shows the new price and the help without a reload."""
    owner, friend = f"owner-{uuid.uuid4().hex[:8]}", f"friend-{uuid.uuid4().hex[:8]}"
    tokens = {m: shop.post("/v1/tokens", json={"member": m}).json()["token"] for m in (owner, friend)}
    base_url = service.base_url.replace("127.0.0.1", HOST)
    mine, theirs = browser.new_page(), browser.new_page()
    requested, problems = watched(mine, base_url)
    requested_too, problems_too = watched(theirs, base_url)
    try:
        mine.goto(f"{base_url}/?token={tokens[owner]}")
        mine.wait_for_selector("[data-campaign=teapot] .start-bargain", timeout=15_000)
        mine.click("[data-campaign=teapot] .start-bargain")
        mine.wait_for_selector("[data-campaign=teapot] .share a", timeout=10_000)
        link = mine.locator("[data-campaign=teapot] .share a").get_attribute("href")
        assert link is not None and "?bargain=teapot." in link
        bargain = link.split("?bargain=")[1]
        assert "¥199.00 now" in mine.locator("[data-campaign=teapot]").inner_text()

        theirs.goto(f"{link}&token={tokens[friend]}")
        theirs.wait_for_selector("#friend #help:not([disabled])", timeout=15_000)
        assert f"Help {owner}: Help me get the clay teapot for ¥9.90" in theirs.locator("#friend").inner_text()
        theirs.wait_for_function("() => Object.keys(rekindle.state.watched).length === 1", timeout=10_000)
        theirs.click("#friend #help")
        # The help's own effect on the friend's feed: it applied; then the bargain as it stands.
        theirs.wait_for_function("() => document.querySelector('#feed').textContent.includes('You cut')", timeout=10_000)
        view = httpx.get(f"{service.base_url}/v1/games/bargain/{bargain}",
                         headers={"authorization": f"Bearer {tokens[owner]}"}).json()
        assert len(view["helps"]) == 1 and view["helps"][0]["helper"] == friend
        now = f"¥{view['current_cents'] / 100:.2f} now"
        theirs.wait_for_function(f"() => document.querySelector('#friend').textContent.includes({now!r})", timeout=10_000)
        theirs.wait_for_function("() => rekindle.state.watchFrames.length === 1", timeout=10_000)  # the watch's frame
        theirs.wait_for_selector("#friend #help[disabled]", timeout=10_000)  # helped once: not offered again
        mine.wait_for_function(f"() => document.querySelector('[data-campaign=teapot]').textContent.includes({now!r}) "
                               f"&& document.querySelector('[data-campaign=teapot]').textContent.includes('{friend} cut')",
                               timeout=10_000)
        assert f"{friend} cut" in mine.locator("#feed").inner_text()
        # Another friend helps from elsewhere: the friend's page sees it through its watch alone.
        other = f"other-{uuid.uuid4().hex[:8]}"
        token = shop.post("/v1/tokens", json={"member": other}).json()["token"]
        helped = httpx.post(f"{service.base_url}/v1/games/bargain/{bargain}/help", json={"id": "h-1"},
                            headers={"authorization": f"Bearer {token}"})
        assert helped.status_code == 200, helped.text
        theirs.wait_for_function("() => rekindle.state.watchFrames.length === 2", timeout=10_000)
        theirs.wait_for_function(f"() => document.querySelector('#friend').textContent.includes('{other} cut')",
                                 timeout=10_000)
        # The watch's frames (ids of the owner's stream: they may equal the friend's own) never
        # move the page's place in its own feed.
        assert theirs.evaluate("() => rekindle.state.lastId") == shop.get(f"/v1/members/{friend}").json()["feed_id"]
        ARTIFACTS.mkdir(exist_ok=True)
        theirs.screenshot(path=str(ARTIFACTS / "member-page-bargain-help.png"), full_page=True)
    finally:
        mine.close()
        theirs.close()
    assert not problems and not problems_too, problems + problems_too
    assert not outside(requested + requested_too, base_url)


def test_cards_drawn_given_and_refused_on_the_page(service: Service, shop: httpx.Client, browser: Any) -> None:  # noqa: F811
    """A member with two draws (an invite) draws on the page, gives the card drawn to a friend from
    the gift form (both feeds say so), and a combine without a set shows the refusal's reason."""
    member, friend = f"cards-{uuid.uuid4().hex[:8]}", f"pal-{uuid.uuid4().hex[:8]}"
    token = shop.post("/v1/tokens", json={"member": member}).json()["token"]
    reply = shop.post("/v1/events", json={"events": [{"id": f"{m}-invite", "member": m, "type": "invite",
                                                      "data": {"invitee": f"{m}-x"}} for m in (member, friend)]})
    assert all(r["status"] == "applied" for r in reply.json()["results"]), reply.text
    base_url = service.base_url.replace("127.0.0.1", HOST)
    page = browser.new_page()
    requested, problems = watched(page, base_url)
    try:
        page.goto(f"{base_url}/?token={token}")
        page.wait_for_function("() => document.querySelector('#games').textContent.includes('2 draws left')",
                               timeout=15_000)
        page.click("button.draw")
        page.wait_for_selector(".gift-card", timeout=10_000)
        card = page.locator(".gift-card").input_value()
        page.fill(".gift-to", friend)
        page.click(".gift button")
        page.wait_for_function(f"() => document.querySelector('#feed').textContent.includes('Gave {card} to {friend}')",
                               timeout=10_000)
        held = shop.get(f"/v1/members/{friend}").json()["games"]["cards"]["five-fu"]["cards"]
        assert held[card] == 1
        page.click(".combine")
        page.wait_for_function("() => [...document.querySelectorAll('.answer')].some(a => /set/i.test(a.textContent))",
                               timeout=10_000)
    finally:
        page.close()
    assert [p for p in problems if "409" not in p] == [], problems  # the refused combine is the console's only line
    assert not outside(requested, base_url)


def test_a_flash_claim_on_the_page_wins_and_shows_its_coupon_live(service: Service, shop: httpx.Client,
                                                                  browser: Any) -> None:  # noqa: F811
    """A member with the points claims the example's member-day sale on the page: the points are
    paid and the coupon shows, live; a second press is refused with the sale's reason beside it."""
    member = f"claim-{uuid.uuid4().hex[:8]}"
    token = shop.post("/v1/tokens", json={"member": member}).json()["token"]
    paid = shop.post("/v1/events", json={"id": f"{member}-o1", "member": member, "type": "purchase",
                                         "data": {"amount": 19_900}}).json()["results"][0]
    balance = [e for e in paid["effects"] if e["type"] == "points"][-1]["data"]["balance"]
    assert balance >= 100
    base_url = service.base_url.replace("127.0.0.1", HOST)
    page = browser.new_page()
    requested, problems = watched(page, base_url)
    try:
        page.goto(f"{base_url}/?token={token}")
        page.wait_for_function(f"() => document.querySelector('#balance').textContent === '{balance:,}'", timeout=15_000)
        claim = page.locator(".card", has_text="Member day").locator("button")
        claim.click()
        page.wait_for_function(f"() => document.querySelector('#balance').textContent === '{balance - 100:,}'",
                               timeout=10_000)
        page.wait_for_function("() => document.querySelector('#coupons [data-coupon]') !== null", timeout=10_000)
        assert "New coupon" in page.locator("#feed").inner_text()
        claim = page.locator(".card", has_text="Member day").locator("button")
        claim.click()  # one per member: refused, its reason beside the button
        page.wait_for_function("() => [...document.querySelectorAll('.answer')].some(a => /limit|one per|already/i.test(a.textContent))",
                               timeout=10_000)
    finally:
        page.close()
    assert [p for p in problems if "409" not in p] == [], problems
    assert not outside(requested, base_url)


def test_a_press_after_a_lost_reply_is_the_same_action(service: Service, shop: httpx.Client,
                                                       browser: Any) -> None:  # noqa: F811
    """A spin whose reply is lost (the browser's request answered 503 before it reached the
    service): the next press sends the same idempotency key, so one spin is spent, not two; once
    answered, a press is a new action (refused: none left)."""
    member = f"retry-{uuid.uuid4().hex[:8]}"
    token = shop.post("/v1/tokens", json={"member": member}).json()["token"]
    shared = shop.post("/v1/events", json={"id": f"{member}-s1", "member": member, "type": "share", "data": {}})
    assert shared.json()["results"][0]["status"] == "applied", shared.text
    base_url = service.base_url.replace("127.0.0.1", HOST)
    page = browser.new_page()
    requested, problems = watched(page, base_url)
    sent: list[str] = []

    def lose_the_first(route: Any) -> None:
        sent.append(route.request.post_data_json["id"])
        if len(sent) == 1:
            route.fulfill(status=503, content_type="application/json",
                          body='{"error": {"code": "unavailable", "message": "the store did not answer in time"}}')
        else:
            route.continue_()

    try:
        page.route("**/v1/games/lottery/*/spin", lose_the_first)
        page.goto(f"{base_url}/?token={token}")
        page.wait_for_function("() => document.querySelector('#games').textContent.includes('1 spins left')",
                               timeout=15_000)
        spin = page.locator(".card", has_text="lucky wheel").locator("button")
        spin.click()
        page.wait_for_function("() => [...document.querySelectorAll('.answer')].some(a => a.textContent.includes('in time'))",
                               timeout=10_000)
        assert len(page.evaluate("() => Object.keys(rekindle.state.pending)")) == 1  # kept for the next press
        spin.click()
        page.wait_for_function("() => document.querySelector('#games').textContent.includes('0 spins left')",
                               timeout=10_000)
        assert len(sent) == 2 and sent[0] == sent[1]
        assert page.evaluate("() => rekindle.state.pending") == {}
        spin = page.locator(".card", has_text="lucky wheel").locator("button")
        spin.click()
        page.wait_for_function("() => [...document.querySelectorAll('.answer')].some(a => /no spin/i.test(a.textContent))",
                               timeout=10_000)
        assert len(sent) == 3 and sent[2] != sent[0]
        wheel = shop.get(f"/v1/members/{member}").json()["games"]["lottery"]["daily"]
        assert wheel["spins"] == 0
    finally:
        page.close()
    assert [p for p in problems if "409" not in p and "503" not in p] == [], problems
    assert not outside(requested, base_url)
