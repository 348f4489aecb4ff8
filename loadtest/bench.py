"""``make bench``: the award path against baselines measured in the same run, as ratios.

The machine is shared and noisy, so no figure is printed alone: each stands next to a baseline
taken minutes apart on the same loopback, the same embedded Valkey and the same cores.

1. single-event HTTP: ``rekindle serve`` against baseline (a), a bare Starlette endpoint making one
   EVALSHA of ``return 1`` (``loadtest/baseline_app.py``), alternately, by the closed-loop load
   generator in a process of its own (``loadtest/httpload.py``);
2. batch ingest: ``POST /v1/events`` with 1,000 events a request, against baseline (b), the real
   award script with real plans, pre-encoded and pipelined straight into the server
   (``loadtest/redisload.py``);
3. memory: Redis bytes per member (after 5 and after 100 events, and after a year of a regular
   member's activity: ``loadtest/memberyear.py``) and per retained dedupe entry, against one
   SET-NX key per event;
4. server cost: Valkey CPU per award, per duplicate, and per award under a programme at every
   size limit the validator allows (``loadtest/servercost.py``); both awards also as a ratio to
   a floor script making only the writes every award makes (``loadtest/lua/floor.lua``), its
   batches taking turns with theirs on the same server; and the AOF bytes an award writes;
5. operations: spends and redemptions over HTTP, as req/s beside baseline (a);
7. the award path on a local three-primary cluster next to one server (``loadtest/clusterbench.py``);
8. games: flash-sale claims on one sale, refusals once it sold out, and daily check-ins, beside
   the award path (``loadtest/gamesbench.py``);
9. the scheduler: the award path with 1,000,000 due jobs waiting beside it with none, and the
   bytes per member of the lifecycle's jobs (``loadtest/schedbench.py``).

``--only 8`` (or ``--only 1,6``) runs some phases, with the phases their figures are ratios to:
[8] and [6] take [1] (the award path's median pair), [3] takes [2] (baseline (b)); [9] measures
its own pairs.

It is a report: it exits 0 when a target is missed, and non-zero only when something failed to
run (2) or was interrupted (130).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import redis as redis_sync

from engine.awards import plan_award
from engine.operations import MemberPlan
from engine.config import CompiledProgram, load_program
from engine.events import parse_event
from engine.keys import Keys
from engine.pipelining import AutoPipeline
from engine.scripts import Scripts
from engine.store import OpStatus, OperationStore
from loadtest import gamesbench, memberyear, redisload, schedbench, servercost
from loadtest.httpload import LoadResult, LoadSpec
from loadtest.processes import BenchError, Processes, free_port, wait_healthy
from loadtest.clusterbench import ClusterRun, run_cluster_pairs
from realtime.embedded import EmbeddedValkey

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "member_day.toml"
APPLIED = '"status":"applied"'

# Databases of the bench's own server: the load runs share db 0 (by key prefix); each memory
# measurement starts from an empty database, so its keyspace growth is its own.
DB_MEMBERS, DB_DEDUPE, DB_SETNX, DB_COST, DB_HUNDRED, DB_YEAR = 1, 2, 3, 4, 5, 6
#: The catalog item the bench redeems: the example programme's own items have small stocks; this
#: one is added to the service's copy of the programme, so redemptions succeed all run long.
BENCH_ITEM = "bench-voucher"
BENCH_ITEM_TOML = f"""
[catalog.{BENCH_ITEM}]
title = "Bench voucher"
value_cents = 100
points_cost = 1
stock = 1_000_000_000
per_member_limit = 1_000_000
"""


@dataclass(frozen=True)
class Options:
    duration_s: float
    warmup_s: float
    connections: int
    rounds: int
    members: int
    batch_connections: int
    batch_size: int
    pipeline_events: int
    pipeline_depth: int
    memory_members: int
    memory_events: int
    hundred_members: int
    quick: bool
    phases: frozenset[int] = frozenset()  # what runs: every phase unless --only chose some


#: The bench's phases (the numbers they print), and those whose figures another's are ratios to
#: (or, for [6], whose members the spends draw points from): ``--only`` runs those too.
PHASES = {1: "single event per request", 2: "baseline (b)", 3: "batch ingest", 4: "memory", 5: "server cost",
          6: "operations", 7: "cluster", 8: "games", 9: "scheduler"}
NEEDS = {3: {2}, 6: {1}, 8: {1}}


def phases_of(only: str | None) -> frozenset[int]:
    """The phases ``--only`` names (comma-separated numbers), with the phases they need."""
    if not only:
        return frozenset(PHASES)
    try:
        chosen = {int(part) for part in only.split(",") if part.strip()}
    except ValueError:
        raise ValueError(f"--only takes phase numbers separated by commas, not {only!r}") from None
    unknown = chosen - PHASES.keys()
    if unknown or not chosen:
        raise ValueError(f"--only: no phase {sorted(unknown) or only!r}; the phases are "
                         + ", ".join(f"{n} ({name})" for n, name in PHASES.items()))
    return frozenset(chosen.union(*(NEEDS.get(n, set()) for n in chosen)))


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, help="measured window of each HTTP run, seconds (default 10)")
    parser.add_argument("--warmup", type=float, help="warm-up before each window, seconds (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections, single-event runs")
    parser.add_argument("--rounds", type=int, help="baseline/service pairs, alternated (default 3: the median is one of them; 2 with --quick)")
    parser.add_argument("--members", type=int, default=10_000, help="distinct member ids in the load (default 10000)")
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--pipeline-events", type=int, help="events of baseline (b) (default 200000)")
    parser.add_argument("--pipeline-depth", type=int, default=1000)
    parser.add_argument("--memory-members", type=int, help="members loaded for the memory figures (default 20000)")
    parser.add_argument("--memory-events", type=int, default=5, help="events per member there (default 5)")
    parser.add_argument("--quick", action="store_true", help="short runs and small loads (the smoke test)")
    parser.add_argument("--only", metavar="N[,N...]",
                        help="run only these phases (numbers as printed, e.g. 8), and the phases whose figures theirs "
                             "are ratios to: 8 and 6 run 1 too, 3 runs 2")
    a = parser.parse_args(argv)
    try:
        phases = phases_of(a.only)
    except ValueError as exc:
        parser.error(str(exc))
    quick = a.quick

    def pick(value: Any, default: Any, quick_default: Any) -> Any:
        return value if value is not None else (quick_default if quick else default)

    return Options(
        duration_s=pick(a.duration, 10.0, 1.0),
        warmup_s=pick(a.warmup, 2.0, 0.5),
        connections=a.connections,
        rounds=max(1, pick(a.rounds, 3, 2)),
        members=a.members,
        batch_connections=a.batch_connections,
        batch_size=a.batch_size,
        pipeline_events=pick(a.pipeline_events, 200_000, 5_000),
        pipeline_depth=a.pipeline_depth,
        memory_members=pick(a.memory_members, 20_000, 500),
        memory_events=a.memory_events,
        hundred_members=pick(None, 1_000, 50),
        quick=quick,
        phases=phases,
    )


# --- processes ------------------------------------------------------------------------------------


def aof_rewrites(url: str) -> int:
    with redis_sync.Redis.from_url(url) as client:
        return int(client.info("persistence").get("aof_rewrites", 0))


@contextmanager
def phase_noise(url: str) -> Iterator[None]:
    """Print what else the machine and the server did during a phase: load, AOF rewrites."""
    before = aof_rewrites(url)
    yield
    print(f"  (during this phase: {aof_rewrites(url) - before} AOF rewrites by the server; load average "
          f"{os.getloadavg()[0]:.2f})", flush=True)


def rekindle_command() -> list[str]:
    script = Path(sys.executable).parent / "rekindle"
    return [str(script)] if script.exists() else [sys.executable, "-m", "realtime.cli"]


def http_load(spec: LoadSpec, *, refusals: bool = False) -> LoadResult:
    """One run of the load generator, in a process of its own. ``refusals``: the run is of
    answers that are all refusals by design (a sold-out sale), so none succeeding is no failure."""
    cmd = [sys.executable, "-m", "loadtest.httpload", orjson.dumps(asdict(spec)).decode()]
    budget = spec.warmup_s + spec.duration_s + 60
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=budget)
    if done.returncode != 0:
        raise BenchError(f"load generator failed ({done.returncode}):\n{done.stderr.decode(errors='replace')[-2000:]}")
    result = LoadResult(**orjson.loads(done.stdout.splitlines()[-1]))
    if result.requests == 0 and not (refusals and result.statuses):
        raise BenchError(f"no request succeeded against :{spec.port}: {result.statuses} {result.error_samples}")
    return result


# --- the phases -----------------------------------------------------------------------------------


@dataclass
class HttpPair:
    baseline: LoadResult
    service: LoadResult

    @property
    def ratio(self) -> float:
        return self.service.requests_per_s / self.baseline.requests_per_s


def describe(label: str, r: LoadResult) -> str:
    line = (
        f"  {label:<22} {r.requests_per_s:>10,.0f} req/s  p50 {r.p50_ms:6.2f} ms  p90 {r.p90_ms:6.2f} ms"
        f"  p99 {r.p99_ms:6.2f} ms  max {r.max_ms:7.1f} ms  errors {r.errors}"
    )
    return line


def print_errors(r: LoadResult) -> None:
    for sample in r.error_samples:
        print(f"      error: {sample}")


def run_http_pairs(opts: Options, baseline_port: int, service_port: int, api_key: str, run_id: str) -> list[HttpPair]:
    print(f"\n[1] single event per request: {opts.connections} connections, closed loop, "
          f"{opts.warmup_s:g} s warm-up + {opts.duration_s:g} s measured, members over {opts.members:,} ids", flush=True)
    pairs = []
    for i in range(1, opts.rounds + 1):
        common = dict(host="127.0.0.1", api_key=api_key, connections=opts.connections, warmup_s=opts.warmup_s,
                      duration_s=opts.duration_s, members=opts.members, seed=i)
        a = http_load(LoadSpec(port=baseline_port, run_id=f"{run_id}a{i}", **common))  # type: ignore[arg-type]
        print(describe(f"round {i} baseline (a)", a), flush=True)
        print_errors(a)
        s = http_load(LoadSpec(port=service_port, run_id=f"{run_id}s{i}", count_token=APPLIED, **common))  # type: ignore[arg-type]
        pair = HttpPair(a, s)
        print(describe(f"round {i} service", s) + f"  applied {s.counted:,}/{s.requests:,}  ratio {pair.ratio:.2f}x",
              flush=True)
        print_errors(s)
        pairs.append(pair)
    return pairs


def run_batch(opts: Options, service_port: int, api_key: str, run_id: str) -> LoadResult:
    print(f"\n[3] batch ingest: {opts.batch_connections} connections, {opts.batch_size:,} events a request, "
          f"{opts.warmup_s:g} s warm-up + {opts.duration_s:g} s measured", flush=True)
    r = http_load(
        LoadSpec(host="127.0.0.1", port=service_port, api_key=api_key, connections=opts.batch_connections,
                 warmup_s=opts.warmup_s, duration_s=opts.duration_s, mode="batch", batch_size=opts.batch_size,
                 members=opts.members, run_id=f"{run_id}b", count_token=APPLIED, seed=99)
    )
    print(f"  service batch          {r.events_per_s:>10,.0f} events/s  ({r.requests_per_s:.1f} req/s, "
          f"p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms a request)  applied {r.counted:,}/{r.events:,}"
          f"  errors {r.errors}", flush=True)
    print_errors(r)
    return r


def run_pipeline_baseline(opts: Options, url: str, program: CompiledProgram, run_id: str) -> redisload.PipelineResult:
    print(f"\n[2] baseline (b): member.lua with real plans, {opts.pipeline_events:,} events pre-encoded, "
          f"pipelines of {opts.pipeline_depth:,} (two in flight) on one raw socket", flush=True)
    started = time.perf_counter()
    events = redisload.purchase_events(f"{run_id}p", opts.pipeline_events, opts.members)
    commands = redisload.award_commands(program, f"bench{run_id}p", events, int(time.time() * 1000))
    print(f"  built {len(commands):,} commands ({sum(map(len, commands)) / len(commands):.0f} bytes each) "
          f"in {time.perf_counter() - started:.1f} s, untimed", flush=True)
    award = Scripts().member
    with redis_sync.Redis.from_url(url) as client:
        if client.script_load(award.source) != award.sha:
            raise BenchError("the server's SHA of member.lua differs from ours")
    result = redisload.run_pipelined(url, commands, depth=opts.pipeline_depth)
    print(f"  pipelined member.lua    {result.per_s:>10,.0f} events/s  ({result.replies:,} replies in "
          f"{result.seconds:.2f} s; sampled {result.sampled}: {result.applied} applied)  errors {result.errors}",
          flush=True)
    if result.errors or result.applied != result.sampled or result.replies != len(commands):
        raise BenchError(f"baseline (b) replies were not all applied: {result.error_samples}")
    return result


@dataclass
class Operations:
    spend: LoadResult
    redeem: LoadResult


def run_operations(opts: Options, service_port: int, api_key: str, token_secret: str, run_id: str) -> Operations:
    """Spends and redemptions over HTTP, on the members the single-event runs gave points to."""
    print(f"\n[6] operations: {opts.connections} connections, closed loop, {opts.warmup_s:g} s warm-up + "
          f"{opts.duration_s:g} s measured each, over the same {opts.members:,} members", flush=True)
    common = dict(host="127.0.0.1", port=service_port, api_key=api_key, connections=opts.connections,
                  warmup_s=opts.warmup_s, duration_s=opts.duration_s, members=opts.members, count_token=APPLIED)
    spend = http_load(LoadSpec(mode="spend", run_id=f"{run_id}o", seed=7, **common))  # type: ignore[arg-type]
    print(describe("spend 1 point", spend) + f"  applied {spend.counted:,}/{spend.requests:,}", flush=True)
    print_errors(spend)
    redeem = http_load(LoadSpec(mode="redeem", run_id=f"{run_id}r", seed=8, item=BENCH_ITEM,  # type: ignore[arg-type]
                                token_secret=token_secret, **common))
    print(describe("redeem (object + member)", redeem) + f"  applied {redeem.counted:,}/{redeem.requests:,}",
          flush=True)
    print_errors(redeem)
    return Operations(spend, redeem)


def run_memory_hundred(opts: Options, url: str, program: CompiledProgram, run_id: str) -> float:
    """Bytes per member once each has had 100 events: what a regular member costs, with the
    feed, the ledger, the dedupe and grant records and the scheduled expiry all in."""
    members = opts.hundred_members
    print(f"\n[4b] memory after 100 events: {members:,} members x 100 events through OperationStore", flush=True)
    now_ms = int(time.time() * 1000)
    raws = memory_events(f"{run_id}h", members, 100)
    plans = [plan_award(program, parse_event(raw, program, now_ms), now_ms) for raw in raws]
    with redis_sync.Redis.from_url(url, db=DB_HUNDRED) as client:
        if client.dbsize():
            raise BenchError(f"database {DB_HUNDRED} of the bench's own server is not empty")
        settle_s = 1.0 if opts.quick else 3.0
        before = used_memory(client, settle_s)
        asyncio.run(_load_members(url, program, f"bench{run_id}h", plans, db=DB_HUNDRED))
        per_member = (used_memory(client, settle_s) - before) / members
    print(f"  per member (100 events): {per_member:,.0f} B of used_memory", flush=True)
    return per_member


def run_memory_year(opts: Options, url: str, program: CompiledProgram, run_id: str) -> memberyear.YearMemory:
    """Bytes per member after a year of a regular member's activity, coupons used and all."""
    members = 50 if opts.quick else 200
    print(f"\n[4c] memory after a year: {members:,} members x 365 days through OperationStore", flush=True)
    year = asyncio.run(memberyear.year_of_activity(url, DB_YEAR, program, f"bench{run_id}y", members,
                                                  int(time.time() * 1000)))
    print(memberyear.describe(year), flush=True)
    return year


@dataclass
class Memory:
    members: int
    events: int
    per_member_b: float
    dedupe_usage_per_entry_b: float  # MEMORY USAGE of the dedupe hashes / entries
    dedupe_delta_per_entry_b: float  # used_memory growth when only the dedupe entries are written
    setnx_per_key_b: float  # used_memory growth per SET-NX-PX key of 25 characters


def used_memory(client: redis_sync.Redis, settle_s: float) -> int:
    """``used_memory`` once incremental rehashing has settled (two equal readings)."""
    last = int(client.info("memory")["used_memory"])
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = int(client.info("memory")["used_memory"])
        if now == last:
            break
        last = now
    return last


def memory_events(run_id: str, members: int, per_member: int) -> list[dict[str, Any]]:
    """``per_member`` events for each member, cycling through the programme's event types."""
    shapes: list[tuple[str, dict[str, Any]]] = [
        ("purchase", {"amount": 12_900}),
        ("checkin", {}),
        ("review", {"stars": 5}),
        ("share", {"target": "wechat"}),
        ("login", {}),
    ]
    out = []
    for m in range(members):
        for e in range(per_member):
            etype, data = shapes[e % len(shapes)]
            out.append({"id": f"{run_id}-{m}-{e}", "member": f"m{m}", "type": etype, "data": data})
    return out


async def _load_members(
    url: str, program: CompiledProgram, prefix: str, plans: list[MemberPlan], db: int = DB_MEMBERS
) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url, db=db, max_connections=16)
    try:
        scripts = Scripts()
        await scripts.load(client)
        store = OperationStore(AutoPipeline(client), Keys(prefix), scripts)
        for i in range(0, len(plans), 1000):
            results = await store.apply_many(plans[i : i + 1000], program)
            bad = [r for r in results if isinstance(r, Exception) or r.status is not OpStatus.APPLIED]
            if bad:
                raise BenchError(f"memory load: {len(bad)} events not applied, e.g. {bad[0]!r}")
    finally:
        await client.aclose()


def run_memory(opts: Options, url: str, program: CompiledProgram, run_id: str) -> Memory:
    m, e = opts.memory_members, opts.memory_events
    count = m * e
    print(f"\n[4] memory: {m:,} members x {e} events through OperationStore (fresh database each)", flush=True)
    settle_s = 1.0 if opts.quick else 3.0
    now_ms = int(time.time() * 1000)
    prefix = f"bench{run_id}m"
    plans = [plan_award(program, parse_event(raw, program, now_ms), now_ms) for raw in memory_events(run_id, m, e)]
    keys = Keys(prefix)

    def fresh(db: int) -> redis_sync.Redis:
        client = redis_sync.Redis.from_url(url, db=db)
        if client.dbsize():
            raise BenchError(f"database {db} of the bench's own server is not empty")
        return client

    # Whole members through the real store.
    with fresh(DB_MEMBERS) as client:
        before = used_memory(client, settle_s)
        asyncio.run(_load_members(url, program, prefix, plans))
        after = used_memory(client, settle_s)
        dedupe_keys = sorted({keys.member(p.op.member).dedupe(p.dedupe_bucket) for p in plans})
        pipe = client.pipeline(transaction=False)
        for key in dedupe_keys:
            pipe.memory_usage(key, samples=0)
        usage = sum(int(u or 0) for u in pipe.execute())
        entries = sum(int(n) for n in _pipelined(client, "hlen", dedupe_keys))
        breakdown = _key_breakdown(client, keys, sorted({p.op.member for p in plans})[:200])
    if entries != count:
        raise BenchError(f"expected {count} dedupe entries, found {entries}")
    per_member = (after - before) / m

    # The dedupe entries alone, written as member.lua writes them: their share of used_memory.
    with fresh(DB_DEDUPE) as client:
        before = used_memory(client, settle_s)
        for i in range(0, len(plans), 1000):
            pipe = client.pipeline(transaction=False)
            for p in plans[i : i + 1000]:
                key = keys.member(p.op.member).dedupe(p.dedupe_bucket)
                # fingerprint and the award's feed entry id, packed as member.lua packs them
                pipe.hset(key, p.args.dedupe_field, p.op.fingerprint + bytes(5))
                pipe.pexpireat(key, p.args.dedupe_expire_ms)
            pipe.execute()
        dedupe_delta = (used_memory(client, settle_s) - before) / count

    # Baseline: one SET NX PX key of 25 characters per event.
    ttl_ms = program.retention_ms + 86_400_000
    tag = f"b{run_id[:6]}:e:"
    with fresh(DB_SETNX) as client:
        before = used_memory(client, settle_s)
        for i in range(0, count, 1000):
            pipe = client.pipeline(transaction=False)
            for n in range(i, min(count, i + 1000)):
                pipe.set(f"{tag}{n:0{25 - len(tag)}d}", b"1", px=ttl_ms, nx=True)
            pipe.execute()
        setnx = (used_memory(client, settle_s) - before) / count

    result = Memory(m, e, per_member, usage / count, dedupe_delta, setnx)
    print(f"  per member ({e} events): {per_member:,.0f} B of used_memory "
          f"(profile, state, ledger, feed, rewards, dedupe)")
    print("    by key, MEMORY USAGE averaged over 200 members: "
          + ", ".join(f"{kind} {size:,.0f} B" for kind, size in breakdown.items()))
    print(f"  per dedupe entry:  {result.dedupe_usage_per_entry_b:.1f} B by MEMORY USAGE of "
          f"{len(dedupe_keys):,} bucket hashes, {dedupe_delta:.1f} B by used_memory growth")
    print(f"  per SET-NX-PX key (baseline): {setnx:.1f} B by used_memory growth", flush=True)
    return result


def run_server_cost(opts: Options, url: str, program: CompiledProgram, run_id: str) -> servercost.ServerCost:
    members, rounds = (1000, 3) if opts.quick else (5000, 5)
    print(f"\n[5] server cost: Valkey CPU per operation (INFO commandstats: every EVALSHA it takes), {members:,} operations per "
          f"path, {rounds} rounds of member.lua and floor.lua batches in turn", flush=True)
    cost = servercost.measure(url, DB_COST, program, run_id, int(time.time() * 1000), members, rounds)
    for n, r in enumerate(cost.rounds, 1):
        print(f"  round {n}: purchase {r.award_us:6.1f} us, floor {r.floor_us:6.1f} us ({r.award_ratio:.2f}x), "
              f"at its limits {r.at_limits_us:6.1f} us ({r.at_limits_ratio:.2f}x), "
              f"rolling tiers {r.tiered_us:6.1f} us ({r.tiered_ratio:.2f}x)")
    print(f"  purchase, example programme  {cost.award_us:6.1f} us/award (median of the rounds)")
    print(f"  the same events again        {cost.duplicate_us:6.1f} us/duplicate (replays the last round's awards)")
    print(f"  purchase, programme at its limits ({cost.limits})  {cost.at_limits_us:6.1f} us/award (median)", flush=True)
    if cost.aof_bytes is not None:
        print(f"  a member's second purchase   {cost.aof_bytes:6.0f} AOF bytes/award", flush=True)
    return cost


def _key_breakdown(client: redis_sync.Redis, keys: Keys, members: Sequence[str]) -> dict[str, float]:
    """Average MEMORY USAGE of each kind of member key (absent keys count 0)."""
    kinds = ("profile", "state", "ledger", "feed", "coupons", "lots")
    pipe = client.pipeline(transaction=False)
    for member in members:
        mk = keys.member(member)  # type: ignore[arg-type]
        for kind in kinds:
            pipe.memory_usage(getattr(mk, kind), samples=0)
    sizes = [int(u or 0) for u in pipe.execute()]
    return {kind: sum(sizes[i :: len(kinds)]) / len(members) for i, kind in enumerate(kinds)}


def _pipelined(client: redis_sync.Redis, command: str, keys: Sequence[str]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        getattr(pipe, command)(key)
    return pipe.execute()


# --- the report -----------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    baseline: str
    ratio: str
    target: str
    verdict: str  # MET, MISSED, or "report" where there is no target


T = TypeVar("T")


def median_pair(pairs: Sequence[HttpPair]) -> HttpPair:
    """The pair whose ratio is the median, so a row can print figures that belong to its ratio
    (the median of each column apart may come from different pairs). With an even count, the
    lower of the two middle pairs: a real pair, and the stricter reading of the target."""
    return median_by(pairs, lambda p: p.ratio)


def median_by(items: Sequence[T], ratio: Callable[[T], float], *, upper: bool = False) -> T:
    """The item whose ratio is the median. With an even count, one of the two middle items, the
    stricter for the row's target: the lower for an ``>=`` target, the ``upper`` for ``<=``."""
    ordered = sorted(items, key=ratio)
    return ordered[len(ordered) // 2 if upper else (len(ordered) - 1) // 2]


def summary_rows(
    pairs: list[HttpPair],
    batch: LoadResult | None,
    pipeline: redisload.PipelineResult | None,
    memory: Memory | None,
    cost: servercost.ServerCost | None,
    operations: Operations | None,
    hundred_b: float | None,
    clustered: ClusterRun | None,
    year: memberyear.YearMemory | None = None,
    games: gamesbench.Games | None = None,
    sched: schedbench.Scheduled | None = None,
) -> list[Row]:
    """The rows of the phases that ran (``None`` or no pairs: a phase ``--only`` left out)."""

    def med(values: Iterable[float]) -> float:
        return statistics.median(values)

    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    rows: list[Row] = []
    errors = not_applied = 0
    base_rps = 0.0
    if pairs:
        n = len(pairs)
        middle = median_pair(pairs)  # its figures and its ratio: one pair's, never medians mixed across pairs
        ratio = middle.ratio
        best = max(pairs, key=lambda p: p.ratio)
        base_rps = med(p.baseline.requests_per_s for p in pairs)
        svc_p50, base_p50 = med(p.service.p50_ms for p in pairs), med(p.baseline.p50_ms for p in pairs)
        svc_p99, base_p99 = med(p.service.p99_ms for p in pairs), med(p.baseline.p99_ms for p in pairs)
        errors += sum(p.service.errors + p.baseline.errors for p in pairs)
        not_applied += sum(p.service.requests - p.service.counted for p in pairs)
        rows += [
            Row(f"HTTP 1 event/request, req/s, median of {n} pairs", f"{middle.service.requests_per_s:,.0f}",
                f"{middle.baseline.requests_per_s:,.0f}", f"{ratio:.2f}x", ">= 1.00x", verdict(ratio >= 1.0)),
            Row("HTTP 1 event/request, req/s, best pair", f"{best.service.requests_per_s:,.0f}",
                f"{best.baseline.requests_per_s:,.0f}", f"{best.ratio:.2f}x", ">= 1.00x", verdict(best.ratio >= 1.0)),
            Row(f"HTTP 1 event/request, p50 ms, median of {n}", f"{svc_p50:.2f}", f"{base_p50:.2f}",
                f"{svc_p50 / base_p50:.2f}x", "-", "report"),
            Row(f"HTTP 1 event/request, p99 ms, median of {n}", f"{svc_p99:.2f}", f"{base_p99:.2f}",
                f"{svc_p99 / base_p99:.2f}x", "-", "report"),
        ]
    if batch is not None and pipeline is not None:
        batch_ratio = batch.events_per_s / pipeline.per_s
        errors += batch.errors
        not_applied += batch.events - batch.counted
        rows.append(Row("batch ingest, events/s vs pipelined member.lua", f"{batch.events_per_s:,.0f}",
                        f"{pipeline.per_s:,.0f}", f"{batch_ratio:.2f}x", ">= 0.80x", verdict(batch_ratio >= 0.8)))
    if operations is not None:
        ops = (operations.spend, operations.redeem)
        errors += sum(o.errors for o in ops)
        not_applied += sum(o.requests - o.counted for o in ops)
        rows += [
            Row("HTTP spend, req/s (1 member script call)", f"{operations.spend.requests_per_s:,.0f}",
                f"{base_rps:,.0f}", f"{operations.spend.requests_per_s / base_rps:.2f}x", "-", "report"),
            Row("HTTP redeem, req/s (object, member, settle)", f"{operations.redeem.requests_per_s:,.0f}",
                f"{base_rps:,.0f}", f"{operations.redeem.requests_per_s / base_rps:.2f}x", "-", "report"),
        ]
    if games is not None:  # against the award path's median pair: the service's own rate for one event a request
        errors += games.errors
        not_applied += games.not_applied
        rows += [Row(*row) for row in games.rows()]
    if sched is not None:  # busy against idle: both the service's, in pairs of this phase
        errors += sched.errors
        not_applied += sched.not_applied
        rows += [Row(*row) for row in sched.rows()]
    if clustered is not None:
        errors += sum(r.errors for r in clustered.single + clustered.cluster)
        not_applied += sum(r.requests - r.counted for r in clustered.single + clustered.cluster)
        cluster_rps = med(r.requests_per_s for r in clustered.cluster)
        single_rps = med(r.requests_per_s for r in clustered.single)
        rows.append(Row(f"HTTP 1 event/request on a 3-primary cluster, req/s, median of {len(clustered.cluster)}",
                        f"{cluster_rps:,.0f}", f"{single_rps:,.0f}", f"{clustered.ratio:.2f}x", "-", "report"))
    if memory is not None:
        rows.append(Row(f"Redis bytes per member ({memory.events} events)", f"{memory.per_member_b:,.0f}", "-", "-",
                        "-", "report"))
    if hundred_b is not None:
        rows.append(Row("Redis bytes per member (100 events)", f"{hundred_b:,.0f}", "-", "-", "-", "report"))
    if year is not None:
        rows += [
            Row(f"Redis bytes per member (a year, {year.operations / year.members:,.0f} operations)",
                f"{year.per_member_b:,.0f}", "-", "-", "-", "report"),
            Row("Coupons a member's record keeps after a year (of granted)",
                f"{year.coupons_kept:.1f} of {year.coupons_granted:.1f}", "-", "-", "-", "report"),
        ]
    if memory is not None:
        rows += [
            Row("Redis bytes per dedupe entry (MEMORY USAGE)", f"{memory.dedupe_usage_per_entry_b:.1f}",
                f"{memory.setnx_per_key_b:.1f}", f"{memory.dedupe_usage_per_entry_b / memory.setnx_per_key_b:.2f}x",
                "<= 50 B", verdict(memory.dedupe_usage_per_entry_b <= 50)),
            Row("Redis bytes per dedupe entry (used_memory)", f"{memory.dedupe_delta_per_entry_b:.1f}",
                f"{memory.setnx_per_key_b:.1f}", f"{memory.dedupe_delta_per_entry_b / memory.setnx_per_key_b:.2f}x",
                "<= 50 B", verdict(memory.dedupe_delta_per_entry_b <= 50)),
        ]
    if cost is not None:
        # Each floor row prints the round whose ratio is its median (us of member.lua, then of
        # floor.lua): its figures and its ratio are one round's, the two rows' maybe not the same one.
        floored = median_by(cost.rounds, lambda r: r.award_ratio, upper=True)
        floored_limits = median_by(cost.rounds, lambda r: r.at_limits_ratio, upper=True)
        floored_tiers = median_by(cost.rounds, lambda r: r.tiered_ratio, upper=True)
        rows += [
            Row("Valkey us per award (purchase)", f"{cost.award_us:.1f}", "-", "-", "<= 60 us",
                verdict(cost.award_us <= 60)),
            Row("Valkey us per duplicate (replays the award)", f"{cost.duplicate_us:.1f}", f"{cost.award_us:.1f}",
                f"{cost.duplicate_us / cost.award_us:.2f}x", "-", "report"),
            Row("Valkey us per award, programme at its limits", f"{cost.at_limits_us:.1f}", f"{cost.award_us:.1f}",
                f"{cost.at_limits_us / cost.award_us:.2f}x", "-", "report"),
            Row("Valkey CPU per award / floor script (purchase)", f"{floored.award_us:.1f}",
                f"{floored.floor_us:.1f}", f"{floored.award_ratio:.2f}x", "<= 2.50x",
                verdict(floored.award_ratio <= 2.5)),
            Row("Valkey CPU per award / floor script (programme at its limits)",
                f"{floored_limits.at_limits_us:.1f}", f"{floored_limits.floor_us:.1f}",
                f"{floored_limits.at_limits_ratio:.2f}x", "-", "report"),
            Row("Valkey CPU per award / floor script (tiers over a rolling 12-month window)",
                f"{floored_tiers.tiered_us:.1f}", f"{floored_tiers.floor_us:.1f}",
                f"{floored_tiers.tiered_ratio:.2f}x", "-", "report"),
            Row("AOF bytes per award (a member's second purchase)",
                "-" if cost.aof_bytes is None else f"{cost.aof_bytes:,.0f}", "-", "-", "-", "report"),
        ]
    rows.append(Row("HTTP errors (non-2xx) and events not applied", f"{errors + not_applied}", "-", "-", "0",
                    verdict(errors + not_applied == 0)))
    return rows


def print_summary(rows: list[Row], pairs: list[HttpPair]) -> None:
    if pairs:
        ratios = ", ".join(f"{p.ratio:.2f}x" for p in pairs)
        print(f"\nsingle-event ratio per pair (service/baseline): {ratios}; "
              f"best {max(p.ratio for p in pairs):.2f}x, median {median_pair(pairs).ratio:.2f}x")
    headers = ("figure", "value", "baseline", "ratio", "target", "result")
    table = [headers] + [(r.figure, r.value, r.baseline, r.ratio, r.target, r.verdict) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    print("\nSUMMARY")
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        print("| " + " | ".join(cells) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


# --- main -----------------------------------------------------------------------------------------


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the ``finally`` blocks stop every process."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(opts: Options, workdir: Path) -> list[Row]:
    program = load_program(CONFIG)
    run_id = secrets.token_hex(4)
    valkey = EmbeddedValkey(workdir / "valkey")
    valkey.start()
    procs = Processes(workdir)
    try:
        url = valkey.url
        print(f"embedded Valkey at {url} (AOF in {valkey.data_dir}); programme {program.name!r}", flush=True)

        baseline_port = free_port()
        baseline = procs.start(
            "baseline", [sys.executable, "-m", "loadtest.baseline_app", "--port", str(baseline_port), "--redis-url", url]
        )
        api_key = "rk_bench_" + secrets.token_urlsafe(18)
        token_secret = secrets.token_urlsafe(32)
        config = workdir / "bench_programme.toml"  # the example, plus an item to redeem all run long
        config.write_text(CONFIG.read_text() + BENCH_ITEM_TOML + gamesbench.BENCH_GAMES_TOML)
        env = dict(os.environ)
        env.pop("REDIS_URL", None)
        env.update(
            REKINDLE_API_KEYS=api_key,
            REKINDLE_ADMIN_KEYS="rk_bench_admin_" + secrets.token_urlsafe(18),
            REKINDLE_TOKEN_SECRET=token_secret,
            REKINDLE_KEY_PREFIX=f"bench{run_id}",
            # Capacity, not shedding, is measured here: four 1,000-event batches at once are more
            # in flight than admission control lets through (make loadtest measures the shedding).
            REKINDLE_MAX_INFLIGHT="0",
        )
        service_port = free_port()
        serve = [*rekindle_command(), "serve", "--workers", "1", "--config", str(config)]
        service = procs.start(
            "service",
            [*serve, "--redis-url", url, "--port", str(service_port), "--data-dir", str(workdir / "data")],
            env=env,
        )
        wait_healthy(baseline, baseline_port)
        wait_healthy(service, service_port)
        print(f"baseline (a) on :{baseline_port} (pid {baseline.pid}), service on :{service_port} "
              f"(pid {service.pid}), key prefix bench{run_id}", flush=True)

        phases = opts.phases
        if phases != frozenset(PHASES):
            print("phases: " + ", ".join(f"[{n}] {PHASES[n]}" for n in sorted(phases)) + " (--only, with what they need)",
                  flush=True)
        pairs: list[HttpPair] = []
        pipeline: redisload.PipelineResult | None = None
        batch: LoadResult | None = None
        operations: Operations | None = None
        games: gamesbench.Games | None = None
        clustered: ClusterRun | None = None
        sched: schedbench.Scheduled | None = None
        if 1 in phases:
            with phase_noise(url):
                pairs = run_http_pairs(opts, baseline_port, service_port, api_key, run_id)
        # Baseline (b) before the batch path: the database only grows, and a larger one costs
        # more (AOF rewrites fork it), so this order can only flatter the baseline.
        if 2 in phases:
            with phase_noise(url):
                pipeline = run_pipeline_baseline(opts, url, program, run_id)
        if 3 in phases:
            with phase_noise(url):
                batch = run_batch(opts, service_port, api_key, run_id)
        if 6 in phases:
            with phase_noise(url):
                operations = run_operations(opts, service_port, api_key, token_secret, run_id)
        if 8 in phases:
            with phase_noise(url):
                games = gamesbench.run_games(http_load, describe, port=service_port, token_secret=token_secret,
                                             connections=opts.connections, warmup_s=opts.warmup_s,
                                             duration_s=opts.duration_s, run_id=run_id, api_key=api_key,
                                             award_rps=median_pair(pairs).service.requests_per_s)
        if 9 in phases:
            with phase_noise(url):
                sched = schedbench.run_sched(
                    http_load, describe, url=url, prefix=f"bench{run_id}", port=service_port, api_key=api_key,
                    connections=opts.connections, warmup_s=opts.warmup_s, duration_s=opts.duration_s,
                    members=opts.members, rounds=opts.rounds, run_id=run_id,
                    due_jobs=schedbench.QUICK_DUE_JOBS if opts.quick else schedbench.DUE_JOBS,
                    lifecycle_members=schedbench.QUICK_LIFECYCLE_MEMBERS if opts.quick else schedbench.LIFECYCLE_MEMBERS)
        if 7 in phases:
            clustered = run_cluster_pairs(
                rounds=opts.rounds, connections=opts.connections, warmup_s=opts.warmup_s, duration_s=opts.duration_s,
                members=opts.members, workdir=workdir, procs=procs, service_command=serve, env=env,
                single_port=service_port, single_pids={"service": service.pid, "server": valkey.pid}, api_key=api_key,
                run_id=run_id, http_load=http_load, describe=describe,
            )
        procs.stop_all()  # what follows needs neither server; their connections leave the memory figures

        memory: Memory | None = None
        hundred: float | None = None
        year: memberyear.YearMemory | None = None
        cost: servercost.ServerCost | None = None
        if 4 in phases:
            memory = run_memory(opts, url, program, run_id)
            hundred = run_memory_hundred(opts, url, program, run_id)
            year = run_memory_year(opts, url, program, run_id)
        if 5 in phases:
            cost = run_server_cost(opts, url, program, run_id)
        rows = summary_rows(pairs, batch, pipeline, memory, cost, operations, hundred, clustered, year, games, sched)
        print_summary(rows, pairs)
        return rows
    finally:
        procs.stop_all()
        valkey.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(args)
    print("command:", shlex.join([sys.executable, "-m", "loadtest.bench", *args]))
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          "every figure is a ratio to a baseline measured in this run", flush=True)
    try:
        with terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix="rekindle-bench-") as tmp:
            run(opts, Path(tmp))
    except KeyboardInterrupt:
        print("\ninterrupted; every process stopped", file=sys.stderr)
        return 130
    except (BenchError, redis_sync.RedisError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
