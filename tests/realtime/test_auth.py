"""Who may call what: API keys, admin keys and member tokens (HS256 JWT, sub = member id)."""

from __future__ import annotations

import re
import time
import warnings

import httpx
import jwt
import jwt.warnings
import pytest
import redis
from starlette.routing import Route

from realtime.app import create_app
from realtime.settings import Settings
from tests.realtime.conftest import (
    ADMIN_KEY,
    API_KEY,
    EXAMPLE_CONFIG,
    OTHER_API_KEY,
    TOKEN_SECRET,
    Service,
    error_of,
    member_keys,
    purchase,
    run_cli,
    unique,
)

MAX_TTL_S = 30 * 24 * 3600


def bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


def mint(shop: httpx.Client, member: str, **body: object) -> str:
    response = shop.post("/v1/tokens", json={"member": member, **body})
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


@pytest.fixture
def known_member(shop: httpx.Client) -> str:
    """A member with one purchase, so its snapshot exists."""
    m = unique("m")
    assert shop.post("/v1/events", json=purchase(m)).status_code == 200
    return m


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert error_of(response)["code"] == "unauthorized"
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/events"),
        ("GET", "/v1/members/m-1"),
        ("PUT", "/v1/members/m-1"),
        ("GET", "/v1/me"),
        ("POST", "/v1/tokens"),
        ("GET", "/v1/config"),
        ("POST", "/v1/config"),
    ],
)
def test_missing_authorization_is_401(anonymous: httpx.Client, method: str, path: str) -> None:
    """Every endpoint but health and metrics answers 401 without credentials, before reading the body."""
    assert_401(anonymous.request(method, path, content=b"{}"))


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Basic dXNlcjpwYXNz", f"Token {API_KEY}", f"{API_KEY}", f"Bearer {API_KEY}x", f"Bearer {API_KEY[:-1]}"],
    ids=["empty", "scheme_only", "basic", "other_scheme", "bare_key", "key_plus_char", "key_prefix"],
)
def test_wrong_api_key_is_401(anonymous: httpx.Client, known_member: str, header: str) -> None:
    """A malformed header or a key that is not exactly a configured key answers 401."""
    response = anonymous.get(f"/v1/members/{known_member}", headers={"authorization": header})
    assert_401(response)


def test_both_configured_api_keys_work(anonymous: httpx.Client, known_member: str) -> None:
    """Every key in REKINDLE_API_KEYS is accepted; the scheme is case-insensitive."""
    assert anonymous.get(f"/v1/members/{known_member}", headers=bearer(API_KEY)).status_code == 200
    assert anonymous.get(f"/v1/members/{known_member}", headers=bearer(OTHER_API_KEY)).status_code == 200
    assert anonymous.get(f"/v1/members/{known_member}", headers={"authorization": f"bearer {API_KEY}"}).status_code == 200


def test_member_token_is_not_an_api_key(shop: httpx.Client, anonymous: httpx.Client, known_member: str) -> None:
    """A member token presented to a shop endpoint answers 401."""
    token = mint(shop, known_member)
    assert_401(anonymous.get(f"/v1/members/{known_member}", headers=bearer(token)))
    assert_401(anonymous.post("/v1/events", headers=bearer(token), json=purchase(known_member)))


ROUTE_TAKES = {"/v1/members/m-1": "a shop API key", "/v1/config": "an admin key", "/v1/me": "a member token"}


@pytest.mark.parametrize(
    ("path", "given"),
    [(path, given) for path, takes in ROUTE_TAKES.items()
     for given in ("a shop API key", "an admin key", "a member token", "an unknown key", None) if given != takes],
)
def test_a_refused_credential_is_told_which_credential_the_route_takes(
    shop: httpx.Client, anonymous: httpx.Client, path: str, given: str | None
) -> None:
    """Each kind of route refuses each other kind of credential (and none) with a 401 naming the
    credential it takes and, for a known kind, the one it was given."""
    takes = ROUTE_TAKES[path]
    credential = {"a shop API key": API_KEY, "an admin key": ADMIN_KEY, "a member token": mint(shop, "m-1"),
                  "an unknown key": "not-a-key", None: None}[given]
    response = anonymous.get(path, headers=bearer(credential) if credential else {})
    assert_401(response)
    message = error_of(response)["message"]
    if given in ROUTE_TAKES.values():
        assert message == f"this route takes {takes}, not {given}"
    elif given is None:
        assert message == f"missing Authorization: Bearer <credential>; this route takes {takes}"
    else:
        assert message == ("member token is invalid" if takes == "a member token" else
                           f"this route takes {takes}: the credential given is not one")


def test_api_key_is_not_a_member_token(anonymous: httpx.Client) -> None:
    """The shop's API key presented to /v1/me answers 401."""
    assert_401(anonymous.get("/v1/me", headers=bearer(API_KEY)))


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/config"), ("POST", "/v1/config")])
def test_admin_endpoints_refuse_the_shop_key(shop: httpx.Client, method: str, path: str) -> None:
    """Admin endpoints answer 401 to the shop's API key."""
    assert_401(shop.request(method, path, content=b"[program]\n"))


def test_admin_key_is_not_a_shop_key(anonymous: httpx.Client, known_member: str) -> None:
    """The admin key does not post events or read members."""
    assert_401(anonymous.get(f"/v1/members/{known_member}", headers=bearer(ADMIN_KEY)))


def test_me_with_token_from_the_api(shop: httpx.Client, anonymous: httpx.Client, known_member: str) -> None:
    """A token minted by POST /v1/tokens reads that member's own snapshot at /v1/me."""
    response = shop.post("/v1/tokens", json={"member": known_member, "ttl_s": 600})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["member"] == known_member
    claims = jwt.decode(body["token"], TOKEN_SECRET, algorithms=["HS256"])
    assert claims["sub"] == known_member
    assert claims["exp"] - claims["iat"] == 600
    assert body["expires_at_ms"] == claims["exp"] * 1000
    me = anonymous.get("/v1/me", headers=bearer(body["token"]))
    assert me.status_code == 200, me.text
    assert me.json()["member"] == known_member
    assert me.json()["points"]["balance"] == 299
    assert me.json() == shop.get(f"/v1/members/{known_member}").json()


def test_me_with_token_from_the_command_line(anonymous: httpx.Client, known_member: str, cli_env: dict[str, str]) -> None:
    """A token minted by `rekindle token` with the same secret reads /v1/me for that member."""
    done = run_cli("token", known_member, env=cli_env)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    me = anonymous.get("/v1/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["member"] == known_member


def test_token_of_member_without_data_reads_an_empty_snapshot(shop: httpx.Client, anonymous: httpx.Client) -> None:
    """A valid token of a member with no events and no profile reads an empty snapshot at /v1/me, not 404."""
    member = unique("m")
    response = anonymous.get("/v1/me", headers=bearer(mint(shop, member)))
    assert response.status_code == 200, response.text
    assert response.json()["member"] == member
    assert response.json()["points"]["balance"] == 0


def _token(sub: object, *, exp_delta_s: int = 600, secret: str = TOKEN_SECRET, **claims: object) -> str:
    now = int(time.time())
    payload: dict[str, object] = {"sub": sub, "iat": now, "exp": now + exp_delta_s, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def _hs512(member: str) -> str:
    """A token signed with the right secret but an algorithm the service does not accept."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode({"sub": member, "exp": int(time.time()) + 600}, TOKEN_SECRET, algorithm="HS512")


def _tampered(token: str) -> str:
    """The same header and claims with another signature."""
    head, claims, signature = token.split(".")
    return ".".join([head, claims, ("A" if signature[0] != "A" else "B") + signature[1:]])


@pytest.mark.parametrize(
    "make",
    [
        lambda m: _token(m, exp_delta_s=-60),
        lambda m: _token(m, secret="another-secret-that-is-long-enough-for-hs256"),
        lambda m: _token(f"{m}{{1}}"),
        lambda m: _token(f"{m} x"),
        lambda m: _token(""),
        lambda m: _token(42),
        lambda m: jwt.encode({"sub": m, "iat": int(time.time())}, TOKEN_SECRET, algorithm="HS256"),
        lambda m: jwt.encode({"exp": int(time.time()) + 600}, TOKEN_SECRET, algorithm="HS256"),
        lambda m: _hs512(m),
        lambda m: jwt.encode({"sub": m, "exp": int(time.time()) + 600}, None, algorithm="none"),
        lambda m: _tampered(_token(m)),
        lambda m: "not.a.jwt",
    ],
    ids=[
        "expired", "forged", "sub_braces", "sub_space", "sub_empty", "sub_number", "no_exp", "no_sub",
        "hs512", "alg_none", "bad_signature", "garbage",
    ],
)
def test_bad_token_is_401(anonymous: httpx.Client, known_member: str, make) -> None:  # type: ignore[no-untyped-def]
    """An expired, forged, unsigned or ill-formed token, or one naming no valid member, answers 401."""
    assert_401(anonymous.get("/v1/me", headers=bearer(make(known_member))))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"member": "m-1", "ttl_s": 59}, "ttl_s"),
        ({"member": "m-1", "ttl_s": MAX_TTL_S + 1}, "ttl_s"),
        ({"member": "m-1", "ttl_s": "3600"}, "ttl_s"),
        ({"member": "m-1", "ttl_s": 3600.5}, "ttl_s"),  # 3600.0 is the integer 3600
        ({"member": "m-1", "ttl_s": True}, "ttl_s"),
        ({"member": "m-1", "ttl_s": None}, "ttl_s"),
        ({"ttl_s": 3600}, "member"),
        ({"member": "m{1}"}, "member"),
        ({"member": 42}, "member"),
        ({"member": "m-1", "scope": "admin"}, "scope"),
        (["m-1"], "body"),
    ],
    ids=["ttl_too_short", "ttl_too_long", "ttl_string", "ttl_float", "ttl_bool", "ttl_null", "no_member",
         "member_braces", "member_number", "unknown_key", "not_object"],
)
def test_token_request_validation(shop: httpx.Client, body: object, field: str) -> None:
    """POST /v1/tokens refuses a bad member, ttl_s or key with 422 naming the field."""
    response = shop.post("/v1/tokens", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field


@pytest.mark.parametrize("ttl_s", [60, MAX_TTL_S])
def test_token_ttl_bounds_are_inclusive(shop: httpx.Client, ttl_s: int) -> None:
    """ttl_s of exactly 60 s and exactly 30 days are accepted."""
    token = mint(shop, "m-1", ttl_s=ttl_s)
    claims = jwt.decode(token, TOKEN_SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == ttl_s


def test_token_default_ttl_is_a_day(shop: httpx.Client) -> None:
    """Without ttl_s a token lives one day."""
    claims = jwt.decode(mint(shop, "m-1"), TOKEN_SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 24 * 3600


# --- a member token against every shop and admin endpoint ------------------------------------------------

MEMBER_OR_PUBLIC = ("/v1/me", "/v1/games", "/v1/live", "/healthz", "/metrics", "/openapi.json", "/docs")  # and under them
PUBLIC_PAGES = ("/",)  # the member page: its token is the page's to send, not the request's


def _for_members_or_public(path: str) -> bool:
    return path in PUBLIC_PAGES or any(path == p or path.startswith(p + "/") for p in MEMBER_OR_PUBLIC)


def shop_and_admin_routes() -> list[tuple[str, str]]:
    """Every (method, path template) of the app that a member token must not open, read from the
    app itself so that a route added later is covered without a word here."""
    found = []
    for route in create_app(Settings()).routes:
        if not isinstance(route, Route) or _for_members_or_public(route.path):
            continue
        found += [(method, route.path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


def _body(method: str, path: str, victim: str) -> bytes | dict[str, object] | None:
    """A body that would write for the shop or the admin, so that "nothing written" means something."""
    if path == "/v1/config":
        return EXAMPLE_CONFIG.read_bytes().replace(b"[program]", b"# a new version\n[program]", 1) if method == "POST" else None
    if path == "/v1/events":
        return purchase(victim)
    if path == "/v1/tokens":
        return {"member": victim}
    if path == "/v1/members/{member}":
        return {"birthday": "03-21", "tags": ["vip"]} if method == "PUT" else None
    return {"id": unique("op"), "member": victim, "amount": 1, "reason": "test", "item": "tea-01", "order": "o-1"}


def _state(sync_redis: redis.Redis, prefix: str, *members: str) -> dict[bytes, bytes | None]:
    return {key: sync_redis.dump(key) for m in members for key in member_keys(sync_redis, prefix, m)}


def test_shop_and_admin_routes_are_found() -> None:
    """The route list really covers the shop and admin endpoints, including tokens and profiles."""
    routes = shop_and_admin_routes()
    assert {("POST", "/v1/tokens"), ("PUT", "/v1/members/{member}"), ("POST", "/v1/events"), ("POST", "/v1/config")} <= set(routes)


@pytest.mark.parametrize("whose", ["another member's", "the named member's own"])
@pytest.mark.parametrize(("method", "path"), shop_and_admin_routes())
def test_member_token_on_shop_and_admin_endpoints_is_401_and_writes_nothing(
    service: Service,
    shop: httpx.Client,
    admin: httpx.Client,
    anonymous: httpx.Client,
    sync_redis: redis.Redis,
    known_member: str,
    method: str,
    path: str,
    whose: str,
) -> None:
    """A valid member token as Bearer on any shop or admin endpoint naming a member answers 401; no key of either member and no programme changes."""
    attacker = unique("m") if whose == "another member's" else known_member
    assert shop.post("/v1/events", json=purchase(attacker)).status_code == 200  # the attacker has data too
    token = mint(shop, attacker)
    url = re.sub(r"\{member\}", known_member, path)
    url = re.sub(r"\{[^}]+\}", "x-1", url)  # any other path parameter
    body = _body(method, path, known_member)
    before = _state(sync_redis, service.prefix, known_member, attacker)
    config_before = admin.get("/v1/config").json()
    kwargs: dict[str, object] = {"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    assert_401(anonymous.request(method, url, headers=bearer(token), **kwargs))  # type: ignore[arg-type]
    assert _state(sync_redis, service.prefix, known_member, attacker) == before
    assert admin.get("/v1/config").json() == config_before
