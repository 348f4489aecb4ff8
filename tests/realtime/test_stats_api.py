"""``GET /v1/stats`` through the service: the day's figures move as events apply (the service
sends its counts each second), bad ranges are 422 naming the parameter, and only the admin key
reads them."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.realtime.conftest import error_of, purchase, unique


def test_the_days_figures_count_what_applied(shop: httpx.Client, admin: httpx.Client) -> None:
    before = admin.get("/v1/stats").json()
    assert before["churn"]["window_days"] == 30 and len(before["days"]) == 7
    member = unique("m")
    assert shop.post("/v1/events", json=purchase(member, 5_000)).status_code == 200
    deadline = time.monotonic() + 30  # counts go out once a second: a guard against a hang, not a speed check
    while time.monotonic() < deadline:
        after = admin.get("/v1/stats").json()
        if after["days"][-1]["points_issued"] > before["days"][-1]["points_issued"]:
            break
        time.sleep(0.2)
    today = after["days"][-1]
    assert today["active"] >= 1 and today["buyers"] >= 1
    assert today["points_issued"] >= before["days"][-1]["points_issued"] + 50  # 1 point a yuan, 50 yuan and more
    assert after["points_outstanding"] >= before["points_outstanding"] + 50


@pytest.mark.parametrize(("query", "field"), [
    ("from=2026-13-01", "from"), ("to=yesterday", "to"), ("from=2026-01-01&to=2026-12-31", "from"),
    ("from=2026-12-05&to=2026-12-01", "from"), ("from=2000-01-01&to=0001-01-01", "to"), ("window=0", "window"), ("window=91", "window"), ("days=3", "days"),
])
def test_a_bad_range_is_422_naming_the_parameter(admin: httpx.Client, query: str, field: str) -> None:
    response = admin.get(f"/v1/stats?{query}")
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field


def test_only_the_admin_reads_the_stats(shop: httpx.Client) -> None:
    assert shop.get("/v1/stats").status_code == 401
