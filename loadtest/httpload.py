"""A closed-loop HTTP/1.1 load generator: C keep-alive connections, one request in flight each.

Run as its own process (``python -m loadtest.httpload SPEC_JSON``) so that its CPU is not the
server's; it prints one JSON object with the results on stdout. ``bench.py`` drives it.

Each connection is an ``asyncio.Protocol`` on a raw socket: when a response is complete the next
request is written from the same callback, with no task switch and no stream buffering. Requests
are built with one bytes ``%`` format each; every event has an id of its own. Responses are
parsed only as far as needed: the status line and ``Content-Length`` (the servers measured here
never send chunked bodies). Only responses that complete inside the measured window count.
"""

from __future__ import annotations

import asyncio
import collections
import random
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from loadtest.stats import percentile

MAX_ERROR_SAMPLES = 5


@dataclass
class LoadSpec:
    host: str
    port: int
    path: str = "/v1/events"
    api_key: str = ""
    connections: int = 64
    warmup_s: float = 2.0
    duration_s: float = 10.0
    #: "single": one event per request; "batch": {"events": [batch_size events]}; "spend": one
    #: point spent per request (POST /v1/members/{m}/points/spend); "redeem": one redemption of
    #: ``item`` per request, as the member (POST /v1/me/redeem, tokens signed with token_secret);
    #: "member": POST ``path`` as the member (a game's route: a flash sale's claim, a check-in),
    #: with the body ``{"id": "<unique>"}``, or none at all when ``id_body`` is False
    mode: str = "single"
    batch_size: int = 1000
    item: str = ""
    token_secret: str = ""
    #: After a 429 a connection waits its Retry-After before its next request, as a shop's
    #: backend must (False: it sends the next at once, the worst client there is).
    honor_retry_after: bool = False
    #: Open loop: new requests arrive at this rate (per second) whatever the answers, each sent on
    #: an idle connection; one that finds none waits for the first to free up, and its latency
    #: counts from when it was due (no coordinated omission). 0: the closed loop above.
    rate_per_s: float = 0.0
    members: int = 10_000
    run_id: str = "r"  # makes every event id of this run unique across runs
    count_token: str = ""  # when set, count its occurrences in 2xx bodies (e.g. applied results)
    seed: int = 1
    id_body: bool = True  # mode "member": send {"id": ...} (an idempotency key), or no body
    #: Mode "member": ``{n}`` in the path is a target index below this (a bargain of many), chosen
    #: so that no member meets the same target twice within ``members`` x ``targets`` requests.
    targets: int = 0
    #: How ``{n}`` moves: "spread", each member to the next target each round (every target busy
    #: at once); "each", every member's request of a round to the same target, the next round to
    #: the next (one hot target at a time: a bargain its helpers crowd).
    target_order: str = "spread"
    #: Mode "member": more of the body after the id, as JSON members (``"card":"a"``); ``{next}``
    #: in it is the next member's number (a gift to the next member: a ring).
    body_extra: str = ""


#: The modes whose requests are made as a member (a token each) or for one (the path names it).
MEMBER_MODES = ("spend", "redeem", "member")


@dataclass
class LoadResult:
    requests: int = 0  # 2xx responses completed inside the window
    errors: int = 0  # non-2xx responses and lost connections inside the window
    events: int = 0  # events carried by the counted requests
    counted: int = 0  # occurrences of count_token in counted bodies
    window_s: float = 0.0
    requests_per_s: float = 0.0
    events_per_s: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    error_samples: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


class RequestMaker:
    """Cheap, unique request bytes: a fixed head, a formatted body, its length."""

    def __init__(self, spec: LoadSpec) -> None:
        self._spec = spec
        self._seq = 0
        rng = random.Random(spec.seed)
        # Order totals between ¥1 and ¥500 in cents; a table indexed by the sequence number
        # costs less per request than drawing a random number.
        self._amounts = [rng.randrange(100, 50_000) for _ in range(4096)]
        self._run = spec.run_id.encode()
        auth = f"Authorization: Bearer {spec.api_key}\r\n" if spec.api_key else ""
        self._head = (
            f"POST {spec.path} HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\n{auth}"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._path = spec.path.encode()
        self._extra = ("," + spec.body_extra).encode() if spec.body_extra else b""
        self._rest = f"Host: {spec.host}:{spec.port}\r\nContent-Type: application/json\r\nContent-Length: ".encode()
        self._tokens: list[bytes] = []
        if spec.mode in ("redeem", "member"):  # a member token each, minted before the clock starts
            import jwt

            exp = int(time.time()) + 3600
            self._tokens = [
                jwt.encode({"sub": f"m{m}", "iat": exp - 3600, "exp": exp}, spec.token_secret, algorithm="HS256").encode()
                for m in range(spec.members)
            ]

    def _event(self) -> bytes:
        seq = self._seq = self._seq + 1
        member = (seq * 2_654_435_761) % self._spec.members  # spread over every member id
        return b'{"id":"%s-%d","member":"m%d","type":"purchase","data":{"amount":%d}}' % (
            self._run,
            seq,
            member,
            self._amounts[seq & 4095],
        )

    def _member_request(self) -> bytes:
        """One spend, redemption or game call: the member is in the path or the token, so the head varies."""
        seq = self._seq = self._seq + 1
        member = (seq * 2_654_435_761) % self._spec.members
        if self._spec.mode == "spend":
            body = b'{"id":"%s-s%d","amount":1,"reason":"bench"}' % (self._run, seq)
            head = b"POST /v1/members/m%d/points/spend HTTP/1.1\r\nAuthorization: Bearer %s\r\n" % (
                member,
                self._spec.api_key.encode(),
            )
        elif self._spec.mode == "member":
            extra = self._extra.replace(b"{next}", b"%d" % ((member + 1) % self._spec.members)) if self._extra else b""
            body = b'{"id":"%s-c%d"%s}' % (self._run, seq, extra) if self._spec.id_body else b""
            path = self._path
            if self._spec.targets:  # each member comes once in every `members` requests: move it on a target each time
                round_ = seq // self._spec.members
                n = round_ if self._spec.target_order == "each" else round_ + member
                path = path.replace(b"{n}", b"%d" % (n % self._spec.targets))
            head = b"POST %s HTTP/1.1\r\nAuthorization: Bearer %s\r\n" % (path, self._tokens[member])
        else:
            body = b'{"id":"%s-r%d","item":"%s"}' % (self._run, seq, self._spec.item.encode())
            head = b"POST /v1/me/redeem HTTP/1.1\r\nAuthorization: Bearer %s\r\n" % self._tokens[member]
        return b"%s%s%d\r\n\r\n%s" % (head, self._rest, len(body), body)

    def next(self) -> bytes:
        if self._spec.mode in MEMBER_MODES:
            return self._member_request()
        if self._spec.mode == "batch":
            body = b'{"events":[' + b",".join([self._event() for _ in range(self._spec.batch_size)]) + b"]}"
        else:
            body = self._event()
        return b"%s%d\r\n\r\n%s" % (self._head, len(body), body)

    @property
    def events_per_request(self) -> int:
        return self._spec.batch_size if self._spec.mode == "batch" else 1


class Run:
    """State shared by every connection of one run: the window, the tallies."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.maker = RequestMaker(spec)
        self.token = spec.count_token.encode()
        self.window_start = float("inf")
        self.stopping = False
        self.latencies: list[float] = []
        self.errors = 0
        self.counted = 0
        self.statuses: dict[int, int] = {}
        self.error_samples: list[str] = []
        self.idle = 0  # connections with nothing in flight after the stop
        self.free: list[Connection] = []  # open loop: connections waiting for the next arrival
        self.due: collections.deque[float] = collections.deque()  # open loop: arrivals with no free connection
        self.all_idle = asyncio.get_running_loop().create_future()

    def arrive(self, due_at: float = 0.0) -> None:
        """Open loop: one request arrives (due now unless ``due_at``): sent on a free connection,
        or queued for the first that frees up."""
        if self.stopping:
            return
        due_at = due_at or time.perf_counter()
        if self.free:
            self.free.pop().send(due_at)
        else:
            self.due.append(due_at)

    def in_window(self, now: float) -> bool:
        return now >= self.window_start and not self.stopping

    def error(self, text: str, now: float) -> None:
        if self.in_window(now):
            self.errors += 1
            if len(self.error_samples) < MAX_ERROR_SAMPLES:
                self.error_samples.append(text)

    def went_idle(self) -> None:
        self.idle += 1
        if self.idle >= self.spec.connections and not self.all_idle.done():
            self.all_idle.set_result(None)


class Connection(asyncio.Protocol):
    def __init__(self, run: Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.sent_at = 0.0
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.run.spec.rate_per_s:
            self.next_arrival()
        else:
            self.send()

    def send(self, due_at: float = 0.0) -> None:
        assert self.transport is not None
        request = self.run.maker.next()
        self.sent_at = due_at or time.perf_counter()
        self.transport.write(request)

    def next_arrival(self) -> None:
        """Open loop: the oldest arrival still waiting, or wait for the next one."""
        run = self.run
        if run.due:
            self.send(run.due.popleft())
        else:
            run.free.append(self)

    def resend(self) -> None:
        """After a 429 and its Retry-After: the same kind of request again, timed afresh."""
        self.send()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self.fail("response without Content-Length")
            return
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end > 0 else len(head)])
        total = end + 4 + length
        if len(buf) < total:
            return
        now = time.perf_counter()
        run = self.run
        status = int(buf[9:12])
        if run.in_window(now):
            run.statuses[status] = run.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                run.latencies.append(now - self.sent_at)
                if run.token:
                    run.counted += buf.count(run.token, end + 4, total)
            else:
                run.error(f"HTTP {status}: {bytes(buf[end + 4 : total])[:300]!r}", now)
        del buf[:total]
        if run.stopping:
            self.finish()
        elif status == 429 and run.spec.honor_retry_after:
            at = head.find(b"\r\nretry-after:")
            line_end = head.find(b"\r\n", at + 2) if at >= 0 else -1
            delay = float(head[at + 15 : line_end if line_end > 0 else len(head)]) if at >= 0 else 1.0
            if run.spec.rate_per_s:  # open loop: the retry arrives later; the connection serves others
                asyncio.get_running_loop().call_later(delay, run.arrive)
                self.next_arrival()
            else:
                asyncio.get_running_loop().call_later(delay, self._resume)
        elif run.spec.rate_per_s:
            self.next_arrival()
        else:
            self.send()

    def _resume(self) -> None:
        if self.run.stopping:
            self.finish()
        elif self.transport is not None and not self.transport.is_closing():
            self.resend()

    def fail(self, text: str) -> None:
        self.run.error(text, time.perf_counter())
        if self.transport is not None:
            self.transport.close()

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.run.went_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.run.stopping:
            self.run.error(f"connection lost: {exc!r}", time.perf_counter())
            asyncio.get_running_loop().create_task(_connect(self.run))  # keep C connections busy
        self.finish()


async def _connect(run: Run) -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: Connection(run), run.spec.host, run.spec.port)
    return protocol


async def _arrivals(run: Run, rate_per_s: float) -> None:
    """Open loop: release the requests due by now, every millisecond or so, until the stop."""
    started = time.perf_counter()
    released = 0
    while not run.stopping:
        now = time.perf_counter()
        due = int((now - started) * rate_per_s) - released
        for i in range(due):
            run.arrive(started + (released + i + 1) / rate_per_s)
        released += due
        await asyncio.sleep(0.001)


async def run_load(spec: LoadSpec) -> LoadResult:
    run = Run(spec)
    connections = await asyncio.gather(*(_connect(run) for _ in range(spec.connections)))
    arrivals = asyncio.get_running_loop().create_task(_arrivals(run, spec.rate_per_s)) if spec.rate_per_s else None
    await asyncio.sleep(spec.warmup_s)
    run.window_start = time.perf_counter()
    await asyncio.sleep(spec.duration_s)
    run.stopping = True
    window_s = time.perf_counter() - run.window_start
    if arrivals is not None:
        await arrivals
        for conn in run.free:  # idle, waiting for an arrival that will not come
            conn.finish()
        run.free.clear()
    try:
        await asyncio.wait_for(run.all_idle, timeout=30)
    except TimeoutError:
        pass
    for conn in connections:
        if conn.transport is not None:
            conn.transport.close()
    await asyncio.sleep(0)

    lat = sorted(run.latencies)
    result = LoadResult(
        requests=len(lat),
        errors=run.errors,
        events=len(lat) * run.maker.events_per_request,
        counted=run.counted,
        window_s=window_s,
        error_samples=run.error_samples,
        statuses={str(k): v for k, v in sorted(run.statuses.items())},
    )
    result.requests_per_s = result.requests / window_s
    result.events_per_s = result.events / window_s
    if lat:
        result.p50_ms = percentile(lat, 0.50) * 1000
        result.p90_ms = percentile(lat, 0.90) * 1000
        result.p99_ms = percentile(lat, 0.99) * 1000
        result.max_ms = lat[-1] * 1000
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = LoadSpec(**orjson.loads(args[0]))
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        runner = asyncio.run
    result = runner(run_load(spec))
    sys.stdout.write(orjson.dumps(asdict(result)).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
