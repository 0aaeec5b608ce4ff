"""``python -m idcode.service.reachable postgres|redis URL``: exit 0 when the server answers.

Used by scripts/test to decide whether to start the test services and to fail loudly when
they cannot be reached.
"""

from __future__ import annotations

import sys

import psycopg

from idcode.service import redistopology


def reachable(kind: str, url: str) -> str | None:
    """None when the server answers, else why not."""
    try:
        if kind == "postgres":
            psycopg.connect(url, connect_timeout=3).close()
        elif kind == "redis":
            redistopology.ping(url)  # one server, a cluster's masters or a sentinel's master
        else:
            return f"unknown service kind {kind!r}"
    except redistopology.RedisURLError as exc:
        return f"bad URL: {exc}"
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    except redistopology.STATE_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def _without_password(url: str) -> str:
    """``url`` with any password in it masked: the message goes to CI logs."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, _ = rest.partition("/")[0].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{rest[len(userinfo) + 1 :]}"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m idcode.service.reachable postgres|redis URL", file=sys.stderr)
        return 2
    problem = reachable(argv[1], argv[2])
    if problem:
        print(f"{argv[1]} at {_without_password(argv[2])}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
