"""One WebSocket client socket: the ``websockets`` library's sans-I/O ``ClientProtocol`` under an
``asyncio.Protocol``.

The subscriber holds 10,000 of these on a 2-core machine that also runs the server it measures,
so a socket costs no task and no queue: bytes go from asyncio's ``data_received`` callback into
the protocol, and each complete message straight to ``on_message`` with the time its bytes
arrived. The library does the rest as a browser would: the handshake, permessage-deflate when
offered, pongs, the closing handshake, masking.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

#: ``on_message(payload, receive time in ns)``: called for every text or binary message.
OnMessage = Callable[[bytes, int], None]


class HandshakeError(Exception):
    """The server did not accept the WebSocket upgrade (or closed during it)."""


class WsClient(asyncio.Protocol):
    """A client connection; ``opened`` resolves after the handshake, ``done`` once the socket is gone."""

    def __init__(self, uri: str, on_message: OnMessage, *, subprotocol: str | None = None, deflate: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.protocol = ClientProtocol(
            parse_uri(uri),
            # What browsers offer: permessage-deflate with client_max_window_bits.
            extensions=enable_client_permessage_deflate(None) if deflate else None,
            subprotocols=[Subprotocol(subprotocol)] if subprotocol else None,
        )
        self._on_message = on_message
        self._fragments: list[bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        #: None while open; the server's close code, or 1006 when the socket went without one
        self.close_code: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Frame):
                self._frame(event, now)
        if not self.opened.done():
            if protocol.handshake_exc is not None:
                self.opened.set_exception(HandshakeError(str(protocol.handshake_exc)))
            elif protocol.state is not State.CONNECTING:  # open, or already closing: the upgrade succeeded
                self.opened.set_result(None)
        self._flush()

    def _frame(self, frame: Frame, now: int) -> None:
        """Messages to ``on_message``; fragments joined; a close code kept (pings answer themselves)."""
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._on_message(frame.data, now)
            else:
                self._fragments = [frame.data]
        elif opcode is Opcode.CONT and self._fragments is not None:
            self._fragments.append(frame.data)
            if frame.fin:
                whole, self._fragments = b"".join(self._fragments), None
                self._on_message(whole, now)
        elif opcode is Opcode.CLOSE and self.close_code is None:
            received = self.protocol.close_rcvd
            self.close_code = received.code if received is not None else 1005

    def _flush(self) -> None:
        """Write what the protocol has to send; an empty chunk means half-close (EOF)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for chunk in self.protocol.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeError("closed during the handshake"))
        if self.close_code is None:
            self.close_code = 1006
        if not self.done.done():
            self.done.set_result(None)

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the server replies and drops the connection."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code)
            self._flush()
