"""``make bench`` phase [7]: the award path on a local three-primary cluster next to one server.

The same single-event load (``loadtest/httpload.py``) against two services, alternately: the
bench's service on its one embedded Valkey, and a second service, configured the same, on a
local cluster of three primaries (no replicas: the single server has none either) from the
same ``valkey-server`` binary. Each run records the CPU seconds every party spent (service,
each node), so the figure can be read: on a 2-core machine four servers and a service share the
cores, and a cluster cannot be faster; what it shows is the cost of routing (per-primary
pipelines, a write per primary per tick) and how evenly the slots spread the work.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from loadtest.httpload import LoadResult, LoadSpec
from loadtest.processes import Processes, cpu_seconds, free_port, wait_healthy
from realtime.cluster import LocalCluster

APPLIED = '"status":"applied"'


@dataclass
class ClusterRun:
    single: list[LoadResult] = field(default_factory=list)
    cluster: list[LoadResult] = field(default_factory=list)
    #: CPU seconds per measured second, by party, over the cluster runs: service, node ports.
    cpu_share: dict[str, float] = field(default_factory=dict)
    single_cpu_share: dict[str, float] = field(default_factory=dict)

    @property
    def ratios(self) -> list[float]:
        return [c.requests_per_s / s.requests_per_s for s, c in zip(self.single, self.cluster) if s.requests_per_s]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios) if self.ratios else 0.0


def run_cluster_pairs(
    *,
    rounds: int,
    connections: int,
    warmup_s: float,
    duration_s: float,
    members: int,
    workdir: Path,
    procs: Processes,
    service_command: list[str],
    env: dict[str, str],
    single_port: int,
    single_pids: dict[str, int | None],
    api_key: str,
    run_id: str,
    http_load: Callable[[LoadSpec], LoadResult],
    describe: Callable[[str, LoadResult], str],
) -> ClusterRun:
    print(f"\n[7] the award path on a local cluster (3 primaries, no replicas) next to one server: "
          f"{connections} connections, {rounds} alternating pairs", flush=True)
    cluster = LocalCluster(workdir / "cluster", replicas=0)
    cluster.start()
    service = None
    try:
        port = free_port()
        service = procs.start(
            "cluster-service",
            [*service_command, "--redis-url", cluster.url, "--port", str(port), "--data-dir", str(workdir / "cluster-data")],
            env=env,
        )
        wait_healthy(service, port)
        parties = {"service": service.pid, **{f"node :{n.port}": n.server._process.pid for n in cluster.nodes}}  # noqa: SLF001
        result = ClusterRun()
        spent: dict[str, float] = dict.fromkeys(parties, 0.0)
        spent_single: dict[str, float] = dict.fromkeys(single_pids, 0.0)
        window = window_single = 0.0
        for i in range(1, rounds + 1):
            common: dict[str, Any] = dict(host="127.0.0.1", api_key=api_key, connections=connections, warmup_s=warmup_s,
                                          duration_s=duration_s, members=members, seed=100 + i, count_token=APPLIED)
            before = {k: cpu_seconds(pid) for k, pid in single_pids.items()}
            s = http_load(LoadSpec(port=single_port, run_id=f"{run_id}k{i}", **common))
            window_single += s.window_s + warmup_s
            for k, pid in single_pids.items():
                spent_single[k] += cpu_seconds(pid) - before[k]
            print(describe(f"round {i} one server", s), flush=True)
            before = {k: cpu_seconds(pid) for k, pid in parties.items()}
            c = http_load(LoadSpec(port=port, run_id=f"{run_id}c{i}", **common))
            window += c.window_s + warmup_s
            for k, pid in parties.items():
                spent[k] += cpu_seconds(pid) - before[k]
            print(describe(f"round {i} cluster", c) + f"  applied {c.counted:,}/{c.requests:,}  "
                  f"ratio {c.requests_per_s / max(s.requests_per_s, 1e-9):.2f}x", flush=True)
            result.single.append(s)
            result.cluster.append(c)
        result.cpu_share = {k: v / window for k, v in spent.items()} if window else {}
        result.single_cpu_share = {k: v / window_single for k, v in spent_single.items()} if window_single else {}
        shares = ", ".join(f"{k} {v:.0%}" for k, v in result.cpu_share.items())
        single_shares = ", ".join(f"{k} {v:.0%}" for k, v in result.single_cpu_share.items())
        print(f"  CPU of a core during the runs (warm-up included): cluster: {shares}; one server: {single_shares}",
              flush=True)
        return result
    finally:
        if service is not None:
            service.stop()
        cluster.stop()
