"""``GET /v1/live``: a member's progress, pushed over a WebSocket, resumable by feed id.

Order of a session: authenticate and learn where to start; accept; subscribe; replay the stream
after the start; then live at once. Subscribing before replaying is what makes "no gap" hold;
ids make "no duplicate" hold. Where a socket starts, whatever the client sends first:

- ``since`` in the query or the auth frame: after that id (the recommended way).
- ``?token=`` without ``since``: after the feed's end, read *before* ``accept``, so every award
  made after the socket was accepted is owed to it (and none is lost to a wait).
- An auth frame without ``since``: the member is known only once the frame is read, so the start
  is a moment by the store's clock (``TIME``, the clock of stream ids), read just before ``accept``.
- A ``{"op": "resume", "since"}`` frame (any time): honoured while no feed frame has been sent
  on this socket (live frames are held again, the stream replayed from ``since``, the two
  merged); answered ``resume_too_late`` after one, since older frames would then follow newer
  ones: the client reconnects with ``?since=``. ``"since": null`` changes nothing.

A socket is closed ``4401`` when its token expires: a member's access ends with its token.

A replay (of a new socket or a resume frame) is work that admission control sheds before awards
(``realtime/admission.py``): refused, the socket is closed ``1013`` (Try Again Later) with the
reason ``overloaded; reconnect after N s with ?since=<last id seen>``, and nothing is lost.

**Watching an object** (a bargain's page, for its owner and the friends who opened its link): a
game declares what may be watched (``engine.plugins.Watch``; the bargain's key is ``bargain``), so
this module names no game. ``{"op": "watch", "bargain": <id>, "since": <feed id> | null}`` on an
authenticated socket follows the object's owner's feed, limited to the effects whose data names
the object (``Watch.concerns``): every change of a bargain is already an effect on its owner's
feed, so a watch writes and publishes nothing new, and resumes by the owner's feed ids. Nothing
else of the owner's feed reaches a watcher (the owner's reward, its coupon, stays on the owner's
own feed). The discipline is the socket's own: tap the owner's channel (``Hub.tap``), replay the
owner's stream after ``since`` (without one: after its end, read before the tap), filtered and
merged with what arrived live (a ``Resume`` per watch), then live. The answer is a control frame
``{"type": "watching", "bargain", "since", "reset"}`` before the watch's frames: ``since`` is the
id they follow (``reset``: the given one was older than the owner's feed keeps, or more than
``MAX_REPLAY_FRAMES`` behind: refetch the bargain). Watch frames are the owner's feed frames with
``"bargain": <id>`` at the top level, so a page tells them from the socket's own. ``{"op":
"unwatch", "bargain"}`` is answered ``unwatched``, after which no frame of that watch follows. At
most ``MAX_WATCHES`` watches a socket. Refusals are ``error`` frames and the socket stays open:
``invalid`` (naming the field: the id's or ``since``), ``not_found`` (a bargain never started),
``too_many_watches``, ``overloaded`` (the watch's replay shed, with ``retry_after_s``),
``unavailable`` (the store or the subscription, right now). An owner watching its own bargain gets
both: its own feed frames, and the watch frames (the same ids, with ``bargain``): a page's logic is
the same for everyone. Sockets that watch nothing cost nothing more: the hub's dispatch adds one
test per message (whether anything on the process taps at all), nothing per socket or frame.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine import ids
from engine.errors import InvalidInput, NotFound
from engine.feed import FeedId, just_before, parse_feed_id
from engine.ids import MemberId
from engine.plugins import Watch, installed
from realtime import metrics
from realtime.auth import MemberToken
from realtime.admission import Admission, Kind, admit, gate_of
from realtime.errors import STORE_ERRORS, Overloaded, Unauthorized, json_response
from realtime.frames import CloseCode, Encoding, Frame, Resume, WatchFrame, control, feed_id_text, frames_of
from realtime.hub import LiveConnection, Tap, TooManySockets
from realtime.replies import ErrorBody, ErrorDetail

log = logging.getLogger("rekindle.live")

if TYPE_CHECKING:
    from realtime.service import Service

AUTH_WAIT_S = 10.0  # for the first frame when the token is not in the URL
MAX_REPLAY_FRAMES = 5000  # a resume further behind than this is told to refetch (reset)
MAX_QUEUE = 1024  # frames a socket may fall behind before it is told to resume
MAX_CLIENT_FRAME = 4096
TRY_AGAIN_LATER = 1013  # RFC 6455's registry: reconnect after a delay (here: named in the reason)
MAX_WATCHES = 8  # objects one socket may watch at once
WATCH_ID_MAX = 128  # the longest id of a watched object (a bargain's, as its HTTP path takes it)


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:  # a CloseCode, or 1013 (TRY_AGAIN_LATER)
        self.code, self.reason = code, reason


@dataclass(frozen=True, slots=True)
class _Opening:
    """Who the socket is for, until when, and where its feed starts."""

    member: MemberId
    expires_at_ms: int
    start: FeedId  # frames after this id are owed to the socket
    moment: bool  # ``start`` is ``just_before`` a moment, not an id of the stream


async def live(websocket: WebSocket) -> None:
    svc: Service = websocket.app.state.service
    chosen = Encoding.negotiate(list(websocket.scope.get("subprotocols") or []))
    try:
        opening = await _open(websocket, svc, chosen)
    except _Refused as refused:
        await websocket.close(refused.code, refused.reason)
        return
    except WebSocketDisconnect:
        return

    encoding = chosen or Encoding.JSON
    conn = LiveConnection(opening.member, svc.keys.member(opening.member).channel.encode(), encoding, MAX_QUEUE, _AsgiSender(websocket))
    try:
        await svc.hub.join(conn)
    except ConnectionError:
        await websocket.close(1013, "the live feed is reconnecting; try again shortly")
        return
    except TooManySockets as exc:
        await websocket.close(CloseCode.TOO_MANY, str(exc))
        return
    metrics.LIVE_SOCKETS.inc()
    expiry = asyncio.get_running_loop().call_later(
        max(0.0, (opening.expires_at_ms - svc.clock.now_ms()) / 1000),  # by the clock the token was checked on
        conn.evict,
        CloseCode.UNAUTHORIZED,
        "member token has expired; reconnect with a fresh token and ?since=<last id>",
    )
    watching: dict[str, _Watching] = {}  # by object id
    try:
        await _replay(svc, conn, opening.start, gate_of(websocket), moment=opening.moment)
        while conn.close_code is None:
            op = await _receive_op(websocket, None)
            if op is None:
                break
            kind = op.get("op")
            if kind == "resume":
                await _resume(svc, conn, op, gate_of(websocket))
            elif kind == "watch" and _watchables():
                await _watch(svc, conn, op, watching, gate_of(websocket))
            elif kind == "unwatch" and _watchables():
                _unwatch(svc, conn, op, watching)
            else:
                _answer(conn, op)
    except _Refused as refused:
        conn.evict(refused.code, refused.reason)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away (RuntimeError: Starlette's "not connected" after a close)
    finally:
        expiry.cancel()
        for watched in watching.values():
            svc.hub.untap(watched.tap)
        svc.hub.leave(conn)
        metrics.LIVE_SOCKETS.dec()
        await conn.finish()  # let an eviction's close frame go out


class _AsgiSender:
    """Frames straight to the ASGI send: text for JSON, bytes for msgpack."""

    __slots__ = ("_send", "_websocket")

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._send = websocket.send

    async def send(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            await self._send({"type": "websocket.send", "text": payload})
        else:
            await self._send({"type": "websocket.send", "bytes": payload})

    async def close(self, code: int, reason: str) -> None:
        await self._websocket.close(code, reason)


async def _open(websocket: WebSocket, svc: Service, chosen: Encoding | None) -> _Opening:
    """Authenticate and find the start, reading the store *before* the accept so that everything
    after the accept is owed to the socket; the socket is accepted whatever the outcome (a
    refusal is a close code with a reason, not an HTTP 403)."""
    params = websocket.query_params
    token = params.get("token")
    accepted = False

    async def accept() -> None:
        nonlocal accepted
        if not accepted:
            accepted = True
            await websocket.accept(subprotocol=chosen.value if chosen else None)

    try:
        if token is not None:  # the member is known before the accept: start after the feed's end
            verified = _verify(svc, token)
            since = _since(params.get("since"))
            start = since if since is not None else await svc.feed.end(verified.member)
            await accept()
            return _Opening(verified.member, verified.expires_at_ms, start, moment=False)
        seconds, micros = await svc.redis.time()  # by the clock that makes stream ids
        await accept()
        first = await _receive_op(websocket, AUTH_WAIT_S)
        if first is None or first.get("op") != "auth" or not isinstance(first.get("token"), str):
            raise _Refused(CloseCode.UNAUTHORIZED, 'send ?token= or a first frame {"op": "auth", "token": ...}')
        verified = _verify(svc, first["token"])
        since = _since(first.get("since", params.get("since")))
        if since is not None:
            return _Opening(verified.member, verified.expires_at_ms, since, moment=False)
        return _Opening(verified.member, verified.expires_at_ms, just_before(seconds * 1000 + micros // 1000), moment=True)
    except STORE_ERRORS:
        await accept()
        raise _Refused(CloseCode.RESUME, "the store is unavailable; reconnect and resume") from None
    except _Refused:
        await accept()
        raise


def _verify(svc: Service, token: str) -> MemberToken:
    try:
        return svc.auth.verify_member_token(token)
    except Unauthorized as exc:
        raise _Refused(CloseCode.UNAUTHORIZED, exc.message) from None


def _since(value: object) -> FeedId | None:
    if value is None:
        return None
    try:
        return parse_feed_id(value, "since")
    except InvalidInput as exc:
        raise _Refused(CloseCode.BAD_REQUEST, f"since: {exc.message}") from None


async def _replay(svc: Service, conn: LiveConnection, start: FeedId, gate: Admission, *, moment: bool = False) -> None:
    try:
        admitted = admit(gate, Kind.REPLAY)
    except Overloaded as exc:
        reason = f"overloaded; reconnect after {exc.retry_after_s} s with ?since=<last id seen>"
        raise _Refused(TRY_AGAIN_LATER, reason) from None
    with admitted:  # the store's read and the frames made of it
        try:
            replay = await svc.feed.replay(conn.member, start, moment=moment)
        except STORE_ERRORS:
            raise _Refused(CloseCode.RESUME, "the store is unavailable; reconnect and resume") from None
        if replay.gap or sum(len(a.effects) for a in replay.awards) > MAX_REPLAY_FRAMES:
            conn.enqueue(control("reset", conn.encoding, reason="your last id is older than the feed keeps; refetch the snapshot"))
            conn.send_frames(conn.resume.on_replay(replay.last, []))
            return
        frames = [frame for award in replay.awards for frame in frames_of(award)]
        conn.send_frames(conn.resume.on_replay(start, frames), replayed=True)


async def _resume(svc: Service, conn: LiveConnection, op: dict[str, Any], gate: Admission) -> None:
    """A resume frame: replay from its ``since`` unless a feed frame already went out."""
    since = _since(op.get("since"))
    if since is None:
        return  # "from now": this socket already starts no later than its accept
    if not conn.resume.rewind():
        conn.enqueue(
            control(
                "error",
                conn.encoding,
                code="resume_too_late",
                message="feed frames were already sent on this socket; reconnect with ?since=<last id>",
            )
        )
        return
    await _replay(svc, conn, since, gate)


async def _receive_op(websocket: WebSocket, timeout: float | None) -> dict[str, Any] | None:
    """The next client frame as a dict; None on timeout or disconnect."""
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout) if timeout else await websocket.receive()
    except asyncio.TimeoutError:
        return None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    raw = message.get("text") if message.get("text") is not None else message.get("bytes")
    if raw is None or len(raw) > MAX_CLIENT_FRAME:
        raise _Refused(CloseCode.BAD_REQUEST, f"client frames are JSON or msgpack objects of at most {MAX_CLIENT_FRAME} bytes")
    try:
        body = orjson.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw, raw=False)
    except (orjson.JSONDecodeError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise _Refused(CloseCode.BAD_REQUEST, "client frames must be JSON text or msgpack binary") from None
    if not isinstance(body, dict):
        raise _Refused(CloseCode.BAD_REQUEST, 'client frames are objects such as {"op": "ping"}')
    return body


def _answer(conn: LiveConnection, op: dict[str, Any]) -> None:
    kind = op.get("op")
    if kind == "ping":
        conn.enqueue(control("pong", conn.encoding))
    else:
        ops = "ping, resume, watch and unwatch" if _watchables() else "ping and resume"
        conn.enqueue(control("error", conn.encoding, code="unknown_op", message=f"ops are {ops}"))


# --- watching an object (see the module's docstring) ------------------------------------------------


@functools.cache
def _watchables() -> dict[str, Watch]:
    """What the installed games let members watch, by the op's key (``bargain``)."""
    return {game.watch.key: game.watch for game in installed() if game.watch is not None}


class _Watching:
    """One watch of one socket: the owner's frames about the object, in the owner's stream order,
    each once (its own ``Resume``: replay first, live after, merged by id)."""

    __slots__ = ("watch", "obj", "conn", "resume", "tap")

    def __init__(self, watch: Watch, obj: str, conn: LiveConnection, channel: bytes) -> None:
        self.watch = watch
        self.obj = obj
        self.conn = conn
        self.resume = Resume()
        self.tap = Tap(conn, channel, self.push)

    def mine(self, frames: list[Frame]) -> list[Frame]:
        """The frames about the object, as watch frames; never any other frame of the owner's."""
        watch, obj = self.watch, self.obj
        return [WatchFrame(f, watch.key, obj) for f in frames if watch.concerns(obj, f.data)]

    def push(self, frames: list[Frame]) -> None:
        """Live frames of the owner's channel (the hub's ``Tap``); held while the replay is read."""
        mine = self.mine(frames)
        if mine:
            self.conn.send_frames(self.resume.on_live(mine))


def _watch_error(conn: LiveConnection, code: str, message: str, **about: Any) -> None:
    """An error frame answering a watch or unwatch op: the socket stays open."""
    conn.enqueue(control("error", conn.encoding, code=code, message=message, **about))


def _watched_key(conn: LiveConnection, op: dict[str, Any]) -> tuple[Watch, object] | None:
    """The op's watchable key and its raw value; None (and an error frame) unless it names one."""
    keys = [key for key in _watchables() if key in op]
    if len(keys) != 1:
        names = " or ".join(f'"{key}"' for key in _watchables())
        only = next(iter(_watchables())) if len(_watchables()) == 1 else None
        _watch_error(conn, "invalid", f"name one object to watch: {names}", **({"field": only} if only else {}))
        return None
    return _watchables()[keys[0]], op[keys[0]]


async def _watch(svc: Service, conn: LiveConnection, op: dict[str, Any], watching: dict[str, _Watching],
                 gate: Admission) -> None:
    """``{"op": "watch", <key>: id, "since"}``: tap the owner's channel, replay the owner's stream
    after ``since`` filtered to the object, then live. Again for an object watched already: it
    starts again from the ``since`` given."""
    found = _watched_key(conn, op)
    if found is None:
        return
    watch, value = found
    key = watch.key
    about: dict[str, Any] = {key: value} if isinstance(value, str) and len(value) <= WATCH_ID_MAX else {}
    try:
        obj = ids.check_id(value, key, WATCH_ID_MAX)
        owner = ids.member_id(watch.owner(obj), key)
    except (ValueError, InvalidInput):
        _watch_error(conn, "invalid", f"must be a {key} id, as its start answered", field=key, **about)
        return
    try:
        since = None if op.get("since") is None else parse_feed_id(op.get("since"), "since")
    except InvalidInput as exc:
        _watch_error(conn, "invalid", exc.message, field="since", **about)
        return
    if obj not in watching and len(watching) >= MAX_WATCHES:
        _watch_error(conn, "too_many_watches", f"a socket watches at most {MAX_WATCHES} objects; unwatch one first",
                     field=key, **about)
        return
    try:
        admitted = admit(gate, Kind.REPLAY)
    except Overloaded as exc:
        _watch_error(conn, "overloaded", f"overloaded; watch again after {exc.retry_after_s} s with since=<last id seen>",
                     retry_after_s=exc.retry_after_s, **about)
        return
    with admitted:  # the store's reads and the frames made of them, as a socket's replay is
        try:
            await watch.exists(svc.games, obj)
            start = since if since is not None else await svc.feed.end(owner)  # before the tap: nothing lost
        except NotFound:
            _watch_error(conn, "not_found", f"no such {key}", field=key, **about)
            return
        except STORE_ERRORS:
            _watch_error(conn, "unavailable", "the store is unavailable; watch again shortly", **about)
            return
        old = watching.pop(obj, None)
        if old is not None:
            svc.hub.untap(old.tap)
        watched = _Watching(watch, obj, conn, svc.keys.member(owner).channel.encode())
        try:
            await svc.hub.tap(watched.tap)
        except ConnectionError:
            _watch_error(conn, "unavailable", "the live feed is reconnecting to the store; watch again shortly", **about)
            return
        watching[obj] = watched
        try:
            replay = await svc.feed.replay(owner, start)
        except STORE_ERRORS:
            svc.hub.untap(watching.pop(obj).tap)
            _watch_error(conn, "unavailable", "the store is unavailable; watch again shortly", **about)
            return
        frames = [frame for award in replay.awards for frame in watched.mine(frames_of(award))]
        if replay.gap or len(frames) > MAX_REPLAY_FRAMES:  # refetch the object; what follows `last` comes
            conn.enqueue(control("watching", conn.encoding, **{key: obj}, since=feed_id_text(replay.last), reset=True))
            conn.send_frames(watched.resume.on_replay(replay.last, []))
            return
        conn.enqueue(control("watching", conn.encoding, **{key: obj}, since=feed_id_text(start), reset=False))
        conn.send_frames(watched.resume.on_replay(start, frames), replayed=True)


def _unwatch(svc: Service, conn: LiveConnection, op: dict[str, Any], watching: dict[str, _Watching]) -> None:
    """``{"op": "unwatch", <key>: id}``: answered ``unwatched``; no frame of the watch follows it
    (whether or not the object was watched)."""
    found = _watched_key(conn, op)
    if found is None:
        return
    watch, value = found
    if not isinstance(value, str):
        _watch_error(conn, "invalid", f"must be a {watch.key} id, as its start answered", field=watch.key)
        return
    old = watching.pop(value, None)
    if old is not None:
        svc.hub.untap(old.tap)
    conn.enqueue(control("unwatched", conn.encoding, **{watch.key: value}))


async def no_such_socket(websocket: WebSocket) -> None:
    """A WebSocket to any other path: an HTTP 404 before the upgrade, naming the feed's path.

    Starlette's default closes before accepting, which the server answers 403: a client with a
    wrong URL would read "forbidden" and look for the mistake in its token. Without the denial
    response extension (another ASGI server) that close is all there is.
    """
    if "websocket.http.response" not in websocket.scope.get("extensions", {}):
        await websocket.close()
        return
    message = f"no WebSocket at {websocket.url.path}; the live feed is /v1/live"
    await websocket.send_denial_response(json_response(ErrorBody(error=ErrorDetail(code="not_found", message=message)), 404))
