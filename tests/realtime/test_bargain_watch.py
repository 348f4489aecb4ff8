"""Watching a bargain on ``GET /v1/live`` against a real service: ``{"op": "watch", "bargain": id}``.

A watch follows the bargain's owner's feed, limited to the effects that name the bargain: every
frame a watcher gets is one of the owner's feed frames (same id, type and data) with ``"bargain"``
at the top level, and nothing else of the owner's feed (an ordinary award, the coupon of the
completion) ever reaches it. Expected frames are read from the owner's stream in the store, not
from the code under test. Waits are bounded by ``WAIT_S`` as a safety net only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import msgpack
import orjson
import pytest
import redis
import websockets

from engine.ids import MemberId
from engine.keys import Keys
from tests.realtime.conftest import Service, member_client, purchase, serving_with, unique
from tests.realtime.test_live import (
    closed_with,
    kill_pubsub_connections,
    live_url,
    member_token,
    post,
    recv,
    recv_n,
    send_op,
    until_pong,
)

EXTRA = """
[catalog.jar]
title = "A jar"
value_cents = 1000

[games.bargain.jar]
title = "Five friends, one free jar"
item = "jar"
price_cents = 1000
floor_cents = 0
helpers = 5
algorithm = "red_packet"
helps_per_day = 20
"""


@pytest.fixture(scope="module")
def bargains(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from serving_with(redis_url, tmp_path_factory, EXTRA, "bargain-watch")


# --- helpers ------------------------------------------------------------------------------------------


def start_bargain(svc: Service, owner: str) -> str:
    with member_client(svc, owner) as me:
        started = me.post("/v1/games/bargain", json={"campaign": "jar"})
        assert started.status_code == 201, started.text
        return str(started.json()["id"])


def help_bargain(svc: Service, bargain: str, helper: str | None = None) -> dict[str, Any]:
    """One help by a new friend (or ``helper``): the helper's ``bargain_helped`` effect data."""
    with member_client(svc, helper or unique("friend")) as friend:
        helped = friend.post(f"/v1/games/bargain/{bargain}/help", json={"id": unique("help")})
        assert helped.status_code == 200, helped.text
        [result] = helped.json()["results"]
        assert result["status"] == "applied", result
        [effect] = [e for e in result["effects"] if e["type"] == "bargain_helped"]
        return effect["data"]  # type: ignore[no-any-return]


def owner_frames(sync_redis: redis.Redis, svc: Service, owner: str) -> list[dict[str, Any]]:
    """The owner's feed frames as the store holds them: effect i of entry E is ``E-i``."""
    entries: Any = sync_redis.xrange(Keys(svc.prefix).member(MemberId(owner)).feed)
    return [
        {"id": f"{eid.decode()}-{i}", "type": kind, "data": {**data, "event": fields[b"e"].decode()}}
        for eid, fields in entries
        for i, (kind, data) in enumerate(msgpack.unpackb(fields[b"d"], raw=False))
    ]


def watch_frames(frames: list[dict[str, Any]], bargain: str) -> list[dict[str, Any]]:
    """What a watcher of ``bargain`` is owed of these owner's frames: those naming it, marked."""
    return [{**f, "bargain": bargain} for f in frames if f["data"].get("bargain") == bargain]


@contextlib.asynccontextmanager
async def socket_of(svc: Service, member: str, since: str | None = "0-0") -> Any:
    """A live socket of ``member``, authenticated and live (it answered a ping); ``since=None``:
    from the end of its feed."""
    params = {"token": member_token(member), **({"since": since} if since else {})}
    async with websockets.connect(live_url(svc, **params)) as ws:
        assert await until_pong(ws) == []
        yield ws


async def watch(ws: Any, bargain: Any, since: str | None = None) -> dict[str, Any]:
    """Send a watch op; its first answer (``watching`` or an error)."""
    await send_op(ws, {"op": "watch", "bargain": bargain, "since": since})
    return await recv(ws)


# --- tests ------------------------------------------------------------------------------------------------


def test_a_friend_sees_each_help_live_and_nothing_else_of_the_owners_feed(bargains: Service, sync_redis: redis.Redis) -> None:
    """A friend (not the owner) watches; helps by third members arrive as watch frames, with their
    cut and the price after it; the owner's ordinary awards and the completion's coupon never do."""
    owner, watcher = unique("owner"), unique("watcher")
    bargain = start_bargain(bargains, owner)

    async def main() -> None:
        async with bargains.async_client() as http, socket_of(bargains, watcher) as ws:
            watching = await watch(ws, bargain)
            assert watching["type"] == "watching" and watching["bargain"] == bargain and watching["reset"] is False
            assert watching["since"] == "0-0"  # after the owner's feed's end: a start writes nothing to it
            helps: list[dict[str, Any]] = []
            received: list[dict[str, Any]] = []
            while True:
                await post(http, purchase(owner, 19900))  # the owner's own award: never the watcher's
                helps.append(help_bargain(bargains, bargain))
                done = helps[-1]["current_cents"] == 0
                expected = watch_frames(owner_frames(sync_redis, bargains, owner), bargain)[len(received):]
                assert [f["type"] for f in expected] == ["bargain_helped"] + (["bargain_done"] if done else [])
                received += await recv_n(ws, len(expected))
                assert received[-len(expected):] == expected
                if done:
                    break
            assert await until_pong(ws) == []  # nothing else: no xp, points, quest or coupon of the owner
            everything = owner_frames(sync_redis, bargains, owner)
            assert {f["type"] for f in everything} >= {"xp", "points", "reward", "bargain_helped", "bargain_done"}
            assert [f["id"] for f in received] == [f["id"] for f in everything if f["data"].get("bargain") == bargain]
            for help_data, frame in zip(helps, [f for f in received if f["type"] == "bargain_helped"]):
                assert frame["data"]["cut_cents"] == help_data["cut_cents"] >= 1
                assert frame["data"]["current_cents"] == help_data["current_cents"]
                assert frame["data"]["helper"] == help_data["helper"]
            assert sum(f["data"]["cut_cents"] for f in received if f["type"] == "bargain_helped") == 1000

    asyncio.run(main())


def test_a_watch_resumes_with_since_exactly_after_the_last_frame_seen(bargains: Service, sync_redis: redis.Redis) -> None:
    """The watcher sees one help, goes away; two helps happen; watching again with since = the last
    watched id replays exactly those two (each once, in order), then goes on live."""
    owner, watcher = unique("owner"), unique("watcher")
    bargain = start_bargain(bargains, owner)

    async def main() -> None:
        async with socket_of(bargains, watcher) as ws:
            assert (await watch(ws, bargain))["type"] == "watching"
            help_bargain(bargains, bargain)
            [seen] = await recv_n(ws, 1)
        missed = [help_bargain(bargains, bargain) for _ in range(2)]
        async with bargains.async_client() as http:
            await post(http, purchase(owner, 500))  # between the helps and the resume: not owed
        async with socket_of(bargains, watcher) as ws:
            watching = await watch(ws, bargain, since=seen["id"])
            assert (watching["type"], watching["since"], watching["reset"]) == ("watching", seen["id"], False)
            expected = watch_frames(owner_frames(sync_redis, bargains, owner), bargain)
            assert expected[0] == seen
            replayed = await recv_n(ws, 2)
            assert replayed == expected[1:3]
            assert [f["data"]["cut_cents"] for f in replayed] == [m["cut_cents"] for m in missed]
            assert await until_pong(ws) == []
            help_bargain(bargains, bargain)  # and live after the replay
            [live] = await recv_n(ws, 1)
            assert live == watch_frames(owner_frames(sync_redis, bargains, owner), bargain)[3]
            assert await until_pong(ws) == []

    asyncio.run(main())


def test_since_older_than_the_owners_feed_resets_the_watch(bargains: Service, sync_redis: redis.Redis) -> None:
    """A since of another history (ahead of the owner's feed) answers watching with reset, from the
    feed's end; what follows still comes."""
    owner, watcher = unique("owner"), unique("watcher")
    bargain = start_bargain(bargains, owner)

    async def main() -> None:
        async with socket_of(bargains, watcher) as ws:
            watching = await watch(ws, bargain, since="99999999999999-0-0")
            assert (watching["type"], watching["reset"]) == ("watching", True)
            help_bargain(bargains, bargain)
            [live] = await recv_n(ws, 1)
            assert live == watch_frames(owner_frames(sync_redis, bargains, owner), bargain)[0]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("op", "code", "field"),
    [
        ({"op": "watch", "bargain": "nope"}, "invalid", "bargain"),
        ({"op": "watch", "bargain": 42}, "invalid", "bargain"),
        ({"op": "watch", "bargain": "jar.0.someone"}, "invalid", "bargain"),
        ({"op": "watch", "bargain": "jar.1.{m:other}"}, "invalid", "bargain"),
        ({"op": "watch"}, "invalid", "bargain"),
        ({"op": "watch", "bargain": "jar.9.nobody"}, "not_found", "bargain"),
        ({"op": "watch", "bargain": "nojar.1.nobody"}, "not_found", "bargain"),
        ({"op": "watch", "bargain": "jar.1.nobody", "since": "abc"}, "invalid", "since"),
    ],
)
def test_a_bad_watch_is_an_error_frame_naming_its_field(bargains: Service, op: dict[str, Any], code: str, field: str) -> None:
    """A malformed id, a bargain never started, a bad since: an error frame naming the field; the
    socket stays open."""

    async def main() -> None:
        async with socket_of(bargains, unique("watcher")) as ws:
            await send_op(ws, op)
            error = await recv(ws)
            assert (error["type"], error["code"], error["field"]) == ("error", code, field), error
            assert error["message"]
            assert await until_pong(ws) == []

    asyncio.run(main())


def test_unwatch_stops_the_frames(bargains: Service, sync_redis: redis.Redis) -> None:
    """After ``unwatched`` no frame of the watch comes, while the socket's own feed goes on."""
    owner, watcher = unique("owner"), unique("watcher")
    bargain = start_bargain(bargains, owner)

    async def main() -> None:
        async with bargains.async_client() as http, socket_of(bargains, watcher) as ws:
            assert (await watch(ws, bargain))["type"] == "watching"
            help_bargain(bargains, bargain)
            [frame] = await recv_n(ws, 1)
            assert frame["bargain"] == bargain
            await send_op(ws, {"op": "unwatch", "bargain": bargain})
            assert await recv(ws) == {"type": "unwatched", "bargain": bargain}
            help_bargain(bargains, bargain)  # on the owner's feed, before the watcher's own award below
            own = await post(http, purchase(watcher, 19900))
            frames = await recv_n(ws, len([e for r in own for e in r["effects"]]))
            assert [f["id"] for f in frames] == [e["id"] for r in own for e in r["effects"]]
            assert all("bargain" not in f for f in frames)
            assert await until_pong(ws) == []
            assert len(watch_frames(owner_frames(sync_redis, bargains, owner), bargain)) == 2  # the second help landed

    asyncio.run(main())


def test_the_owner_watching_its_own_bargain_gets_both_frames(bargains: Service, sync_redis: redis.Redis) -> None:
    """The owner's socket gets its own feed frame of a help and the watch frame of it (same id, with ``bargain``)."""
    owner = unique("owner")
    bargain = start_bargain(bargains, owner)

    async def main() -> None:
        async with socket_of(bargains, owner) as ws:
            assert (await watch(ws, bargain))["type"] == "watching"
            help_bargain(bargains, bargain)
            frames = await recv_n(ws, 2)
            [own] = [f for f in owner_frames(sync_redis, bargains, owner) if f["type"] == "bargain_helped"]
            assert sorted(frames, key=lambda f: "bargain" in f) == [own, {**own, "bargain": bargain}]
            assert await until_pong(ws) == []

    asyncio.run(main())


def test_the_owners_channel_stays_followed_while_anyone_on_the_node_needs_it(
    bargains: Service, sync_redis: redis.Redis
) -> None:
    """The owner's socket closing leaves a watcher's tap subscribed; a watcher unwatching leaves
    the owner's own socket subscribed."""
    owner, watcher = unique("owner"), unique("watcher")
    bargain = start_bargain(bargains, owner)

    async def main() -> None:
        async with socket_of(bargains, watcher) as watching:
            async with socket_of(bargains, owner) as own:
                assert (await watch(watching, bargain))["type"] == "watching"
                help_bargain(bargains, bargain)
                assert len(await recv_n(own, 1)) == 1
                assert len(await recv_n(watching, 1)) == 1
            assert await until_pong(watching) == []  # the owner's socket has left
            help_bargain(bargains, bargain)
            [frame] = await recv_n(watching, 1)
            assert frame == watch_frames(owner_frames(sync_redis, bargains, owner), bargain)[1]
            async with socket_of(bargains, owner, since=None) as own:
                await send_op(watching, {"op": "unwatch", "bargain": bargain})
                assert (await recv(watching))["type"] == "unwatched"
                help_bargain(bargains, bargain)
                [frame] = await recv_n(own, 1)
                assert frame == [f for f in owner_frames(sync_redis, bargains, owner) if f["type"] == "bargain_helped"][2]

    asyncio.run(main())


def test_a_lost_subscription_closes_the_watcher_4409(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, sync_redis: redis.Redis
) -> None:
    """A watcher (with no socket of the owner on the node) is told to resume when the node's
    subscription is lost: it reconnects and watches again with since. (On one server every socket
    is; the hub's own test below shows a tap alone on a lost or moved channel is too.)"""
    for svc in serving_with(redis_url, tmp_path_factory, EXTRA, "bargain-watch-lost"):
        owner, watcher = unique("owner"), unique("watcher")
        bargain = start_bargain(svc, owner)

        async def main() -> None:
            async with socket_of(svc, watcher) as ws:
                assert (await watch(ws, bargain))["type"] == "watching"
                assert kill_pubsub_connections(sync_redis, svc.process.pid) >= 1
                code, _, frames = await closed_with(ws)
                assert (code, frames) == (4409, [])

        asyncio.run(main())


def test_a_socket_watches_at_most_eight_bargains(bargains: Service) -> None:
    """The ninth watch answers too_many_watches; watching one again is not one more; after an
    unwatch there is room."""
    owners = [unique("owner") for _ in range(9)]
    ids = [start_bargain(bargains, owner) for owner in owners]

    async def main() -> None:
        async with socket_of(bargains, unique("watcher")) as ws:
            for bargain in ids[:8]:
                assert (await watch(ws, bargain))["type"] == "watching"
            assert (await watch(ws, ids[0]))["type"] == "watching"  # again: starts it again, not a ninth
            refused = await watch(ws, ids[8])
            assert (refused["type"], refused["code"], refused["bargain"]) == ("error", "too_many_watches", ids[8])
            await send_op(ws, {"op": "unwatch", "bargain": ids[0]})
            assert (await recv(ws))["type"] == "unwatched"
            assert (await watch(ws, ids[8]))["type"] == "watching"
            assert await until_pong(ws) == []

    asyncio.run(main())


def test_a_watch_needs_an_authenticated_socket(bargains: Service) -> None:
    """A watch op as the first frame of a socket without a token is closed 4401: nothing is watched."""
    bargain = start_bargain(bargains, unique("owner"))

    async def main() -> None:
        async with websockets.connect(live_url(bargains)) as ws:
            await send_op(ws, {"op": "watch", "bargain": bargain})
            code, reason, frames = await closed_with(ws)
            assert (code, frames) == (4401, [])
            assert "token" in reason

    asyncio.run(main())


def test_a_watch_in_msgpack(bargains: Service, sync_redis: redis.Redis) -> None:
    """On a rekindle.msgpack socket the watch's answer and frames are msgpack objects like the JSON ones."""
    owner = unique("owner")
    bargain = start_bargain(bargains, owner)

    async def main() -> None:
        url = live_url(bargains, token=member_token(unique("watcher")), since="0-0")
        async with websockets.connect(url, subprotocols=["rekindle.msgpack"]) as ws:  # type: ignore[list-item]
            await ws.send(msgpack.packb({"op": "watch", "bargain": bargain}))
            watching = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10), raw=False)
            assert (watching["type"], watching["bargain"]) == ("watching", bargain)
            help_bargain(bargains, bargain)
            frame = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10), raw=False)
            assert frame == watch_frames(owner_frames(sync_redis, bargains, owner), bargain)[0]

    asyncio.run(main())


# --- the hub's taps, without a server ------------------------------------------------------------------------


class _Subscriber:
    """What the hub asks of its subscriber, recorded."""

    connected = True

    def __init__(self) -> None:
        self.channels: set[bytes] = set()

    async def subscribe(self, channel: bytes) -> None:
        self.channels.add(channel)

    def unsubscribe(self, channel: bytes) -> None:
        self.channels.discard(channel)


class _Sender:
    def __init__(self) -> None:
        self.sent: list[str | bytes] = []
        self.closed: list[int] = []

    async def send(self, payload: str | bytes) -> None:
        self.sent.append(payload)

    async def close(self, code: int, reason: str) -> None:
        self.closed.append(code)


def test_the_hub_subscribes_a_tapped_channel_while_a_socket_or_a_tap_needs_it() -> None:
    """A channel stays subscribed while a socket follows it or a tap taps it; a message goes to
    both; a channel dropped (its slot moved) closes the tapping socket 4409; untapping after that
    changes nothing."""
    from redis.asyncio import Redis

    from realtime.frames import CloseCode, Encoding, Frame
    from realtime.hub import Hub, LiveConnection, Tap

    async def main() -> None:
        hub = Hub(Redis())
        subscriber = _Subscriber()
        hub._subscribers[""] = subscriber  # type: ignore[assignment]
        watcher_sender, owner_sender = _Sender(), _Sender()
        watcher = LiveConnection("w", b"ch:w", Encoding.JSON, 16, watcher_sender)
        owner = LiveConnection("o", b"ch:o", Encoding.JSON, 16, owner_sender)
        tapped: list[list[Frame]] = []
        await hub.join(watcher)
        await hub.join(owner)
        tap = Tap(watcher, b"ch:o", tapped.append)
        await hub.tap(tap)
        assert subscriber.channels == {b"ch:w", b"ch:o"}
        owner.send_frames(owner.resume.on_replay((0, 0, 0), []))  # the owner's socket is live
        message = msgpack.packb(["1-0", "e-1", [["bargain_helped", {"bargain": "jar.1.o"}]]])
        hub._dispatch(b"ch:o", message)
        assert [[f.id for f in frames] for frames in tapped] == [["1-0-0"]]
        await owner.finish()  # its drain has sent what it was given
        assert [orjson.loads(sent)["id"] for sent in owner_sender.sent] == ["1-0-0"]
        hub._dispatch(b"ch:w", msgpack.packb(["2-0", "e-2", [["xp", {"amount": 1}]]]))
        assert len(tapped) == 1  # the watcher's own channel is not the tap's
        hub.leave(owner)
        assert subscriber.channels == {b"ch:w", b"ch:o"}  # the tap still needs it
        hub.untap(tap)
        assert subscriber.channels == {b"ch:w"}
        await hub.tap(tap)
        hub._dropped(b"ch:o")  # the server ended the subscription: the channel's slot moved
        assert watcher.close_code == CloseCode.RESUME
        hub.untap(tap)  # the endpoint's cleanup: nothing left to undo
        hub.leave(watcher)
        assert hub.sockets == 0 and not hub._taps and not hub._groups
        await watcher.finish()
        assert watcher_sender.closed == [CloseCode.RESUME]

    asyncio.run(main())
