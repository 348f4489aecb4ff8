"""A live-feed client that does what an app should: connect, resume, reconnect with backoff.

Used by the tests and the load tests, and small enough to port. It remembers the last feed id it
yielded and resumes from it after any close that reconnecting can cure (a network blip, a slow-
consumer eviction, a node draining for restart); it stops on closes that it cannot (a refused
token, a malformed request) by raising ``LiveRefused``.

The token is a string, or a provider (a function, sync or async, returning a fresh token) that
is called before every connection. The server closes a socket ``4401`` when its token expires;
with a provider, a ``4401`` after the server had accepted the socket (it sent a frame: the
client's opening ping is answered) is that expiry, and the client reconnects with a fresh token
and ``?since=``. A ``4401`` at the opening means the token itself is refused: ``LiveRefused``.
A ``1013`` close (the server shed the socket's replay under overload) is followed by the wait its
reason names before reconnecting, so refused sockets do not come straight back.

    async with LiveClient("ws://127.0.0.1:8000", fetch_token) as client:
        async for frame in client:
            ...  # {"id", "type", "data"} in order, each once; or {"type": "reset"}

docs/live-feed.md shows it in an app that resumes after its own restart, and the same in a browser.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgpack
import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime.frames import FATAL_CLOSE_CODES, CloseCode, Encoding

#: Returns a fresh member token; called before every connection.
TokenProvider = Callable[[], str | Awaitable[str]]


#: The feed's path; a URL that does not end with it gets it appended.
LIVE_PATH = "/v1/live"


class LiveRefused(Exception):
    """The server closed with a code, or refused the handshake with an HTTP status (a 404 for a
    wrong path, a 403), after which retrying as is cannot help."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


def retry_after_s(code: int | None, reason: str | None) -> float:
    """The wait an overloaded server asks for when it closes a socket ``1013`` with the reason
    ``overloaded; reconnect after N s ...`` (0: none asked)."""
    if code != 1013 or not reason:
        return 0.0
    match = re.search(r"after (\d+(?:\.\d+)?) s", reason)
    return float(match.group(1)) if match else 0.0  # e.g. a node draining: reconnect at once


def feed_url(url: str) -> str:
    """The feed's WebSocket URL from the service's base URL or the feed's own.

    ``ws://host:8000``, ``http://host:8000/`` and ``ws://host:8000/v1/live`` all give
    ``ws://host:8000/v1/live`` (``https``/``wss`` give ``wss``); a path before it is kept, for a
    service behind a prefix. The token and ``since`` are the client's to add: a query is refused.
    """
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"{url!r}: expected the service's URL, such as ws://host:8000 or ws://host:8000{LIVE_PATH}")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: give the token and since as arguments, not in the URL")
    path = parts.path.rstrip("/")
    if not path.endswith(LIVE_PATH):
        path += LIVE_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class LiveClient:
    """Follow one member's live feed: ``async for frame in client`` yields each feed frame once,
    in order, across reconnects, until ``close()`` or a refusal (``LiveRefused``).

    ``url``: the service's base URL (``ws://host:8000``; ``http``/``https`` are taken as
    ``ws``/``wss``) or the feed's full URL (``ws://host:8000/v1/live``), without a query: the
    client adds ``?token=`` and ``&since=`` itself. ``token``: the member token, or a provider
    called before every connection. ``since``: the last feed id the app handled (saved across its
    restarts), or the snapshot's ``feed_id`` from ``GET /v1/me``; None starts when the socket is
    accepted. ``last_id`` is the id to save: the newest feed frame yielded. After a ``reset``
    frame, ``resume_from(snapshot["feed_id"])``. A handshake refused with a 4xx (a 404 for a path
    that is not the feed's) raises ``LiveRefused``; an unreachable service is retried with backoff,
    at most ``max_attempts`` times in a row when given.
    """

    def __init__(
        self,
        url: str,
        token: str | TokenProvider,
        since: str | None = None,
        encoding: Encoding = Encoding.JSON,
        backoff_min_s: float = 0.05,
        backoff_max_s: float = 5.0,
        max_attempts: int | None = None,
    ) -> None:
        self._feed_url = feed_url(url)
        self._token = token
        self.last_id = since
        self.encoding = encoding
        self._backoff = (backoff_min_s, backoff_max_s)
        self._max_attempts = max_attempts
        self._ws: Any = None
        self._closed = False
        self.connects = 0  # how many times a connection opened
        self.close_codes: list[int] = []  # why each one ended, in order
        self.connected = asyncio.Event()

    async def __aenter__(self) -> "LiveClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _fresh_token(self) -> str:
        """The plain token, or what the provider gives now (it may refresh it)."""
        if isinstance(self._token, str):
            return self._token
        token = self._token()
        if inspect.isawaitable(token):
            token = await token
        return token

    def _refused(self, code: int, accepted: bool) -> bool:
        """Whether this close ends the iteration: a fatal code, unless it is a token that
        expired while open (the server had answered) and a provider can give a fresh one."""
        if code == CloseCode.UNAUTHORIZED and accepted and not isinstance(self._token, str):
            return False
        return code in FATAL_CLOSE_CODES

    def resume_from(self, feed_id: str | None) -> None:
        """After a ``reset``: resume from the snapshot's ``feed_id`` on the next connection."""
        self.last_id = feed_id

    async def send(self, op: dict[str, Any]) -> None:
        if self._ws is None:
            raise ConnectionError("not connected")
        if self.encoding is Encoding.JSON:
            await self._ws.send(orjson.dumps(op).decode())
        else:
            await self._ws.send(msgpack.packb(op))

    async def drop(self) -> None:
        """Cut the current connection abruptly, as a network blip would; iteration reconnects."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[dict[str, Any]]:
        attempt = 0
        while not self._closed:
            accepted = False  # the server answered on this connection: the token was good then
            asked_s = 0.0  # a wait the server asked for when it closed (1013, overloaded)
            try:
                url = self._url(await self._fresh_token())
                async with websockets.connect(
                    url, subprotocols=[self.encoding.value], open_timeout=10, max_queue=None  # type: ignore[list-item]
                ) as ws:
                    self._ws = ws
                    self.connects += 1
                    self.connected.set()
                    attempt = 0
                    await self.send({"op": "ping"})  # its pong says the server took the token
                    own_pong = True
                    async for raw in ws:
                        accepted = True
                        frame = orjson.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw, raw=False)
                        # A feed frame is {id, type, data}; a watched object's frame names the
                        # object too ({"bargain": ...}): its id is its owner's feed's, not this one's.
                        if "id" in frame and len(frame) == 3:
                            self.last_id = frame["id"]
                        elif frame.get("type") == "reset":
                            self.last_id = None  # the caller refetches its snapshot (see resume_from)
                        elif own_pong and frame.get("type") == "pong":
                            own_pong = False
                            continue
                        yield frame
                    self.close_codes.append(ws.close_code or 1005)
                    if ws.close_code is not None and self._refused(ws.close_code, accepted):
                        raise LiveRefused(ws.close_code, ws.close_reason or "")
                    asked_s = retry_after_s(ws.close_code, ws.close_reason)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                self.close_codes.append(code)
                if self._refused(code, accepted):
                    raise LiveRefused(code, exc.rcvd.reason if exc.rcvd else "") from None
                asked_s = retry_after_s(code, exc.rcvd.reason if exc.rcvd else "")
            except InvalidStatus as exc:
                status = exc.response.status_code
                if 400 <= status < 500 and status not in (408, 429):  # the same request cannot succeed
                    raise LiveRefused(status, _refusal(exc.response.body, self._feed_url)) from None
            except (OSError, InvalidHandshake, asyncio.TimeoutError):
                pass  # not reachable right now: back off and try again
            finally:
                self._ws = None
                self.connected.clear()
            if self._closed:
                return
            attempt += 1
            if self._max_attempts is not None and attempt > self._max_attempts:
                raise ConnectionError(f"gave up after {self._max_attempts} attempts")
            low, high = self._backoff
            if asked_s:  # an overloaded server said when: come back then, not at once (spread a little)
                await asyncio.sleep(asked_s * random.uniform(1.0, 1.5))
            else:
                await asyncio.sleep(random.uniform(0, min(high, low * 2**attempt)))  # full jitter

    def _url(self, token: str) -> str:
        params = {"token": token}
        if self.last_id is not None:
            params["since"] = self.last_id
        return f"{self._feed_url}?{urlencode(params)}"


def _refusal(body: bytes | bytearray, url: str) -> str:
    """What a refused handshake says: the error body's message, else that it was refused."""
    try:
        message = orjson.loads(body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = None
    return message if isinstance(message, str) else f"handshake refused at {url}"
