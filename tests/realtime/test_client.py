"""``realtime.client.LiveClient``: the URL forms it takes, against the session's real service."""

from __future__ import annotations

import asyncio

import pytest

from realtime.client import LiveClient, LiveRefused, feed_url
from tests.realtime.conftest import Service, purchase, unique
from tests.realtime.test_live import frames_of, member_token, post, reading, ws_base


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ws://h:8000", "ws://h:8000/v1/live"),
        ("ws://h:8000/", "ws://h:8000/v1/live"),
        ("ws://h:8000/v1/live", "ws://h:8000/v1/live"),
        ("ws://h:8000/v1/live/", "ws://h:8000/v1/live"),
        ("http://h:8000", "ws://h:8000/v1/live"),
        ("https://h/rewards", "wss://h/rewards/v1/live"),
        ("wss://h/rewards/v1/live", "wss://h/rewards/v1/live"),
    ],
)
def test_feed_url_takes_the_base_url_or_the_feed_url(given: str, expected: str) -> None:
    """The service's base URL (ws or http, a prefix kept) and the feed's own URL name the same feed."""
    assert feed_url(given) == expected


@pytest.mark.parametrize("given", ["ws://h/v1/live?token=t", "ws://h/#x", "ftp://h", "h:8000", "/v1/live"])
def test_feed_url_refuses_a_query_and_what_is_not_a_service_url(given: str) -> None:
    """A query (the client adds token and since), another scheme or no host is a ValueError naming the URL."""
    with pytest.raises(ValueError, match="expected the service's URL|not in the URL"):
        feed_url(given)


@pytest.mark.parametrize("form", ["base", "base/", "feed", "feed/", "http base"])
def test_live_client_follows_the_feed_given_either_url_form(service: Service, form: str) -> None:
    """Given the base URL or the feed's full URL (ws or http), LiveClient receives a new award's frames."""
    base = ws_base(service)
    url = {"base": base, "base/": base + "/", "feed": base + "/v1/live", "feed/": base + "/v1/live/",
           "http base": service.base_url}[form]
    member = unique("m")

    async def main() -> None:
        client = LiveClient(url, member_token(member), since="0-0", max_attempts=1)
        async with service.async_client() as http, reading(client) as feed:
            expected = frames_of(await post(http, purchase(member, 19900)))
            assert await feed.until(expected[-1]["id"]) == expected
        assert client.connects == 1

    asyncio.run(main())


def test_live_client_given_a_wrong_path_stops_with_the_404(service: Service) -> None:
    """A URL whose path is not the feed's raises LiveRefused(404) naming the path, at once: no retry."""

    async def main() -> None:
        client = LiveClient(ws_base(service) + "/v2/live", member_token(unique("m")), since="0-0")
        async with reading(client) as feed:
            with pytest.raises(LiveRefused) as info:
                await feed.next()
        assert info.value.code == 404
        assert "no WebSocket at /v2/live/v1/live" in info.value.reason and "/v1/live" in info.value.reason
        assert client.connects == 0

    asyncio.run(main())
