"""``make loadtest``: rehearse member day, then prove nothing was lost.

1. Start the service on an embedded Valkey of its own, with the example programme and fresh keys
   (or use ``--host`` and ``--api-key`` for a service already running; then ``--redis-url`` and
   ``--prefix`` let the verifier read its store).
2. Run Locust headless with the kit's shape (``loadtest/memberday.toml``), in ``--processes``
   processes, bounded in time, writing CSV and HTML reports to ``--out``.
3. Run ``rekindle verify`` on the store: every invariant, from Redis alone.
4. Print requests/s and p50/p99 per endpoint, 429s shed, live delivery latency, the CPU each
   party used (the generator's next to the service's and Valkey's, so a figure is known to be
   the service's and not the load tool's), and the verdict: exit 0 when the thresholds hold and
   the verifier passes, 1 when not, 2 when the rehearsal could not run.

``--ui`` starts Locust's web UI on the same service instead (``make loadtest-ui``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import psutil

from loadtest.locust import kit as kit_module
from realtime.embedded import EmbeddedValkey

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
CONFIG = ROOT / "config" / "member_day.toml"


class RehearsalError(RuntimeError):
    """Something the rehearsal needs did not run."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.locust.rehearse", description=__doc__.split("\n\n")[0])
    p.add_argument("--kit", type=Path, default=kit_module.DEFAULT_CONFIG, help="the rehearsal's TOML")
    p.add_argument("--shape", choices=("member_day", "steady"), help="default: the TOML's")
    p.add_argument("--users", type=int, help="the base crowd (default: the TOML's)")
    p.add_argument("--duration", type=float, help="seconds of the whole day (default: the TOML's)")
    p.add_argument("--spike", type=float, help="member_day's spike, times the base crowd")
    p.add_argument("--processes", type=int, default=2, help="Locust processes (one core each at most)")
    p.add_argument("--workers", type=int, default=1, help="service processes, when this starts the service")
    p.add_argument("--out", type=Path, help="reports folder (default .data/loadtest/<time>)")
    p.add_argument("--host", help="a running service instead of one started here")
    p.add_argument("--api-key", default=os.environ.get("REKINDLE_LOADTEST_API_KEY", ""), help="with --host")
    p.add_argument("--redis-url", help="with --host: the service's store, for the verifier")
    p.add_argument("--prefix", default="rk", help="with --host: the service's key prefix")
    p.add_argument("--ui", action="store_true", help="Locust's web UI instead of a headless run")
    return p.parse_args(argv)


@dataclass
class Target:
    host: str
    api_key: str
    redis_url: str | None
    prefix: str
    pids: dict[str, int]  # who to measure: service, valkey


def start_service(stack: ExitStack, workdir: Path, workers: int) -> Target:
    valkey = EmbeddedValkey(workdir / "valkey")
    valkey.start()
    stack.callback(valkey.stop)
    port = _free_port()
    api_key = "rk_rehearse_" + secrets.token_urlsafe(18)
    prefix = "rh" + secrets.token_hex(3)
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.update(
        REKINDLE_API_KEYS=api_key,
        REKINDLE_ADMIN_KEYS="rk_rehearse_admin_" + secrets.token_urlsafe(18),
        REKINDLE_TOKEN_SECRET=secrets.token_urlsafe(32),
        REKINDLE_KEY_PREFIX=prefix,
    )
    rekindle = Path(sys.executable).parent / "rekindle"
    cmd = [str(rekindle), "serve", "--redis-url", valkey.url, "--port", str(port), "--workers", str(workers),
           "--config", str(CONFIG), "--data-dir", str(workdir / "data")]
    log = open(workdir / "service.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    stack.callback(stop)
    _wait_healthy(f"http://127.0.0.1:{port}", proc, workdir / "service.log")
    return Target(f"http://127.0.0.1:{port}", api_key, valkey.url, prefix, {"service": proc.pid, "valkey": _valkey_pid(valkey)})


def _valkey_pid(valkey: EmbeddedValkey) -> int:
    import redis

    with redis.Redis.from_url(valkey.url) as client:
        return int(client.info("server")["process_id"])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RehearsalError(f"the service exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RehearsalError(f"the service did not answer {url}/healthz within {timeout_s:.0f} s")


class CpuMeter:
    """CPU seconds of a process and its children, between two readings."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self._start = self._read()

    def _read(self) -> float:
        total = 0.0
        try:
            procs = [self._proc, *self._proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system + getattr(t, "children_user", 0) + getattr(t, "children_system", 0)
            except psutil.NoSuchProcess:
                continue
        return total

    def used(self) -> float:
        return self._read() - self._start


def locust_command(args: argparse.Namespace, target: Target, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", target.host, "--api-key", target.api_key,
           "--kit", str(args.kit), "--loglevel", "WARNING"]
    for flag, value in (("--shape", args.shape), ("--kit-users", args.users), ("--kit-duration", args.duration),
                        ("--spike", args.spike)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.ui:
        return cmd
    cmd += ["--headless", "--csv", str(out / "locust"), "--html", str(out / "report.html"), "--stop-timeout", "10",
            "--exit-code-on-error", "0"]
    if args.processes > 1:
        cmd += ["--processes", str(args.processes)]
    return cmd


def run(args: argparse.Namespace) -> int:
    kit = kit_module.load(args.kit, args.shape, {"users": args.users, "duration_s": args.duration, "spike": args.spike})
    out = args.out or ROOT / ".data" / "loadtest" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if args.host:
            if not args.api_key:
                raise RehearsalError("--host needs --api-key (or REKINDLE_LOADTEST_API_KEY)")
            target = Target(args.host, args.api_key, args.redis_url, args.prefix, {})
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rekindle-rehearse-")))
            target = start_service(stack, workdir, args.workers)
        cmd = locust_command(args, target, out)
        print("locust:", shlex.join(cmd), flush=True)
        print(f"shape {kit.shape.name}: " + ", ".join(f"{s.users} users until {s.until_s:g} s" for s in kit.shape.stages),
              flush=True)
        if args.ui:
            print(f"Locust's web UI: http://127.0.0.1:8089 (target {target.host}); Ctrl-C to stop", flush=True)
            return subprocess.call(cmd, cwd=ROOT)
        meters = {name: CpuMeter(pid) for name, pid in target.pids.items()}
        started = time.monotonic()
        locust = subprocess.Popen(cmd, cwd=ROOT, stdout=open(out / "locust.log", "wb"), stderr=subprocess.STDOUT)
        meters = {"locust (generator)": CpuMeter(locust.pid), **meters}
        used = dict.fromkeys(meters, 0.0)
        peak = dict.fromkeys(meters, 0.0)  # the busiest 5 s window of each, in cores
        window_start, window_used = time.monotonic(), dict(used)
        try:
            while locust.poll() is None:
                for name, meter in meters.items():
                    used[name] = max(used[name], meter.used())  # Locust's children are gone once it exits
                now = time.monotonic()
                if now - window_start >= 5:
                    for name in meters:
                        peak[name] = max(peak[name], (used[name] - window_used[name]) / (now - window_start))
                    window_start, window_used = now, dict(used)
                if now - started > kit.shape.duration_s + 120:
                    locust.terminate()
                    raise RehearsalError("Locust ran two minutes past the shape's end")
                time.sleep(0.5)
        finally:
            if locust.poll() is None:
                locust.kill()
        wall = time.monotonic() - started
        cpu = used
        stats_csv = out / "locust_stats.csv"
        if not stats_csv.exists():
            raise RehearsalError(f"Locust wrote no stats ({locust.returncode}):\n{(out / 'locust.log').read_text()[-2000:]}")
        stats = kit_module.read_stats(stats_csv)
        report(stats, cpu, wall, peak)
        problems = kit_module.verdict(stats, kit.thresholds)
        verified = verify(target)
    print(f"\nreports: {out}/report.html, {out}/locust_stats.csv")
    for problem in problems:
        print(f"THRESHOLD {problem}")
    ok = not problems and verified != 1
    print("PASSED" if ok else "FAILED", flush=True)
    return 0 if ok else 1


def report(stats: list[kit_module.EndpointStats], cpu: dict[str, float], wall: float, peak: dict[str, float]) -> None:
    print("\nper endpoint (Locust):")
    width = max(len(s.name) for s in stats)
    print(f"  {'request'.ljust(width)}  {'count':>8}  {'req/s':>8}  {'p50 ms':>8}  {'p99 ms':>8}  {'failures':>8}")
    for s in stats:
        print(f"  {s.name.ljust(width)}  {s.requests:>8,}  {s.rps:>8.1f}  {s.p50_ms:>8.0f}  {s.p99_ms:>8.0f}  {s.failures:>8,}")
    shed = sum(s.requests for s in stats if s.name.startswith("SHED "))
    print(f"\n429s shed (sent again after Retry-After): {shed:,}")
    print(f"\nCPU over {wall:.0f} s ({os.cpu_count()} cores): "
          + ", ".join(f"{name} {seconds:.1f} s ({100 * seconds / wall:.0f}% of a core)" for name, seconds in cpu.items()))
    print("busiest 5 s: " + ", ".join(f"{name} {100 * cores:.0f}%" for name, cores in peak.items())
          + " of a core (a party near 100% for each process it runs saturated first; together near"
          f" {100 * (os.cpu_count() or 1)}%, the machine did)")


def verify(target: Target) -> int | None:
    """``rekindle verify`` on the store; None when the store is not known (``--host`` alone)."""
    if target.redis_url is None:
        print("\nverifier: skipped (give --redis-url and --prefix with --host to run it)")
        return None
    rekindle = Path(sys.executable).parent / "rekindle"
    print("\nverifier (rekindle verify):", flush=True)
    time.sleep(1)  # the last responses' awards are applied; the sweep has nothing pending in flight
    done = subprocess.run([str(rekindle), "verify", "--redis-url", target.redis_url, "--prefix", target.prefix],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(done.stdout.rstrip())
    if done.returncode not in (0, 1):
        print(done.stderr.rstrip(), file=sys.stderr)
        raise RehearsalError(f"rekindle verify could not run ({done.returncode})")
    return done.returncode


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except RehearsalError as exc:
        print(f"rehearsal failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
