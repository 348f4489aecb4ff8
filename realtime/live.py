"""``GET /v1/live``: a member's progress, pushed over a WebSocket, resumable by feed id.

Order of a session: accept (subprotocol ``rekindle.json`` or ``rekindle.msgpack``); authenticate
(``?token=`` or a first frame ``{"op": "auth", "token"}``); learn where to start (``?since=``, the
auth frame's ``since``, or a first ``{"op": "resume", "since"}`` frame; without one, from now);
subscribe; replay the stream after ``since``; then live. Subscribing before replaying is what
makes "no gap" hold; ids make "no duplicate" hold.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgpack
import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine.errors import InvalidInput
from engine.feed import FeedId, parse_feed_id
from realtime import metrics
from realtime.errors import STORE_ERRORS, Unauthorized
from realtime.frames import CloseCode, Encoding, control, frames_of
from realtime.hub import LiveConnection, TooManySockets

log = logging.getLogger("rekindle.live")

if TYPE_CHECKING:
    from realtime.service import Service

AUTH_WAIT_S = 10.0  # for the first frame when the token is not in the URL
RESUME_WAIT_S = 5.0  # for a first resume frame when no `since` came with the connection
MAX_REPLAY_FRAMES = 5000  # a resume further behind than this is told to refetch (reset)
MAX_QUEUE = 1024  # frames a socket may fall behind before it is told to resume
MAX_CLIENT_FRAME = 4096


class _Refused(Exception):
    def __init__(self, code: CloseCode, reason: str) -> None:
        self.code, self.reason = code, reason


async def live(websocket: WebSocket) -> None:
    svc: Service = websocket.app.state.service
    offered = list(websocket.scope.get("subprotocols") or [])
    chosen = Encoding.negotiate(offered)
    await websocket.accept(subprotocol=chosen.value if chosen else None)
    encoding = chosen or Encoding.JSON
    try:
        member, since, since_given = await _handshake(websocket, svc)
    except _Refused as refused:
        await websocket.close(refused.code, refused.reason)
        return
    except WebSocketDisconnect:
        return

    conn = LiveConnection(member, svc.keys.member(member).channel.encode(), encoding, MAX_QUEUE, _AsgiSender(websocket))
    try:
        await svc.hub.join(conn)
    except ConnectionError:
        await websocket.close(1013, "the live feed is reconnecting; try again shortly")
        return
    except TooManySockets as exc:
        await websocket.close(CloseCode.TOO_MANY, str(exc))
        return
    metrics.LIVE_SOCKETS.inc()
    try:
        if not since_given:
            first = await _receive_op(websocket, RESUME_WAIT_S)
            if first is not None and first.get("op") == "resume":
                since = _since(first.get("since"))
            elif first is not None:
                _answer(conn, first)
        await _replay(svc, conn, since)
        while conn.close_code is None:
            op = await _receive_op(websocket, None)
            if op is None:
                break
            _answer(conn, op)
    except _Refused as refused:
        conn.evict(refused.code, refused.reason)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away (RuntimeError: Starlette's "not connected" after a close)
    finally:
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


async def _handshake(websocket: WebSocket, svc: Service) -> tuple[str, FeedId | None, bool]:
    params = websocket.query_params
    token = params.get("token")
    since_raw: object = params.get("since")
    if token is None:
        first = await _receive_op(websocket, AUTH_WAIT_S)
        if first is None or first.get("op") != "auth" or not isinstance(first.get("token"), str):
            raise _Refused(CloseCode.UNAUTHORIZED, 'send ?token= or a first frame {"op": "auth", "token": ...}')
        token = first["token"]
        since_raw = first.get("since", since_raw)
    try:
        member = svc.auth.member_from_token(token)
    except Unauthorized as exc:
        raise _Refused(CloseCode.UNAUTHORIZED, exc.message) from None
    if since_raw is None:
        return member, None, False
    return member, _since(since_raw), True


def _since(value: object) -> FeedId | None:
    if value is None:
        return None
    try:
        return parse_feed_id(value, "since")
    except InvalidInput as exc:
        raise _Refused(CloseCode.BAD_REQUEST, f"since: {exc.message}") from None


async def _replay(svc: Service, conn: LiveConnection, since: FeedId | None) -> None:
    try:
        replay = await svc.feed.replay(conn.member, since)
    except STORE_ERRORS:
        raise _Refused(CloseCode.RESUME, "the store is unavailable; reconnect and resume") from None
    if replay.gap or sum(len(a.effects) for a in replay.awards) > MAX_REPLAY_FRAMES:
        conn.enqueue(control("reset", conn.encoding, reason="your last id is older than the feed keeps; refetch the snapshot"))
        conn.send_frames(conn.resume.on_replay(replay.last, []))
        return
    start = since if since is not None else replay.last
    frames = [frame for award in replay.awards for frame in frames_of(award)]
    conn.send_frames(conn.resume.on_replay(start, frames), replayed=True)


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
    elif kind == "resume":
        conn.enqueue(
            control("error", conn.encoding, code="resume_too_late", message="resume only as the first frame, or reconnect with ?since=")
        )
    else:
        conn.enqueue(control("error", conn.encoding, code="unknown_op", message="ops are ping and resume"))
