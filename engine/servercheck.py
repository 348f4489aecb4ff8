"""Whether a server can run rekindle: every command the scripts call, asked at start-up.

A server that lacks a command a script calls (Redis 7.4 has no HSETEX), or a user an ACL denies
one, loads the scripts without a word and then fails every call that reaches the command. So
the list is read from the scripts themselves (``required_commands``): a script that brings in a
new command brings it into the check, and one that names a command the check cannot read (a
variable, not a literal) is refused. The question goes to the server as one keyless, read-only
script (``lua/servercheck.lua``): ``redis.acl_check_cmd`` answers for the user that runs it,
which is the user every script's commands are checked against, needs no admin rights (``ACL
DRYRUN`` does, and ``COMMAND INFO`` may be denied to a locked-down user), and raises for a
command the server does not know. Nothing is written; the script cache gets one more entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from typing import NamedTuple

from redis.asyncio.cluster import RedisCluster

from engine.cluster import Client
from engine.scripts import LuaScript

#: What rekindle runs on, and why: member.lua writes state with HSETEX ... PXAT|KEEPTTL (a
#: value and its field's expiry in one command), new in Redis 8.0 and Valkey 9.0.
MINIMUM = "Redis 8.0+ or Valkey 9.0+"

#: Commands whose first argument names a subcommand, which ACLs allow or deny on its own
#: (``-xinfo|stream``): the server's container commands.
CONTAINERS = frozenset({
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "COMMANDLOG", "CONFIG", "FUNCTION", "LATENCY", "MEMORY",
    "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
})


class Command(NamedTuple):
    name: str  # upper case: "HSETEX"
    sub: str = ""  # a container's subcommand, upper case ("STREAM" of XINFO STREAM); "" for none

    def __str__(self) -> str:
        return f"{self.name} {self.sub}" if self.sub else self.name


#: What the Python side sends itself that an older server lacks (SSUBSCRIBE 7.0, COPY 6.2) or
#: without which nothing runs (scripts), with where it is sent; and every ``scripts.Command`` a
#: runner sends, with the transaction ``run_chain`` wraps them in, since an ACL denying one
#: fails the award path. The rest it sends (GET, XRANGE, HGETALL ...) every server since 6.2 has.
CLIENT_COMMANDS: dict[Command, str] = {
    Command("EVALSHA"): "every script call",
    Command("SCRIPT", "LOAD"): "loading the scripts",
    Command("SSUBSCRIBE"): "the live feed (realtime/subscriber.py)",
    Command("SUBSCRIBE"): "programme changes (engine/programs.py)",
    Command("COPY"): "dry runs (engine/dryrun.py)",
    Command("ZADD"): "scheduling a job before the call it covers (engine/jobs.py, engine/crossing.py)",
    Command("ZREM"): "dropping a decided entry's intent (engine/crossing.py)",
    Command("HMGET"): "a game's read of a member's state fields and of its objects' counts (engine/members.py)",
    Command("HGET"): "a game's read of a member's join date (engine/members.py)",
    Command("EXISTS"): "a gift's check that its receiver is a member (engine/members.py)",
    Command("PFADD"): "the KPIs' active members, buyers and players a day (engine/kpis.py)",
    Command("HINCRBY"): "the KPIs' counters a day (engine/kpis.py)",
    Command("EXPIRE"): "the KPIs' keys, kept KEEP_DAYS (engine/kpis.py)",
    Command("MULTI"): "a chain of calls in one write (engine/pipelining.py)",
    Command("EXEC"): "a chain of calls in one write (engine/pipelining.py)",
}
#: Sent after every write only when the service waits for replicas (REKINDLE_WAIT_REPLICAS).
WAIT = Command("WAIT")


class Verdict(IntEnum):
    """The server's answer for one command as the service's user; worst first, so ``min``
    over a cluster's primaries is the answer for the cluster."""

    UNKNOWN = -1  # the server does not know it (too old, or renamed away)
    DENIED = 0  # an ACL denies it to this user
    ALLOWED = 1


def _literal(group: str) -> str:
    """A Lua string literal in single or double quotes, its text in ``<group>1`` or ``<group>2``."""
    return rf"""(?:'(?P<{group}1>(?:\\.|[^'\\\n])*)'|"(?P<{group}2>(?:\\.|[^"\\\n])*)")"""


# A Lua lexeme the reader must step over (a comment or a string, which may hold text that looks
# like a call), or a call whose command it reads: its first argument, and a container's second.
_LEXEME = re.compile(
    r"--\[(?P<ceq>=*)\[.*?\](?P=ceq)\]"  # long comment
    r"|--[^\n]*"  # line comment
    r"|\[(?P<seq>=*)\[.*?\](?P=seq)\]"  # long string
    r"""|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*\""""  # string
    rf"|(?P<call>\bredis\s*\.\s*p?call\s*\()\s*(?:{_literal('cmd')}(?:\s*,\s*{_literal('sub')})?)?",
    re.S,
)


def script_commands(name: str, source: str | bytes) -> set[Command]:
    """Every command ``source`` calls through ``redis.call`` / ``redis.pcall``.

    Raises ``ValueError`` naming the line of a call whose command is not a string literal (or
    a container's whose subcommand is not): the check could not know what it runs.
    """
    text = source.decode() if isinstance(source, bytes) else source
    found: set[Command] = set()
    for m in _LEXEME.finditer(text):
        if not m.group("call"):
            continue
        line = text.count("\n", 0, m.start()) + 1
        first, second = _first(m.group("cmd1"), m.group("cmd2")), _first(m.group("sub1"), m.group("sub2"))
        if first is None:
            raise ValueError(f"{name}:{line}: redis.call's command is not a string literal")
        command = first.upper()
        if command not in CONTAINERS:
            found.add(Command(command))
        elif second is None:
            raise ValueError(f"{name}:{line}: {command}'s subcommand is not a string literal")
        else:
            found.add(Command(command, second.upper()))
    return found


def _first(*values: str | None) -> str | None:
    return next((v for v in values if v is not None), None)


def required_commands(scripts: Iterable[LuaScript], wait_replicas: int = 0) -> dict[Command, tuple[str, ...]]:
    """Every command the service needs, with who needs it: each script's, then the client's."""
    users: dict[Command, list[str]] = {}
    for script in scripts:
        for command in sorted(script_commands(script.name, script.source)):
            users.setdefault(command, []).append(script.name)
    for command, use in CLIENT_COMMANDS.items():
        users.setdefault(command, []).append(use)
    if wait_replicas:
        users.setdefault(WAIT, []).append("REKINDLE_WAIT_REPLICAS")
    return {command: tuple(names) for command, names in sorted(users.items())}


async def probe(redis: Client, commands: Sequence[Command]) -> dict[Command, Verdict]:
    """What the server answers for each command as this client's user; on a cluster, every
    primary is asked (ACLs and versions are per node) and the worst answer stands.

    Raises ``redis.exceptions.ResponseError`` when the probe itself cannot run (a server without
    script flags, before Redis 7.0, or a user denied SCRIPT LOAD or EVALSHA)."""
    script = LuaScript.from_package("servercheck.lua")
    args = [part for command in commands for part in command]
    await redis.script_load(script.source)  # on a cluster, every primary
    if isinstance(redis, RedisCluster):
        replies = [
            await redis.execute_command("EVALSHA", script.sha, 0, *args, target_nodes=node)
            for node in redis.get_primaries()
        ]
    else:
        replies = [await redis.evalsha(script.sha, 0, *args)]
    return {command: Verdict(min(int(reply[i]) for reply in replies)) for i, command in enumerate(commands)}


async def server_version(redis: Client) -> str:
    """``Valkey 9.1.2`` / ``Redis 7.4.0`` (Valkey reports a Redis version too, for clients that
    compare it); a node's at random on a cluster."""
    if isinstance(redis, RedisCluster):
        info = await redis.info("server", target_nodes=RedisCluster.RANDOM)
    else:
        info = await redis.info("server")
    if info.get("valkey_version"):
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info.get('redis_version', '(version unknown)')}"


def refusal(verdicts: Mapping[Command, Verdict], users: Mapping[Command, Sequence[str]], server: str) -> str | None:
    """Why the service must not start on this server, naming each command and who uses it;
    None when every command is allowed."""
    lacking = [c for c, v in verdicts.items() if v is Verdict.UNKNOWN]
    denied = [c for c, v in verdicts.items() if v is Verdict.DENIED]
    reasons = []
    if lacking:
        reasons.append(f"the Redis server ({server}) lacks {_named(lacking, users)}")
    if denied:
        reasons.append(f"an ACL denies the service's Redis user {_named(denied, users)}")
    if not reasons:
        return None
    return "; ".join(reasons) + f": rekindle needs {MINIMUM}, with every command its scripts run allowed to its user"


def _named(commands: Sequence[Command], users: Mapping[Command, Sequence[str]]) -> str:
    return ", ".join(f"{command} (used by {', '.join(users.get(command, ()))})" for command in commands)
