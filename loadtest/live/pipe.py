"""The child's side of the parent's pipes: reports out as JSON lines, commands in as lines.

The parent's side is ``loadtest.processes.Child`` (``expect`` and ``send``).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import orjson


def emit(message: dict[str, Any]) -> None:
    """A report to the parent: one JSON object per stdout line, flushed at once."""
    sys.stdout.write(orjson.dumps(message).decode() + "\n")
    sys.stdout.flush()


def stdin_lines(loop: asyncio.AbstractEventLoop) -> "asyncio.Queue[str]":
    """The parent's commands, one a line, read by a thread (EOF arrives as "close")."""
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "close")

    threading.Thread(target=read, daemon=True).start()
    return lines
