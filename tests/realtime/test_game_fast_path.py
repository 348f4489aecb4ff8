"""Game routes through the fast path (``realtime/app.py``'s ``EventsFastPath``): they answer as the
router would, and whatever is not exactly a game route's method and path still goes to the router.

Through a real ``rekindle serve`` (the session's service: the example programme's flash sale and
check-in), then the same requests in one process through the app's router and through the fast
path, answer for answer, byte for byte.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from engine.plugins import Answer, Game, GameCall
from engine.plugins import Route as GameRoute
from realtime.app import EventsFastPath, _compile, _match, create_app
from realtime.routes import games
from realtime.settings import Settings
from tests.realtime.conftest import API_KEY, EXAMPLE_CONFIG, TOKEN_SECRET, Service, error_of, new_prefix, unique

CLAIM = "/v1/games/flash/member-day/claim"


def token_for(member: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": member, "iat": now, "exp": now + 3600}, TOKEN_SECRET, algorithm="HS256")


@pytest.fixture
def me(service: Service) -> Iterator[httpx.Client]:
    """A member with no points (every claim of a priced sale is refused: nothing is written)."""
    headers = {"authorization": f"Bearer {token_for(unique('m'))}"}
    with httpx.Client(base_url=service.base_url, headers=headers, timeout=30) as client:
        yield client


def test_a_wrong_method_on_a_game_path_is_405_as_before(me: httpx.Client) -> None:
    """GET on the POST-only claim path is the router's 405, shaped as any route's (``/v1/me/redeem``)."""
    game, other = me.get(CLAIM), me.get("/v1/me/redeem")
    assert (game.status_code, other.status_code) == (405, 405)
    assert error_of(game)["code"] == error_of(other)["code"] == "method_not_allowed"
    assert game.headers["allow"] == other.headers["allow"] == "POST"


def test_paths_near_a_game_route_are_the_routers(me: httpx.Client) -> None:
    """An empty parameter is no match (404); a trailing slash is the router's redirect; HEAD of a
    GET game route is served by the router without a body."""
    empty = me.post("/v1/games/flash//claim", json={"id": "c-1"})
    assert (empty.status_code, error_of(empty)["code"]) == (404, "not_found")
    slash = me.post(CLAIM + "/", json={"id": "c-1"}, follow_redirects=False)
    assert slash.status_code == 307 and slash.headers["location"].endswith(CLAIM), slash.headers
    head = me.head("/v1/games/flash/member-day")
    assert head.status_code == 200 and head.content == b""


def test_a_path_parameter_reaches_the_handler(me: httpx.Client) -> None:
    """The sale named in the path is the one answered, an unknown one is 404 naming ``sale``, and
    one that is no id is 422 naming it."""
    sale = me.get("/v1/games/flash/member-day")
    assert sale.status_code == 200 and sale.json()["sale"] == "member-day"
    unknown = me.post("/v1/games/flash/no-such-sale/claim", json={"id": "c-1"})
    assert (unknown.status_code, error_of(unknown)["code"], error_of(unknown)["field"]) == (404, "not_found", "sale")
    bad = me.post("/v1/games/flash/not a name/claim", json={"id": "c-1"})
    assert (bad.status_code, error_of(bad)["field"]) == (422, "sale"), bad.text


@pytest.mark.parametrize(("path", "body", "status", "code", "field"), [
    (CLAIM, {"id": "c-1", "qty": 2}, 422, "invalid", "qty"),
    (CLAIM, {"id": "c-1"}, 409, "insufficient_points", "sale"),
    ("/v1/me/checkin", {"pay": "card"}, 422, "invalid", "pay"),
    ("/v1/me/checkin", [], 422, "invalid", "body"),
])
def test_errors_name_their_field(me: httpx.Client, path: str, body: Any, status: int, code: str, field: str) -> None:
    response = me.post(path, json=body)
    assert response.status_code == status, response.text
    assert (error_of(response)["code"], error_of(response)["field"]) == (code, field)


def test_credentials_and_bodies_are_checked_as_on_every_route(service: Service, me: httpx.Client) -> None:
    """No credential: 401 with ``WWW-Authenticate``; a shop key on a member route: 401 saying so;
    a body that is no JSON: 400 naming the body."""
    with httpx.Client(base_url=service.base_url, timeout=30) as anonymous:
        missing = anonymous.post(CLAIM, json={"id": "c-1"})
    assert (missing.status_code, missing.headers["www-authenticate"]) == (401, "Bearer")
    with httpx.Client(base_url=service.base_url, headers={"authorization": f"Bearer {API_KEY}"}, timeout=30) as shop:
        wrong = shop.post(CLAIM, json={"id": "c-1"})
    assert wrong.status_code == 401 and "shop API key" in error_of(wrong)["message"]
    bad = me.post(CLAIM, content=b"{not json", headers={"content-type": "application/json"})
    assert (bad.status_code, error_of(bad)["code"], error_of(bad)["field"]) == (400, "bad_json", "body")


# --- the same requests through the router and through the fast path, in one process --------------

#: Requests that write nothing, so each answers alike twice: (method, path, member?, body).
SAME: list[tuple[str, str, bool, Any]] = [
    ("POST", CLAIM, True, {"id": "c-1", "qty": 2}),
    ("POST", CLAIM, True, {"id": "rk:c-1"}),
    ("POST", CLAIM, True, {"id": "c-1"}),  # no points: insufficient_points
    ("POST", CLAIM, True, b"{not json"),
    ("POST", CLAIM, True, None),
    ("POST", CLAIM, False, {"id": "c-1"}),
    ("POST", "/v1/games/flash/no-such-sale/claim", True, {"id": "c-1"}),
    ("POST", "/v1/games/flash/not a name/claim", True, {"id": "c-1"}),
    ("GET", "/v1/games/flash/member-day", True, None),
    ("GET", "/v1/games/flash/no-such-sale", True, None),
    ("POST", "/v1/me/checkin", True, {"pay": "card"}),
    ("POST", "/v1/me/checkin", True, {"makeup": "yesterday"}),
    ("POST", "/v1/me/checkin", False, None),
]


def test_the_fast_path_answers_byte_for_byte_as_the_router(redis_url: str, tmp_path: Path) -> None:
    """Each request above, sent to the app's router and to the fast path around it: the same
    status, headers and body."""
    settings = Settings(redis_url=redis_url, api_keys=frozenset([API_KEY]), token_secret=TOKEN_SECRET,
                        config_path=EXAMPLE_CONFIG, key_prefix=new_prefix(), data_dir=tmp_path)
    app = create_app(settings)
    fast = EventsFastPath(app)
    token = token_for(unique("m"))

    async def answers(target: Any) -> list[tuple[int, list[tuple[str, str]], bytes]]:
        out = []
        transport = httpx.ASGITransport(app=target)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for method, path, member, body in SAME:
                headers = {"authorization": f"Bearer {token}"} if member else {}
                content = body if isinstance(body, bytes) else None
                response = await client.request(method, path, headers=headers, content=content,
                                                json=None if body is None or content is not None else body)
                out.append((response.status_code, sorted(response.headers.multi_items()), response.content))
        return out

    async def both() -> tuple[list[Any], list[Any]]:
        async with app.router.lifespan_context(app):
            return await answers(app), await answers(fast)

    routed, fast_answers = asyncio.run(both())
    for request, a, b in zip(SAME, routed, fast_answers):
        assert a == b, f"{request}: router {a} != fast path {b}"
    assert {status for status, _, _ in routed} >= {200, 400, 401, 404, 409, 422}


# --- what the fast path's table takes, and what it leaves to the router ----------------------------


async def _handler(call: GameCall) -> Answer:
    return Answer({"params": dict(call.params)})


async def _other(request: Request) -> Response:
    return PlainTextResponse("router")


def _game(*paths: tuple[str, str]) -> Game:
    return Game(name="t", routes=tuple(GameRoute(method, path, f"op{i}", "s", "d", "member", _handler)  # type: ignore[arg-type]
                                       for i, (method, path) in enumerate(paths)))


def test_a_route_the_router_would_match_first_stays_with_the_router() -> None:
    """A literal route before a game route of the same shape wins its path; other paths of the
    shape are the game's, with their parameters."""
    routes = [Route("/v1/games/t/special/go", _other, methods=["POST"]),
              *games.starlette_routes([_game(("post", "/v1/games/t/{thing}/go"))])]
    table = _compile(list(Starlette(routes=routes).routes))
    assert _match(table, "POST", "/v1/games/t/special/go") is None
    found = _match(table, "POST", "/v1/games/t/x-1/go")
    assert found is not None and found[1] == {"thing": "x-1"}
    assert _match(table, "GET", "/v1/games/t/x-1/go") is None  # the router's 405
    assert _match(table, "POST", "/v1/games/t/x-1/go/") is None  # the router's redirect


def test_a_mount_that_may_match_a_game_path_leaves_it_to_the_router() -> None:
    """A Mount before a game route whose paths it may match: the router's; one it cannot match
    (fewer segments) does not stand in the way."""
    routes = [Mount("/v1/games/t/m", app=PlainTextResponse("mounted")),
              *games.starlette_routes([_game(("post", "/v1/games/t/{thing}/go"), ("get", "/v1/games/t/{thing}"))])]
    table = _compile(list(Starlette(routes=routes).routes))
    assert _match(table, "POST", "/v1/games/t/m/go") is None
    assert _match(table, "POST", "/v1/games/t/x/go") is None
    found = _match(table, "GET", "/v1/games/t/m")
    assert found is not None and found[1] == {"thing": "m"}
    assert _match(table, "HEAD", "/v1/games/t/m") is None
