"""``rekindle``: the command line, for people and scripts alike.

Exit codes: 0 success, 1 a check or verification found problems, 2 bad usage or set-up.
``serve`` stopped by SIGTERM or SIGINT (Ctrl-C) exits 0 once it has drained and stopped its
embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from engine import ids
from engine.clock import SystemClock
from engine.config import json_schema, load_program
from engine.errors import ConfigError, InvalidInput, NotFound
from engine.keys import Keys
from realtime.auth import check_secret
from realtime.embedded import DataDirInUse, EmbeddedError, EmbeddedValkey, answers, running_url
from realtime.settings import Settings

if TYPE_CHECKING:
    from engine.programs import FileActivation
    from realtime.app import EventsFastPath


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rekindle", description="rekindle member-activation engine")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (embedded Valkey unless REDIS_URL is set)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--config", type=Path, help="programme TOML (default config/member_day.toml)")
    serve.add_argument("--data-dir", type=Path, help="embedded server data and dev secrets (REKINDLE_DATA_DIR, .data)")
    serve.add_argument("--workers", type=int, default=1, help="service processes sharing the port")
    serve.add_argument(
        "--redis-url",
        help="an external Redis 8.0+ / Valkey 9.0+, for HSETEX (REDIS_URL); refused at start-up if it or"
        " its ACL user lacks a command the scripts run",
    )
    serve.add_argument(
        "--dev-clock", action="store_true",
        help="a clock POST /v1/admin/clock moves forward, for rehearsals and tests (REKINDLE_DEV_CLOCK=1; one worker)",
    )

    check = sub.add_parser("check", help="validate programme files; name every problem")
    check.add_argument("files", nargs="+", type=Path)

    verify = sub.add_parser("verify", help="check every invariant from Redis alone: points, operations, stock, outboxes")
    verify.add_argument("--data-dir", type=Path)
    verify.add_argument("--redis-url")
    verify.add_argument("--prefix", default=None, help="key prefix (REKINDLE_KEY_PREFIX, rk)")

    backfill = sub.add_parser("backfill", help="schedule the lifecycle jobs of members who predate them "
                                               "(dormancy, tier reviews); safe to run again")
    backfill.add_argument("--data-dir", type=Path)
    backfill.add_argument("--redis-url")
    backfill.add_argument("--prefix", default=None, help="key prefix (REKINDLE_KEY_PREFIX, rk)")

    sim = sub.add_parser("simulate", help="run a programme on a synthetic population; an HTML report (docs/simulate.md)")
    sim.add_argument("program", type=Path, help="the programme TOML")
    sim.add_argument("--archetypes", type=Path, default=Path("config/archetypes.toml"),
                     help="the population's archetypes (default config/archetypes.toml)")
    sim.add_argument("--members", type=int, default=20_000)
    sim.add_argument("--days", type=int, default=30)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--start", default=None, metavar="YYYY-MM-DD",
                     help="the first local day (default tomorrow); the same start, seed and files give the same figures")
    sim.add_argument("--out", type=Path, default=Path("report.html"), help="the HTML report (default report.html)")
    sim.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here (for CI diffs)")
    sim.add_argument("--compare", type=Path, default=None,
                     help="another programme, run on the same population and seed, side by side")

    token = sub.add_parser("token", help="mint a member token for development")
    token.add_argument("member")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default a day)")
    token.add_argument("--data-dir", type=Path)
    token.add_argument("--url", nargs="?", const="http://127.0.0.1:8000", default=None, metavar="BASE",
                       help="print a development link to the member page instead (default base http://127.0.0.1:8000)")

    sub.add_parser("schema", help="print the programme JSON Schema (config/program.schema.json)")

    openapi = sub.add_parser("openapi", help="print the OpenAPI 3.1 document of the HTTP API for a programme")
    openapi.add_argument("--config", type=Path, default=Path("config/member_day.toml"),
                         help="the programme whose event types the events endpoint takes (default config/member_day.toml)")

    cluster = sub.add_parser("cluster", help="run a local Valkey Cluster for development and print its URL")
    cluster.add_argument("--data-dir", type=Path, help="its nodes' folders (default <REKINDLE_DATA_DIR>/cluster)")
    cluster.add_argument("--port", type=int, default=17_001, help="the first node's port; the rest follow (default 17001)")
    cluster.add_argument("--primaries", type=int, default=3)
    cluster.add_argument("--replicas", type=int, default=1, help="replicas of each primary (default 1)")

    args = parser.parse_args(argv)
    handler = {
        "serve": _serve, "check": _check, "verify": _verify, "token": _token, "schema": _schema, "cluster": _cluster,
        "openapi": _openapi, "backfill": _backfill, "simulate": _simulate,
    }
    try:
        return handler[args.command](args)
    except ValueError as exc:  # a setting that cannot work (from the environment or a flag)
        print(f"rekindle {args.command}: {exc}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            program = load_program(path)
        except ConfigError as exc:
            failed += 1
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            continue
        print(
            f"ok: {path}: {program.name!r}, {len(program.events)} event types, "
            f"{len(program.model.rules)} rules, {len(program.tiers)} tiers, {len(program.quests)} quests "
            f"(hash {program.program_hash})"
        )
    return 1 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")
    return 0


def _openapi(args: argparse.Namespace) -> int:
    from realtime.routes.docs import document_bytes

    try:
        program = load_program(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    sys.stdout.buffer.write(document_bytes(program, Settings.from_env().max_batch))
    return 0


def _token(args: argparse.Namespace) -> int:
    from realtime.auth import Auth

    settings = Settings.from_env(data_dir=args.data_dir).with_dev_secrets()
    try:
        check_secret(settings.token_secret)
    except ValueError as exc:
        print(f"rekindle token: {exc}", file=sys.stderr)
        return 2
    try:
        member = ids.member_id(args.member, "member")
    except InvalidInput as exc:
        print(f"rekindle token: member {exc.message}", file=sys.stderr)
        return 2
    auth = Auth(settings.api_keys, settings.admin_keys, settings.token_secret)
    token, _ = auth.mint(member, SystemClock().now_ms(), args.ttl)
    print(page_link(args.url, token) if args.url is not None else token)
    return 0


def page_link(base: str, token: str) -> str:
    """A development link to the member page: the token in the query, which the page moves out of
    the address bar at once (an app passes it to the page instead)."""
    return f"{base.rstrip('/')}/?token={token}"


def _verify(args: argparse.Namespace) -> int:
    from engine.verify import verify_all

    def progress(members: int) -> None:  # on a terminal only: a log file gets the table alone
        if sys.stderr.isatty():
            print(f"\rverify: {members:,} members read", end="", file=sys.stderr, flush=True)

    async def work(client: Any, keys: Keys) -> int:
        report = await verify_all(client, keys, progress)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        print(report.table())
        for check in report.checks:
            for detail in check.details:
                print(f"BREACH {check.name}: {detail}")
        status = "ok" if report.ok else "FAILED"
        breaches = sum(c.breaches for c in report.checks)
        print(f"{status}: {report.members} members, {report.entries} ledger entries, {breaches} breaches")
        return 0 if report.ok else 1

    return _offline(args, "verify", work)


def _offline(args: argparse.Namespace, command: str, work: Callable[[Any, Keys], Awaitable[int]]) -> int:
    """An offline command's frame (verify, backfill): the store it reads (``_store_of``), a client
    of its own for ``work``, a store that cannot be read said in one line (exit 2)."""
    from engine.cluster import cluster_from_url, is_cluster_url
    from redis.asyncio import Redis
    from redis.exceptions import RedisClusterException, RedisError

    settings = Settings.from_env(data_dir=args.data_dir, redis_url=args.redis_url, key_prefix=args.prefix)
    opened = _store_of(settings, command)
    if opened is None:
        return 2
    url, embedded = opened

    async def run() -> int:
        client = cluster_from_url(url) if is_cluster_url(url) else Redis.from_url(url)
        try:
            return await work(client, Keys(settings.key_prefix))
        finally:
            await client.aclose()

    try:
        return asyncio.run(run())
    except (RedisError, RedisClusterException, OSError) as exc:
        print(f"rekindle {command}: cannot read {settings!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        if embedded is not None:
            embedded.stop()


def _simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.errors import ConfigError
    from realtime.report import render
    from datetime import date

    from realtime.simulate import SimulateError, check_run, first_day, prepare, simulate

    try:  # everything that can be refused, before any work
        check_run(args.members, args.days, args.out)
        if args.json is not None:
            check_run(args.members, args.days, args.json)
        programs = [args.program] + ([args.compare] if args.compare is not None else [])
        try:
            asked = date.fromisoformat(args.start) if args.start is not None else None
        except ValueError:
            raise SimulateError(f"--start must be a date, YYYY-MM-DD, not {args.start!r}") from None
        starts = [first_day(prepare(path, args.archetypes)[0], asked) for path in programs]
        start = starts[0]  # --compare: both programmes on the same days
    except SimulateError as exc:
        print(f"rekindle simulate: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"rekindle simulate: {exc}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    reports = []
    for path in programs:
        with tqdm(total=args.days, unit="day", desc=path.name, file=sys.stderr, disable=None) as bar:
            def progress(day: int, events: int) -> None:
                bar.update(1)
                bar.set_postfix(events=f"{events:,}")
            report = asyncio.run(simulate(path, args.archetypes, args.members, args.days, args.seed, progress, start))
        reports.append(report)
        print(f"{path}: {report.events:,} events in {report.seconds:.1f} s: {report.events / max(report.seconds, 1e-9):,.0f} "
              f"events/s", file=sys.stderr)
    args.out.write_text(render(reports), encoding="utf-8")
    if args.json is not None:
        summaries = [r.summary() for r in reports]
        args.json.write_bytes(orjson.dumps(summaries[0] if len(summaries) == 1 else summaries,
                                           option=orjson.OPT_INDENT_2))
    for r in reports:
        for warning in r.warnings():
            print(f"warning: {r.program_hash}: {warning}", file=sys.stderr)
    print(f"report: {args.out}")
    return 0


def _store_of(settings: Settings, command: str) -> tuple[str, EmbeddedValkey | None] | None:
    """The store an offline command reads: the given URL, the running embedded server, or the
    embedded server started on the data the service wrote (the caller stops it). None: the given
    URL does not answer (said on stderr)."""
    from engine.cluster import is_cluster_url

    url = settings.redis_url or running_url(settings.data_dir / "valkey")
    if url is not None and (is_cluster_url(url) or answers(url)):  # a cluster answers, or fails, later
        return url, None
    if settings.redis_url:
        print(f"rekindle {command}: cannot reach {settings!r}", file=sys.stderr)
        return None
    embedded = EmbeddedValkey(settings.data_dir / "valkey")  # reads the AOF the service wrote
    embedded.start()
    return embedded.url, embedded


def _backfill(args: argparse.Namespace) -> int:
    from engine.backfill import backfill
    from engine.clock import SystemClock as Clock
    from engine.programs import ProgramRegistry

    async def work(client: Any, keys: Keys) -> int:
        programs = ProgramRegistry(client, keys, Clock())
        if not await programs.refresh():
            print("rekindle backfill: no programme is active in this store (start the service once)", file=sys.stderr)
            return 2
        report = await backfill(client, keys, programs.current.program, Clock().now_ms())
        print(f"ok: {report.members:,} members read; scheduled {report.dormancy_jobs:,} dormancy jobs and "
              f"{report.tier_reviews:,} tier reviews")
        return 0

    return _offline(args, "backfill", work)


def _cluster(args: argparse.Namespace) -> int:
    """Run a local cluster in the foreground until Ctrl-C or SIGTERM; its data stays in its folder."""
    from realtime.cluster import ClusterError, LocalCluster

    data_dir = args.data_dir or Settings.from_env().data_dir / "cluster"
    cluster = LocalCluster(data_dir, primaries=args.primaries, replicas=args.replicas, base_port=args.port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cluster.start()
    except (ClusterError, OSError) as exc:
        print(f"rekindle cluster: {exc}", file=sys.stderr)
        return 2
    try:
        nodes = ", ".join(
            f"{n.address} ({'primary' if n.primary_of is None else f'replica of {cluster.nodes[n.primary_of].address}'})"
            for n in cluster.nodes
        )
        print(f"local cluster up: {nodes}\nREDIS_URL={cluster.url}\n(Ctrl-C stops it; data in {data_dir})", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cluster.stop()
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Run the service; SIGTERM stops it as SIGINT does, embedded server included.

    In a single process uvicorn drains on SIGTERM, puts back the handler it found and raises the
    signal again: with the default handler that kills this process before the ``finally`` that
    stops the embedded server, which is left running under pid 1. Found raising KeyboardInterrupt
    (SIGINT's handler), it ends ``uvicorn.run`` as Ctrl-C does. (With ``--workers N`` uvicorn's
    supervisor handles both signals itself and returns.) Worker processes are spawned, so they
    start with default handlers again.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _run_service(args)
    except KeyboardInterrupt:  # a signal before uvicorn took over the handlers, or after
        return 0


def _run_service(args: argparse.Namespace) -> int:
    import uvicorn
    from redis.exceptions import RedisClusterException, RedisError

    from realtime.logs import LOG_CONFIG
    from realtime.service import UnsupportedServer, check_server

    settings = Settings.from_env(
        data_dir=args.data_dir,
        config_path=args.config,
        redis_url=args.redis_url,
        host=args.host,
        port=args.port,
        workers=args.workers,
        dev_clock=True if args.dev_clock else None,
    ).with_dev_secrets()
    if settings.dev_clock and settings.workers > 1:
        # The dev clock's offset lives in one process's memory: workers would each keep their own.
        print("rekindle serve: --dev-clock (REKINDLE_DEV_CLOCK) runs one process: drop --workers"
              f" {settings.workers}, or the dev clock", file=sys.stderr)
        return 2
    try:
        program = load_program(settings.config_path)  # fail before anything starts
        check_secret(settings.token_secret)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"rekindle serve: {exc}", file=sys.stderr)
        return 2

    embedded: EmbeddedValkey | None = None
    try:
        if not settings.redis_url:
            embedded = EmbeddedValkey(settings.data_dir / "valkey")
            try:
                embedded.start()  # also stops a server a SIGKILLed `rekindle serve` left running
            except DataDirInUse as exc:
                print(f"rekindle serve: {exc} (another `rekindle serve`?); stop it first,"
                      " or give this one another --data-dir", file=sys.stderr)
                return 2
            except EmbeddedError as exc:
                print(f"rekindle serve: {exc}", file=sys.stderr)
                return 2
            settings = replace(settings, redis_url=embedded.url)

        try:  # a server that would fail every award is refused before the banner and the workers
            asyncio.run(check_server(settings))
        except UnsupportedServer as exc:
            print(f"rekindle serve: {exc}", file=sys.stderr)
            return 2
        except (RedisError, RedisClusterException, OSError) as exc:
            print(f"rekindle serve: cannot check the Redis server: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        try:  # here, so that the banner names what is active: a restart may keep a version posted since
            started = asyncio.run(_activate_file(settings))
        except (RedisError, RedisClusterException, OSError) as exc:
            print(f"rekindle serve: cannot activate {settings.config_path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        except NotFound as exc:  # the active version no longer validates (a newer engine's rules): logged
            print(f"rekindle serve: {exc}", file=sys.stderr)
            return 2

        env = settings.worker_env()
        if settings.workers > 1:
            metrics_dir = settings.data_dir / "metrics"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
            env[SERVE_PID_ENV] = str(os.getpid())  # whom each worker watches (worker_app)
        os.environ.update(env)

        _banner(settings, program.name, started, embedded)
        uvicorn.run(
            "realtime.app:app_from_env" if settings.workers == 1 else "realtime.cli:worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            http="httptools",
            ws="websockets-sansio",
            # Frames are ~150 bytes: compression costs ~50 KiB a socket and CPU for nothing.
            ws_per_message_deflate=False,
            # Heartbeats: a peer that does not answer a ping within 20 s is dropped (close 1011),
            # which also frees a socket whose reader stopped while its queue was full.
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            lifespan="on",
            access_log=False,
            log_config=LOG_CONFIG,
            timeout_graceful_shutdown=10,
        )
    finally:
        if embedded is not None and embedded.pid is not None:
            # A second SIGTERM or Ctrl-C must not cut the server's shutdown short (it is bounded).
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            embedded.stop()
    return 0


#: Set by serve for its --workers N processes: the pid each worker watches (``worker_app``).
SERVE_PID_ENV = "REKINDLE_SERVE_PID"


def worker_app() -> "EventsFastPath":
    """The app of one of ``--workers N``, a worker that stops when its `rekindle serve` is gone.

    uvicorn's workers outlive a SIGKILLed parent and go on holding the port, serving from an
    embedded server that the next `rekindle serve` shuts down as an orphan. Once its parent is
    gone (it is re-parented), a worker sends itself SIGTERM: uvicorn's graceful stop.
    """
    from realtime.app import app_from_env

    # The serve's pid as serve wrote it, not os.getppid() now: a worker still starting when its
    # serve was killed is already re-parented here, and would watch its new parent for ever.
    parent = int(os.environ.get(SERVE_PID_ENV) or os.getppid())

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, name="watch-parent", daemon=True).start()
    return app_from_env()


async def _activate_file(settings: Settings) -> "FileActivation":
    """Activate the programme file as each service process does when it starts (theirs then
    changes nothing), on a client of its own: what is active, and whether it is the file's."""
    from engine.programs import ProgramRegistry
    from realtime.service import own_client

    async with own_client(settings) as redis:
        return await ProgramRegistry(redis, Keys(settings.key_prefix), SystemClock()).activate_file(settings.config_path)


def _banner(settings: Settings, file_program: str, started: "FileActivation", embedded: EmbeddedValkey | None) -> None:
    where = f"embedded Valkey at {embedded.url} (AOF in {embedded.data_dir})" if embedded else "external Redis"
    active = started.active
    origin = "posted to /v1/config" if active.origin == "api" else f"from {active.origin.removeprefix('file:')}"
    url = f"http://{settings.host}:{settings.port}"
    lines = [
        f"rekindle: {url}  programme {active.program.name!r} (program_version {active.program_version}, {origin})",
    ]
    if not started.applied:
        config = shlex.quote(str(settings.config_path))
        lines += [
            f"  NOT APPLIED: {settings.config_path} ({file_program!r}). The store last started from this same file,",
            f"  and version {active.program_version}, activated since, stays active. To apply the file, post it:",
            f"    curl {url}/v1/config -H \"Authorization: Bearer $ADMIN\" --data-binary @{config}",
            "  (or change the file: a changed file is applied when the service starts)",
        ]
    lines.append(f"  store: {where}")
    if "api_key" in settings.dev_generated:
        lines.append(f"  development API key:   {next(iter(settings.api_keys))}")
    if "admin_key" in settings.dev_generated:
        lines.append(f"  development admin key: {next(iter(settings.admin_keys))}")
    if settings.dev_generated:
        lines.append(f"  (generated for development, kept in {settings.data_dir}/dev-secrets.json;"
                     " set REKINDLE_API_KEYS, REKINDLE_ADMIN_KEYS, REKINDLE_TOKEN_SECRET in production)")
    lines.append(f"  member token:          {_token_command(settings)}")
    if "token_secret" in settings.dev_generated:
        from realtime.auth import Auth

        auth = Auth(settings.api_keys, settings.admin_keys, settings.token_secret)
        token, _ = auth.mint(ids.MemberId("m-42"), SystemClock().now_ms(), 24 * 3600)
        lines.append(f"  member page (m-42):    {page_link(url, token)}")
    if settings.dev_clock:
        lines.append("  dev clock: on (GET /v1/admin/clock reads it, POST moves it forward)")
    print("\n".join(lines), flush=True)


def _token_command(settings: Settings) -> str:
    """The `rekindle token` command, as it can be pasted: it must find this data folder's dev secret."""
    argv0 = sys.argv[0] if Path(sys.argv[0]).name == "rekindle" else "rekindle"  # not `python -m`
    words = [argv0, "token", "m-42"]
    if settings.data_dir != Path(".data"):
        words += ["--data-dir", str(settings.data_dir)]
    return shlex.join(words)


if __name__ == "__main__":
    sys.exit(main())
