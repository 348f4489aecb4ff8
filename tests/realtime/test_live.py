"""``GET /v1/live`` against the session's real ``rekindle serve``, with real WebSocket clients.

Clients are the ``websockets`` library (raw frames) and ``realtime.client.LiveClient`` (what an
app does: resume, reconnect). Every wait for a frame or a close is bounded by ``WAIT_S`` as a
safety net only: tests await frames, never sleep, and assert nothing about timing. A socket is
"live" once it has answered a ping: the server reads ops only after the replay is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import msgpack
import orjson
import psutil
import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from engine.feed import FeedId, parse_feed_id
from engine.keys import Keys
from realtime.auth import Auth
from realtime.client import LiveClient, LiveRefused
from realtime.frames import Encoding
from tests.conftest import sync_client
from tests.realtime.conftest import TOKEN_SECRET, Service, purchase, unique

WAIT_S = 10.0  # the longest any single frame or close is awaited: a safety net, not a timing

# --- helpers (also imported by test_live_processes.py) ----------------------------------------------


def ws_base(service: Service) -> str:
    return "ws" + service.base_url.removeprefix("http")


def live_url(service: Service, **params: str) -> str:
    return f"{ws_base(service)}/v1/live" + (f"?{urlencode(params)}" if params else "")


def member_token(member: str, *, secret: str = TOKEN_SECRET, ttl_s: int = 3600) -> str:
    """A member token as the shop backend mints one in its own code (HS256, sub + exp)."""
    now = int(time.time())
    return jwt.encode({"sub": member, "iat": now, "exp": now + ttl_s}, secret, algorithm="HS256")


def decode(raw: str | bytes) -> dict[str, Any]:
    return orjson.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw, raw=False)  # type: ignore[no-any-return]


def sid(frame: dict[str, Any]) -> FeedId:
    return parse_feed_id(frame["id"])


def frames_of(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames the live feed must send for these HTTP results: one per effect, data + event id."""
    return [
        {"id": e["id"], "type": e["type"], "data": {**e["data"], "event": r["id"]}}
        for r in results
        for e in r["effects"]
    ]


def ids(frames: list[dict[str, Any]]) -> list[str]:
    return [f["id"] for f in frames]


def feed_ids(sync_redis: redis.Redis, prefix: str, member: str) -> list[str]:
    """The feed ids the member's stream holds, in stream order: effect i of entry E is E-i."""
    return [
        f"{eid.decode()}-{i}"
        for eid, fields in sync_redis.xrange(Keys(prefix).member(member).feed)
        for i in range(len(msgpack.unpackb(fields[b"d"])))
    ]


async def post(http: httpx.AsyncClient, *events: dict[str, Any]) -> list[dict[str, Any]]:
    """POST one event (or a batch of several) with the shop's key; every one must apply."""
    body = events[0] if len(events) == 1 else {"events": list(events)}
    response = await http.post("/v1/events", json=body)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    assert [r["status"] for r in results] == ["applied"] * len(events), results
    return results


async def recv(ws: Any) -> dict[str, Any]:
    async with asyncio.timeout(WAIT_S):
        return decode(await ws.recv())


async def recv_raw(ws: Any) -> str | bytes:
    async with asyncio.timeout(WAIT_S):
        return await ws.recv()  # type: ignore[no-any-return]


async def recv_n(ws: Any, n: int) -> list[dict[str, Any]]:
    return [await recv(ws) for _ in range(n)]


async def send_op(ws: Any, op: dict[str, Any], encoding: Encoding = Encoding.JSON) -> None:
    await ws.send(orjson.dumps(op).decode() if encoding is Encoding.JSON else msgpack.packb(op))


async def until_pong(ws: Any, encoding: Encoding = Encoding.JSON) -> list[dict[str, Any]]:
    """Send a ping; return every frame that came before its pong (the queue is drained up to it)."""
    await send_op(ws, {"op": "ping"}, encoding)
    before = []
    while (frame := await recv(ws)) != {"type": "pong"}:
        before.append(frame)
    return before


async def expect_frames(ws: Any, expected: list[dict[str, Any]]) -> None:
    """Exactly these frames arrive, in this order, and nothing after them (a ping is answered next)."""
    assert await recv_n(ws, len(expected)) == expected
    assert await until_pong(ws) == []


async def closed_with(ws: Any) -> tuple[int, str, list[dict[str, Any]]]:
    """Read to the end: the close code and reason the server sent, and the frames before them."""
    frames = []
    try:
        while True:
            frames.append(await recv(ws))
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, f"the connection ended without a close frame: {exc!r}"
        return exc.rcvd.code, exc.rcvd.reason, frames


class Feed:
    """A ``LiveClient`` being read: frames taken one by one, each within ``WAIT_S``."""

    def __init__(self, client: LiveClient) -> None:
        self.client = client
        self._frames = aiter(client)

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            return await anext(self._frames)

    async def until(self, last_id: str) -> list[dict[str, Any]]:
        """Frames up to and including ``last_id`` (stops early at any id past it: a gap)."""
        frames = []
        while True:
            frame = await self.next()
            frames.append(frame)
            if "id" in frame and sid(frame) >= parse_feed_id(last_id):
                return frames

    async def close(self) -> None:
        await self.client.close()
        await self._frames.aclose()


@asynccontextmanager
async def reading(client: LiveClient) -> AsyncIterator[Feed]:
    feed = Feed(client)
    try:
        yield feed
    finally:
        await feed.close()


def kill_pubsub_connections(sync_redis: redis.Redis, pid: int) -> int:
    """CLIENT KILL TYPE pubsub, limited to one service process (and its workers): the hub's link
    goes. On a cluster, on whichever node holds it."""
    if isinstance(sync_redis, redis.RedisCluster):
        servers = [redis.Redis(host=n.host, port=int(n.port)) for n in sync_redis.get_nodes()]
    else:
        servers = [sync_redis]
    process = psutil.Process(pid)
    killed = 0
    for server in servers:
        redis_port = server.connection_pool.connection_kwargs["port"]
        local_ports = {
            conn.laddr.port
            for p in (process, *process.children(recursive=True))
            for conn in p.net_connections(kind="tcp")
            if conn.raddr and conn.raddr.port == redis_port
        }
        for client in server.client_list(_type="pubsub"):
            if int(client["addr"].rsplit(":", 1)[1]) in local_ports:
                killed += int(server.client_kill_filter(_id=client["id"]))
    return killed


# --- a member's own effects ---------------------------------------------------------------------------


def test_member_receives_one_frame_per_effect_in_order(service: Service) -> None:
    """Each effect in the HTTP reply reaches the member's socket as one frame with its id, type and data, in order."""
    member = unique("m")

    async def main() -> None:
        async with service.async_client() as http, websockets.connect(
            live_url(service, token=member_token(member), since="0-0")
        ) as ws:
            assert await until_pong(ws) == []
            results = await post(http, purchase(member, 19900))
            results += await post(http, purchase(member, 500), purchase(member, 700))
            expected = frames_of(results)
            assert len(expected) >= 7  # first order: xp, points, quest, bonus xp/points, coupon...
            await expect_frames(ws, expected)

    asyncio.run(main())


def test_other_members_socket_receives_nothing(service: Service) -> None:
    """A second member's socket gets none of the first member's frames."""
    alice, bob = unique("m"), unique("m")

    async def main() -> None:
        async with service.async_client() as http, websockets.connect(
            live_url(service, token=member_token(alice), since="0-0")
        ) as alice_ws, websockets.connect(live_url(service, token=member_token(bob), since="0-0")) as bob_ws:
            assert await until_pong(alice_ws) == []
            assert await until_pong(bob_ws) == []
            expected = frames_of(await post(http, purchase(alice, 19900)))
            assert await recv_n(alice_ws, len(expected)) == expected  # the hub has dispatched them
            assert await until_pong(bob_ws) == []

    asyncio.run(main())


def test_two_sockets_of_one_member_each_receive_every_frame_once(service: Service) -> None:
    """Two open sockets of the same member both receive every frame, exactly once each."""
    member = unique("m")

    async def main() -> None:
        url = live_url(service, token=member_token(member), since="0-0")
        async with service.async_client() as http, websockets.connect(url) as one, websockets.connect(url) as two:
            assert await until_pong(one) == []
            assert await until_pong(two) == []
            expected = frames_of(await post(http, purchase(member, 19900)))
            expected += frames_of(await post(http, purchase(member, 300)))
            for ws in (one, two):
                await expect_frames(ws, expected)

    asyncio.run(main())


def test_a_member_holds_at_most_sixteen_sockets_per_process(service: Service) -> None:
    """The 17th socket of one member on one process is closed 4429 with a reason; the 16 keep working."""
    member = unique("m")

    async def main() -> None:
        url = live_url(service, token=member_token(member), since="0-0")
        async with contextlib.AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(websockets.connect(url)) for _ in range(16)]
            for ws in sockets:
                assert await until_pong(ws) == []  # each one is joined
            async with websockets.connect(url) as extra:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await recv(extra)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
                assert "16" in closed.value.rcvd.reason
            assert await until_pong(sockets[0]) == []

    asyncio.run(main())


def test_since_zero_replays_a_never_trimmed_stream_in_full(service: Service, sync_redis: redis.Redis) -> None:
    """since=0-0 on a stream that was never trimmed replays every entry, then goes live."""
    member = unique("m")

    async def main() -> None:
        async with service.async_client() as http:
            results = await post(http, purchase(member, 19900), purchase(member, 300), purchase(member, 400))
            async with websockets.connect(live_url(service, token=member_token(member), since="0-0")) as ws:
                assert await until_pong(ws) == frames_of(results)  # the replay is sent before ops are read
                live = frames_of(await post(http, purchase(member, 500)))
                await expect_frames(ws, live)
                assert ids(frames_of(results) + live) == feed_ids(sync_redis, service.prefix, member)

    asyncio.run(main())


# --- auth and bad requests ------------------------------------------------------------------------------


@pytest.mark.parametrize("first_frame", [{"op": "ping"}, {"op": "auth"}, {"op": "auth", "token": 42}])
def test_no_token_is_closed_4401_with_a_reason(service: Service, first_frame: dict[str, Any]) -> None:
    """Without a token in the URL or a first auth frame carrying one, the socket is accepted, then closed 4401 with a reason."""

    async def main() -> None:
        async with websockets.connect(live_url(service)) as ws:
            await send_op(ws, first_frame)
            code, reason, frames = await closed_with(ws)
            assert (code, frames) == (4401, [])
            assert "token" in reason

    asyncio.run(main())


BAD_TOKENS = {
    "forged": lambda m: member_token(m, secret="a-secret-that-is-not-the-services-0123456789"),
    "expired": lambda m: member_token(m, ttl_s=-60),
    "braces in member": lambda m: member_token(m + "}{m:other"),
    "not a jwt": lambda m: "not-a-token",
    "no exp": lambda m: jwt.encode({"sub": m}, TOKEN_SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_bad_token_is_closed_4401(service: Service, kind: str) -> None:
    """A forged, expired, malformed or brace-carrying token is closed 4401 with a reason, in the URL or the auth frame."""
    token = BAD_TOKENS[kind](unique("m"))

    async def main() -> None:
        async with websockets.connect(live_url(service, token=token)) as ws:
            code, reason, frames = await closed_with(ws)
            assert (code, frames) == (4401, [])
            assert reason
            if kind == "expired":
                assert "expired" in reason
        async with websockets.connect(live_url(service)) as ws:
            await send_op(ws, {"op": "auth", "token": token})
            assert (await closed_with(ws))[:1] == (4401,)

    asyncio.run(main())


def test_live_client_raises_live_refused_on_4401(service: Service) -> None:
    """LiveClient stops with LiveRefused(4401) on an expired token instead of retrying."""

    async def main() -> None:
        client = LiveClient(ws_base(service), member_token(unique("m"), ttl_s=-60), since="0-0")
        async with reading(client) as feed:
            with pytest.raises(LiveRefused) as info:
                await feed.next()
            assert info.value.code == 4401
            assert client.connects == 1

    asyncio.run(main())


def test_token_in_first_frame_works(service: Service) -> None:
    """A first frame {"op": "auth", "token", "since"} authenticates and starts the feed."""
    member = unique("m")

    async def main() -> None:
        async with service.async_client() as http, websockets.connect(live_url(service)) as ws:
            minted = (await http.post("/v1/tokens", json={"member": member})).json()["token"]
            await send_op(ws, {"op": "auth", "token": minted, "since": "0-0"})
            assert await until_pong(ws) == []
            await expect_frames(ws, frames_of(await post(http, purchase(member, 19900))))

    asyncio.run(main())


@pytest.mark.parametrize("where", ["query", "auth frame", "resume frame"])
def test_bad_since_is_closed_4400(service: Service, where: str) -> None:
    """since="abc" in the URL, the auth frame or a first resume frame is closed 4400 naming since."""
    member = unique("m")
    token = member_token(member)

    async def main() -> None:
        url = {
            "query": live_url(service, token=token, since="abc"),
            "auth frame": live_url(service),
            "resume frame": live_url(service, token=token),
        }[where]
        async with websockets.connect(url) as ws:
            if where == "auth frame":
                await send_op(ws, {"op": "auth", "token": token, "since": "abc"})
            elif where == "resume frame":
                await send_op(ws, {"op": "resume", "since": "abc"})
            code, reason, frames = await closed_with(ws)
            assert (code, frames) == (4400, [])
            assert "since" in reason

    asyncio.run(main())


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '{"op": "ping", "pad": "' + "x" * 5000 + '"}'])
def test_unusable_client_frame_is_closed_4400(service: Service, raw: str) -> None:
    """A client frame that is not a JSON object, or is over 4 KiB, is closed 4400."""

    async def main() -> None:
        async with websockets.connect(live_url(service, token=member_token(unique("m")), since="0-0")) as ws:
            assert await until_pong(ws) == []
            await ws.send(raw)
            code, reason, _ = await closed_with(ws)
            assert code == 4400 and reason

    asyncio.run(main())


def test_unknown_op_answers_an_error_frame(service: Service) -> None:
    """An unknown op answers an error frame; the socket stays open."""

    async def main() -> None:
        async with websockets.connect(live_url(service, token=member_token(unique("m")), since="0-0")) as ws:
            await send_op(ws, {"op": "dance"})
            assert (await recv(ws))["code"] == "unknown_op"
            assert await until_pong(ws) == []

    asyncio.run(main())


def test_resume_before_any_feed_frame_is_honoured(service: Service) -> None:
    """A resume frame after a ping, but before any feed frame went out, replays from its since, then carries on live."""
    member = unique("m")

    async def main() -> None:
        async with service.async_client() as http:
            history = frames_of(await post(http, purchase(member, 19900)))
            async with websockets.connect(live_url(service, token=member_token(member))) as ws:
                assert await until_pong(ws) == []  # live, from the end: nothing owed yet
                await send_op(ws, {"op": "resume", "since": history[0]["id"]})
                assert await until_pong(ws) == history[1:]
                await send_op(ws, {"op": "resume", "since": None})  # "from now": changes nothing
                await expect_frames(ws, frames_of(await post(http, purchase(member, 300))))

    asyncio.run(main())


def test_resume_after_a_feed_frame_answers_resume_too_late(service: Service) -> None:
    """Once a feed frame went out, a resume answers error resume_too_late (older frames would break order); live goes on."""
    member = unique("m")

    async def main() -> None:
        async with service.async_client() as http, websockets.connect(live_url(service, token=member_token(member))) as ws:
            assert await until_pong(ws) == []
            first = frames_of(await post(http, purchase(member, 19900)))
            assert await recv_n(ws, len(first)) == first
            await send_op(ws, {"op": "resume", "since": "0-0"})
            late = await recv(ws)
            assert (late["type"], late["code"]) == ("error", "resume_too_late")
            assert "since" in late["message"]
            await expect_frames(ws, frames_of(await post(http, purchase(member, 300))))

    asyncio.run(main())


# --- a token that expires while its socket is open ------------------------------------------------------------

SHORT_TTL_S = 2  # exp is in whole seconds: such a token expires 1 to 2 s after it is minted


def short_token(member: str, ttl_s: int = SHORT_TTL_S) -> str:
    """A member token minted as the service mints them (realtime.auth), with a short life."""
    return Auth(frozenset(), frozenset(), TOKEN_SECRET).mint(member, int(time.time() * 1000), ttl_s)[0]


@pytest.mark.parametrize("where", ["query", "auth frame"])
def test_socket_is_closed_4401_when_its_token_expires(service: Service, where: str) -> None:
    """A socket whose token expires while it is open is closed 4401 with a reason, after getting what came before."""
    member = unique("m")

    async def main() -> None:
        token = short_token(member)
        url = live_url(service, token=token, since="0-0") if where == "query" else live_url(service)
        async with service.async_client() as http, websockets.connect(url) as ws:
            if where == "auth frame":
                await send_op(ws, {"op": "auth", "token": token, "since": "0-0"})
            assert await until_pong(ws) == []  # accepted: the token was good
            expected = frames_of(await post(http, purchase(member, 19900)))
            code, reason, frames = await closed_with(ws)  # each read bounded by WAIT_S: the deadline
            assert frames == expected
            assert code == 4401 and "expired" in reason

    asyncio.run(main())


def test_live_client_with_a_plain_token_stops_when_it_expires(service: Service) -> None:
    """LiveClient given a plain token string raises LiveRefused(4401) when it expires: the same token cannot help."""

    async def main() -> None:
        client = LiveClient(ws_base(service), short_token(unique("m")), since="0-0")
        async with reading(client) as feed:
            with pytest.raises(LiveRefused) as info:
                await feed.next()
            assert info.value.code == 4401
            assert client.connects == 1

    asyncio.run(main())


def test_live_client_with_a_token_provider_reconnects_with_a_fresh_token(service: Service, sync_redis: redis.Redis) -> None:
    """LiveClient given a provider (async here) gets a fresh token after a 4401 expiry and resumes without loss."""
    member = unique("m")

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], LiveClient]:
        async with service.async_client() as http:
            expected: list[dict[str, Any]] = []
            reconnected = asyncio.Event()
            calls = 0

            async def provider() -> str:
                nonlocal calls
                calls += 1
                if calls == 2:  # the first socket was closed at expiry: post while none is open
                    expected.extend(frames_of(await post(http, purchase(member, 300))))
                    reconnected.set()
                return short_token(member) if calls == 1 else member_token(member)

            client = LiveClient(ws_base(service), provider, since="0-0", backoff_min_s=0.01)
            async with reading(client) as feed:
                expected += frames_of(await post(http, purchase(member, 19900)))
                got = await feed.until(expected[-1]["id"])
                pending = asyncio.create_task(feed.next())  # drives the client through the expiry
                async with asyncio.timeout(WAIT_S):
                    await reconnected.wait()
                got.append(await pending)
                got += await feed.until(expected[-1]["id"]) if got[-1]["id"] != expected[-1]["id"] else []
                expected += frames_of(await post(http, purchase(member, 400)))  # live on the new socket
                got += await feed.until(expected[-1]["id"])
                return expected, got, client

    expected, got, client = asyncio.run(main())
    assert got == expected
    assert ids(got) == feed_ids(sync_redis, service.prefix, member)
    assert client.close_codes == [4401]
    assert client.connects == 2


# --- resume ---------------------------------------------------------------------------------------------------


def test_live_client_resumes_after_a_drop_exactly_once_in_order(service: Service, sync_redis: redis.Redis) -> None:
    """After an abrupt drop, LiveClient reconnects with since=last id and gets every effect once, in stream order."""
    member = unique("m")

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], LiveClient]:
        client = LiveClient(ws_base(service), member_token(member), since="0-0", backoff_min_s=0.01)
        async with service.async_client() as http, reading(client) as feed:
            expected = frames_of(await post(http, purchase(member, 19900)))
            got = await feed.until(expected[-1]["id"])
            await client.drop()
            for amount in (300, 400, 500):  # posted while the client is down
                expected += frames_of(await post(http, purchase(member, amount)))
            got += await feed.until(expected[-1]["id"])
            await client.send({"op": "ping"})
            got.append(await feed.next())  # a pong, and no frame before it
            return expected, got, client

    expected, got, client = asyncio.run(main())
    assert got == expected + [{"type": "pong"}]
    assert ids(expected) == feed_ids(sync_redis, service.prefix, member)
    assert client.connects == 2
    assert client.close_codes[0] == 1006


def test_resume_while_events_keep_coming_has_no_gap_and_no_duplicate(service: Service, sync_redis: redis.Redis) -> None:
    """Events posted while LiveClient is down and reconnecting (dropped every few frames) arrive once each, in order."""
    member = unique("m")
    drop_every = 4

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        client = LiveClient(ws_base(service), member_token(member), since="0-0", backoff_min_s=0.01, backoff_max_s=0.1)
        posted: list[dict[str, Any]] = []
        async with service.async_client() as http, reading(client) as feed:

            async def keep_posting() -> None:
                for i in range(20):
                    posted.extend(frames_of(await post(http, purchase(member, 100 + i))))

            poster = asyncio.create_task(keep_posting())
            got: list[dict[str, Any]] = []
            pending: asyncio.Task[dict[str, Any]] | None = None
            try:
                while not (poster.done() and {f["id"] for f in got} >= {f["id"] for f in posted}):
                    pending = pending or asyncio.create_task(feed.next())
                    await asyncio.wait({pending, poster}, return_when=asyncio.FIRST_COMPLETED)
                    if poster.done():
                        poster.result()  # a failed post fails the test here
                    if not pending.done():
                        continue
                    got.append(pending.result())
                    pending = None
                    if len(got) % drop_every == 0:
                        await client.drop()
                        posted.extend(frames_of(await post(http, purchase(member, 200))))  # while it is down
            finally:
                for task in (pending, poster):
                    if task is not None and not task.done():
                        task.cancel()
            return posted, got, client.connects

    posted, got, connects = asyncio.run(main())
    stored = feed_ids(sync_redis, service.prefix, member)
    assert ids(got) == stored  # each once, in stream order, no gap
    assert sorted(got, key=sid) == sorted(posted, key=sid)  # and exactly what the replies said
    assert connects >= 5  # it really was cut and came back, again and again


def test_live_client_msgpack_resumes_too(service: Service) -> None:
    """LiveClient on rekindle.msgpack gets the same frames, across a drop."""
    member = unique("m")

    async def main() -> None:
        client = LiveClient(ws_base(service), member_token(member), since="0-0", encoding=Encoding.MSGPACK, backoff_min_s=0.01)
        async with service.async_client() as http, reading(client) as feed:
            expected = frames_of(await post(http, purchase(member, 19900)))
            got = await feed.until(expected[-1]["id"])
            await client.drop()
            expected += frames_of(await post(http, purchase(member, 300)))
            got += await feed.until(expected[-1]["id"])
            assert got == expected

    asyncio.run(main())


# --- reset: since older than what the feed keeps -------------------------------------------------------------------


@pytest.fixture(scope="module")
def trimmed(service: Service, redis_url: str) -> tuple[str, list[dict[str, Any]]]:
    """A member whose feed outgrew the programme's feed_length (500): its first entries are trimmed away."""
    member = unique("m")

    async def main() -> list[dict[str, Any]]:
        async with service.async_client() as http:
            return frames_of(await post(http, *[purchase(member, 100) for _ in range(700)]))

    frames = asyncio.run(main())
    with sync_client(redis_url) as client:
        assert client.xlen(Keys(service.prefix).member(member).feed) < 700  # one entry an award: trimmed indeed
    return member, frames


def replay_from(service: Service, member: str, since: str) -> list[dict[str, Any]]:
    """Connect with ?since= and return what the server sends before answering a ping."""

    async def main() -> list[dict[str, Any]]:
        async with websockets.connect(live_url(service, token=member_token(member), since=since)) as ws:
            return await until_pong(ws)

    return asyncio.run(main())


def is_reset(frames: list[dict[str, Any]]) -> bool:
    return len(frames) == 1 and frames[0]["type"] == "reset" and "id" not in frames[0]


def test_since_older_than_trimmed_range_gets_reset(service: Service, trimmed: tuple[str, list[dict[str, Any]]]) -> None:
    """since = an id the stream trimmed away: the first (and only) frame is {"type": "reset"}."""
    member, frames = trimmed
    got = replay_from(service, member, frames[0]["id"])
    assert is_reset(got), f"expected a reset; got {len(got)} frames starting at {got[:1]}"


def test_since_zero_on_a_trimmed_stream_gets_reset(service: Service, trimmed: tuple[str, list[dict[str, Any]]]) -> None:
    """since=0-0 on a stream that was trimmed: reset, not a partial replay."""
    member, _ = trimmed
    got = replay_from(service, member, "0-0")
    assert is_reset(got), f"expected a reset; got {len(got)} frames starting at {got[:1]}"


def test_since_past_the_last_id_gets_reset(service: Service, trimmed: tuple[str, list[dict[str, Any]]]) -> None:
    """since greater than the stream's last id (another history) gets a reset."""
    member, frames = trimmed
    last_ms = sid(frames[-1])[0]
    assert is_reset(replay_from(service, member, f"{last_ms + 1}-0"))
    assert is_reset(replay_from(service, unique("m"), "1-0"))  # a member with no stream at all


def test_since_inside_the_kept_range_replays_exactly_what_follows(
    service: Service, sync_redis: redis.Redis, trimmed: tuple[str, list[dict[str, Any]]]
) -> None:
    """since = a kept id replays every later entry once, in order (several pages' worth); since = last id replays nothing."""
    member, frames = trimmed
    kept = feed_ids(sync_redis, service.prefix, member)
    assert len(kept) >= 500
    by_id = {f["id"]: f for f in frames}
    assert replay_from(service, member, kept[0]) == [by_id[i] for i in kept[1:]]
    middle = len(kept) // 2
    assert replay_from(service, member, kept[middle]) == [by_id[i] for i in kept[middle + 1 :]]
    assert replay_from(service, member, kept[-1]) == []


# --- encodings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (None, None),
        (["rekindle.json"], "rekindle.json"),
        (["rekindle.msgpack"], "rekindle.msgpack"),
        (["chat", "rekindle.msgpack", "rekindle.json"], "rekindle.msgpack"),
    ],
)
def test_subprotocol_chooses_the_frame_encoding(service: Service, offered: list[str] | None, chosen: str | None) -> None:
    """rekindle.msgpack gives binary msgpack frames, JSON (text) otherwise, same content; ping/pong in both."""
    member = unique("m")
    encoding = Encoding.MSGPACK if chosen == "rekindle.msgpack" else Encoding.JSON
    kind = bytes if encoding is Encoding.MSGPACK else str

    async def main() -> None:
        async with service.async_client() as http, websockets.connect(
            live_url(service, token=member_token(member), since="0-0"), subprotocols=offered  # type: ignore[arg-type]
        ) as ws:
            assert ws.subprotocol == chosen
            await send_op(ws, {"op": "ping"}, encoding)
            pong = await recv_raw(ws)
            assert isinstance(pong, kind) and decode(pong) == {"type": "pong"}
            expected = frames_of(await post(http, purchase(member, 19900)))
            raw = [await recv_raw(ws) for _ in expected]
            assert all(isinstance(r, kind) for r in raw)
            assert [decode(r) for r in raw] == expected

    asyncio.run(main())


# --- losing the store's pub/sub connection ---------------------------------------------------------------------------


def test_lost_pubsub_connection_closes_4409_and_live_client_resumes(service: Service, sync_redis: redis.Redis) -> None:
    """When the hub's pub/sub connection is killed, sockets close 4409; LiveClient resumes with no loss once the hub is back."""
    member = unique("m")

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], LiveClient]:
        client = LiveClient(ws_base(service), member_token(member), since="0-0", backoff_min_s=0.02, backoff_max_s=0.5)
        async with service.async_client() as http, reading(client) as feed:
            expected = frames_of(await post(http, purchase(member, 19900)))
            got = await feed.until(expected[-1]["id"])
            assert kill_pubsub_connections(sync_redis, service.process.pid) >= 1  # the hub's (and the config watcher's)
            expected += frames_of(await post(http, purchase(member, 300)))  # while the hub is down or back
            got += await feed.until(expected[-1]["id"])  # LiveClient retries until the hub takes it again
            expected += frames_of(await post(http, purchase(member, 400)))  # live again
            got += await feed.until(expected[-1]["id"])
            return expected, got, client

    expected, got, client = asyncio.run(main())
    assert got == expected
    assert ids(got) == feed_ids(sync_redis, service.prefix, member)
    assert client.close_codes[0] == 4409
    assert set(client.close_codes) <= {4409, 1013}  # 1013: the hub was still reconnecting


# --- openings: whatever the client sends first, nothing published after the accept is lost -------------------

PROMPT_S = 4.0  # a hold before going live (the old 5 s wait for a resume frame) would miss this deadline

OPENINGS = {  # how the socket opens: the URL's query, and the client's first frame (None: it sends nothing)
    "token in query, nothing sent": ({"token"}, None),
    "token and since in query": ({"token", "since"}, None),
    "ping first": ({"token"}, {"op": "ping"}),
    "resume frame first": ({"token"}, {"op": "resume", "since": "SINCE"}),
    "auth frame, since null": (set(), {"op": "auth", "token": "TOKEN", "since": None}),
    "auth frame with a since": (set(), {"op": "auth", "token": "TOKEN", "since": "SINCE"}),
}
AWARD_TIMES = ["before the first frame", "after the first frame", "0.5 s after connecting"]


TOO_LATE = {"type": "error", "code": "resume_too_late"}


async def feed_frames(ws: Any, owed: int, new: int, deadline_s: float = WAIT_S) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Feed frames (those with an id) and the control frames among them, until ``owed + new``
    feed frames came, or only ``new`` and a ``resume_too_late`` error (a refused resume)."""
    got: list[dict[str, Any]] = []
    controls: list[dict[str, Any]] = []
    async with asyncio.timeout(deadline_s):
        while len(got) < owed + new and not (len(got) >= new and too_late(controls)):
            frame = decode(await ws.recv())
            (got if "id" in frame else controls).append(frame)
    return got, controls


def too_late(controls: list[dict[str, Any]]) -> bool:
    return any({k: c.get(k) for k in TOO_LATE} == TOO_LATE for c in controls)


@pytest.mark.parametrize("award", AWARD_TIMES)
@pytest.mark.parametrize("opening", OPENINGS)
def test_every_opening_gets_an_award_made_right_after_connecting(service: Service, opening: str, award: str) -> None:
    """Whatever the client sends first, every effect of an award made after the socket was accepted arrives once, in order, promptly."""
    member = unique("m")
    token = member_token(member)
    query, first = OPENINGS[opening]

    async def main() -> None:
        async with service.async_client() as http:
            history = frames_of(await post(http, purchase(member, 19900), purchase(member, 300)))
            since = history[2]["id"]  # an id the client saw: what follows it is owed too
            params = {k: v for k, v in {"token": token, "since": since}.items() if k in query}
            named = "since" in query or (first is not None and first.get("since") == "SINCE")
            owed = [f for f in history if sid(f) > parse_feed_id(since)] if named else []
            async with websockets.connect(live_url(service, **params)) as ws:
                new: list[dict[str, Any]] = []
                if award == "before the first frame":
                    new += frames_of(await post(http, purchase(member, 500)))
                if first is not None:
                    fill = {"TOKEN": token, "SINCE": since}
                    await send_op(ws, {k: fill.get(v, v) if isinstance(v, str) else v for k, v in first.items()})
                if award == "0.5 s after connecting":
                    await asyncio.sleep(0.5)  # part of the scenario (an award a moment later), not a wait for something
                new += frames_of(await post(http, purchase(member, 19900)))
                new += frames_of(await post(http, purchase(member, 700)))
                got, controls = await feed_frames(ws, len(owed), len(new), PROMPT_S if first is None else WAIT_S)
                if too_late(controls):  # an award's frame went out before the resume was read: nothing older is sent
                    assert opening == "resume frame first" and award != "0.5 s after connecting", controls
                    owed = []
                assert got == owed + new
                rest = await until_pong(ws)  # nothing more: no duplicate, no late arrival
                assert [f for f in rest if "id" in f] == []
                expected_controls = [{"type": "pong"}] if first == {"op": "ping"} else []
                assert [c for c in controls + rest if not too_late([c])] == expected_controls

    asyncio.run(main())


# --- wrong paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/lives", "/v1/live/", "/", "/v1/events", "/v2/live", "/docs/static/x"])
def test_a_websocket_to_another_path_is_refused_404_naming_the_feed(service: Service, path: str) -> None:
    """A WebSocket to any path but /v1/live gets an HTTP 404 before the upgrade, its body naming /v1/live (not a bare 403)."""

    async def main() -> None:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(f"{ws_base(service)}{path}?token={member_token(unique('m'))}"):
                pass
        response = info.value.response
        assert response.status_code == 404
        assert orjson.loads(response.body) == {
            "error": {"code": "not_found", "message": f"no WebSocket at {path}; the live feed is /v1/live"}
        }

    asyncio.run(main())
