"""Every process a benchmark starts: started here, logged, waited for, and stopped in reverse.

A benchmark on a shared machine must leave nothing behind, whatever happens, and must say why a
server did not start (the tail of its log). ``Processes`` owns the children of one run and stops
them all on the way out; a ``Child`` is one of them. A child either writes everything to its log
(a server), or reports to the parent in JSON lines on stdout and reads commands on stdin, one a
line, with only its stderr in the log (a load generator driven step by step). The readings of a
running process the reports print (its RSS, its CPU seconds) are here too.
"""

from __future__ import annotations

import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """Something the benchmark needs did not run (a server did not start, a child failed)."""


class Child:
    """One subprocess, run from the repository root, its output in ``<log_dir>/<name>.log``.

    With ``reports``, stdout is a pipe of JSON lines the parent reads with :meth:`expect` and
    only stderr goes to the log; with ``commands``, stdin is a pipe the parent writes lines to
    with :meth:`send` (closing it is the child's cue to finish).
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        *,
        reports: bool = False,
        commands: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE if commands else subprocess.DEVNULL,
                stdout=subprocess.PIPE if reports else log,
                stderr=log if reports else subprocess.STDOUT,
            )
        finally:
            log.close()  # the child holds its own copy
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        if reports:
            threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, command: str) -> None:
        """One command line to the child's stdin."""
        assert self.proc.stdin is not None, f"{self.name} takes no commands"
        try:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"{self.name} exited early{self.tail()}") from None

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The child's next report whose ``"event"`` is ``event`` (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no {event!r} report within {timeout:.0f} s{self.tail()}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(5)
                raise BenchError(f"{self.name} exited ({self.proc.returncode}) before reporting {event!r}{self.tail()}")
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # something else printed to stdout (a banner)
            if isinstance(message, dict) and message.get("event") == event:
                return message

    def tail(self, lines: int = 15) -> str:
        """The end of the child's log, indented on lines of its own ("" when it is empty)."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return ("\n  " + "\n  ".join(text)) if text else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Close its stdin, signal it, wait; kill it if it does not exit in ``timeout`` seconds."""
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class Processes:
    """The children of one run, stopped in reverse order by :meth:`stop_all`, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._children: list[Child] = []

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        *,
        reports: bool = False,
        commands: bool = False,
    ) -> Child:
        child = Child(name, argv, self.log_dir, env, reports=reports, commands=commands)
        self._children.append(child)
        return child

    def stop_all(self, timeout: float = 15.0) -> None:
        """Stop every child still known, newest first; a failure to stop one does not spare the rest."""
        while self._children:
            child = self._children.pop()
            try:
                child.stop(timeout=timeout)
            except Exception as exc:  # keep cleaning up the rest
                print(f"stopping {child.name}: {exc}", file=sys.stderr)


def free_port() -> int:
    """A loopback TCP port nobody listens on now (a server started next can take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(child: Child, port: int, timeout_s: float = 60, path: str = "/healthz") -> None:
    """Until ``GET path`` on ``port`` answers 200; fails with the log's tail if the child exits first."""
    url = f"http://127.0.0.1:{port}{path}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise BenchError(f"{child.name} exited ({child.proc.returncode}) before it was ready{child.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise BenchError(f"{child.name} did not answer {url} within {timeout_s:.0f} s{child.tail()}")


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment plus ``extra``, with the repository first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children started after inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def rss_kib(pid: int) -> int:
    """Resident memory of a running process, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far; 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
