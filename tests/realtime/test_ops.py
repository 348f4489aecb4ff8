"""Operations: health, Prometheus metrics, and JSON logs that never hold a credential."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.realtime.conftest import (
    ADMIN_KEY,
    API_KEY,
    OTHER_API_KEY,
    TOKEN_SECRET,
    Service,
    new_prefix,
    purchase,
    start_service,
    unique,
)

GUESSED_KEY = "guessed-key-0d9f8e7a6b5c4d3e2f1a"  # a wrong key a caller tried: not to be logged either


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def events_total(client: httpx.Client, type_: str, outcome: str) -> float:
    text = client.get("/metrics").text
    return samples(text, "rekindle_events_total").get((("outcome", outcome), ("type", type_)), 0.0)


@pytest.fixture
def used_tokens(shop: httpx.Client, anonymous: httpx.Client) -> Iterator[list[str]]:
    """Exercise every kind of credential against the session's service; yield the tokens minted."""
    m = unique("m")
    tokens = []
    assert shop.post("/v1/events", json=purchase(m)).status_code == 200
    for _ in range(2):
        token = shop.post("/v1/tokens", json={"member": m}).json()["token"]
        assert anonymous.get("/v1/me", headers={"authorization": f"Bearer {token}"}).status_code == 200
        tokens.append(token)
    assert anonymous.get("/v1/config", headers={"authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200
    assert anonymous.get(f"/v1/members/{m}", headers={"authorization": f"Bearer {OTHER_API_KEY}"}).status_code == 200
    assert anonymous.get(f"/v1/members/{m}", headers={"authorization": f"Bearer {GUESSED_KEY}"}).status_code == 401
    assert anonymous.get("/v1/me", headers={"authorization": f"Bearer {tokens[0]}x"}).status_code == 401
    assert anonymous.post("/v1/events", headers={"authorization": f"Bearer {tokens[0]}"}, json=purchase(m)).status_code == 401
    yield tokens


def log_entry(line: str) -> dict[str, object]:
    try:
        entry = json.loads(line)
    except ValueError:
        pytest.fail(f"log line is not JSON: {line!r}")
    assert isinstance(entry, dict), line
    return entry


def secrets_in(text: str, tokens: list[str]) -> list[str]:
    credentials = [API_KEY, OTHER_API_KEY, ADMIN_KEY, TOKEN_SECRET, GUESSED_KEY, *tokens]
    # A token's signature alone is as good as a leak of the token.
    credentials += [t.rsplit(".", 1)[1] for t in tokens]
    return [c for c in credentials if c in text]


def test_healthz_answers_with_the_programme_version(anonymous: httpx.Client, admin: httpx.Client) -> None:
    """GET /healthz answers 200 without credentials, naming the active programme version."""
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "ok"
    assert body["program_version"] == admin.get("/v1/config").json()["program_version"]


def test_metrics_count_events_by_type_and_outcome(shop: httpx.Client, anonymous: httpx.Client, member: str) -> None:
    """/metrics is Prometheus text with rekindle_events_total moving by type and outcome."""
    before = {k: events_total(anonymous, "purchase", k) for k in ("applied", "duplicate")}
    rejected_before = events_total(anonymous, "-", "rejected")
    event = purchase(member)
    shop.post("/v1/events", json=event)
    shop.post("/v1/events", json=event)
    shop.post("/v1/events", json={**event, "id": unique("e"), "data": {"amount": "1"}})
    response = anonymous.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "rekindle_events_total" in response.text
    assert events_total(anonymous, "purchase", "applied") == before["applied"] + 1
    assert events_total(anonymous, "purchase", "duplicate") == before["duplicate"] + 1
    assert events_total(anonymous, "-", "rejected") == rejected_before + 1


def test_metrics_show_latency_and_programme_version(shop: httpx.Client, anonymous: httpx.Client, member: str) -> None:
    """/metrics carries the award latency histogram and the active programme version."""
    shop.post("/v1/events", json=purchase(member))
    text = anonymous.get("/metrics").text
    counts = samples(text, "rekindle_award_seconds_count")
    assert counts.get((("endpoint", "single"),), 0) >= 1
    assert samples(text, "rekindle_store_seconds_count")[()] >= 1
    version = anonymous.get("/healthz").json()["program_version"]
    assert samples(text, "rekindle_program_version")[()] == version


def test_metrics_never_hold_a_credential(anonymous: httpx.Client, used_tokens: list[str]) -> None:
    """After requests with API keys, admin key and tokens, /metrics contains none of them."""
    text = anonymous.get("/metrics").text
    assert "rekindle_events_total" in text
    assert secrets_in(text, used_tokens) == []


def test_logs_are_json_lines_without_credentials(service: Service, used_tokens: list[str]) -> None:
    """Every line the service writes to stderr is a JSON object, and none holds a key or a token."""
    text = service.stderr_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the service logged nothing at all"
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= log_entry(line).keys()
    assert secrets_in(text, used_tokens) == []
    assert secrets_in(service.stdout_text(), used_tokens) == []


def test_logs_stay_json_with_the_shortest_allowed_secret(redis_url: str, tmp_path: Path) -> None:
    """With a 32-byte token secret (the minimum accepted), minting and checking tokens keeps stderr JSON."""
    short_secret = "0123456789abcdef0123456789abcdef"
    service = start_service(redis_url, new_prefix(), tmp_path / "serve", env={"REKINDLE_TOKEN_SECRET": short_secret})
    try:
        with service.client() as shop:
            m = unique("m")
            shop.post("/v1/events", json=purchase(m))
            token = shop.post("/v1/tokens", json={"member": m}).json()["token"]
            me = shop.get("/v1/me", headers={"authorization": f"Bearer {token}"})
            assert me.status_code == 200, me.text
    finally:
        service.stop()
    for line in service.stderr_text().splitlines():
        log_entry(line)
    assert short_secret not in service.stderr_text()
