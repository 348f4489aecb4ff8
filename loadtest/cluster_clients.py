"""Which client carries the award path on a cluster: ours (``ClusterRunner``) or valkey-glide.

``python -m loadtest.cluster_clients`` starts a local cluster (three primaries, no replicas) and,
for each client in turn (alternating, ``--rounds`` times), a child process that sends the real
member.lua calls (``store.member_call`` of real purchase plans, distinct ids over 10,000
members) from ``--concurrency`` coroutines for ``--duration`` seconds. Each child reports the
calls it completed and its own CPU time (every thread of the process: glide's Rust core
included), so the table shows calls a second and the client's CPU per call: on a server that
shares the machine with the service, the second decides how much is left for everything else.

valkey-glide is not a dependency of rekindle (this measurement is why): install it into the
environment to include it (``.venv/bin/pip install valkey-glide``); without it, only ours runs.
A report: it exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.awards import plan_award
from engine.cluster import ClusterRunner, cluster_from_url
from engine.config import load_program
from engine.events import parse_event
from engine.keys import Keys
from engine.scripts import Scripts
from engine.store import member_call
from loadtest.redisload import purchase_events
from realtime.cluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "member_day.toml"
MOST_PER_S = 20_000  # calls are planned ahead for this rate (twice what one process reaches here)


def calls_for(run_id: str, count: int) -> list[tuple[list[str], list[Any]]]:
    program = load_program(CONFIG)
    now_ms = int(time.time() * 1000)
    keys = Keys(f"cc{run_id}")
    return [
        member_call(keys, plan_award(program, parse_event(raw, program, now_ms), now_ms), program)
        for raw in purchase_events(run_id, count, 10_000)
    ]


async def drive(call: Any, calls: list[tuple[list[str], list[Any]]], concurrency: int, warmup_s: float, duration_s: float) -> dict[str, float]:
    state = {"next": 0, "done": 0, "counting": False, "stop": False}

    async def worker() -> None:
        while not state["stop"] and state["next"] < len(calls):
            keys, args = calls[state["next"]]
            state["next"] += 1
            await call(keys, args)
            if state["counting"]:
                state["done"] += 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup_s)
    state["counting"] = True
    cpu0, t0 = _cpu(), time.perf_counter()
    await asyncio.sleep(duration_s)
    cpu1, t1 = _cpu(), time.perf_counter()
    done = state["done"]
    state["stop"] = True
    await asyncio.gather(*tasks)
    return {"per_s": done / (t1 - t0), "client_us_per_call": 1e6 * (cpu1 - cpu0) / max(done, 1)}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def child(kind: str, url: str, run_id: str, concurrency: int, warmup_s: float, duration_s: float) -> dict[str, float]:
    calls = calls_for(run_id, int(MOST_PER_S * (warmup_s + duration_s)) + 1_000)
    script = Scripts().member
    if kind == "ours":
        cluster = cluster_from_url(url)
        runner = ClusterRunner(cluster, url)
        try:
            return await drive(lambda k, a: runner.call(script, k, a), calls, concurrency, warmup_s, duration_s)
        finally:
            await runner.aclose()
            await cluster.aclose()
    from glide import GlideClusterClient, GlideClusterClientConfiguration, NodeAddress, Script

    host, _, port = url.split("://", 1)[1].rpartition(":")
    client = await GlideClusterClient.create(GlideClusterClientConfiguration([NodeAddress(host, int(port))]))
    glide_script = Script(script.source)
    try:
        return await drive(lambda k, a: client.invoke_script(glide_script, keys=k, args=a), calls, concurrency, warmup_s, duration_s)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.cluster_clients", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--run-id", default="r", help=argparse.SUPPRESS)
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if a.child:
        import uvloop

        result = uvloop.run(child(a.child, a.url, a.run_id, a.concurrency, a.warmup, a.duration))
        print(json.dumps(result))
        return 0
    kinds = ["ours"]
    try:
        import glide  # noqa: F401
        kinds.append("glide")
    except ImportError:
        print("valkey-glide is not installed: measuring ours alone", flush=True)
    results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="rekindle-cluster-clients-") as tmp:
        cluster = LocalCluster(Path(tmp), replicas=0)
        cluster.start()
        try:
            for i in range(a.rounds):
                for kind in kinds:
                    out = subprocess.run(
                        [sys.executable, "-m", "loadtest.cluster_clients", "--child", kind, "--url", cluster.url,
                         "--run-id", f"{kind}{i}", "--concurrency", str(a.concurrency), "--warmup", str(a.warmup),
                         "--duration", str(a.duration)],
                        capture_output=True, text=True, timeout=300, cwd=ROOT,
                    )
                    if out.returncode != 0:
                        print(f"{kind} round {i + 1} failed:\n{out.stderr[-2000:]}", flush=True)
                        continue
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    results[kind].append(r)
                    print(f"round {i + 1} {kind:>5}: {r['per_s']:8,.0f} calls/s, client CPU {r['client_us_per_call']:6.1f} us/call", flush=True)
        finally:
            cluster.stop()
    print("\nSUMMARY (medians; member.lua on a local 3-primary cluster, "
          f"{a.concurrency} concurrent calls)")
    base = statistics.median(r["per_s"] for r in results["ours"]) if results["ours"] else 0.0
    for kind, rows in results.items():
        if not rows:
            continue
        per_s = statistics.median(r["per_s"] for r in rows)
        cpu = statistics.median(r["client_us_per_call"] for r in rows)
        print(f"| {kind:>5} | {per_s:8,.0f} calls/s | {per_s / base if base else 0:4.2f}x of ours | client CPU {cpu:6.1f} us/call |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
