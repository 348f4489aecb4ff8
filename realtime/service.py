"""The resources one service process holds, opened by the app's lifespan and closed in reverse."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from typing import Any

import httpx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from engine.cluster import Client, Shards, client_from_url, cluster_from_url, is_cluster_url, runner_for
from engine.clock import Clock, OffsetClock, SystemClock
from engine import servercheck
from engine.feed import FeedStore
from engine.keys import Keys
from engine.kpis import KpiRecorder
from engine.members import MemberStore
from engine.runner import Runner
from engine.programs import ProgramRegistry
from engine.scripts import Scripts
from engine.dryrun import DryRun
from engine.store import OperationStore
from engine.care import BIRTHDAY, CareMoments
from engine.crossing import CROSS, Crossing
from engine.redeem import CATALOG, REDEEM, RedeemStep
from engine.redemptions import RedemptionStore
from engine.jobs import DORMANCY, EXPIRING, HANDLERS
from engine import outreach
from engine.plugins import Context, installed
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
    crossing: Crossing  # the cross-slot seam: object steps, member steps, their decisions
    games: Context  # what the games' routes, jobs and snapshot parts may use
    scheduler: Scheduler  # due jobs (points expiry, ...), by this service's clock
    http: httpx.AsyncClient  # the process's one client for outreach webhooks (engine/outreach.py)
    care: CareMoments  # the care moments a profile write or an event starts, and the birthday job

    @classmethod
    async def open(cls, settings: Settings, clock: Clock | None = None, http: httpx.AsyncClient | None = None) -> "Service":
        """The service's parts on ``settings``' store. ``http``: the outreach webhooks' client (a
        simulation passes one whose transport keeps every message on the machine)."""
        if not settings.redis_url:
            raise ValueError("settings.redis_url is required (rekindle serve starts the embedded server)")
        clock = clock or (OffsetClock() if settings.dev_clock else SystemClock())
        auth = Auth(settings.api_keys, settings.admin_keys, settings.token_secret, clock)  # before any I/O
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
            await _check_server(redis, scripts, settings.wait_replicas)
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
        games = installed()
        crossing = Crossing(
            pipeline, keys, ops,
            objects={CATALOG: scripts.catalog, **{k: v for g in games for k, v in g.objects.items()}},
            steps={REDEEM: RedeemStep(), **{k: v for g in games for k, v in g.steps.items()}},
            grace_ms=int(settings.sweep_grace_s * 1000), clock=clock,
        )
        redemptions = RedemptionStore(crossing, crash_point=settings.test_crash)
        # The sweep of the seam is the scheduler's: an entry a crash left is finished by its
        # intent job, in the object's shard, by whichever process holds the shard's lease. The
        # games' jobs run there too.
        members = MemberStore(redis, keys, runner=pipeline)
        ctx = Context(keys, pipeline, ops, crossing, members, redis, clock, lambda: programs.current.program)
        care = CareMoments(pipeline, keys, ops, members)
        ops.kpis = KpiRecorder(pipeline, keys, {kind: g.name for g in games for kind in g.effects})
        ops.kpis.start()
        http = http or outreach.open_client()  # outreach webhooks: one client per process, closed by close()
        deliveries = outreach.Deliveries(pipeline, keys, http)
        scheduler = Scheduler(
            pipeline, keys, scripts, ops, clock, lambda: programs.current.program,
            handlers={**HANDLERS, **{k: v for g in games for k, v in g.jobs.items()}},
            tasks={CROSS: crossing.run_job, BIRTHDAY: care.birthday_task(), DORMANCY: care.dormancy_task(),
                   EXPIRING: care.expiring_task(), outreach.WEBHOOK: deliveries.run_job,
                   **{k: make(ctx) for g in games for k, make in g.tasks.items()}},
            tries_by_kind={outreach.WEBHOOK: outreach.max_attempts},  # the programme's [webhooks] max_attempts
        )
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
            members=members,
            programs=programs,
            auth=auth,
            feed=FeedStore(redis, keys, scripts),
            hub=hub,
            redemptions=redemptions,
            crossing=crossing,
            games=ctx,
            scheduler=scheduler,
            care=care,
            http=http,
        )

    async def close(self) -> None:
        await self.scheduler.stop()  # gives its leases up: another process takes the shards at once
        if self.ops.kpis is not None:
            await self.ops.kpis.stop()  # the last second's counts
        await self.http.aclose()  # after the scheduler: no delivery is under way
        await self.hub.close()
        await self.programs.stop_watching()
        await self.pipeline.aclose()
        await self.redis.aclose()


@asynccontextmanager
async def own_client(settings: Settings) -> AsyncIterator[Client]:
    """A client of its own for one step ``rekindle serve`` takes before its workers start (the
    slot map read first on a cluster), closed after."""
    if not settings.redis_url:
        raise ValueError("settings.redis_url is required")
    redis = client_from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        if isinstance(redis, RedisCluster):
            await redis.initialize()
        yield redis
    finally:
        await redis.aclose()


async def check_server(settings: Settings) -> None:
    """The start-up check on a client of its own, for ``rekindle serve`` to refuse a server before
    it prints its banner or forks workers (a worker's failed start-up leaves the parent exiting 0).
    ``Service.open`` runs the same check, for every other way the app is started."""
    async with own_client(settings) as redis:
        await _check_server(redis, Scripts(), settings.wait_replicas)


async def _check_server(redis: Client, scripts: Scripts, wait_replicas: int) -> None:
    """Refuse a server the service would start on and then fail every call of: one that lacks a
    command the scripts or the client use (HSETEX: Redis 8.0+, Valkey 9.0+), or whose user an ACL
    denies one (scripts run their commands as the caller's user), or that evicts keys. Writes
    nothing. On a cluster every primary is asked (ACLs, versions and memory policy are per node)."""
    required = servercheck.required_commands(scripts.all(), wait_replicas)
    try:
        verdicts = await servercheck.probe(redis, list(required))
    except ResponseError as exc:  # no script flags (before Redis 7.0), or EVALSHA / SCRIPT LOAD denied
        raise UnsupportedServer(
            f"the Redis server could not run the start-up check's script ({exc}): rekindle needs"
            f" {servercheck.MINIMUM}, with SCRIPT LOAD and EVALSHA allowed to its user"
        ) from None
    version = ""
    if servercheck.Verdict.UNKNOWN in verdicts.values():  # name the version that lacks it
        try:
            version = await servercheck.server_version(redis)
        except ResponseError:  # INFO denied to this user: the refusal stands without it
            version = "version unknown"
    refusal = servercheck.refusal(verdicts, required, version)
    if refusal:
        raise UnsupportedServer(refusal)
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
