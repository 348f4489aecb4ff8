"""Outreach webhooks through a real ``rekindle serve --dev-clock`` process and a real local HTTP
receiver: a message is delivered once, signed, after the receiver failed, timed out and
recovered; one that keeps failing is in the dead list after max_attempts, where the admin routes
list and replay it; bad input is refused naming the field; the secret never reaches a log.

Time moves by ``POST /v1/admin/clock`` (which runs every job due before answering), a bounded
number of steps at a time: no test waits for a retry's delay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from engine.cluster import client_from_url, runner_for
from engine.keys import Keys
from engine.outreach import Message, enqueue
from tests.engine.test_outreach import Receiver, documented_verifier, receiver, webhooks_section
from tests.realtime.conftest import (
    ADMIN_KEY, API_KEY, EXAMPLE_CONFIG, Service, error_of, new_prefix, start_service, unique,
)

SECRET = "whsec-" + "c0ffee" * 8
STEPS = 12  # clock moves a test may take to see what it waits for
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


@pytest.fixture(scope="module")
def hooked(redis_url: str, tmp_path_factory: pytest.TempPathFactory, hook: Receiver) -> Iterator[Service]:
    """A dev-clock service on the example programme with ``[webhooks]`` pointing at ``hook``."""
    tmp = tmp_path_factory.mktemp("webhooks")
    config = tmp / "programme.toml"
    config.write_text(EXAMPLE_CONFIG.read_text() + webhooks_section(
        hook.url, timeout_s=0.5, max_attempts=3, secret_env="REKINDLE_WEBHOOK_SECRET"))
    svc = start_service(redis_url, new_prefix(), tmp / "serve", config=config,
                        env={"REKINDLE_WEBHOOK_SECRET": SECRET}, args=("--dev-clock",))
    try:
        yield svc
    finally:
        svc.stop()


def put(svc: Service, message: Message) -> bool:
    """``engine.outreach.enqueue`` into the service's store (what a care-moment job calls)."""

    async def run() -> bool:
        redis = client_from_url(svc.redis_url)
        runner = runner_for(redis, svc.redis_url)
        try:
            return await enqueue(runner, Keys(svc.prefix), message, due_ms=0)
        finally:
            await runner.aclose()
            await redis.aclose()

    return asyncio.run(run())


def iso(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def drive(svc: Service, until: Callable[[], bool]) -> None:
    """Move the dev clock an hour at a time (each move runs every job then due) until ``until()``."""
    admin = svc.client(ADMIN_KEY)
    for _ in range(STEPS):
        if until():
            return
        now_ms = admin.get("/v1/admin/clock").json()["now_ms"]
        moved = admin.post("/v1/admin/clock", json={"now": iso(now_ms + HOUR_MS)})
        assert moved.status_code == 200, moved.text
    assert until(), f"not reached after {STEPS} clock moves"


def requests_for(hook: Receiver, message_id: str) -> list[str]:
    return [r.answer for r in hook.all() if r.headers.get("rekindle-id") == message_id]


def dead_list(svc: Service, **params: Any) -> dict[str, Any]:
    response = svc.client(ADMIN_KEY).get("/v1/admin/webhooks/dead", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def birthday(member: str) -> Message:
    return Message(id=f"rk:birthday:{member}:2026", member=member, kind="birthday",
                   data={"coupon": "tea-voucher-20", "points": 500}, at_ms=1_790_000_000_000)


def test_a_message_is_delivered_once_after_the_receiver_fails_times_out_and_recovers(hooked: Service, hook: Receiver) -> None:
    """Enqueued twice; the receiver answers 500, then nothing within timeout_s, then 204: three
    attempts under one id, one delivery, signed as docs/webhooks.md verifies; nothing after."""
    m = birthday(unique("m"))
    hook.script[:] = ["fail", "hang"]
    hook.then = "ok"
    assert put(hooked, m) is True
    assert put(hooked, m) is False
    drive(hooked, lambda: "ok" in requests_for(hook, m.delivery_id))
    assert requests_for(hook, m.delivery_id) == ["fail", "hang", "ok"]
    [ok] = [r for r in hook.delivered() if r.headers["rekindle-id"] == m.delivery_id]
    assert json.loads(ok.body) == {"id": m.delivery_id, "type": "birthday", "member": m.member,
                                   "data": {"coupon": "tea-voucher-20", "points": 500}, "at_ms": m.at_ms}
    assert documented_verifier()(SECRET.encode(), ok.body, ok.headers["rekindle-timestamp"],
                                 ok.headers["rekindle-signature"])
    admin = hooked.client(ADMIN_KEY)
    for _ in range(2):  # later ticks send nothing more
        now_ms = admin.get("/v1/admin/clock").json()["now_ms"]
        admin.post("/v1/admin/clock", json={"now": iso(now_ms + HOUR_MS)})
    assert requests_for(hook, m.delivery_id) == ["fail", "hang", "ok"]
    assert m.delivery_id not in {d["id"] for d in dead_list(hooked)["messages"]}


def test_a_message_dead_after_max_attempts_is_listed_and_a_replay_delivers_it(hooked: Service, hook: Receiver) -> None:
    """A receiver that keeps failing: after 3 attempts the message is in GET /v1/admin/webhooks/dead
    with its attempts and data; replayed once the receiver recovers, it is delivered once, leaves
    the list, and a second replay finds nothing to move."""
    m = birthday(unique("m"))
    hook.script[:] = []
    hook.then = "fail"
    assert put(hooked, m) is True

    def listed() -> list[dict[str, Any]]:
        return [d for d in dead_list(hooked)["messages"] if d["id"] == m.delivery_id]

    drive(hooked, lambda: bool(listed()))
    [dead] = listed()
    assert {k: v for k, v in dead.items() if k != "dead_at_ms"} == {
        "id": m.delivery_id, "member": m.member, "type": "birthday",
        "data": {"coupon": "tea-voucher-20", "points": 500}, "attempts": 3}
    assert isinstance(dead["dead_at_ms"], int)
    assert requests_for(hook, m.delivery_id) == ["fail"] * 3
    assert len(dead_list(hooked, limit=1)["messages"]) == 1

    hook.then = "ok"
    admin = hooked.client(ADMIN_KEY)
    replayed = admin.post("/v1/admin/webhooks/dead/replay", json={"ids": [m.delivery_id]})
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {"replayed": 1, "more": False}
    assert listed() == []
    drive(hooked, lambda: "ok" in requests_for(hook, m.delivery_id))
    assert requests_for(hook, m.delivery_id) == ["fail"] * 3 + ["ok"]
    again = admin.post("/v1/admin/webhooks/dead/replay", json={"ids": [m.delivery_id]})
    assert again.json() == {"replayed": 0, "more": False}
    assert admin.post("/v1/admin/webhooks/dead/replay", json={"all": True}).json() == {"replayed": 0, "more": False}


def test_replay_all_sends_every_dead_message(hooked: Service, hook: Receiver) -> None:
    """Two messages dead together, ``{"all": true}`` replays both; each is then delivered once."""
    messages = [birthday(unique("m")) for _ in range(2)]
    hook.script[:] = []
    hook.then = "fail"
    for m in messages:
        put(hooked, m)
    ids = {m.delivery_id for m in messages}
    drive(hooked, lambda: ids <= {d["id"] for d in dead_list(hooked)["messages"]})
    paged: list[str] = []
    page = dead_list(hooked, limit=1)
    for _ in range(50):  # one message a page, following `next`
        paged += [d["id"] for d in page["messages"]]
        if page["next"] is None:
            break
        page = dead_list(hooked, limit=1, after=page["next"])
    assert page["next"] is None and ids <= set(paged) and len(paged) == len(set(paged))
    hook.then = "ok"
    reply = hooked.client(ADMIN_KEY).post("/v1/admin/webhooks/dead/replay", json={"all": True}).json()
    assert reply["replayed"] >= 2 and reply["more"] is False
    drive(hooked, lambda: all("ok" in requests_for(hook, i) for i in ids))
    for i in ids:
        assert requests_for(hook, i).count("ok") == 1
    assert not ids & {d["id"] for d in dead_list(hooked)["messages"]}


@pytest.mark.parametrize("key", [None, API_KEY, "not-a-key"])
def test_the_dead_list_takes_the_admin_key(hooked: Service, key: str | None) -> None:
    client = hooked.client(key)
    for response in (client.get("/v1/admin/webhooks/dead"),
                     client.post("/v1/admin/webhooks/dead/replay", json={"all": True})):
        assert response.status_code == 401, response.text
        assert error_of(response)["code"] == "unauthorized"


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"), ({"limit": "ten"}, "limit"), ({"limit": "-1"}, "limit"),
    ({"after": "yesterday"}, "after"), ({"after": "12:rk:webhook:m-1:" + "a" * 32}, "after"),
    ({"after": "12.a"}, "after"), ({"after": "12.a+b="}, "after"), ({"after": "x.YWJj"}, "after"),
])
def test_bad_page_parameters_are_422_naming_them(hooked: Service, params: dict[str, str], field: str) -> None:
    response = hooked.client(ADMIN_KEY).get("/v1/admin/webhooks/dead", params=params)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field


@pytest.mark.parametrize(("body", "field"), [
    ({}, "body"), ([], "body"), ("all", "body"), ({"all": False}, "all"), ({"all": 1}, "all"),
    ({"ids": []}, "ids"), ({"ids": "rk:webhook:m-1:" + "a" * 32}, "ids"), ({"ids": ["nope"]}, "ids[0]"),
    ({"ids": ["rk:webhook:m-1:" + "a" * 32, 7]}, "ids[1]"), ({"ids": ["rk:webhook:m{1}:" + "a" * 32]}, "ids[0]"),
    ({"ids": ["rk:webhook:m-1:" + "a" * 32] * 501}, "ids"), ({"ids": ["rk:webhook:m-1:" + "a" * 32], "all": True}, "body"),
    ({"every": True}, "every"),
])
def test_bad_replay_bodies_are_422_naming_the_field(hooked: Service, body: object, field: str) -> None:
    response = hooked.client(ADMIN_KEY).post("/v1/admin/webhooks/dead/replay", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field


def test_a_replay_body_that_is_not_json_is_400(hooked: Service) -> None:
    response = hooked.client(ADMIN_KEY).post("/v1/admin/webhooks/dead/replay", content=b"{ids")
    assert response.status_code == 400 and error_of(response)["code"] == "bad_json"


def test_the_secret_and_the_urls_token_never_reach_the_logs(hooked: Service, hook: Receiver) -> None:
    """After the deliveries above (failures, a timeout, successes), the service's output names
    neither the signing secret nor the receiver URL's query token."""
    assert len(hook.all()) >= 4  # the tests above ran their deliveries through this service
    logs = hooked.stderr_text() + hooked.stdout_text()
    assert "webhook" in logs
    assert SECRET not in logs and "path-secret" not in logs


def test_no_webhook_state_without_messages(service: Service) -> None:
    """The session's service (no [webhooks]) answers an empty dead list."""
    response = service.client(ADMIN_KEY).get("/v1/admin/webhooks/dead", params={"limit": 5})
    assert response.status_code == 200 and response.json() == {"messages": [], "next": None}
