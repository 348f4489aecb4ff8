"""Keep the cyclic garbage collector from pausing a process that holds thousands of sockets.

Each open WebSocket keeps ~140 objects alive that the collector tracks. CPython runs a full
collection whenever the long-lived objects grow by a quarter, and with 10,000 sockets open one
costs ~0.7 s, during which no frame moves. So the pacer moves long-lived objects out of the
collector's sight (``gc.freeze``) as the socket count climbs, and runs the full collection on a
schedule instead (default hourly), when it also reclaims cycles left by sockets that closed
since the last one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("rekindle.gc")


class GcPacer:
    def __init__(self, sockets: Callable[[], int], full_every_s: float = 3600.0, check_every_s: float = 5.0) -> None:
        self._sockets = sockets
        self._full_every_s = full_every_s
        self._check_every_s = check_every_s
        self._frozen_at = 0
        self._last_full = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.freeze()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-pacer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def freeze(self) -> None:
        gc.collect(1)  # young garbage goes first: a frozen cycle is kept until the next full run
        gc.freeze()
        self._frozen_at = self._sockets()

    def full_collection(self) -> float:
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        seconds = time.perf_counter() - started
        self._last_full = time.monotonic()
        self._frozen_at = self._sockets()
        log.info("scheduled full garbage collection took %.0f ms with %d sockets open", seconds * 1000, self._frozen_at)
        return seconds

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._check_every_s)
            if time.monotonic() - self._last_full >= self._full_every_s:
                self.full_collection()
            elif self._sockets() > self._frozen_at * 1.1 + 100:
                self.freeze()
