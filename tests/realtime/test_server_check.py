"""`rekindle serve` refuses a server that would fail every award, before writing anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from engine.scripts import Scripts
from engine.servercheck import Command, required_commands
from realtime.service import Service, UnsupportedServer, check_server
from realtime.settings import Settings
from tests.acl import restricted_user
from tests.realtime.conftest import (
    ADMIN_KEY,
    API_KEY,
    EXAMPLE_CONFIG,
    TOKEN_SECRET,
    free_port,
    new_prefix,
    run_cli,
    service_env,
)

#: The service's user as a shop might lock it down: everything but the command member.lua
#: writes state with (what a server before Redis 8.0 / Valkey 9.0 lacks).
DENY_HSETEX = ("~*", "&*", "+@all", "-hsetex")


def _hsetex_refusal() -> str:
    users = ", ".join(required_commands(Scripts().all())[Command("HSETEX")])
    return (
        f"an ACL denies the service's Redis user HSETEX (used by {users}): rekindle needs Redis 8.0+ or"
        " Valkey 9.0+, with every command its scripts run allowed to its user"
    )


def _keys_under(sync_redis: redis.Redis, prefix: str) -> list[bytes]:
    return list(sync_redis.scan_iter(match=f"{prefix}*", count=1000))


def test_check_passes_on_the_session_server(redis_url: str) -> None:
    """The session's server (the embedded Valkey 9, or the cluster) passes the start-up check."""
    asyncio.run(check_server(Settings(redis_url=redis_url, wait_replicas=0)))


def test_serve_refuses_a_user_denied_hsetex(tmp_path: Path, redis_url: str, sync_redis: redis.Redis) -> None:
    """`rekindle serve` as a user an ACL denies HSETEX exits 2 naming HSETEX and the minimum
    versions, prints no banner, and writes nothing: no programme activated, no key under its prefix."""
    prefix = new_prefix()
    with restricted_user(redis_url, *DENY_HSETEX) as url:
        done = run_cli(
            "serve", "--port", str(free_port()), "--redis-url", url, "--config", str(EXAMPLE_CONFIG),
            "--data-dir", str(tmp_path / "data"), env=service_env(prefix),
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [f"rekindle serve: {_hsetex_refusal()}"]
    assert "http://" not in done.stdout  # refused before the banner
    assert _keys_under(sync_redis, prefix) == []


def test_service_open_refuses_it_too(redis_url: str, sync_redis: redis.Redis) -> None:
    """The app's lifespan (``Service.open``, what each worker runs) refuses the same user the
    same way, before loading scripts or activating the programme."""
    prefix = new_prefix()
    with restricted_user(redis_url, *DENY_HSETEX) as url:
        settings = Settings(
            redis_url=url, key_prefix=prefix, config_path=EXAMPLE_CONFIG, api_keys=frozenset({API_KEY}),
            admin_keys=frozenset({ADMIN_KEY}), token_secret=TOKEN_SECRET,
        )
        with pytest.raises(UnsupportedServer) as refused:
            asyncio.run(Service.open(settings))
    assert str(refused.value) == _hsetex_refusal()
    assert _keys_under(sync_redis, prefix) == []


def test_a_user_denied_scripts_is_refused(redis_url: str) -> None:
    """A user that may not run EVALSHA cannot run the check's script either: refused, saying so."""
    with restricted_user(redis_url, "~*", "&*", "+@all", "-evalsha") as url:
        with pytest.raises(UnsupportedServer, match="could not run the start-up check's script") as refused:
            asyncio.run(check_server(Settings(redis_url=url)))
    assert "'evalsha'" in str(refused.value) and "Redis 8.0+ or Valkey 9.0+" in str(refused.value)
