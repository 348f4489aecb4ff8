"""An ACL user of a test's own on the session's server, for tests of what a restricted user may do."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import redis

from tests.conftest import on_cluster, sync_client


@contextmanager
def restricted_user(url: str, *rules: str) -> Iterator[str]:
    """A user with ``rules`` (``+@all``, ``-hsetex``) on every node; yields ``url`` as that user,
    and deletes the user (closing its connections) however the test ends."""
    user, password = f"rk-test-{uuid.uuid4().hex[:10]}", secrets.token_hex(16)
    admin = sync_client(url)
    # ACLs are per node: a cluster's every node, replicas included, gets the same user.
    on_every_node = {"target_nodes": redis.RedisCluster.ALL_NODES} if on_cluster(url) else {}
    try:
        admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", *rules, **on_every_node)
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        yield urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))
    finally:
        admin.execute_command("ACL", "DELUSER", user, **on_every_node)
        admin.close()
