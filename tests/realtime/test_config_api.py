"""The programme over HTTP (admin): versions, hot activation in every process, every mistake named.

This module runs two service processes of its own on one key prefix, so activating a programme
here never changes what the session's service runs, and a change posted to one process can be
watched arriving in the other.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.realtime.conftest import (
    ADMIN_KEY,
    API_KEY,
    EXAMPLE_CONFIG,
    Service,
    error_of,
    new_prefix,
    purchase,
    start_service,
    unique,
)

ORIGINAL = EXAMPLE_CONFIG.read_bytes()
XP_RULE = 'per = { field = "amount", every = 100, amount = 1 }      # 1 XP per ¥1'
assert ORIGINAL.decode().count(XP_RULE) == 1
DOUBLE_XP = ORIGINAL.decode().replace(XP_RULE, 'per = { field = "amount", every = 100, amount = 2 }').encode()

RELOAD_TIMEOUT_S = 15.0  # the watcher follows pub/sub, and re-reads every 5 s in case one is lost
PUBSUB_BOUND_S = 3.0  # under that 5 s re-read: only a change that arrived by pub/sub is in time


def short_hash(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()[:16]


@pytest.fixture(scope="module")
def pair(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    """Two service processes sharing one key prefix (so one programme registry)."""
    prefix = new_prefix()
    first = start_service(redis_url, prefix, tmp_path_factory.mktemp("cfg-a"))
    try:
        second = start_service(redis_url, prefix, tmp_path_factory.mktemp("cfg-b"))
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


@pytest.fixture
def a(pair: tuple[Service, Service]) -> Iterator[httpx.Client]:
    """Admin client of the first process; the example programme is active in both again afterwards."""
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=pair[0].base_url, headers=headers, timeout=30) as client:
        yield client
        restored = client.post("/v1/config", content=ORIGINAL)
        assert restored.status_code == 200, restored.text
        assert restored.json()["program_hash"] == short_hash(ORIGINAL)
        with httpx.Client(base_url=pair[1].base_url, timeout=30) as other:
            await_version(other, restored.json()["program_version"])


@pytest.fixture
def shop_a(pair: tuple[Service, Service]) -> Iterator[httpx.Client]:
    with pair[0].client() as client:
        yield client


@pytest.fixture
def shop_b(pair: tuple[Service, Service]) -> Iterator[httpx.Client]:
    with pair[1].client() as client:
        yield client


def active(client: httpx.Client) -> dict[str, object]:
    response = client.get("/v1/config", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def await_version(client: httpx.Client, version: int) -> None:
    """Wait (bounded) until this process holds ``version``: it learns of it by pub/sub."""
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while active(client)["program_version"] != version:
        assert time.monotonic() < deadline, f"process still on {active(client)['program_version']}, not {version}"
        time.sleep(0.05)


def first_xp(shop: httpx.Client, amount: int = 19900) -> int:
    [result] = shop.post("/v1/events", json=purchase(unique("m"), amount)).json()["results"]
    assert result["status"] == "applied"
    return int(result["effects"][0]["data"]["amount"])


def test_get_config_shows_version_and_hash(a: httpx.Client, shop_b: httpx.Client) -> None:
    """GET /v1/config shows the active version, the hash of its source, its name and history."""
    body = active(a)
    assert isinstance(body["program_version"], int) and body["program_version"] >= 1
    assert body["program_hash"] == short_hash(ORIGINAL)
    assert body["name"] == "Tea House member programme"
    history = body["history"]
    assert isinstance(history, list) and history[0]["program_version"] == body["program_version"]
    assert active(shop_b) == body  # both processes agree on one version


def test_two_processes_starting_from_one_file_share_one_version(pair: tuple[Service, Service], a: httpx.Client) -> None:
    """Activating the source that is already active makes no new version."""
    before = active(a)["program_version"]
    again = a.post("/v1/config", content=ORIGINAL)
    assert again.status_code == 200
    assert again.json()["program_version"] == before
    assert active(a)["program_version"] == before


def test_post_config_activates_a_new_version_in_this_process(a: httpx.Client, shop_a: httpx.Client) -> None:
    """A valid programme posted is a new version, and the next purchase through that process earns by it."""
    before = active(a)["program_version"]
    response = a.post("/v1/config", content=DOUBLE_XP)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["program_version"] == before + 1  # type: ignore[operator]
    assert body["program_hash"] == short_hash(DOUBLE_XP)
    now = active(a)
    assert (now["program_version"], now["program_hash"], now["origin"]) == (before + 1, short_hash(DOUBLE_XP), "api")  # type: ignore[operator]
    assert first_xp(shop_a) == 398
    assert shop_a.get("/healthz").json()["program_version"] == before + 1  # type: ignore[operator]


def test_new_version_reaches_the_other_process(a: httpx.Client, shop_b: httpx.Client) -> None:
    """A programme posted to one process becomes active in another that shares the store."""
    response = a.post("/v1/config", content=DOUBLE_XP)
    assert response.status_code == 200, response.text
    version = response.json()["program_version"]
    await_version(shop_b, version)
    assert first_xp(shop_b) == 398
    assert shop_b.get("/healthz").json()["program_version"] == version


def test_metrics_of_the_other_process_show_the_new_version(a: httpx.Client, shop_b: httpx.Client) -> None:
    """rekindle_program_version of a process follows a version it learned of from another process."""
    version = a.post("/v1/config", content=DOUBLE_XP).json()["program_version"]
    await_version(shop_b, version)
    families = text_string_to_metric_families(shop_b.get("/metrics").text)
    [gauge] = [s.value for f in families for s in f.samples if s.name == "rekindle_program_version"]
    assert gauge == version


def test_restoring_the_original_restores_earnings(a: httpx.Client, shop_a: httpx.Client) -> None:
    """Posting the original programme back is another new version and purchases earn 1 XP per ¥1 again."""
    changed = a.post("/v1/config", content=DOUBLE_XP).json()["program_version"]
    restored = a.post("/v1/config", content=ORIGINAL)
    assert restored.status_code == 200
    assert restored.json()["program_version"] == changed + 1
    assert first_xp(shop_a) == 199


def _break(source: bytes, *edits: tuple[str, str]) -> bytes:
    text = source.decode()
    for old, new in edits:
        assert text.count(old) >= 1, old
        text = text.replace(old, new, 1)
    return text.encode()


UNKNOWN_KEY = ("daily_cap = 5_000\n", "daly_cap = 5_000\n")  # rules.purchase_points
WRONG_TYPE = ('xp = 1_000\n', 'xp = "a thousand"\n')  # tiers[silver].xp
BAD_EVENT_REFERENCE = ('kind = "once"\nevent = "purchase"', 'kind = "once"\nevent = "purchse"')  # quests.first_order
BAD_COUPON = ('coupons = ["silver-welcome"]', 'coupons = ["silver-welcom"]')  # tiers[silver].rewards


@pytest.mark.parametrize(
    ("edits", "paths"),
    [
        ((UNKNOWN_KEY, WRONG_TYPE), {"rules.purchase_points.daly_cap", "tiers[silver].xp"}),
        ((BAD_EVENT_REFERENCE, BAD_COUPON), {"quests.first_order.event", "tiers[silver].rewards.coupons[0]"}),
        ((UNKNOWN_KEY, BAD_EVENT_REFERENCE), {"rules.purchase_points.daly_cap", "quests.first_order.event"}),
    ],
    ids=["two_shape_mistakes", "two_reference_mistakes", "shape_and_reference_mistake"],
)
def test_invalid_config_lists_every_problem_and_changes_nothing(
    a: httpx.Client, shop_a: httpx.Client, edits: tuple[tuple[str, str], ...], paths: set[str]
) -> None:
    """An invalid programme answers 422 listing each mistake by file and key path; the active version stays."""
    before = active(a)
    response = a.post("/v1/config", content=_break(ORIGINAL, *edits))
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_config"
    problems = error["problems"]
    assert {p["path"] for p in problems} == paths, problems
    assert all(p["file"] and p["reason"] for p in problems)
    after = active(a)
    assert (after["program_version"], after["program_hash"]) == (before["program_version"], before["program_hash"])
    assert first_xp(shop_a) == 199


def test_config_that_is_not_toml_is_422(a: httpx.Client) -> None:
    """A body that is not TOML answers 422 with one problem saying so."""
    before = active(a)["program_version"]
    response = a.post("/v1/config", content=b"[program\nname = ")
    assert response.status_code == 422
    problems = error_of(response)["problems"]
    assert len(problems) == 1 and problems[0]["reason"]
    assert active(a)["program_version"] == before


def test_empty_config_body_is_400(a: httpx.Client) -> None:
    """An empty programme body answers 400 on field body."""
    response = a.post("/v1/config", content=b"")
    assert response.status_code == 400
    assert error_of(response)["field"] == "body"


def test_config_over_1_mib_is_413(a: httpx.Client) -> None:
    """A programme body over 1 MiB answers 413."""
    response = a.post("/v1/config", content=ORIGINAL + b"#" * (1024 * 1024))
    assert response.status_code == 413
    assert error_of(response)["field"] == "body"


def test_served_file_is_not_rewritten(pair: tuple[Service, Service]) -> None:
    """Posting programmes never edits the file the service was started from."""
    assert Path(EXAMPLE_CONFIG).read_bytes() == ORIGINAL


def healthz_fresh(service: Service) -> dict[str, object]:
    """GET /healthz on a connection of its own, so the kernel may hand it to either worker."""
    response = httpx.get(f"{service.base_url}/healthz", headers={"connection": "close"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_both_workers_serve_a_posted_version_within_3_s(redis_url: str, tmp_path: Path) -> None:
    """With --workers 2, each of two programmes posted back to back is served by both workers within 3 s.

    The watcher re-reads every 5 s in case a message is lost, so one change could arrive in time
    by that re-read even if pub/sub were broken; a second change posted as soon as the first has
    arrived cannot. A live socket held on one worker tells the workers apart: its /healthz counts
    one live socket, the other's none.
    """
    service = start_service(redis_url, new_prefix(), tmp_path / "workers", workers=2)
    try:
        with service.client(API_KEY) as shop:
            token = shop.post("/v1/tokens", json={"member": unique("m")}).json()["token"]
        with connect(f"{service.base_url.replace('http', 'ws', 1)}/v1/live?token={token}"):
            deadline = time.monotonic() + RELOAD_TIMEOUT_S
            while healthz_fresh(service)["live_sockets"] != 1:
                assert time.monotonic() < deadline, "the live socket was never counted"
                time.sleep(0.05)
            for source in (DOUBLE_XP, ORIGINAL):
                posted = httpx.post(
                    f"{service.base_url}/v1/config", content=source, timeout=30,
                    headers={"authorization": f"Bearer {ADMIN_KEY}", "connection": "close"},
                )
                assert posted.status_code == 200, posted.text
                version = posted.json()["program_version"]
                deadline = time.monotonic() + PUBSUB_BOUND_S
                run: list[object] = []  # live_sockets of consecutive answers at the new version
                while len(run) < 20 or set(run) != {0, 1}:
                    body = healthz_fresh(service)
                    run = [*run, body["live_sockets"]] if body["program_version"] == version else []
                    assert time.monotonic() < deadline, f"both workers not on version {version} within {PUBSUB_BOUND_S} s"
    finally:
        service.stop()
