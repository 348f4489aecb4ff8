"""``make bench-live``: the live feed under load, against a bare ``websockets`` broadcast baseline.

One go, on loopback, every process started here and stopped here:

1. an embedded Valkey in a temporary folder;
2. the service, ``rekindle serve --workers 1`` with ``loadtest/bench_live.toml`` (one event type,
   one rule granting 1 XP, no cap, one tier: one award is exactly one frame);
3. a subscriber process (``loadtest.live.subscriber``: asyncio + uvloop, the ``websockets``
   library's sans-I/O client under one ``asyncio.Protocol`` per socket, so that the measuring
   side costs as little CPU as possible on a 2-core machine) opens N sockets, one member each,
   and records, for every frame, receive time minus the send time the sender put into the event
   id (``b-<ns>-<seq>-<member>``);
4. a poster process (``loadtest.live.poster``) applies awards at a fixed rate with the real
   ``member.lua`` (``parse_event``, ``plan_award``, ``store.member_call``), pipelined on a raw
   socket straight into Valkey. The feed node is measured alone, as in production, where ingest
   nodes and feed nodes are separate processes and the fan-out between them is Redis pub/sub;
5. the baseline, ``loadtest/live_baseline.py``: the ``websockets`` library's asyncio server
   pushing frames of the same shape at the same rate to random sockets, measured by the same
   subscriber code. No Redis: the floor of "Python pushing to WebSockets on this machine".

Memory per idle connection is the server's RSS with N idle sockets minus its RSS before, over N.
It is a report: it exits 0 when the target is missed, 2 when something failed to run, 130 when
interrupted. The parts live in ``loadtest/live/``, one job a module.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import orjson

from loadtest.live.options import Options, parse_args
from loadtest.live.orchestrate import SideResult, run_baseline, run_service
from loadtest.live.report import print_report, verdict
from loadtest.processes import BenchError, Processes, raise_nofile


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def print_banner(opts: Options, argv: list[str], open_files: int) -> None:
    """What runs, on what, and what is measured against what."""
    print("rekindle live-feed benchmark (make bench-live)")
    print(f"command: {shlex.join([Path(sys.executable).name, '-m', 'loadtest.bench_live', *argv])}")
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, open files {open_files}; everything on loopback;"
        f" load average before the run {_loadavg()}"
    )
    print(
        f"run: {opts.subscribers:,} subscribers (one member each, a separate process), {opts.rate:,.0f} pushes/s in "
        f"{opts.tick_ms:g} ms ticks, {opts.warmup:g} s warm-up + {opts.duration:g} s measured"
        + (", permessage-deflate offered" if opts.deflate else ", no compression")
    )
    print(
        "topology: awards are applied by a separate poster process straight into Valkey with the real member.lua\n"
        "  (parse_event, plan_award, member_call; pipelined EVALSHA). Ingest CPU stays off the feed node\n"
        "  being measured, as in production, where ingest and feed nodes are separate processes and fan-out\n"
        "  between them is Redis pub/sub. Latency = frame received - award sent to Valkey (stamped in the event id)."
    )
    print(
        "baseline: loadtest/live_baseline.py, the websockets library's asyncio server broadcasting frames of the same\n"
        "  shape to random sockets at the same rate (no Redis): the floor of Python pushing to WebSockets here."
    )
    sys.stdout.flush()


def write_json(path: Path, opts: Options, svc: SideResult, base: SideResult | None) -> None:
    status, why = verdict(opts, svc)
    path.write_bytes(
        orjson.dumps(
            {
                "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
                "service": asdict(svc),
                "baseline": asdict(base) if base else None,
                "target": {"status": status, "detail": why},
            },
            option=orjson.OPT_INDENT_2,
        )
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_args(argv, __doc__.split("\n\n")[0])
    print_banner(opts, argv, raise_nofile())

    from realtime.embedded import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="rekindle-bench-live-"))
    procs = Processes(tmp)
    valkey: EmbeddedValkey | None = None
    try:
        valkey = EmbeddedValkey(tmp / "valkey")
        valkey.start()
        print(f"\n[1/2] service: {opts.subscribers:,} sockets on `rekindle serve --workers 1` ...", flush=True)
        svc = run_service(opts, valkey.url, valkey.pid, tmp, procs)
        base = None
        if not opts.skip_baseline:
            print(f"[2/2] baseline: {opts.subscribers:,} sockets on a bare websockets server ...", flush=True)
            base = run_baseline(opts, procs)
        print_report(opts, svc, base)
        if opts.json_path is not None:
            write_json(opts.json_path, opts, svc, base)
        return 0
    except BenchError as exc:
        print(f"bench-live: FAILED: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench-live: interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all(timeout=10)
        if valkey is not None:
            try:
                valkey.stop()
            except Exception as exc:
                print(f"bench-live: stopping valkey: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
