"""`rekindle serve` on its embedded Valkey under SIGTERM and SIGKILL: nothing left running, nothing lost.

systemd, containers and supervisors stop a service with SIGTERM to its main process alone (not its
process group), so that is what these tests send. After a SIGTERM the embedded server is stopped
with the service; after a SIGKILL of the service it is left orphaned, and the next start on the
same data folder shuts the orphan down (its AOF flushed) and starts afresh.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis

from realtime.embedded import URL_FILE, answers
from tests.realtime.conftest import (
    API_KEY,
    EXAMPLE_CONFIG,
    READY_TIMEOUT_S,
    REKINDLE,
    ROOT,
    STOP_TIMEOUT_S,
    Service,
    free_port,
    new_prefix,
    purchase,
    service_env,
    unique,
)

GONE_TIMEOUT_S = 30.0


def serve_embedded(data_dir: Path, prefix: str, workers: int = 1) -> subprocess.Popen[bytes]:
    """Start `rekindle serve` without --redis-url, so it runs the embedded Valkey in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        REKINDLE, "serve", "--port", str(free_port()), "--config", str(EXAMPLE_CONFIG),
        "--data-dir", str(data_dir), "--workers", str(workers),
    ]
    with open(data_dir / "serve.stdout", "ab") as out, open(data_dir / "serve.stderr", "ab") as err:
        return subprocess.Popen(argv, cwd=ROOT, env=service_env(prefix), stdout=out, stderr=err)


def start_embedded(data_dir: Path, prefix: str, workers: int = 1) -> Service:
    """`serve_embedded`, returned once `GET /healthz` answers 200."""
    process = serve_embedded(data_dir, prefix, workers)
    port = process.args[process.args.index("--port") + 1]  # type: ignore[union-attr]
    service = Service(f"http://127.0.0.1:{port}", prefix, "", process, data_dir / "serve.stdout", data_dir / "serve.stderr")
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=service.base_url, timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"rekindle serve exited with {process.returncode}:\n{service.stderr_text()}")
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                service.stop()
                raise AssertionError(f"rekindle serve not ready after {READY_TIMEOUT_S} s:\n{service.stderr_text()}")
            time.sleep(0.05)  # polling for readiness, bounded by the deadline above
    service.redis_url = (data_dir / "valkey" / URL_FILE).read_text().strip()
    return service


def valkey_pid(url: str) -> int:
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        return int(client.info("server")["process_id"])


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, waiting to be reaped, has stopped running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def await_gone(pid: int, url: str) -> None:
    """Wait (bounded) until the Valkey ``pid`` has stopped and its port no longer answers."""
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while alive(pid) or answers(url):
        assert time.monotonic() < deadline, f"valkey-server {pid} ({url}) still running after {GONE_TIMEOUT_S} s"
        time.sleep(0.05)


def await_closed(base_url: str) -> None:
    """Wait (bounded) until nothing accepts connections at ``base_url`` any more."""
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while True:
        try:
            httpx.get(f"{base_url}/healthz", timeout=2)
        except httpx.TransportError:
            return
        assert time.monotonic() < deadline, f"{base_url} still answers {GONE_TIMEOUT_S} s after its serve died"
        time.sleep(0.05)


def balance(service: Service, member: str) -> int:
    with httpx.Client(base_url=service.base_url, headers={"authorization": f"Bearer {API_KEY}"}, timeout=30) as shop:
        response = shop.get(f"/v1/members/{member}")
        assert response.status_code == 200, response.text
        return int(response.json()["points"]["balance"])


def award(service: Service, member: str) -> None:
    with httpx.Client(base_url=service.base_url, headers={"authorization": f"Bearer {API_KEY}"}, timeout=30) as shop:
        [result] = shop.post("/v1/events", json=purchase(member, 19900)).json()["results"]
        assert result["status"] == "applied"


def send_alone(process: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    """Signal the service process alone (not its group) and wait (bounded) for it to exit."""
    os.kill(process.pid, sig)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"rekindle serve still running {STOP_TIMEOUT_S} s after {sig.name}") from None


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_the_embedded_server_and_a_restart_keeps_the_data(tmp_path: Path, workers: int) -> None:
    """SIGTERM to serve alone: it exits 0, its valkey-server is gone, and the next start has every award."""
    data_dir, prefix, member = tmp_path / "data", new_prefix(), unique("m")
    service = start_embedded(data_dir, prefix, workers)
    try:
        award(service, member)
        pid = valkey_pid(service.redis_url)
        assert send_alone(service.process, signal.SIGTERM) == 0, service.stderr_text()
        await_gone(pid, service.redis_url)
    finally:
        service.stop()

    again = start_embedded(data_dir, prefix, workers)
    try:
        assert balance(again, member) == 299
        pid = valkey_pid(again.redis_url)
    finally:
        assert again.stop() == 0
    await_gone(pid, again.redis_url)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_leaves_an_orphan_that_the_next_start_stops_and_keeps_the_data(tmp_path: Path, workers: int) -> None:
    """After SIGKILL of serve alone its valkey-server runs on; the next start shuts it down and has every award.

    Orphaned workers (--workers 2) stop by themselves: the old port stops answering.
    """
    data_dir, prefix, member = tmp_path / "data", new_prefix(), unique("m")
    service = start_embedded(data_dir, prefix, workers)
    try:
        award(service, member)
        orphan = valkey_pid(service.redis_url)
        send_alone(service.process, signal.SIGKILL)
        assert alive(orphan) and answers(service.redis_url)  # what the next start has to deal with
        await_closed(service.base_url)
    finally:
        service.stop()

    again = start_embedded(data_dir, prefix, workers)
    try:
        await_gone(orphan, service.redis_url)
        assert balance(again, member) == 299
        assert valkey_pid(again.redis_url) != orphan
        award(again, member)
        expected = balance(again, member)
        pid = valkey_pid(again.redis_url)
    finally:
        assert again.stop() == 0
    await_gone(pid, again.redis_url)

    third = start_embedded(data_dir, prefix)
    try:
        assert balance(third, member) == expected
    finally:
        third.stop()


def test_a_data_folder_in_use_by_a_live_serve_is_refused(tmp_path: Path) -> None:
    """A second serve on a data folder a live serve uses exits 2 naming that serve's pid; the first runs on."""
    data_dir, prefix, member = tmp_path / "data", new_prefix(), unique("m")
    first = start_embedded(data_dir, prefix)
    try:
        award(first, member)
        second = serve_embedded(data_dir, prefix)
        try:
            assert second.wait(timeout=READY_TIMEOUT_S) == 2
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
        stderr = (data_dir / "serve.stderr").read_text()
        assert f"is in use by a running process (pid {first.process.pid})" in stderr, stderr
        assert balance(first, member) == 299
    finally:
        assert first.stop() == 0
