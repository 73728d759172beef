"""A real local Kafka cluster: N KRaft nodes (3 by default) on loopback, for tests and demos of
what a lab runs (replication, leader changes, a node lost).

Every node is a :class:`~runwatch.transport.broker.Broker` in ``<data_dir>/node-<i>`` with the
roles broker and controller, one static controller quorum (``controller.quorum.voters``), one
cluster id, client ports ``port, port+1, ..., port+N-1`` and smaller heaps (384 MiB). Internal
topics and auto-created topics are replicated to every node (``min.insync.replicas`` 2 from 3
nodes up). ``<data_dir>/cluster.json`` records the layout, so ``status`` and ``stop`` find the
cluster again and a second ``start`` reuses its ports and storage. TLS material and the internal
SASL user's password are shared by the nodes (kept in ``data_dir``).

All nodes are launched before any is waited for: a node only becomes ready once a majority of
the quorum is up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from runwatch.errors import BrokerError
from runwatch.transport.broker import Broker, BrokerStatus, _cluster_id, free_port, port_open

STATE = "cluster.json"


@dataclass(frozen=True)
class ClusterNode:
    node_id: int
    voters: tuple[tuple[int, int], ...]  # (node id, controller port)
    cluster_id: str
    shared_dir: Path


def is_cluster(data_dir: str | Path) -> bool:
    return (Path(data_dir) / STATE).exists()


class Cluster:
    """``brokers`` local nodes in ``data_dir``; ``port`` None: the recorded first port, or 9092."""

    def __init__(self, data_dir: str | Path, *, brokers: int | None = None, port: int | None = None,
                 sasl_users: dict[str, str] | None = None, tls: bool | None = None,
                 extra_config: dict | None = None):
        self.data_dir = Path(data_dir).resolve()
        state = self._read_state()
        recorded = state.get("brokers")
        if brokers is not None and recorded and brokers != recorded:
            raise BrokerError(f"{self.data_dir} holds a {recorded}-node cluster; use another "
                              f"--data-dir for {brokers} nodes (or delete this one)")
        self.size = brokers or recorded or 3
        if self.size < 1:
            raise BrokerError("a cluster needs at least one node")
        self.port = port or state.get("port") or 9092
        self.tls = bool(state.get("tls", False) if tls is None else tls)
        controllers = state.get("controller_ports") or []
        if len(controllers) != self.size:
            controllers = [free_port() for _ in range(self.size)]
        self.controller_ports = [int(c) for c in controllers]
        self.cluster_id = state.get("cluster_id") or _cluster_id()
        voters = tuple((i + 1, c) for i, c in enumerate(self.controller_ports))
        self.nodes = [
            Broker(self.data_dir / f"node-{i + 1}", port=self.port + i, sasl_users=sasl_users,
                   tls=self.tls, extra_config=extra_config,
                   node=ClusterNode(i + 1, voters, self.cluster_id, self.data_dir))
            for i in range(self.size)]

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def protocol(self) -> str:
        return self.nodes[0].protocol

    @property
    def ca_file(self) -> Path | None:
        return self.nodes[0].ca_file

    def client_options(self, user: str | None = None, mechanism: str = "PLAIN") -> dict:
        return self.nodes[0].client_options(user, mechanism)

    def _read_state(self) -> dict:
        try:
            return json.loads((self.data_dir / STATE).read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / STATE).write_text(json.dumps(
            {"brokers": self.size, "port": self.port, "controller_ports": self.controller_ports,
             "cluster_id": self.cluster_id, "tls": self.tls}))

    def status(self) -> list[BrokerStatus]:
        return [n.status() for n in self.nodes]

    @property
    def running(self) -> bool:
        return all(s.running for s in self.status())

    def start(self, *, timeout: float = 120.0, quiet: bool = True) -> "Cluster":
        busy = [n.port for n in self.nodes if not n.status().running and port_open(n.port)]
        if busy:
            raise BrokerError(f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use; "
                              f"a {self.size}-node cluster needs ports {self.port}-"
                              f"{self.port + self.size - 1}: pass --port N")
        self._write_state()
        launched = [n for n in self.nodes if n.launch(quiet=quiet)]
        try:
            for n in launched:
                n.wait_ready(timeout=timeout)
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self, *, timeout: float = 30.0) -> bool:
        stopped = [n.stop(timeout=timeout) for n in self.nodes]
        return any(stopped)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (fault tests)."""
        self.nodes[node_id - 1].kill()
