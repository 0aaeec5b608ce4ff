"""A real HTTP service for terminal tests: the app under uvicorn in a thread, on a free
loopback port, with the test run's PostgreSQL and Redis (see conftest's settings fixtures).

Terminals talk HTTP with their own client, so TestClient (which calls the app in-process)
would not exercise what a terminal does on the wire.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import uvicorn

from idcode.keystore import open_key_store
from idcode.service.api.app import create_app
from idcode.service.database import upgrade
from idcode.service.pii import development_vault
from idcode.service.settings import Settings
from tests.services import REDIS_RUN_PREFIX, Tokens

STARTUP_SECONDS = 30


def free_port() -> int:
    """A loopback port free now, for a server process a test starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    """``idcode *args`` in a process of its own; its standard output, the test failing with its
    standard error unless it exits 0."""
    completed = subprocess.run(
        [sys.executable, "-m", "idcode.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return completed.stdout.decode()


@dataclass
class LiveService:
    url: str
    settings: Settings
    tokens: Tokens
    client: httpx2.Client
    server: uvicorn.Server

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        return host, int(port)

    @property
    def root_jwk(self) -> dict[str, Any]:
        return open_key_store(self.settings.keys_dir).root_public_jwk()

    def subject_key(self, scene: str, site: str | None = None) -> bytes:
        """The subject key of ``scene``'s terminals; with ``site``, of that site's terminals
        (the site's own key in a site-scoped scene)."""
        vault = development_vault(self.settings.keys_dir, profile=self.settings.profile)
        if site is None:
            return vault.scene_subject_key(scene)
        return vault.terminal_subject_key(scene, site)

    def events(self, terminal_id: str) -> list[dict[str, Any]]:
        """Every event the service holds for a terminal (operators' read, paged by time)."""
        events: list[dict[str, Any]] = []
        since: str | None = None
        while True:
            params = {"terminal_id": terminal_id, "limit": "1000"}
            if since is not None:
                params["since"] = since
            response = self.client.get("/v1/events", params=params, headers=self.tokens.operator())
            assert response.status_code == 200, response.text
            page = [
                e for e in response.json() if e["event_id"] not in {x["event_id"] for x in events}
            ]
            events.extend(page)
            if len(response.json()) < 1000 or not page:
                return events
            since = page[-1]["occurred_at"]

    def stop_network(self) -> None:
        """Stop answering: the terminal sees the service as unreachable."""
        self.server.should_exit = True


def live_settings(workdir: Path, postgres_url: str, redis_url: str, label: str) -> Settings:
    """Development settings for a live service of one test module: its own key store and data
    directory in ``workdir``, the run's database, and a Redis prefix of its own."""
    return Settings(
        environment="development",
        keys_dir=workdir / "keys",
        data_dir=workdir / "data",
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=f"{REDIS_RUN_PREFIX}{label}-{secrets.token_hex(3)}:",
        demo_data=False,
    )


@contextmanager
def live_service(settings: Settings) -> Iterator[LiveService]:
    upgrade(settings.sqlalchemy_url)
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live service did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with httpx2.Client(base_url=url, timeout=30) as client:
        try:
            yield LiveService(url, settings, Tokens(settings), client, server)
        finally:
            server.should_exit = True
            thread.join(timeout=15)
