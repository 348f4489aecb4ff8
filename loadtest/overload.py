"""``make bench-overload``: admission control under a crowd far past what the service sustains.

A closed-loop crowd (``loadtest/httpload.py``, the fast generator) posts single events, first
with a few connections (the unloaded p99), then with ``--crowd`` connections and no pause; a
connection refused (429) waits its Retry-After, as a shop's backend must (``--impatient``: it
sends again at once, the worst client there is). Each
run is made against the service with shedding off and on (``REKINDLE_MAX_INFLIGHT``), on the
same embedded Valkey, alternately. It prints, for each: accepted requests/s, p50/p99 of the
accepted, how many were shed (429), and p99 as a multiple of the unloaded p99 (the target: under
5x with shedding on). A report: it exits 0 whatever the figures, 2 when something did not run.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from loadtest.bench import http_load, rekindle_command
from loadtest.httpload import LoadResult, LoadSpec
from loadtest.processes import BenchError, Processes, child_env, free_port, wait_healthy
from realtime.embedded import EmbeddedValkey

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "member_day.toml"


def run(crowd: int, duration_s: float, limits: Sequence[int], workdir: Path, honor: bool, rate_x: float = 0.0) -> None:
    valkey = EmbeddedValkey(workdir / "valkey")
    valkey.start()
    procs = Processes(workdir)
    try:
        print(f"embedded Valkey at {valkey.url}; crowd of {crowd} connections, {duration_s:g} s a run", flush=True)
        rows = []
        rate = 0.0  # open loop (--rate-x): arrivals per second, from the first service's sustained rate
        for limit in limits:
            key = "rk_overload_" + secrets.token_urlsafe(16)
            port = free_port()
            env = child_env(
                REKINDLE_API_KEYS=key,
                REKINDLE_ADMIN_KEYS="rk_overload_admin_" + secrets.token_urlsafe(16),
                REKINDLE_TOKEN_SECRET=secrets.token_urlsafe(32),
                REKINDLE_KEY_PREFIX="ov" + secrets.token_hex(3),
                REKINDLE_MAX_INFLIGHT=str(limit),
            )
            env.pop("REDIS_URL", None)
            service = procs.start(
                f"service-{limit}",
                [*rekindle_command(), "serve", "--redis-url", valkey.url, "--port", str(port), "--config", str(CONFIG),
                 "--data-dir", str(workdir / f"data-{limit}")],
                env,
            )
            wait_healthy(service, port)
            common = dict(host="127.0.0.1", port=port, api_key=key, warmup_s=1.0, duration_s=duration_s,
                          members=10_000, count_token='"status":"applied"', honor_retry_after=honor)
            quiet = http_load(LoadSpec(connections=4, run_id=f"q{limit}{secrets.token_hex(2)}", **common))  # type: ignore[arg-type]
            if rate_x and rate == 0.0:  # what the service sustains: 64 connections, closed loop
                sustained = http_load(LoadSpec(connections=64, run_id=f"s{limit}{secrets.token_hex(2)}", **common))  # type: ignore[arg-type]
                rate = rate_x * sustained.requests_per_s
                print(f"  sustained {sustained.requests_per_s:,.0f} req/s (64 connections, closed loop, limit {limit}); "
                      f"the crowd arrives at {rate_x:g}x that: {rate:,.0f} req/s, open loop", flush=True)
            loud = http_load(LoadSpec(connections=crowd, run_id=f"l{limit}{secrets.token_hex(2)}", rate_per_s=rate, **common))  # type: ignore[arg-type]
            label = "off" if limit == 0 else str(limit)
            rows.append((label, quiet, loud))
            print(describe(f"limit {label}, 4 connections", quiet), flush=True)
            print(describe(f"limit {label}, {crowd} connections", loud), flush=True)
            procs.stop_all()
        print("\nSUMMARY (p99 of accepted requests; the target is under 5x unloaded with shedding on)")
        for label, quiet, loud in rows:
            shed = loud.statuses.get("429", 0)
            print(f"| limit {label:>4} | unloaded p99 {quiet.p99_ms:7.2f} ms | crowd: {loud.requests_per_s:8,.0f} accepted/s, "
                  f"p50 {loud.p50_ms:7.2f} ms, p99 {loud.p99_ms:8.2f} ms = {loud.p99_ms / quiet.p99_ms:5.1f}x, "
                  f"shed {shed:,} |")
    finally:
        procs.stop_all()
        valkey.stop()


def describe(label: str, r: LoadResult) -> str:
    other = {k: v for k, v in r.statuses.items() if k not in ("200", "429")}
    return (f"  {label:<28} {r.requests_per_s:>8,.0f} accepted/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:8.2f} ms  "
            f"429s {r.statuses.get('429', 0):,}  other {other or 0}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.overload", description=__doc__.split("\n\n")[0])
    p.add_argument("--crowd", type=int, default=1024, help="connections of the overload run (default 1024)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds a run (default 8)")
    p.add_argument("--limits", default="0,512", help="REKINDLE_MAX_INFLIGHT values (0: shedding off)")
    p.add_argument("--impatient", action="store_true", help="the crowd ignores Retry-After (sends again at once)")
    p.add_argument("--rate-x", type=float, default=0.0,
                   help="open loop: the crowd's requests arrive at this multiple of the rate the first service "
                        "sustains (measured first, 64 connections); 0: the closed-loop crowd (default)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="rekindle-overload-") as tmp:
            run(a.crowd, a.duration, [int(x) for x in a.limits.split(",")], Path(tmp), not a.impatient, a.rate_x)
    except BenchError as exc:
        print(f"overload bench failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
