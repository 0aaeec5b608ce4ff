"""Real Redis topologies for tests: a three-master Redis Cluster, and a master with a replica
watched by two sentinels, each node a ``redis-server`` process of this machine on a free
loopback port, in a temporary directory, without persistence; stopped at the end.

Without ``redis-server`` the tests that use them fail when IDCODE_TEST_REDIS_NODES=required
(scripts/test sets it, and installs Redis where it is missing) and are skipped otherwise, as
the other optional components' tests are (IDCODE_TEST_SOFTHSM, IDCODE_TEST_NODE).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

SERVICE = "idcode"  # the name the sentinels know the master by
SLOTS = 16384
START_SECONDS = 10.0  # the most a node, the cluster or the sentinels get to come up


def redis_server() -> str:
    """The redis-server binary; fail or skip (see the module's docstring) without one."""
    binary = os.environ.get("IDCODE_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if binary is None:
        message = (
            "redis-server is not installed: the Redis Cluster and Sentinel tests start their "
            "own nodes from it (Debian/Ubuntu: 'apt-get install redis-server'; or set "
            "IDCODE_TEST_REDIS_SERVER)"
        )
        if os.environ.get("IDCODE_TEST_REDIS_NODES") == "required":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


def _free_port(also_free: int = 0) -> int:
    """A loopback port free now (and ``also_free`` above it, a cluster node's bus port)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port + also_free > 65535:
            continue
        if also_free:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + also_free))
                except OSError:
                    continue
        return port


def _until(condition: Callable[[], bool], what: str, seconds: float = START_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds} s")
        time.sleep(0.05)


@dataclass
class Node:
    """One redis-server (or sentinel) process; ``start`` again after ``kill`` reuses its
    directory, so a cluster node comes back with its identity (nodes.conf)."""

    binary: str
    port: int
    directory: Path
    arguments: list[str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, *self.arguments],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"redis on port {self.port} exited:\n{self.log()}")
            with self.client() as client:
                return bool(client.ping())

        _until(answers, f"redis on port {self.port} answers")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        path = self.directory / "log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def _in_sync(replica: Node) -> bool:
    with replica.client() as client:
        return bool(client.info("replication")["master_link_status"] == "up")


def _node(binary: str, root: Path, port: int, *extra: str) -> Node:
    directory = root / str(port)
    directory.mkdir()
    arguments = [
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--dir", str(directory), "--logfile", "log", "--daemonize", "no"),
        # A replica's first sync starts at once (not after the 5 s a diskless sync waits).
        *("--repl-diskless-sync-delay", "0"),
        *extra,
    ]
    return Node(binary, port, directory, arguments)


@dataclass
class Cluster:
    """Three masters, each serving a third of the slots; no replicas."""

    masters: list[Node]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.masters[:2])

    def healthy(self) -> bool:
        for node in self.masters:
            with node.client() as client:
                info = client.cluster("info")
            if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != 3:
                return False
        return True

    def wait_healthy(self, seconds: float = START_SECONDS) -> None:
        _until(self.healthy, "the cluster is ok on every node", seconds)


def start_cluster(binary: str, root: Path, started: list[Node]) -> Cluster:
    """The cluster; ``started`` gets each node as it starts (to be killed at the end)."""
    ports = [_free_port(also_free=10000) for _ in range(3)]
    masters = [
        _node(
            binary,
            root,
            port,
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", "1000"),
        )
        for port in ports
    ]
    for node in masters:
        started.append(node)
        node.start()
    third = SLOTS // 3
    bounds = [(0, third - 1), (third, 2 * third - 1), (2 * third, SLOTS - 1)]
    for epoch, (node, (first, last)) in enumerate(zip(masters, bounds, strict=True), start=1):
        with node.client() as client:
            client.cluster("ADDSLOTSRANGE", first, last)
            client.cluster("SET-CONFIG-EPOCH", epoch)
    with masters[0].client() as client:
        for node in masters[1:]:
            client.cluster("MEET", "127.0.0.1", node.port)
    cluster = Cluster(masters)
    cluster.wait_healthy()
    return cluster


@dataclass
class SentinelPair:
    """A master and its replica, watched by two sentinels (quorum 1) that fail over within
    a few seconds of the master going away."""

    data: list[Node]  # the first is the master at the start
    sentinels: list[Node]

    @property
    def url(self) -> str:
        return (
            "redis+sentinel://"
            + ",".join(f"127.0.0.1:{n.port}" for n in self.sentinels)
            + (f"/{SERVICE}")
        )

    def master_port(self) -> int:
        with self.sentinels[0].client() as client:
            address = client.sentinel_get_master_addr_by_name(SERVICE)
        assert isinstance(address, tuple), address
        return int(address[1])

    def master(self) -> Node:
        port = self.master_port()
        return next(node for node in self.data if node.port == port)

    def ready(self) -> bool:
        """Each sentinel knows the master, a replica in sync and the other sentinel."""
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                replicas: list[dict[str, Any]] = client.sentinel_slaves(SERVICE)
                others: list[dict[str, Any]] = client.sentinel_sentinels(SERVICE)
            if not any("s_down" not in r["flags"] for r in replicas) or len(others) != 1:
                return False
        return True


def start_sentinels(binary: str, root: Path, started: list[Node]) -> SentinelPair:
    """The master, replica and sentinels; ``started`` gets each as it starts."""
    master_port, replica_port = _free_port(), _free_port()
    master = _node(binary, root, master_port)
    replica = _node(binary, root, replica_port, "--replicaof", "127.0.0.1", str(master_port))
    for node in (master, replica):
        started.append(node)
        node.start()
    _until(
        lambda: _in_sync(replica),
        "the replica is in sync",
    )
    sentinels = []
    for _ in range(2):
        port = _free_port()
        directory = root / f"sentinel-{port}"
        directory.mkdir()
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\nlogfile log\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 500\n"
            f"sentinel failover-timeout {SERVICE} 2000\n"
        )
        sentinels.append(Node(binary, port, directory, [str(config), "--sentinel"]))
    for sentinel in sentinels:
        started.append(sentinel)
        sentinel.start()
    pair = SentinelPair([master, replica], sentinels)
    _until(pair.ready, "the sentinels know the replica and each other")
    return pair


@pytest.fixture(scope="session")
def redis_nodes_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="idcode-redis-") as root:
        yield Path(root)


@pytest.fixture(scope="session")
def redis_cluster(redis_nodes_dir: Path) -> Iterator[Cluster]:
    binary = redis_server()
    started: list[Node] = []
    try:
        yield start_cluster(binary, redis_nodes_dir, started)
    finally:
        for node in started:
            node.kill()


@pytest.fixture(scope="session")
def redis_sentinels(redis_nodes_dir: Path) -> Iterator[SentinelPair]:
    binary = redis_server()
    started: list[Node] = []
    try:
        yield start_sentinels(binary, redis_nodes_dir, started)
    finally:
        for node in started:
            node.kill()
