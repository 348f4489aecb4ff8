"""``rekindle``: the command line, for people and scripts alike.

Exit codes: 0 success, 1 a check or verification found problems, 2 bad usage or set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import redis as redis_sync

from engine import ids
from engine.clock import SystemClock
from engine.config import json_schema, load_program
from engine.errors import ConfigError, InvalidInput
from engine.keys import Keys
from realtime.auth import check_secret
from realtime.embedded import EmbeddedValkey, running_url
from realtime.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rekindle", description="rekindle member-activation engine")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (embedded Valkey unless REDIS_URL is set)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--config", type=Path, help="programme TOML (default config/member_day.toml)")
    serve.add_argument("--data-dir", type=Path, help="embedded server data and dev secrets (REKINDLE_DATA_DIR, .data)")
    serve.add_argument("--workers", type=int, default=1, help="service processes sharing the port")
    serve.add_argument("--redis-url", help="an external Redis 7.4+ / Valkey 9+ (REDIS_URL)")

    check = sub.add_parser("check", help="validate programme files; name every problem")
    check.add_argument("files", nargs="+", type=Path)

    verify = sub.add_parser("verify", help="check every member's points balance against its ledger")
    verify.add_argument("--data-dir", type=Path)
    verify.add_argument("--redis-url")
    verify.add_argument("--prefix", default=None, help="key prefix (REKINDLE_KEY_PREFIX, rk)")

    token = sub.add_parser("token", help="mint a member token for development")
    token.add_argument("member")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default a day)")
    token.add_argument("--data-dir", type=Path)

    sub.add_parser("schema", help="print the programme JSON Schema (config/program.schema.json)")

    args = parser.parse_args(argv)
    handler = {"serve": _serve, "check": _check, "verify": _verify, "token": _token, "schema": _schema}
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
    print(token)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from engine.ledger import verify
    from redis.asyncio import Redis

    settings = Settings.from_env(data_dir=args.data_dir, redis_url=args.redis_url, key_prefix=args.prefix)
    embedded: EmbeddedValkey | None = None
    url = settings.redis_url or running_url(settings.data_dir / "valkey")
    if url is None or not _responds(url):
        if settings.redis_url:
            print(f"rekindle verify: cannot reach {settings!r}", file=sys.stderr)
            return 2
        embedded = EmbeddedValkey(settings.data_dir / "valkey")  # reads the AOF the service wrote
        embedded.start()
        url = embedded.url

    async def run() -> int:
        client = Redis.from_url(url)
        try:
            report = await verify(client, Keys(settings.key_prefix))
        finally:
            await client.aclose()
        for m in report.mismatches:
            print(f"MISMATCH member={m.member} balance={m.balance} ledger_sum={m.ledger_sum}: {m.detail}")
        status = "ok" if report.ok else "FAILED"
        print(f"{status}: {report.members} members, {report.entries} ledger entries, {len(report.mismatches)} mismatches")
        return 0 if report.ok else 1

    try:
        return asyncio.run(run())
    finally:
        if embedded is not None:
            embedded.stop()


def _responds(url: str) -> bool:
    try:
        with redis_sync.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2) as client:
            return bool(client.ping())
    except (redis_sync.RedisError, OSError):
        return False


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from realtime.logs import LOG_CONFIG

    settings = Settings.from_env(
        data_dir=args.data_dir,
        config_path=args.config,
        redis_url=args.redis_url,
        host=args.host,
        port=args.port,
        workers=args.workers,
    ).with_dev_secrets()
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
    if not settings.redis_url:
        valkey_dir = settings.data_dir / "valkey"
        already = running_url(valkey_dir)
        if already and _responds(already):
            print(f"rekindle serve: an embedded server from {valkey_dir} is still running at {already};"
                  " stop the other `rekindle serve` first", file=sys.stderr)
            return 2
        embedded = EmbeddedValkey(valkey_dir)
        embedded.start()
        settings = replace(settings, redis_url=embedded.url)

    env = settings.worker_env()
    if settings.workers > 1:
        metrics_dir = settings.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
    os.environ.update(env)

    _banner(settings, program.name, embedded)
    try:
        uvicorn.run(
            "realtime.app:app_from_env",
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
        if embedded is not None:
            embedded.stop()
    return 0


def _banner(settings: Settings, program_name: str, embedded: EmbeddedValkey | None) -> None:
    where = f"embedded Valkey at {embedded.url} (AOF in {embedded.data_dir})" if embedded else "external Redis"
    lines = [
        f"rekindle: http://{settings.host}:{settings.port}  programme {program_name!r} ({settings.config_path})",
        f"  store: {where}",
    ]
    if "api_key" in settings.dev_generated:
        lines.append(f"  development API key:   {next(iter(settings.api_keys))}")
    if "admin_key" in settings.dev_generated:
        lines.append(f"  development admin key: {next(iter(settings.admin_keys))}")
    if settings.dev_generated:
        lines.append(f"  (generated for development, kept in {settings.data_dir}/dev-secrets.json;"
                     " set REKINDLE_API_KEYS, REKINDLE_ADMIN_KEYS, REKINDLE_TOKEN_SECRET in production)")
    lines.append("  member token:          .venv/bin/rekindle token m-42")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
