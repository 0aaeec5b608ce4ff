"""``python -m idcode.service.reachable postgres|redis URL``: exit 0 when the server answers.

Used by scripts/test to decide whether to start the test services and to fail loudly when
they cannot be reached.
"""

from __future__ import annotations

import sys

import psycopg
import redis


def reachable(kind: str, url: str) -> str | None:
    """None when the server answers, else why not."""
    try:
        if kind == "postgres":
            psycopg.connect(url, connect_timeout=3).close()
        elif kind == "redis":
            client = redis.Redis.from_url(url, socket_connect_timeout=3)
            client.ping()
            client.close()
        else:
            return f"unknown service kind {kind!r}"
    except (psycopg.Error, redis.RedisError) as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m idcode.service.reachable postgres|redis URL", file=sys.stderr)
        return 2
    problem = reachable(argv[1], argv[2])
    if problem:
        print(f"{argv[1]} at {argv[2]}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
