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

import asyncio
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisClusterException, RedisError

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


_ENCODE = " (a '/', '?', '#' or '@' in the password is written %2F, %3F, %23, %40)"


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
    if not host.isprintable() or any(character.isspace() for character in host):
        raise RedisURLError(f"node {host!r}: a host name has no spaces or control characters")
    if not port_text:
        return host, default_port
    # ASCII digits only: str.isdigit() also takes '²' (which int() refuses) and '٣'.
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        # The port's text is not repeated: from a password with an unencoded '/' it is the
        # password's first part ('user:pass/word@host' ends the node list at the '/').
        raise RedisURLError(f"node {host}: the port is not a number from 1 to 65535{_ENCODE}")
    return host, int(port_text)


def parse(url: str) -> Topology:
    """The topology ``url`` names; RedisURLError saying what is wrong otherwise."""
    if url.startswith(SINGLE_SCHEMES):
        try:
            aioredis.ConnectionPool.from_url(url)  # reads the URL, connects to nothing
        except ValueError as exc:  # its messages name the part, not the password...
            message = str(exc)
            if message.startswith("Port could not be cast"):  # ...but this one repeats it
                message = "the port is not a number" + _ENCODE
            raise RedisURLError(message) from None
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
        if len(parts) > 2 or (len(parts) == 2 and not (parts[1].isascii() and parts[1].isdigit())):
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
    """Ping the (master) Redis ``url`` names once, with the service's own client
    (async_client): one server, the sentinels' master, or every master of a cluster. Raises
    one of STATE_ERRORS when it does not answer. For scripts (idcode.service.reachable),
    hence synchronous."""
    topology = parse(url)

    async def once() -> None:
        client, sentinels = async_client(topology, max_connections=2)
        try:
            if isinstance(client, RedisCluster):
                await client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                await client.ping()
        finally:
            await client.aclose()
            for sentinel in sentinels:
                await sentinel.aclose()

    asyncio.run(once())
