"""The GC pacer: long-lived objects out of the collector's sight, cycles reclaimed on schedule."""

from __future__ import annotations

import asyncio
import gc
import weakref

from realtime.gcpacer import GcPacer


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_frozen_cycles_wait_for_the_scheduled_full_collection() -> None:
    """A cycle frozen with the sockets survives ordinary collections and is freed by the full one."""
    sockets = 0
    pacer = GcPacer(lambda: sockets)
    try:
        node = _Node()
        ref = weakref.ref(node)
        gc.collect(0)  # move it out of the young generation, as a socket's objects would be
        sockets = 500
        pacer.freeze()
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert ref() is not None  # frozen: the collector does not look at it
        pacer.full_collection()
        assert ref() is None
        assert gc.get_freeze_count() > 0  # and what is still alive is frozen again
    finally:
        gc.unfreeze()


def test_freezes_again_as_sockets_climb() -> None:
    """The pacer's loop freezes anew once the socket count has grown by a tenth (and 100)."""
    sockets = 0

    async def main() -> None:
        nonlocal sockets
        pacer = GcPacer(lambda: sockets, check_every_s=0.01)
        pacer.start()
        try:
            gc.unfreeze()
            sockets = 1000
            for _ in range(500):  # awaiting the pacer's next checks, bounded
                await asyncio.sleep(0.01)
                if gc.get_freeze_count() > 0:
                    break
            assert gc.get_freeze_count() > 0
        finally:
            await pacer.stop()
            gc.unfreeze()

    asyncio.run(main())
