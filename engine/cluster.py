"""Running on a Valkey / Redis Cluster: the URL that selects one, and the award path's runner.

``REDIS_URL=redis+cluster://host:port`` (``rediss+cluster://`` for TLS; user, password and
query as in a ``redis://`` URL) names any node of a cluster; the client finds the rest. Every
member's keys share one hash tag (``{m:<id>}``), and so do an item's, the programme's and a
scheduler shard's, so every script call and every transaction stays within one slot.

**Topology from a maintained client, speed from our own connections.** The slot map, MOVED and
ASK redirections and failover discovery come from redis-py's asyncio ``RedisCluster``, which
serves every command but the award path's. The award path keeps what makes it fast on one
server: ``ClusterRunner`` routes each script call by its first key's slot to an
``AutoPipeline`` of that primary (calls of one event-loop tick share a write per primary). The
issue that asked for this measured the alternatives through the same benchmark: valkey-glide at
0.73-0.78x of the bare endpoint and coredis at 0.44x, against 1.10x for our own core, the gap
being client CPU per call; so the pipelines stay ours, and only the topology is borrowed.

**Redirections and failures.** A MOVED reply (a slot moved for good: resharding, or a replica
promoted) updates the slot map from the reply itself and the call goes to the new owner; an ASK
reply (a slot half-way through a migration) sends that one call to the target preceded by
ASKING. A member script names every key of the member, and during a migration some may be on
each node: both answer TRYAGAIN until the slot's last keys have moved, so the call is tried again
every 20 ms for up to 2 s, then fails like an unreachable store (503, Retry-After). Every script is
idempotent by its dedupe step, so sending a call again can never apply it twice. A connection
error (a primary down) fails the calls on it, which the HTTP layer answers 503 with Retry-After,
and refreshes the slot map in the background, so that once a replica has taken over the next
call goes to it.

**Order.** A ``run_many``'s calls for one slot keep their order (one connection per primary
carries them in order) but for one redirected or answered NOSCRIPT, sent again after the rest;
calls for different primaries run side by side. A pair that must apply in order across slots (a
points lot's expiry job, then the member call that creates the lot; a cross-slot intent, then
the object step) is a ``run_chain``: consecutive calls to one slot go in one transaction on that
slot's primary when all but the last are Commands (as on one server), else call by call, and
the next slot's calls are sent only once the previous reply is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import MovedError, ResponseError

from engine.pipelining import AutoPipeline
from engine.runner import Call, ChainBroken, Runner, Target, broken_after
from engine.scripts import Command

log = logging.getLogger("rekindle.cluster")

#: The schemes that select a cluster, and the plain scheme each stands for.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss", "valkey+cluster": "redis", "valkeys+cluster": "rediss"}
MAX_REDIRECTS = 5
TRYAGAIN_PAUSE_S = 0.02
TRYAGAIN_WAIT_S = 2.0  # a call waits this long for its slot's migration to finish, then fails (503)
REFRESH_EVERY_S = 0.5  # at most one background refresh of the slot map in this long


#: Either client: what every store but the award path's takes.
Client = Redis | RedisCluster


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and urlsplit(url).scheme.lower() in CLUSTER_SCHEMES  # type: ignore[arg-type]


def plain_url(url: str) -> str:
    """The URL with its cluster scheme replaced by the plain one redis-py reads."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=CLUSTER_SCHEMES[parts.scheme.lower()]))


def node_url(url: str, host: str, port: int) -> str:
    """The plain URL of one node: the cluster URL's credentials and options at ``host:port``."""
    parts = urlsplit(plain_url(url))
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc, path=""))


def cluster_from_url(url: str, **kwargs: Any) -> RedisCluster:
    """The general-purpose client of the cluster ``url`` names (initialised on first use)."""
    return RedisCluster.from_url(plain_url(url), **kwargs)


def client_from_url(url: str, **kwargs: Any) -> Client:
    """The general-purpose client of ``url``: a cluster's for a cluster URL, else a server's."""
    return cluster_from_url(url, **kwargs) if is_cluster_url(url) else Redis.from_url(url, **kwargs)


def runner_for(client: Client, url: str, wait_replicas: int = 0, wait_timeout_ms: int = 100) -> Runner:
    """The award path's runner over ``client`` (made by ``client_from_url(url)``)."""
    if isinstance(client, RedisCluster):
        return ClusterRunner(client, url, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)
    return AutoPipeline(client, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)


def redirect_of(exc: BaseException) -> tuple[str, int, str, int] | None:
    """``(kind, slot, host, port)`` of a MOVED or ASK error reply, else None."""
    if not isinstance(exc, ResponseError):
        return None
    words = str(exc).split(" ")
    if len(words) != 3 or words[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = words[2].rpartition(":")
    try:
        return words[0], int(words[1]), host, int(port)
    except ValueError:
        return None


def _is_tryagain(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and str(exc).startswith("TRYAGAIN")


def _redirected(reply: Any) -> bool:
    """A MOVED, ASK or TRYAGAIN error reply: the call was not applied where it was sent."""
    return isinstance(reply, BaseException) and (redirect_of(reply) is not None or _is_tryagain(reply))


class ClusterRunner:
    """The ``Runner`` for a cluster: each call on the auto-pipeline of its slot's primary."""

    def __init__(
        self,
        cluster: RedisCluster,
        url: str,
        timeout_s: float = 10.0,
        max_batch: int = 16,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 100,
    ) -> None:
        self._cluster = cluster
        self._url = url
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._wait = (wait_replicas, wait_timeout_ms)
        self._pipes: dict[str, tuple[Redis, AutoPipeline]] = {}  # by node name (host:port)
        self._sending: set[asyncio.Task[None]] = set()  # send()'s calls in flight
        self._map = SlotMap(cluster)
        self._closed = False
        self._ready = False
        #: Redirections followed, by kind (MOVED, ASK, TRYAGAIN): how often the slot map was behind.
        self.redirected: dict[str, int] = {"MOVED": 0, "ASK": 0, "TRYAGAIN": 0}

    # --- Runner -------------------------------------------------------------------------------

    async def call(self, target: Target, keys: Sequence[str], args: Sequence[Any]) -> Any:
        asking: tuple[str, int] | None = None
        redirects = 0
        waiting_since = 0.0  # TRYAGAIN: when this call first met its slot half-migrated
        while True:
            if asking is not None:
                pipe = self._pipe(*asking)
            else:
                node = await self._node_for(keys[0])
                pipe = self._pipe(node.host, int(node.port))
            try:
                return await (pipe.call_asking(target, keys, args) if asking else pipe.call(target, keys, args))
            except ConnectionError:
                self._refresh_soon()
                raise
            except ResponseError as exc:
                if _is_tryagain(exc):
                    # The member's keys are split between the two nodes of a migration: no node
                    # can run the script until the rest of them have moved. Wait it out, briefly.
                    self.redirected["TRYAGAIN"] += 1
                    now = asyncio.get_running_loop().time()
                    waiting_since = waiting_since or now
                    if now - waiting_since > TRYAGAIN_WAIT_S:
                        raise
                    await asyncio.sleep(TRYAGAIN_PAUSE_S)
                    asking = None
                    continue
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise
                asking = await self._follow(exc)

    async def run_many(self, calls: Sequence[Call]) -> list[Any]:
        """Calls for one primary in one pipeline, in order; primaries side by side. A call that was
        redirected is sent again on its own (``call``) and its reply takes its place."""
        groups: dict[str, list[int]] = {}
        for i, (_, keys, _) in enumerate(calls):
            node = await self._node_for(keys[0])
            groups.setdefault(node.name, []).append(i)
        replies: list[Any] = [None] * len(calls)

        async def run_group(name: str, indices: list[int]) -> None:
            host, _, port = name.rpartition(":")
            got = await self._pipe(host, int(port)).run_many([calls[i] for i in indices])
            for i, reply in zip(indices, got):
                replies[i] = reply

        await asyncio.gather(*(run_group(name, indices) for name, indices in groups.items()))
        for i, reply in enumerate(replies):
            if isinstance(reply, ConnectionError):
                self._refresh_soon()
            elif _redirected(reply):
                replies[i] = await self._reply(calls[i])
        return replies

    async def run_chain(self, calls: Sequence[Call]) -> list[Any]:
        """Each call applied only after the one before it succeeded, whatever their slots. Runs of
        consecutive calls to one slot whose calls but the last are Commands go in one transaction
        on the slot's primary; a run refused by a redirection (nothing of it applied) is sent
        again call by call, following it. Every other call is sent alone, once the reply before
        it is in; the first failure leaves the rest unsent, each answered ``ChainBroken``."""
        replies: list[Any] = []
        start = 0
        while start < len(calls):
            slot = key_slot(calls[start][1][0].encode())
            end = start + 1
            while end < len(calls) and isinstance(calls[end - 1][0], Command) and key_slot(calls[end][1][0].encode()) == slot:
                end += 1
            got = await self._run(calls[start:end])
            # A ChainBroken names the failed call by its index in the whole chain, not in its run.
            replies += [ChainBroken(r.failed + start, calls[r.failed + start][0], r.cause) if isinstance(r, ChainBroken) else r for r in got]
            failed = next((i for i, r in enumerate(got) if isinstance(r, BaseException) and not isinstance(r, ChainBroken)), None)
            if failed is not None:
                replies += [ChainBroken(start + failed, calls[start + failed][0], got[failed]) for _ in calls[end:]]
                break
            start = end
        return replies

    async def _run(self, run: Sequence[Call]) -> list[Any]:
        """One run of ``run_chain``: calls to one slot, a transaction when it holds more than one."""
        if len(run) > 1:
            try:
                node = await self._node_for(run[0][1][0])
                got = await self._pipe(node.host, int(node.port)).run_chain(run)
            except Exception as exc:  # noqa: BLE001 - the runner closed, the slot map unreadable
                return broken_after(run, [exc, *[None] * (len(run) - 1)])
            failure = next((r for r in got if isinstance(r, BaseException) and not isinstance(r, ChainBroken)), None)
            if isinstance(failure, ConnectionError):
                self._refresh_soon()
            if not _redirected(failure):
                return got
            # Refused by a redirection, so the transaction applied nothing: call by call, following it.
        got = []
        for call in run:
            got.append(await self._reply(call))
            if isinstance(got[-1], BaseException):
                return broken_after(run, got + [None] * (len(run) - len(got)))
        return got

    async def _reply(self, call: Call) -> Any:
        """``call``'s reply, redirections followed, an error reply as a value."""
        try:
            return await self.call(*call)
        except Exception as exc:  # noqa: BLE001 - an error reply is a value here
            return exc

    def send(self, target: Target, keys: Sequence[str], args: Sequence[Any]) -> None:
        """A call nobody awaits (see ``Runner.send``), its error dropped: queued at once on its
        slot's primary (behind what was queued there before it, ahead of what comes after), or,
        before the slot map is read or when redirected, a task of its own."""
        if self._ready and not self._closed:
            node = self._cluster.get_node_from_key(keys[0])
            if node is not None:  # None only while the slot map is being reread
                self._pipe(node.host, int(node.port)).send(target, keys, args)
                return
        task = asyncio.get_running_loop().create_task(self._quiet(target, keys, args))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _quiet(self, target: Target, keys: Sequence[str], args: Sequence[Any]) -> None:
        try:
            await self.call(target, keys, args)
        except Exception:  # noqa: BLE001 - nobody waits for this reply (Runner.send)
            pass

    async def aclose(self) -> None:
        self._closed = True
        await self._map.aclose()
        pipes, self._pipes = self._pipes, {}
        for redis, pipe in pipes.values():
            await pipe.aclose()
            await redis.aclose()

    # --- inside -------------------------------------------------------------------------------

    async def _node_for(self, key: str) -> ClusterNode:
        if not self._ready:  # the slot map is read once, on the first call (then kept current)
            await self._cluster.initialize()
            self._ready = True
        return self._cluster.get_node_from_key(key)  # type: ignore[return-value]

    def _pipe(self, host: str, port: int) -> AutoPipeline:
        name = f"{host}:{port}"
        entry = self._pipes.get(name)
        if entry is None:
            if self._closed:
                raise ConnectionError("the cluster runner is closed")
            # A client of its own per node, for the pipeline's connection settings and to load
            # scripts on that node (NOSCRIPT is per node: a promoted replica has the scripts its
            # primary had only if they were loaded there too).
            redis = Redis.from_url(node_url(self._url, host, port), socket_connect_timeout=5, socket_timeout=10)
            pipe = AutoPipeline(redis, self._timeout_s, self._max_batch, *self._wait)
            entry = self._pipes[name] = (redis, pipe)
        return entry[1]

    async def _follow(self, exc: ResponseError) -> tuple[str, int] | None:
        """After a MOVED or ASK reply: None to route again by the (updated) slot map, or the
        ``(host, port)`` to ask once; any other error reply is raised."""
        redirect = redirect_of(exc)
        if redirect is None:
            raise exc
        kind, slot, host, port = redirect
        self.redirected[kind] += 1
        if kind == "ASK":
            return host, port
        await self._cluster.nodes_manager.move_slot(MovedError(f"{slot} {host}:{port}"))
        return None

    def _refresh_soon(self) -> None:
        if not self._closed:
            self._map.refresh_soon()


class SlotMap:
    """Re-reads a cluster's slot map in the background, at most every ``REFRESH_EVERY_S``: after
    a primary stops answering, its replica takes over, and the next calls must find it."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._task: asyncio.Task[None] | None = None
        self._last = float("-inf")

    def refresh_soon(self) -> None:
        loop = asyncio.get_running_loop()
        if (self._task is not None and not self._task.done()) or loop.time() - self._last < REFRESH_EVERY_S:
            return
        self._last = loop.time()
        self._task = loop.create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            await self._cluster.nodes_manager.initialize()
        except Exception as exc:  # noqa: BLE001 - the next failure asks again
            log.warning("cannot refresh the cluster's slot map yet: %s", exc)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class Shards(SlotMap):
    """Which primary owns a live-feed channel, and a plain client of it: the hub subscribes to a
    member's channel (SSUBSCRIBE) on the shard its slot lives on, where the member script's
    SPUBLISH is delivered."""

    def __init__(self, cluster: RedisCluster, url: str) -> None:
        super().__init__(cluster)
        self._url = url

    def shard_of(self, channel: bytes) -> str:
        """The name (``host:port``) of the primary that owns ``channel``'s slot now."""
        return self._cluster.get_node_from_key(channel).name  # type: ignore[arg-type,union-attr]

    async def client(self, shard: str) -> Redis:
        host, _, port = shard.rpartition(":")
        return Redis.from_url(node_url(self._url, host, int(port)), socket_connect_timeout=5)
