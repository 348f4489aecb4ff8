"""Prometheus metrics, one registry per process or a shared directory across workers.

When ``PROMETHEUS_MULTIPROC_DIR`` is set (``rekindle serve --workers N`` sets it), each worker
writes its samples there and ``/metrics`` merges them, so a scrape sees the whole service.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

EVENTS = Counter("rekindle_events", "Member events by type and outcome", ["type", "outcome"])
AWARD_SECONDS = Histogram(
    "rekindle_award_seconds", "Event requests, HTTP in to reply out", ["endpoint"], buckets=_LATENCY
)
STORE_SECONDS = Histogram(
    "rekindle_store_seconds", "The award script call alone, queueing in the pipeline included", buckets=_LATENCY
)
REDIS_ERRORS = Counter("rekindle_redis_errors", "Redis calls that failed (connection, timeout, reply)")
PROGRAM_VERSION = Gauge(
    "rekindle_program_version", "Active programme version held by this process", multiprocess_mode="max"
)
LIVE_SOCKETS = Gauge("rekindle_live_sockets", "Open live-feed WebSockets", multiprocess_mode="livesum")
FRAMES_SENT = Counter("rekindle_live_frames_sent", "Frames written to live-feed sockets")
FEED_LAG_SECONDS = Histogram(
    "rekindle_live_lag_seconds", "Award (stream entry time) to frame sent on a socket", buckets=_LATENCY
)
SLOW_CONSUMERS = Counter("rekindle_live_slow_consumer_disconnects", "Sockets closed for falling too far behind")
SHED = Counter(
    "rekindle_shed", "Requests refused by admission control (429, or close 1013 for a replay), by kind", ["kind"]
)
INFLIGHT = Gauge(
    "rekindle_inflight", "Weight in flight under admission control (events for awards), by kind", ["kind"],
    multiprocess_mode="livesum",
)


# Labelled children looked up once each (a labels() call costs a lock and a dict build).
_event_children: dict[tuple[str, str], Any] = {}
_award_children: dict[str, Any] = {}


def observe_award(endpoint: str, seconds: float) -> None:
    child = _award_children.get(endpoint)
    if child is None:
        child = _award_children[endpoint] = AWARD_SECONDS.labels(endpoint)
    child.observe(seconds)


def count_event(event_type: str, outcome: str) -> None:
    """``EVENTS.labels(...).inc()`` with the child looked up once per (type, outcome)."""
    child = _event_children.get((event_type, outcome))
    if child is None:
        child = _event_children[(event_type, outcome)] = EVENTS.labels(event_type, outcome)
    child.inc()


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
