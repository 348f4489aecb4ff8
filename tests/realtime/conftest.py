"""Real ``rekindle serve`` processes for the HTTP and command-line tests.

The session's service runs as a subprocess on the session's Valkey (``redis_url``) under a key
prefix of its own, with API keys, an admin key and a token secret made up for this run, so a
test can grep logs and metrics for them. Tests that are about processes (durability, workers,
config hot reload) start their own with ``start_service``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.realtime import contract

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "config" / "member_day.toml"
_BIN = Path(sys.executable).parent
REKINDLE = str(_BIN / "rekindle" if (_BIN / "rekindle").exists() else ROOT / ".venv" / "bin" / "rekindle")

# Made up per run: distinctive enough that finding one in a log or a scrape means a leak.
API_KEY = f"shop-key-{secrets.token_hex(12)}"
OTHER_API_KEY = f"shop-key2-{secrets.token_hex(12)}"
ADMIN_KEY = f"admin-key-{secrets.token_hex(12)}"
TOKEN_SECRET = f"token-secret-{secrets.token_hex(16)}"

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


def unique(kind: str = "m") -> str:
    """A fresh id: every test writes to members and events no other test touches."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def purchase(member: str, amount: int = 19900, event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": event_id or unique("order"), "member": member, "type": "purchase", "data": {"amount": amount, **extra}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(
        REKINDLE_API_KEYS=f"{API_KEY},{OTHER_API_KEY}",
        REKINDLE_ADMIN_KEYS=ADMIN_KEY,
        REKINDLE_TOKEN_SECRET=TOKEN_SECRET,
        REKINDLE_KEY_PREFIX=prefix,
        PYTHONUNBUFFERED="1",
        # Tests fire hundreds of requests at once to prove exactly-once; shedding is tested on its
        # own (test_admission.py sets the limits it needs).
        REKINDLE_MAX_INFLIGHT="0",
    )
    env.update(extra)
    return env


#: Every reply a test's client receives is held to the published document (tests/realtime/contract.py).
CONTRACT = {"response": [contract.on_response]}
ASYNC_CONTRACT = {"response": [contract.on_response_async]}


@dataclass
class Service:
    """One running ``rekindle serve`` process (and its workers, if any)."""

    base_url: str
    prefix: str
    redis_url: str
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, key: str | None = API_KEY) -> httpx.Client:
        """A client with ``Authorization: Bearer <key>``; closed when the service stops."""
        headers = {"authorization": f"Bearer {key}"} if key else {}
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=30, event_hooks=CONTRACT)
        self.clients.append(client)
        return client

    def async_client(self, key: str | None = API_KEY, connections: int = 100) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, limits=limits, timeout=60, event_hooks=ASYNC_CONTRACT)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then wait; the exit status (uvicorn re-raises the signal: -15 is a clean stop)."""
        for client in self.clients:
            client.close()
        self.clients.clear()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"rekindle serve ignored SIGTERM for {STOP_TIMEOUT_S} s") from None
        return self.process.returncode


def start_service(
    redis_url: str,
    prefix: str,
    data_dir: Path,
    *,
    workers: int = 1,
    config: Path = EXAMPLE_CONFIG,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Service:
    """Start ``rekindle serve`` (with ``args`` added) and return once ``GET /healthz`` answers 200."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    stdout_path = data_dir / "serve.stdout"
    stderr_path = data_dir / "serve.stderr"
    argv = [
        REKINDLE, "serve", "--port", str(port), "--redis-url", redis_url,
        "--config", str(config), "--data-dir", str(data_dir), "--workers", str(workers), *args,
    ]
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(argv, cwd=ROOT, env=service_env(prefix, **(env or {})), stdout=out, stderr=err)
    service = Service(f"http://127.0.0.1:{port}", prefix, redis_url, process, stdout_path, stderr_path)
    try:
        _await_ready(service)
    except BaseException:
        service.stop()
        raise
    return service


def _await_ready(service: Service) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=service.base_url, timeout=2) as client:
        while True:
            if service.process.poll() is not None:
                raise AssertionError(f"rekindle serve exited with {service.process.returncode}:\n{service.stderr_text()}")
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"rekindle serve not ready after {READY_TIMEOUT_S} s:\n{service.stderr_text()}")
            time.sleep(0.05)  # polling for readiness, bounded by the deadline above


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def member_keys(sync_redis: redis.Redis, prefix: str, member: str) -> list[bytes]:
    """Every key stored under this member's hash tag (an exact-prefix SCAN, for tests only)."""
    tag = f"{prefix}:{{m:{member}}}"
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in tag) + "*"
    return list(sync_redis.scan_iter(match=pattern, count=1000))


def member_dump(sync_redis: redis.Redis, prefix: str, member: str) -> dict[bytes, tuple[bytes | None, int]]:
    """Every key of the member with its serialized value and expiry: equal dumps, unchanged state."""
    return {key: (sync_redis.dump(key), sync_redis.pexpiretime(key)) for key in member_keys(sync_redis, prefix, member)}


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REKINDLE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of a JSON error reply."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = json.loads(response.content)
    assert set(body["error"]) >= {"code", "message"}, body
    return body["error"]  # type: ignore[no-any-return]


def serving(redis_url: str, data_dir: Path) -> Iterator[Service]:
    """A ``rekindle serve`` process under a prefix of its own, stopped after its user (``yield from``)."""
    svc = start_service(redis_url, new_prefix(), data_dir)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def service(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The session's service: one ``rekindle serve`` process on the session's Valkey."""
    yield from serving(redis_url, tmp_path_factory.mktemp("serve"))


@pytest.fixture
def shop(service: Service) -> Iterator[httpx.Client]:
    """A client holding the shop's API key."""
    with httpx.Client(base_url=service.base_url, headers={"authorization": f"Bearer {API_KEY}"}, timeout=30) as client:
        yield client


@pytest.fixture
def admin(service: Service) -> Iterator[httpx.Client]:
    """A client holding the admin key."""
    with httpx.Client(base_url=service.base_url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as client:
        yield client


@pytest.fixture
def anonymous(service: Service) -> Iterator[httpx.Client]:
    """A client with no credentials."""
    with httpx.Client(base_url=service.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def member() -> str:
    """A member id no other test uses."""
    return unique("m")


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for ``rekindle`` subprocesses: the test's secrets, a data folder of the test's own."""
    env = service_env("rk")
    env["REKINDLE_DATA_DIR"] = str(tmp_path / "cli-data")
    return env


def serving_with(redis_url: str, tmp_path_factory: pytest.TempPathFactory, extra: str, name: str) -> Iterator[Service]:
    """A service of its own on the example programme plus ``extra`` TOML (a game's campaigns)."""
    tmp = tmp_path_factory.mktemp(name)
    config = tmp / "programme.toml"
    config.write_text(EXAMPLE_CONFIG.read_text() + extra)
    svc = start_service(redis_url, new_prefix(), tmp / "serve", config=config)
    try:
        yield svc
    finally:
        svc.stop()


def member_client(svc: Service, member: str) -> httpx.Client:
    """A client calling as ``member``, with a token the shop minted for it."""
    with svc.client() as shop:
        token = shop.post("/v1/tokens", json={"member": member}).json()["token"]
    return httpx.Client(base_url=svc.base_url, headers={"authorization": f"Bearer {token}"}, timeout=30)
