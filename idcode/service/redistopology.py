"""Which Redis the service's shared state lives in: one server, a Redis Cluster, or a master
that Redis Sentinel watches, all named by ``IDCODE_REDIS_URL`` (docs/data.md, "Redis
topologies").

``redis://``, ``rediss://`` and ``unix://`` name one server, as redis-py reads them.
``redis+cluster://[user:password@]host:port[,host:port...]`` names a cluster by a few of its
nodes (the client learns the others); ``redis+sentinel://[user:password@]host:port[,...]
/service[/db]`` names the sentinels and the service (master) they watch. ``rediss+`` means
TLS to every node. The password is for the data nodes; sentinels are asked without one.

``STATE_ERRORS`` is what any Redis client of ours raises when the shared state cannot be
reached: redis-py's cluster client raises some errors (``SlotNotCoveredError``,
``RedisClusterUnreachableError``) that are not ``RedisError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
import redis.cluster
import redis.sentinel
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from idcode.errors import RedisURLError as RedisURLError

STATE_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
SINGLE_SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_PORTS = {"cluster": 6379, "sentinel": 26379}
#: The client gives Redis this long to connect and to answer (docs/data.md).
TIMEOUT_SECONDS = 2
#: How often a cluster client retries a command that met a node away or the cluster down.
CLUSTER_RETRIES = 2


@dataclass(frozen=True)
class Topology:
    """What ``IDCODE_REDIS_URL`` names. ``url`` is kept for a single server only."""

    mode: Literal["single", "cluster", "sentinel"]
    url: str = field(default="", repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise RedisURLError(f"node {text!r} is not [address]:port")
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
        if ":" in port_text:
            raise RedisURLError("an IPv6 node address goes in brackets: [address]:port")
    if not host:
        raise RedisURLError("a node without a host name")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise RedisURLError(f"node {host}: port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def parse(url: str) -> Topology:
    """The topology ``url`` names; RedisURLError saying what is wrong otherwise."""
    if url.startswith(SINGLE_SCHEMES):
        try:
            aioredis.ConnectionPool.from_url(url)  # reads the URL, connects to nothing
        except ValueError as exc:  # its messages name the part, not the password
            raise RedisURLError(str(exc)) from None
        return Topology("single", url=url)
    if not url.startswith(CLUSTER_SCHEMES + SENTINEL_SCHEMES):
        raise RedisURLError(
            "must be a redis://, rediss:// or unix:// URL (one server), redis+cluster:// "
            "or rediss+cluster:// (Redis Cluster), or redis+sentinel:// or rediss+sentinel:// "
            "(Redis Sentinel)"
        )
    scheme, _, rest = url.partition("://")
    mode: Literal["cluster", "sentinel"] = "cluster" if scheme.endswith("cluster") else "sentinel"
    if "?" in rest or "#" in rest:
        raise RedisURLError(f"a {scheme}:// URL takes no query or fragment")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise RedisURLError(f"a {scheme}:// URL names at least one node (host:port)")
    nodes = tuple(_host_port(node, DEFAULT_PORTS[mode]) for node in hosts.split(","))
    parts = [unquote(part) for part in path.split("/")] if slash and path else []
    service, db = "", 0
    if mode == "cluster":
        if any(parts) and parts != ["0"]:
            raise RedisURLError("a Redis Cluster has database 0 only: end the URL at the nodes")
    else:
        if not parts or not parts[0]:
            raise RedisURLError(
                "name the service the sentinels watch: redis+sentinel://host:port,.../service"
            )
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise RedisURLError("after the service name only a database number may follow")
        service = parts[0]
        db = int(parts[1]) if len(parts) == 2 else 0
    return Topology(
        mode,
        nodes=nodes,
        service=service,
        db=db,
        tls=scheme.startswith("rediss"),
        username=username,
        password=password,
    )


def async_client(
    topology: Topology, max_connections: int
) -> tuple[aioredis.Redis | RedisCluster, list[aioredis.Redis]]:
    """A client of ``topology`` with at most ``max_connections`` per server, and the clients
    of the sentinels it asks (to close with it). One server: a blocking pool (a command beyond
    the connections waits up to the timeout for one); the others' pools refuse such a
    command, so RedisState bounds its concurrent commands."""
    timeout = TIMEOUT_SECONDS
    if topology.mode == "single":
        pool = aioredis.BlockingConnectionPool.from_url(
            topology.url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        return aioredis.Redis.from_pool(pool), []  # closing the client closes the pool
    if topology.mode == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in topology.nodes],
            max_connections=max_connections,
            # Few retries: a command to a master that is away fails within about a second
            # (the default, ten with backoff, took 4 to 7 s), and the service runs degraded.
            retry=AsyncRetry(ExponentialBackoff(cap=0.25, base=0.05), CLUSTER_RETRIES),
            ssl=topology.tls,
            username=topology.username,
            password=topology.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        return cluster, []
    sentinel = Sentinel(
        list(topology.nodes),
        sentinel_kwargs={
            "ssl": topology.tls,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        },
    )
    master: aioredis.Redis = sentinel.master_for(
        topology.service,
        db=topology.db,
        ssl=topology.tls,
        username=topology.username,
        password=topology.password,
        max_connections=max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    return master, list(sentinel.sentinels)


def ping(url: str) -> None:
    """Ping the (master) Redis ``url`` names once; raises one of STATE_ERRORS when it does
    not answer. For scripts (idcode.service.reachable), hence synchronous."""
    topology = parse(url)
    timeout = 3
    if topology.mode == "single":
        with redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        ) as client:
            client.ping()
    elif topology.mode == "cluster":
        with redis.cluster.RedisCluster(
            startup_nodes=[
                redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                for host, port in topology.nodes
            ],
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), CLUSTER_RETRIES),
            ssl=topology.tls,
            username=topology.username,
            password=topology.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        ) as cluster:
            cluster.ping(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    else:
        sentinel = redis.sentinel.Sentinel(
            list(topology.nodes),
            sentinel_kwargs={
                "ssl": topology.tls,
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
            },
        )
        try:
            with sentinel.master_for(
                topology.service,
                db=topology.db,
                ssl=topology.tls,
                username=topology.username,
                password=topology.password,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            ) as master:
                master.ping()
        finally:
            for client in sentinel.sentinels:
                client.close()
