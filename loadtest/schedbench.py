"""``make bench`` phase [9]: the award path with the scheduler busy beside it, and what the
lifecycle's jobs cost in memory.

The service runs its scheduler in the same process and event loop as the HTTP routes, so a
backlog of due jobs (a million members' points expiring at midnight) takes CPU from the award
path. Two figures:

- the single-event award path (the closed loop of phase [1]) with the scheduler idle (no due job)
  and busy (``DUE_JOBS`` ``expire`` jobs of as many distinct members waiting, due a minute ago),
  in pairs taken in turn (idle first, then busy first, ...) so that the machine's noise falls on
  both; the row is the busy/idle ratio of the median pair, beside the jobs the scheduler ran in
  that pair's measured window. The jobs are real: each an empty ``member.lua`` operation (a member
  with nothing to expire), its dedupe entry and all. They are written into temporary sets first
  and moved into the 16 shard sets at once (``ZUNIONSTORE``), so the whole backlog is waiting
  when the run starts, and the AOF is rewritten before every run, so a rewrite that the writing
  of a million jobs would set off does not land in a window (the rewrites during each run are
  printed all the same). What the backlog leaves (its jobs still waiting, the dedupe entries of
  the jobs run) is deleted once the pairs are done, so later phases find the server as before;
- the bytes per member that the lifecycle adds to the job sets: ``LIFECYCLE_MEMBERS`` new members
  each make a purchase (its lot's ``expire`` job and its ``expiring`` notice, the member's
  ``dormancy`` job) and have a birthday written (the ``birthday`` job), through the service as a
  shop would; the figure is the growth of ``MEMORY USAGE`` of the 16 shard sets over the members.
  The member's own keys are phase [4]'s (the rows "Redis bytes per member").
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta

import redis as redis_sync

from engine.jobs import SHARDS, dead_key, expire_job_id, jobs_key, shard_of, tries_key
from engine.keys import Keys
from loadtest.httpload import LoadResult, LoadSpec
from loadtest.processes import BenchError

DUE_JOBS = 1_000_000  #: the backlog of the busy runs (``--quick``: ``QUICK_DUE_JOBS``)
QUICK_DUE_JOBS = 20_000
LIFECYCLE_MEMBERS = 10_000  #: members whose lifecycle jobs are measured (``--quick``: ``QUICK_LIFECYCLE_MEMBERS``)
QUICK_LIFECYCLE_MEMBERS = 300
TARGET = 0.90  #: busy req/s over idle req/s
APPLIED = '"status":"applied"'
#: Pairs written a ZADD (and job ids a pipeline): big enough that writing a million takes seconds.
ZADD_PAIRS = 2_000
SAMPLE_S = 0.2  #: how often the backlog is counted while a busy run goes on
#: The load generator's exit lags its window's end by about this much (it waits for the answers in
#: flight, sorts its latencies, prints): the window is placed this long before the exit.
EXIT_LAG_S = 0.1


@dataclass
class SchedPair:
    """One idle run and one busy run, and the backlog as sampled during the busy one."""

    idle: LoadResult
    busy: LoadResult
    waiting_at_start: int  # due jobs of the backlog when the busy window opened
    waiting_at_end: int  # ... and when it closed
    window_s: float

    @property
    def ratio(self) -> float:
        return self.busy.requests_per_s / self.idle.requests_per_s if self.idle.requests_per_s else 0.0

    @property
    def jobs_run(self) -> int:
        """Jobs the scheduler ran (took off the backlog) in the busy run's measured window."""
        return self.waiting_at_start - self.waiting_at_end

    @property
    def jobs_per_s(self) -> float:
        return self.jobs_run / self.window_s if self.window_s else 0.0


@dataclass
class LifecycleMemory:
    """The job sets' growth when ``members`` new members have their lifecycle jobs."""

    members: int
    jobs: int  # entries added to the 16 shard sets
    bytes: int  # MEMORY USAGE added to them
    kinds: dict[str, int] = field(default_factory=dict)  # jobs by kind, in one shard's sample

    @property
    def per_member_b(self) -> float:
        return self.bytes / self.members

    @property
    def jobs_per_member(self) -> float:
        return self.jobs / self.members

    @property
    def per_job_b(self) -> float:
        return self.bytes / self.jobs if self.jobs else 0.0


@dataclass
class Scheduled:
    """Phase [9]'s measurements."""

    due_jobs: int
    pairs: list[SchedPair] = field(default_factory=list)
    memory: LifecycleMemory | None = None

    def median_pair(self) -> SchedPair:
        """The pair whose ratio is the median (with an even count, the lower middle one: the
        stricter reading of a ``>=`` target), so the row's figures are one pair's."""
        ordered = sorted(self.pairs, key=lambda p: p.ratio)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def errors(self) -> int:
        return sum(p.idle.errors + p.busy.errors for p in self.pairs)

    @property
    def not_applied(self) -> int:
        return sum(r.requests - r.counted for p in self.pairs for r in (p.idle, p.busy))

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """The summary's rows: figure, value, baseline, ratio, target, verdict."""
        out = []
        if self.pairs:
            n, middle = len(self.pairs), self.median_pair()
            out += [
                (f"HTTP 1 event/request, scheduler with {self.due_jobs:,} due jobs / idle, req/s, median of {n} pairs",
                 f"{middle.busy.requests_per_s:,.0f}", f"{middle.idle.requests_per_s:,.0f}", f"{middle.ratio:.2f}x",
                 f">= {TARGET:.2f}x", "MET" if middle.ratio >= TARGET else "MISSED"),
                ("Scheduler jobs run/s beside the award path (that pair's window)", f"{middle.jobs_per_s:,.0f}",
                 "-", "-", "-", "report"),
            ]
        if self.memory is not None:
            m = self.memory
            out.append((f"Lifecycle bytes per member (16 job sets, {m.jobs_per_member:.1f} jobs a member)",
                        f"{m.per_member_b:,.0f}", "-", "-", "-", "report"))
        return out


# --- the backlog ----------------------------------------------------------------------------------


class Backlog:
    """``count`` due ``expire`` jobs, members ``<tag>.0``... (a job id each, all of one score:
    how they are told from every other job, and taken away again)."""

    def __init__(self, client: redis_sync.Redis, keys: Keys, tag: str, count: int) -> None:
        self._client, self._keys, self._tag = client, keys, tag
        self._scores: list[int] = []  # one a fill: a fresh operation id for every job of every fill
        self._members: list[list[str]] = [[] for _ in range(SHARDS)]  # by shard
        for n in range(count):
            member = f"{tag}.{n}"
            self._members[shard_of(member)].append(member)

    def fill(self) -> int:
        """Write the jobs, due a minute ago, into a temporary set per shard (the scheduler does not
        see them yet); returns their score. ``publish`` moves them in."""
        score = int(time.time() * 1000) - 60_000 - len(self._scores)
        self._scores.append(score)
        pipe = self._client.pipeline(transaction=False)
        for shard, members in enumerate(self._members):
            temp = self._temp(shard)
            pipe.delete(temp)
            for i in range(0, len(members), ZADD_PAIRS):
                flat: list[object] = []
                for member in members[i : i + ZADD_PAIRS]:
                    flat += (score, expire_job_id(member, score))
                pipe.execute_command("ZADD", temp, *flat)
            pipe.execute()
        return score

    def publish(self) -> None:
        """The whole backlog into the shard sets at once (their other jobs keep their scores)."""
        pipe = self._client.pipeline(transaction=False)
        for shard in range(SHARDS):
            key = jobs_key(self._keys, shard)
            pipe.zunionstore(key, [key, self._temp(shard)])
            pipe.delete(self._temp(shard))
        pipe.execute()

    def waiting(self, client: redis_sync.Redis | None = None) -> int:
        """Jobs of the latest fill still in the shard sets."""
        score = self._scores[-1]
        pipe = (client or self._client).pipeline(transaction=False)
        for shard in range(SHARDS):
            pipe.zcount(jobs_key(self._keys, shard), score, score)
        return sum(int(n) for n in pipe.execute())

    def due(self) -> int:
        """Every job due by now in the shard sets, the backlog's or not."""
        pipe = self._client.pipeline(transaction=False)
        for shard in range(SHARDS):
            pipe.zcount(jobs_key(self._keys, shard), "-inf", int(time.time() * 1000))
        return sum(int(n) for n in pipe.execute())

    def drop(self) -> int:
        """Take the backlog's jobs still waiting off the shard sets; returns how many."""
        pipe = self._client.pipeline(transaction=False)
        for shard in range(SHARDS):
            for score in self._scores:
                pipe.zremrangebyscore(jobs_key(self._keys, shard), score, score)
        removed = sum(int(n) for n in pipe.execute())
        self._client.delete(*(self._temp(shard) for shard in range(SHARDS)))
        return removed

    def forget(self) -> int:
        """Everything the backlog left: its jobs still waiting, a failed one's tries and dead
        entry, and the keys of its members (the dedupe entries of the jobs run). Returns the keys
        of members deleted."""
        self.drop()
        match = f"*:{self._tag}.*"
        for shard in range(SHARDS):
            tries = tries_key(self._keys, shard)
            fields = [f for f, _ in self._client.hscan_iter(tries, match=match, count=1000)]
            if fields:
                self._client.hdel(tries, *fields)
            dead = dead_key(self._keys, shard)
            gone = [m for m, _ in self._client.zscan_iter(dead, match=match, count=1000)]
            if gone:
                self._client.zrem(dead, *gone)
        deleted = 0
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=f"{self._keys.prefix}:{{m:{self._tag}.*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                deleted += int(self._client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(self._client.unlink(*batch))
        return deleted

    def _temp(self, shard: int) -> str:
        return jobs_key(self._keys, shard) + ":bench-backlog"  # the shard's hash tag: its slot


@contextmanager
def sampled(backlog: Backlog, url: str) -> Iterator[list[tuple[float, int]]]:
    """(monotonic time, jobs of the backlog waiting), every ``SAMPLE_S`` while the block runs
    (a ZCOUNT of one score in each shard: a cheap read for the server)."""
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        with redis_sync.Redis.from_url(url) as client:
            while True:
                samples.append((time.monotonic(), backlog.waiting(client)))
                if stop.wait(SAMPLE_S):
                    samples.append((time.monotonic(), backlog.waiting(client)))
                    return

    thread = threading.Thread(target=sample, name="backlog-sampler", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def at(samples: list[tuple[float, int]], t: float) -> int:
    """The backlog at time ``t``, read between the two samples around it (a straight line)."""
    if t <= samples[0][0]:
        return samples[0][1]
    for (t0, n0), (t1, n1) in zip(samples, samples[1:]):
        if t0 <= t <= t1:
            return round(n0 + (n1 - n0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0))
    return samples[-1][1]


def aof_rewrites(client: redis_sync.Redis) -> int:
    return int(client.info("persistence").get("aof_rewrites", 0))


def rewrite_aof(client: redis_sync.Redis, timeout_s: float = 120.0) -> None:
    """Rewrite the AOF now and wait for it: a run then starts with no rewrite due (one set off by
    the writing of the backlog, or by the runs before, would fork the server in its window)."""

    def busy() -> bool:
        info = client.info("persistence")
        return bool(int(info.get("aof_rewrite_in_progress", 0)) or int(info.get("aof_rewrite_scheduled", 0)))

    deadline = time.monotonic() + timeout_s
    while busy():
        if time.monotonic() > deadline:
            raise BenchError("the server's AOF rewrite did not finish")
        time.sleep(0.05)
    client.bgrewriteaof()
    while busy():
        if time.monotonic() > deadline:
            raise BenchError("the server's AOF rewrite did not finish")
        time.sleep(0.05)


# --- the lifecycle's bytes ------------------------------------------------------------------------


def set_sizes(client: redis_sync.Redis, keys: Keys) -> tuple[int, int]:
    """(MEMORY USAGE, entries) of the 16 shard sets together, every entry counted (samples 0)."""
    pipe = client.pipeline(transaction=False)
    for shard in range(SHARDS):
        pipe.memory_usage(jobs_key(keys, shard), samples=0)
        pipe.zcard(jobs_key(keys, shard))
    replies = pipe.execute()
    return sum(int(u or 0) for u in replies[0::2]), sum(int(n) for n in replies[1::2])


def birthday_of(n: int, today: date) -> str:
    """A birthday (MM-DD) between one and eleven months ahead: the birthday job waits (one due
    this week would run at once, and be replaced by next year's)."""
    return (today + timedelta(days=30 + n % 300)).strftime("%m-%d")


def lifecycle_memory(client: redis_sync.Redis, keys: Keys, port: int, api_key: str, run_id: str,
                     members: int) -> LifecycleMemory:
    """``members`` new members, each a purchase (batches of 1,000 events) and a birthday (a
    profile PUT each, over eight keep-alive connections), as a shop posts them; the shard sets'
    growth over them."""
    tag = f"lc{run_id}"
    names = [f"{tag}.{n}" for n in range(members)]
    headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
    before, entries_before = set_sizes(client, keys)
    for start in range(0, members, 1000):
        batch = [{"id": f"{tag}-{n}", "member": names[n], "type": "purchase", "data": {"amount": 12_900}}
                 for n in range(start, min(members, start + 1000))]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/events",
                                         data=json.dumps({"events": batch}).encode(), headers=headers)
        with urllib.request.urlopen(request, timeout=60) as reply:
            refused = [r for r in json.loads(reply.read())["results"] if r["status"] != "applied"]
        if refused:
            raise BenchError(f"lifecycle purchases: {len(refused)} not applied, first {refused[0]}")

    today = date.today()

    def put_birthdays(part: range) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for n in part:
                conn.request("PUT", f"/v1/members/{names[n]}", json.dumps({"birthday": birthday_of(n, today)}), headers)
                reply = conn.getresponse()
                body = reply.read()
                if reply.status != 200:
                    raise BenchError(f"lifecycle birthday of {names[n]}: HTTP {reply.status} {body[:300]!r}")
        finally:
            conn.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put_birthdays, [range(i, members, 8) for i in range(8)]))
    after, entries_after = set_sizes(client, keys)
    shard = shard_of(names[0])
    kinds = Counter(raw.decode().split(":")[1] for raw, _ in client.zscan_iter(jobs_key(keys, shard), match=f"*:{tag}.*",
                                                                                count=1000))
    return LifecycleMemory(members, entries_after - entries_before, after - before, dict(kinds))


# --- the phase ------------------------------------------------------------------------------------


def wait_idle(backlog: Backlog, timeout_s: float = 10.0) -> int:
    """Wait until no job is due (the scheduler finishing a tick it had read before the backlog
    went, or another phase's jobs); returns how many still are at the timeout."""
    deadline = time.monotonic() + timeout_s
    while (due := backlog.due()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return due


def run_sched(http_load: Callable[..., LoadResult], describe: Callable[[str, LoadResult], str], *, url: str,
              prefix: str, port: int, api_key: str, connections: int, warmup_s: float, duration_s: float,
              members: int, rounds: int, run_id: str, due_jobs: int, lifecycle_members: int) -> Scheduled:
    """The lifecycle's bytes first (while no job is due), then ``rounds`` idle/busy pairs of the
    award path, then everything the backlog left deleted."""
    keys = Keys(prefix)
    print(f"\n[9] scheduler: the award path ({connections} connections, closed loop, {warmup_s:g} s warm-up + "
          f"{duration_s:g} s measured) with the scheduler idle and with {due_jobs:,} due jobs, {rounds} pairs; "
          f"the lifecycle's jobs of {lifecycle_members:,} members", flush=True)
    out = Scheduled(due_jobs)
    # Event ids: run ids tagged "i" (idle) and "u" (busy), taken by no other phase (phase [7] has
    # "k" and "c" on this same service: an id sent again with another amount is a conflict).
    common = dict(host="127.0.0.1", port=port, api_key=api_key, connections=connections, warmup_s=warmup_s,
                  duration_s=duration_s, members=members, count_token=APPLIED)
    with redis_sync.Redis.from_url(url) as client:
        started = time.perf_counter()
        m = out.memory = lifecycle_memory(client, keys, port, api_key, run_id, lifecycle_members)
        print(f"  lifecycle: {m.members:,} members, a purchase and a birthday each ({time.perf_counter() - started:.1f} s): "
              f"{m.jobs:,} jobs, {m.jobs_per_member:.2f} a member (one shard's: "
              + ", ".join(f"{kind} {count:,}" for kind, count in sorted(m.kinds.items()))
              + f"); the 16 job sets grew {m.bytes:,} B (MEMORY USAGE): {m.per_member_b:,.0f} B a member, "
              f"{m.per_job_b:,.0f} B a job", flush=True)

        def idle(i: int) -> LoadResult:
            due = wait_idle(backlog)
            rewrite_aof(client)
            rewrites = aof_rewrites(client)
            r = http_load(LoadSpec(run_id=f"{run_id}i{i}", seed=90 + i, **common))  # type: ignore[arg-type]
            print(describe(f"round {i} idle", r) + f"  applied {r.counted:,}/{r.requests:,}  "
                  f"AOF rewrites {aof_rewrites(client) - rewrites}" + (f"  ({due:,} jobs due at its start)" if due else ""),
                  flush=True)
            return r

        def busy(i: int) -> tuple[LoadResult, int, int]:
            """A run with the backlog waiting: its result, the backlog at its window's start and end."""
            t = time.perf_counter()
            backlog.fill()
            filled_s = time.perf_counter() - t
            rewrite_aof(client)
            backlog.publish()
            rewrites = aof_rewrites(client)
            with sampled(backlog, url) as samples:
                r = http_load(LoadSpec(run_id=f"{run_id}u{i}", seed=90 + i, **common))  # type: ignore[arg-type]
                ended = time.monotonic() - EXIT_LAG_S
            start_n, end_n = at(samples, ended - r.window_s), at(samples, ended)
            left = backlog.drop()
            print(describe(f"round {i} busy", r) + f"  applied {r.counted:,}/{r.requests:,}  AOF rewrites "
                  f"{aof_rewrites(client) - rewrites}", flush=True)
            print(f"    backlog: {due_jobs:,} written in {filled_s:.1f} s; waiting {start_n:,} at the window's start, "
                  f"{end_n:,} at its end: {start_n - end_n:,} jobs run in it ({(start_n - end_n) / r.window_s:,.0f}/s); "
                  f"{left:,} left after the run, taken off", flush=True)
            if end_n == 0:
                print("    (the backlog ran out inside the window: the scheduler was idle for part of it)")
            return r, start_n, end_n

        backlog = Backlog(client, keys, f"sb{run_id}", due_jobs)
        try:
            for i in range(1, rounds + 1):
                if i % 2:  # idle first, then busy first: a drift over the rounds falls on both
                    a = idle(i)
                    b, start_n, end_n = busy(i)
                else:
                    b, start_n, end_n = busy(i)
                    a = idle(i)
                pair = SchedPair(a, b, start_n, end_n, b.window_s)
                out.pairs.append(pair)
                print(f"  round {i}: busy/idle {pair.ratio:.2f}x (target >= {TARGET:.2f}x)", flush=True)
                for r in (a, b):
                    for sample in r.error_samples:
                        print(f"      error: {sample}")
        finally:
            t = time.perf_counter()
            deleted = backlog.forget()
            print(f"  cleaned up: the backlog's jobs and {deleted:,} keys of its members "
                  f"({time.perf_counter() - t:.1f} s)", flush=True)
    ratios = ", ".join(f"{p.ratio:.2f}x" for p in out.pairs)
    print(f"  busy/idle ratio per pair: {ratios}; median {out.median_pair().ratio:.2f}x", flush=True)
    return out
