"""Baseline (a): the naive endpoint the award path is measured against.

A bare Starlette app whose one POST endpoint reads the body, makes one EVALSHA of a trivial
script (``return 1``) and answers a small JSON: no validation, no auth, no planning. It uses the
service's Redis client settings and runs under the service's uvicorn settings, so the only
difference the benchmark sees is what the award path does per request.

    python -m loadtest.baseline_app --port 8100 --redis-url redis://127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator

import orjson
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TRIVIAL_SCRIPT = b"return 1"


def create_app(redis_url: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The same pool settings as realtime.service.Service.open.
        redis = Redis.from_url(redis_url, max_connections=256, socket_timeout=10, socket_connect_timeout=5)
        app.state.redis = redis
        app.state.sha = await redis.script_load(TRIVIAL_SCRIPT)
        try:
            yield
        finally:
            await redis.aclose()

    async def post_event(request: Request) -> Response:
        body = await request.body()
        reply = await request.app.state.redis.evalsha(request.app.state.sha, 0)
        return Response(orjson.dumps({"ok": reply, "bytes": len(body)}), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[Route("/v1/events", post_event, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="baseline_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args(argv)
    # The server settings of `rekindle serve` (realtime/cli.py), one worker.
    uvicorn.run(
        create_app(args.redis_url),
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
