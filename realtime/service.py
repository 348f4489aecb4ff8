"""The resources one service process holds, opened by the app's lifespan and closed in reverse."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from engine.cluster import Client, Shards, cluster_from_url, is_cluster_url, runner_for
from engine.clock import Clock, OffsetClock, SystemClock
from engine.feed import FeedStore
from engine.keys import Keys
from engine.members import MemberStore
from engine.runner import Runner
from engine.programs import ProgramRegistry
from engine.scripts import Scripts
from engine.dryrun import DryRun
from engine.store import OperationStore
from engine.redemptions import RedemptionStore, Sweeper
from engine.scheduler import Scheduler
from realtime import metrics
from realtime.auth import Auth
from realtime.hub import Hub
from realtime.settings import Settings

log = logging.getLogger("rekindle.service")


class UnsupportedServer(RuntimeError):
    """The Redis server lacks a command the engine relies on."""


@dataclass
class Service:
    settings: Settings
    clock: Clock
    redis: Client  # every command but the award path's
    keys: Keys
    scripts: Scripts
    pipeline: Runner  # the award path: AutoPipeline on one server, ClusterRunner on a cluster
    ops: OperationStore
    dry_run: DryRun
    members: MemberStore
    programs: ProgramRegistry
    auth: Auth
    feed: FeedStore
    hub: Hub
    redemptions: RedemptionStore
    sweeper: Sweeper  # finishes redemptions a crash left between the item and the member
    scheduler: Scheduler  # due jobs (points expiry, ...), by this service's clock

    @classmethod
    async def open(cls, settings: Settings, clock: Clock | None = None) -> "Service":
        if not settings.redis_url:
            raise ValueError("settings.redis_url is required (rekindle serve starts the embedded server)")
        clock = clock or (OffsetClock() if settings.dev_clock else SystemClock())
        auth = Auth(settings.api_keys, settings.admin_keys, settings.token_secret)  # before any I/O
        keys = Keys(settings.key_prefix)
        scripts = Scripts()
        redis: Client
        pipeline: Runner
        if is_cluster_url(settings.redis_url):
            cluster = cluster_from_url(settings.redis_url, max_connections=256, socket_timeout=10, socket_connect_timeout=5)
            redis = cluster
            pipeline = runner_for(cluster, settings.redis_url, settings.wait_replicas, settings.wait_timeout_ms)
            hub = Hub(Shards(cluster, settings.redis_url))
        else:
            # Blocking: a burst (10,000 sockets resuming after a blip) queues for a connection for
            # up to 5 s instead of failing at once. The award path has a connection of its own.
            pool = BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=256, timeout=5, socket_timeout=10, socket_connect_timeout=5
            )
            redis = Redis.from_pool(pool)  # closing the client closes the pool
            pipeline = runner_for(redis, settings.redis_url, settings.wait_replicas, settings.wait_timeout_ms)
            hub = Hub(redis)
        programs = ProgramRegistry(redis, keys, clock, on_change=metrics.PROGRAM_VERSION.set)
        try:
            if isinstance(redis, RedisCluster):
                await redis.initialize()  # the slot map, before the first call routes by it
            await _check_server(redis)
            await scripts.load(redis)
            source = settings.config_path.read_bytes()
            await programs.activate(source, origin=f"file:{settings.config_path}", file=str(settings.config_path))
            programs.start_watching()
            await hub.start()
        except BaseException:
            await hub.close()
            await programs.stop_watching()
            await pipeline.aclose()
            await redis.aclose()
            raise
        ops = OperationStore(pipeline, keys, scripts)
        redemptions = RedemptionStore(pipeline, keys, scripts, ops, crash_point=settings.test_crash)
        sweeper = Sweeper(redemptions, programs, clock, interval_s=settings.sweep_s, grace_s=settings.sweep_grace_s)
        sweeper.start()  # its first round runs now: what a crash left is finished at start-up
        scheduler = Scheduler(pipeline, keys, scripts, ops, clock, lambda: programs.current.program)
        scheduler.start(settings.scheduler_s)
        return cls(
            settings=settings,
            clock=clock,
            redis=redis,
            keys=keys,
            scripts=scripts,
            pipeline=pipeline,
            ops=ops,
            dry_run=DryRun(redis, keys, scripts),
            members=MemberStore(redis, keys),
            programs=programs,
            auth=auth,
            feed=FeedStore(redis, keys, scripts),
            hub=hub,
            redemptions=redemptions,
            sweeper=sweeper,
            scheduler=scheduler,
        )

    async def close(self) -> None:
        await self.scheduler.stop()  # gives its leases up: another process takes the shards at once
        await self.sweeper.stop()
        await self.hub.close()
        await self.programs.stop_watching()
        await self.pipeline.aclose()
        await self.redis.aclose()


async def _check_server(redis: Client) -> None:
    """Per-field hash expiry (Redis 7.4+, Valkey 9+) keeps quest and cap counters bounded. On a
    cluster, the probe reaches the slot's primary and the memory policy is read from every primary."""
    try:
        # On a key that does not exist this changes nothing and answers [-2].
        await redis.execute_command("HPEXPIREAT", "rk:probe:{none}", 1, "FIELDS", 1, "f")
    except ResponseError:
        server = await redis.info("server")
        version = server.get("valkey_version") or server.get("redis_version")
        raise UnsupportedServer(f"the Redis server ({version}) lacks HPEXPIREAT: use Redis 7.4+ or Valkey 9+") from None
    if isinstance(redis, RedisCluster):
        replies = await redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
        memories = list(replies.values()) if isinstance(replies, dict) and "maxmemory" not in replies else [replies]
    else:
        memories = [await redis.info("memory")]
    for memory in memories:
        _check_memory(memory)


def _check_memory(memory: dict[str, Any]) -> None:
    policy = memory.get("maxmemory_policy", "noeviction")
    if int(memory.get("maxmemory", 0)) and policy != "noeviction":
        # Dedupe buckets are the keys with a TTL: volatile-* policies would evict them first,
        # and a retry would then award twice without a word. Better to refuse writes (OOM).
        raise UnsupportedServer(
            f"the Redis server evicts keys (maxmemory-policy {policy}); set maxmemory-policy noeviction"
        )
