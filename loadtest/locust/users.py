"""The member-day crowd as Locust users: the shop's backend and members' apps.

``ShopBackend`` posts what orders and app actions produce (purchases, check-ins, shares,
partial refunds, points spent at checkout) with unique ids, and now and then deliberately sends
an earlier event again as is, which must answer ``duplicate``. A 429 (the service shedding load)
is not a failure: the event is kept and sent again after its ``Retry-After``, as a shop must,
and the verifier later proves it applied once.

``AppMember`` is a member with the app open: it holds the live feed, causes an award of its own
now and then (an order paid in the app, posted by the shop as its backend would), and reports how long
the award took to reach its socket as the ``WS live delivery`` request; it also reads its
snapshot and redeems points.
"""

from __future__ import annotations

import itertools
import os
import random
import time
import uuid
from collections import Counter, deque
from typing import Any

import gevent
import orjson
from locust import FastHttpUser, task
from locust.exception import StopUser
from websockets.sync.client import connect

from loadtest.locust.kit import Kit

#: Filled by the locustfile once Locust has parsed its options (shared by every user class).
SETTINGS: dict[str, Any] = {}
RUN = uuid.uuid4().hex[:8]  # event ids of this process never collide with another run's
_seq = itertools.count(1)
#: Bargains app members of this process started: the others help them (a share link, as it were).
BARGAINS: deque[tuple[str, str]] = deque(maxlen=500)  # (bargain id, its owner)
CARD_PLAYERS: deque[str] = deque(maxlen=500)  # app members who drew a card: whom a gift goes to


def kit() -> Kit:
    return SETTINGS["kit"]  # type: ignore[no-any-return]


def shop_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {SETTINGS['api_key']}", "content-type": "application/json"}


def next_id(kind: str) -> str:
    # The pid too: ``--processes`` forks workers after import, each with this module's RUN and count.
    return f"{kind}-{RUN}{os.getpid()}-{next(_seq)}"


class ShopBackend(FastHttpUser):
    """The shop's backend: events as orders are paid, refunds, checkouts spending points."""

    weight = 3

    def wait_time(self) -> float:  # type: ignore[override]
        low, high = kit().wait_s
        return random.uniform(low, high)

    def on_start(self) -> None:
        self.sent: deque[dict[str, Any]] = deque(maxlen=200)  # earlier events, to resend some
        self.purchases: deque[tuple[str, str, int]] = deque(maxlen=200)  # (id, member, amount)
        self.shed: deque[tuple[float, str, bytes, str]] = deque()  # (due, path, body, name) after a 429

    def member(self) -> str:
        return f"m-{random.randrange(kit().members)}"

    @task
    def act(self) -> None:
        if self.shed and self.shed[0][0] <= time.monotonic():
            _, path, body, name = self.shed.popleft()
            self._post(path, body, name)
            return
        mix = kit().mix
        if self.sent and random.random() < mix.retry_share:
            self._post("/v1/events", orjson.dumps(random.choice(self.sent)), "/v1/events retry", expect="duplicate")
            return
        kind = random.choices(
            ("purchase", "checkin", "share", "refund", "spend"),
            (mix.purchase, mix.checkin, mix.share, mix.refund if self.purchases else 0, mix.spend),
        )[0]
        if kind == "spend":
            body = orjson.dumps({"id": next_id("spend"), "amount": random.randint(1, 20), "reason": "checkout"})
            self._post(f"/v1/members/{self.member()}/points/spend", body, "/v1/members/{id}/points/spend", spend=True)
            return
        if kind == "refund":
            order, member, amount = self.purchases.popleft()
            event = {"id": next_id("refund"), "member": member, "type": "refund", "data": {"of": order, "amount": amount // 2}}
        else:
            event = {"id": next_id(kind), "member": self.member(), "type": kind, "data": _data(kind)}
        if self._post("/v1/events", orjson.dumps(event), f"/v1/events {kind}"):
            self.sent.append(event)  # applied: sending it again must answer duplicate
            if kind == "purchase":
                self.purchases.append((event["id"], event["member"], event["data"]["amount"]))  # refundable now

    def _post(self, path: str, body: bytes, name: str, expect: str = "", spend: bool = False) -> bool:
        """Post and judge the reply; True when it was applied (or a duplicate of what was)."""
        with self.client.post(path, data=body, headers=shop_headers(), name=name, catch_response=True) as r:
            if r.status_code == 429:
                # Shed on purpose: not a failure, but owed. Send it again after Retry-After.
                delay = float(r.headers.get("retry-after") or 1)
                self.shed.append((time.monotonic() + delay, path, body, name))
                self.environment.events.request.fire(
                    request_type="SHED", name=name, response_time=0, response_length=0, exception=None, context={}
                )
                r.success()
            elif spend and r.status_code == 409:
                r.success()  # a member without enough points: a refusal, as a real checkout meets
            elif r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
            elif expect and f'"status":"{expect}"' not in r.text:
                r.failure(f"expected {expect}: {r.text[:200]}")
            return r.status_code == 200
        return False


def _data(kind: str) -> dict[str, Any]:
    if kind == "purchase":
        return {"amount": random.randrange(100, 50_000), "channel": random.choice(("app", "web", "store"))}
    if kind == "share":
        return {"target": random.choice(("wechat", "moments", "weibo", "link"))}
    return {}


class AppMember(FastHttpUser):
    """A member with the app open: the live feed, its own awards arriving, a redemption, a check-in,
    a spin of the wheel, a flash-sale claim, a bargain (its own, or a help) and collect cards (a
    draw, a gift, a combine) now and then."""

    weight = 1

    def wait_time(self) -> float:  # type: ignore[override]
        low, high = kit().app_wait_s
        return random.uniform(low, high)

    def on_start(self) -> None:
        self.member = f"app-{RUN}{os.getpid()}-{next(_seq)}"
        self.pending: dict[str, float] = {}  # event id -> when it was posted (monotonic)
        self.started_bargain = False  # its first bargain task starts one; later ones mostly help others'
        self.cards: Counter[str] = Counter()  # its cards of the five-fu campaign, as its draws and gifts said
        self.combined = False
        reply = self.client.post("/v1/tokens", json={"member": self.member}, headers=shop_headers(), name="/v1/tokens")
        if reply.status_code != 200:
            raise StopUser()
        self.token = reply.json()["token"]
        # As an app does: the snapshot first, then the live feed from its feed_id, so nothing
        # between the two is missed; every reconnect resumes after the newest id seen.
        self.last_id: str | None = None
        for _ in range(5):
            with self.client.get(
                "/v1/me", headers={"authorization": f"Bearer {self.token}"}, name="/v1/me", catch_response=True
            ) as snap:
                if snap.status_code == 200:
                    self.last_id = snap.json()["feed_id"]
                    break
                if snap.status_code == 429:
                    snap.success()
                    self._shed("/v1/me")
            gevent.sleep(1.0)  # shed under the spike: ask again shortly
        self.stopping = False
        if not self._connect():
            raise StopUser()
        self.reader = gevent.spawn(self._read)

    def _connect(self) -> bool:
        url = self.host.replace("http", "ws", 1) + f"/v1/live?token={self.token}"
        if self.last_id is not None:
            url += f"&since={self.last_id}"
        started = time.perf_counter()
        try:
            self.socket = connect(url, open_timeout=10, max_size=2**20)
        except Exception as exc:  # noqa: BLE001 - reported as a failed connect
            self._fire("WS", "connect", started, exc)
            return False
        self._fire("WS", "connect", started, None)
        return True

    def on_stop(self) -> None:
        self.stopping = True
        socket = getattr(self, "socket", None)
        if socket is not None:
            socket.close()

    def _fire(self, kind: str, name: str, started: float, exc: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type=kind, name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=exc, context={},
        )

    def _read(self) -> None:
        """Every frame in order; the first effect of an award this member caused closes its clock.
        A socket the server closes (a heartbeat missed by a saturated generator, a shed replay) is
        reported as ``WS closed <code>`` and resumed with ``since``, as an app does: nothing is lost."""
        while not self.stopping:
            try:
                for message in self.socket:
                    frame = orjson.loads(message)
                    if "id" in frame:
                        self.last_id = frame["id"]
                    event = frame.get("data", {}).get("event")
                    posted = self.pending.pop(event, None) if event else None
                    if posted is not None:
                        self.environment.events.request.fire(
                            request_type="WS", name="live delivery", response_time=(time.monotonic() - posted) * 1000,
                            response_length=len(message), exception=None, context={},
                        )
            except Exception:  # noqa: BLE001 - closed: told below, unless the run is stopping
                pass
            if self.stopping:
                return
            code = getattr(self.socket, "close_code", None)
            self._fire("WS", f"closed {code}", time.perf_counter(), None)
            gevent.sleep(2.0 if code == 1013 else 0.2)
            while not self.stopping and not self._connect():
                gevent.sleep(1.0)

    @task(6)
    def order_in_app(self) -> None:
        """An order paid in the app: the shop posts it, and its award must reach this socket."""
        event_id = next_id("app-order")
        self.pending[event_id] = time.monotonic()
        body = {"id": event_id, "member": self.member, "type": "purchase", "data": {"amount": random.randrange(100, 20_000), "channel": "app"}}
        with self.client.post(
            "/v1/events", json=body, headers=shop_headers(), name="/v1/events app order", catch_response=True
        ) as reply:
            if reply.status_code == 429:
                reply.success()  # shed: this order is not retried (the app's backend would), nothing to wait for
                self._shed("/v1/events app order")
            if reply.status_code != 200 or '"effects":[]' in reply.text or '"status":"applied"' not in reply.text:
                self.pending.pop(event_id, None)  # shed, or nothing to deliver: no award to wait for
        # Awards still undelivered after a minute are lost as far as this member can tell.
        now = time.monotonic()
        for lost in [e for e, at in self.pending.items() if now - at > 60]:
            del self.pending[lost]
            self._fire("WS", "live delivery", time.perf_counter() - 60, RuntimeError(f"{lost} never arrived"))

    @task(2)
    def snapshot(self) -> None:
        with self.client.get(
            "/v1/me", headers={"authorization": f"Bearer {self.token}"}, name="/v1/me", catch_response=True
        ) as r:
            if r.status_code == 429:  # reads are shed first under load: the app shows what it has
                r.success()
                self._shed("/v1/me")

    def _shed(self, name: str) -> None:
        self.environment.events.request.fire(
            request_type="SHED", name=name, response_time=0, response_length=0, exception=None, context={}
        )

    @task(1)
    def check_in(self) -> None:
        """The daily check-in (``[games.checkin]``): the first of the day applies, the rest are duplicates."""
        self._play("/v1/me/checkin", None, "/v1/me/checkin", ())

    @task(1)
    def spin(self) -> None:
        """A share (the shop posts it: a spin of the wheel, up to 3 a day), then a spin."""
        share = {"id": next_id("app-share"), "member": self.member, "type": "share", "data": {"target": "wechat"}}
        with self.client.post("/v1/events", json=share, headers=shop_headers(), name="/v1/events app share",
                              catch_response=True) as r:
            if r.status_code == 429:
                r.success()
                self._shed("/v1/events app share")
        self._play("/v1/games/lottery/daily/spin", {"id": next_id("spin")}, "/v1/games/lottery/{wheel}/spin",
                   ("insufficient_items",))

    @task(1)
    def bargain(self) -> None:
        """Start a bargain (``[games.bargain.teapot]``; the open one comes back while it is open)
        now and then, and help another member's: the social loop of a member day."""
        headers = {"authorization": f"Bearer {self.token}"}
        if not self.started_bargain or random.random() < 0.1:
            self.started_bargain = True
            with self.client.post("/v1/games/bargain", json={"campaign": "teapot"}, headers=headers,
                                  name="/v1/games/bargain", catch_response=True) as r:
                if r.status_code in (200, 201):
                    BARGAINS.append((r.json()["id"], self.member))
                elif r.status_code == 429:
                    r.success()
                    self._shed("/v1/games/bargain")
                else:
                    r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
            return
        others = [b for b, owner in BARGAINS if owner != self.member]
        if others:
            self._play(f"/v1/games/bargain/{random.choice(others)}/help", {"id": next_id("help")},
                       "/v1/games/bargain/{bargain}/help",
                       ("already_helped", "helper_quota", "bargain_closed", "expired"))

    @task(1)
    def cards(self) -> None:
        """Collect cards (``[games.cards.five-fu]``): an invite (the shop posts it: two draws), a draw,
        now and then a card given to another card player, and a combine once a set may be held."""
        invite = {"id": next_id("app-invite"), "member": self.member, "type": "invite", "data": {"invitee": next_id("i")}}
        with self.client.post("/v1/events", json=invite, headers=shop_headers(), name="/v1/events app invite",
                              catch_response=True) as r:
            if r.status_code == 429:
                r.success()
                self._shed("/v1/events app invite")
        reply = self._play("/v1/games/cards/five-fu/draw", {"id": next_id("draw")}, "/v1/games/cards/{campaign}/draw",
                           ("no_chance", "no_cards_today"))
        if reply is not None:
            for effect in reply["results"][0]["effects"]:
                if effect["type"] == "card_drawn":
                    self.cards[effect["data"]["card"]] += 1
            if self.member not in CARD_PLAYERS:
                CARD_PLAYERS.append(self.member)
        others = [m for m in CARD_PLAYERS if m != self.member]
        spare = [card for card, n in self.cards.items() if n > 1]
        if others and spare and random.random() < 0.3:
            card = random.choice(spare)
            if self._play("/v1/games/cards/five-fu/gift", {"id": next_id("gift"), "to": random.choice(others), "card": card},
                          "/v1/games/cards/{campaign}/gift", ("card_not_held",)) is not None:
                self.cards[card] -= 1
        if len(self.cards) >= 5 and not self.combined:
            if self._play("/v1/games/cards/five-fu/combine", {"id": next_id("combine")},
                          "/v1/games/cards/{campaign}/combine", ("no_full_set", "already_combined")) is not None:
                self.combined = True

    @task(1)
    def claim(self) -> None:
        """The flash sale (``[games.flash.member-day]``): most claims meet sold_out once the spike has passed."""
        self._play("/v1/games/flash/member-day/claim", {"id": next_id("claim")}, "/v1/games/flash/{sale}/claim",
                   ("sold_out", "limit_reached", "insufficient_points"))

    def _play(self, path: str, body: dict[str, Any] | None, name: str, refusals: tuple[str, ...]) -> Any:
        """A game's call as the member: 200 (its body returned), a refusal the game names (409 with
        one of ``refusals``: a member without a spin, a sale sold out), or shed (429); anything else
        fails. None unless 200."""
        with self.client.post(path, json=body, headers={"authorization": f"Bearer {self.token}"}, name=name,
                              catch_response=True) as r:
            if r.status_code == 429:
                r.success()
                self._shed(name)
            elif r.status_code == 409 and any(f'"code":"{code}"' in r.text for code in refusals):
                r.success()
            elif r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
            else:
                return r.json()
        return None

    @task(1)
    def redeem(self) -> None:
        body = {"id": next_id("redeem"), "item": SETTINGS.get("redeem_item", "tea-voucher-20")}
        with self.client.post(
            "/v1/me/redeem", json=body, headers={"authorization": f"Bearer {self.token}"}, name="/v1/me/redeem",
            catch_response=True,
        ) as r:
            # Until an app member has the item's points, its redemptions are refused (409), as they are.
            if r.status_code in (200, 409, 429):
                r.success()
            else:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
