"""A real ``idcode serve`` for the browser tests: its own PostgreSQL database (so that serve
enrols the demo cards, which only go into an empty database), the run's Redis under a prefix
of its own, a key store of its own, the access log on (the tests read it); and terminals
provisioned against it, running the terminal runtime on a clock the test sets.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx2
import psycopg
import pytest

from idcode.claims import Card
from idcode.keystore import open_key_store
from idcode.scenes import Decision, History, Scan, SceneAdapter
from idcode.service.settings import Settings
from idcode.terminal import identity as identities
from idcode.terminal.client import register
from idcode.terminal.identity import TerminalIdentity
from idcode.terminal.runtime import TerminalRuntime
from tests.live import free_port, run_cli
from tests.services import POSTGRES_ADMIN_URL, REDIS_RUN_PREFIX, RUN_ID, Tokens

STARTUP_SECONDS = 60  # a cold start imports FastAPI, SQLAlchemy and Alembic on a busy machine
STOP_SECONDS = 10
SCENE = "community"
CREDENTIAL_SECONDS = 3600


@dataclass
class WalletService:
    url: str
    settings: Settings  # what the process runs with: tokens from its identity provider
    log: Path
    tokens: Tokens
    client: httpx2.Client

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def operator_token(self) -> str:
        return self.tokens.operator()["Authorization"].removeprefix("Bearer ")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_SECONDS)


@contextmanager
def wallet_service(workdir: Path, redis_url: str) -> Iterator[WalletService]:
    name = f"idcode_test_{RUN_ID}_wallet_{secrets.token_hex(3)}"
    database_url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    prefix = f"{REDIS_RUN_PREFIX}wallet-{secrets.token_hex(3)}:"
    keys_dir = workdir / "keys"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        IDCODE_ENVIRONMENT="development",
        IDCODE_DATABASE_URL=database_url,
        IDCODE_REDIS_URL=redis_url,
        IDCODE_REDIS_PREFIX=prefix,
        IDCODE_KEYS_DIR=str(keys_dir),
        IDCODE_DATA_DIR=str(workdir / "data"),
        IDCODE_DEMO_DATA="true",
        # Credentials of an hour: the wallet renews after a seventh of that (8.5 min), which
        # the page's clock can pass without its device tokens drifting beyond the 600 s the
        # service allows (a day would).
        IDCODE_DEVICE_CREDENTIAL_SECONDS=str(CREDENTIAL_SECONDS),
    )
    settings = Settings(
        environment="development",
        keys_dir=keys_dir,
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=prefix,
        device_credential_seconds=CREDENTIAL_SECONDS,
    )
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    process: subprocess.Popen[bytes] | None = None
    try:
        run_cli(env, workdir, "keys", "init")
        port = free_port()
        log = workdir / f"serve-{port}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "idcode.cli", "serve", "--port", str(port)],
                env=env,
                cwd=workdir,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"idcode serve did not start:\n{log.read_text(errors='replace')}")
            try:
                if httpx2.get(url + "/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        with httpx2.Client(base_url=url, timeout=30) as client:
            yield WalletService(url, settings, log, Tokens(settings), client)
    finally:
        if process is not None:
            _stop(process)
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class AdmitEveryValidCode(SceneAdapter):
    """A gate that admits every code that verifies, so that what the terminal decides is the
    verifier's verdict on the trust it synced (as tests/integration's terminals do)."""

    scene: ClassVar[str] = SCENE

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        return Decision.admit("entry")


class TerminalClock:
    """The terminal's clock: the test sets it to the phone's (the page's) time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@contextmanager
def terminal(
    service: WalletService, directory: Path, clock: TerminalClock
) -> Iterator[TerminalRuntime]:
    """A gate provisioned at the service (a site of its own), synced once, never started: the
    test syncs it (sync_once) and scans on it, and between the two it is offline."""
    private_key = identities.new_terminal_key()
    site = f"site-{uuid.uuid4().hex[:8]}"
    terminal_id = register(
        service.url,
        service.operator_token(),
        scene=SCENE,
        site=site,
        public_jwk=identities.public_jwk_of(private_key),
    )
    root = open_key_store(service.settings.keys_dir).root_public_jwk()
    identity = TerminalIdentity(terminal_id, SCENE, site, service.url, private_key, root)
    identities.save(directory, identity)
    runtime = TerminalRuntime(directory, identity, adapter=AdmitEveryValidCode, clock=clock)
    try:
        assert runtime.sync_once() == "bundle"
        yield runtime
    finally:
        runtime.stop()
