"""A real ``idcode serve`` for the service benchmarks (issuance.py, soak.py, identify.py).

A PostgreSQL database and a Redis key prefix of its own, a temporary key store, cards
enrolled directly in the database, one citizen ID token per card from the development
identity provider, and the server process; all removed on the way out, also on Ctrl-C,
SIGTERM or an error. Relying parties are registered through the operator API.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from idcode.keys import keys_from_jwks
from idcode.profiles import PROFILES, ProfileName
from idcode.service.auth import dev_token
from idcode.service.cards import NewCard, enrol
from idcode.service.database import make_engine, make_session_factory
from idcode.service.pii import vault_for
from idcode.service.settings import Settings
from idcode.testing import random_id_number
from idcode.verifier import Trust, verify

POSTGRES_ADMIN_URL = os.environ.get(
    "IDCODE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("IDCODE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STARTUP_SECONDS = 60
# Raised, not lifted: the per-citizen counter stays on the measured path.
RATE_LIMIT_PER_MINUTE = 1_000_000
SERVE = ("-m", "idcode.cli")  # how the server process runs the idcode CLI


class BenchError(Exception):
    """The benchmark cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class Service:
    """A prepared, not yet running service: its environment and its citizens' tokens."""

    workdir: Path
    env: dict[str, str]
    settings: Settings
    database_url: str
    tokens: list[str]


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int


@dataclass(frozen=True)
class RelyingParty:
    """A relying party registered through the API, as its counter runs: id and private key."""

    id: str
    private_key: Ed25519PrivateKey
    purpose: str
    attributes: tuple[str, ...]

    def consent_body(self) -> bytes:
        """The body of ``POST /v1/codes`` that consents to this party's identification."""
        disclose = {"to": self.id, "attributes": list(self.attributes), "purpose": self.purpose}
        return json.dumps({"disclose": disclose}, separators=(",", ":")).encode()


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so ``finally`` clean-up runs as on Ctrl-C."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    name = f"idcode_bench_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise BenchError(
            f"PostgreSQL is not reachable at {admin_url} ({exc}); set IDCODE_TEST_POSTGRES_URL"
        ) from None
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_redis_prefix(url: str) -> Iterator[str]:
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise BenchError(
            f"Redis is not reachable at {url} ({exc}); set IDCODE_TEST_REDIS_URL"
        ) from None
    prefix = f"idcode-bench-{os.getpid()}-{secrets.token_hex(3)}:"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 (our server)
        url, data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (our server)
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextmanager
def running_server(
    env: dict[str, str], workdir: Path, launcher: Sequence[str] = SERVE
) -> Iterator[Server]:
    """``idcode serve`` on a free loopback port, healthy; stopped on the way out.
    ``launcher``: the interpreter arguments that run the idcode CLI (a wrapper script may
    stand in for ``-m idcode.cli``)."""
    port = free_port()
    log = workdir / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, *launcher, "serve", "--port", str(port), "--no-access-log"],
            env=env,
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise BenchError(f"idcode serve did not become healthy:\n{tail}")
            try:
                if http("GET", base_url + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        yield Server(base_url, process.pid)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_cli(env: dict[str, str], workdir: Path, *args: str) -> None:
    command = [sys.executable, "-m", "idcode.cli", *args]
    completed = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True)
    if completed.returncode != 0:
        raise BenchError(f"{shlex.join(command)} failed:\n{completed.stderr}")


def enrol_cards(settings: Settings, count: int) -> list[str]:
    """Enrol ``count`` cards directly in the database; returns their ID numbers."""
    engine = make_engine(settings.sqlalchemy_url)
    vault = vault_for(settings)
    id_numbers: list[str] = []
    taken: set[str] = set()
    try:
        with make_session_factory(engine)() as session:
            while len(id_numbers) < count:
                id_number = random_id_number()
                if id_number in taken:
                    continue
                enrol(session, vault, NewCard(id_number=id_number, name="测试"), "bench")
                id_numbers.append(id_number)
                taken.add(id_number)
            session.commit()
    finally:
        engine.dispose()
    return id_numbers


def citizen_tokens(settings: Settings, id_numbers: Sequence[str], ttl: int) -> list[str]:
    """One development-IdP ID token per citizen, valid for ``ttl`` seconds."""
    return [
        dev_token(settings, f"citizen-{n}", id_number=id_number, ttl=ttl)
        for n, id_number in enumerate(id_numbers)
    ]


def prepare_service(
    cleanup: ExitStack,
    cards: int,
    token_ttl: int = 3600,
    source: Path | None = None,
    profile: ProfileName = ProfileName.STANDARD,
) -> Service:
    """Scratch database (migrated), Redis prefix and key store, ``cards`` enrolled cards and
    their citizens' tokens; each removed when ``cleanup`` closes. The per-citizen rate limit
    is raised to RATE_LIMIT_PER_MINUTE. ``source``: another checkout of idcode (a baseline)
    whose code the service's commands and server run instead (first on PYTHONPATH).
    ``profile``: the crypto profile (IDCODE_CRYPTO_PROFILE) of the service, its key store
    created under it (an SM2 issuer key for gm)."""
    workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="idcode-")))
    database_url = cleanup.enter_context(scratch_database(POSTGRES_ADMIN_URL))
    prefix = cleanup.enter_context(scratch_redis_prefix(REDIS_URL))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    env.update(
        IDCODE_ENVIRONMENT="development",
        IDCODE_DATABASE_URL=database_url,
        IDCODE_REDIS_URL=REDIS_URL,
        IDCODE_REDIS_PREFIX=prefix,
        IDCODE_KEYS_DIR=str(workdir / "keys"),
        IDCODE_DATA_DIR=str(workdir / "data"),
        IDCODE_DEMO_DATA="false",
        IDCODE_RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT_PER_MINUTE),
    )
    if profile is not ProfileName.STANDARD:  # a baseline from before profiles never sees it
        env["IDCODE_CRYPTO_PROFILE"] = profile.value
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    for command in (["db", "upgrade"], ["keys", "init"]):
        run_cli(env, workdir, *command)
    settings = Settings(
        environment="development",
        keys_dir=workdir / "keys",
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        demo_data=False,
        crypto_profile=profile,
    )
    tokens = citizen_tokens(settings, enrol_cards(settings, cards), token_ttl)
    return Service(workdir, env, settings, database_url, tokens)


def check_issuance(base_url: str, token: str, profile: ProfileName = ProfileName.STANDARD) -> None:
    """One code through the API, verified offline with the server's JWKS and the
    algorithms of ``profile``, before timing."""
    status, body = http(
        "POST", base_url + "/v1/codes", {"Authorization": f"Bearer {token}", "Content-Length": "0"}
    )
    if status != 200:
        raise BenchError(f"POST /v1/codes answered {status}: {body[:300]!r}")
    jwks = json.loads(http("GET", base_url + "/.well-known/jwks.json")[1])
    trust = Trust.of(
        keys_from_jwks(jwks), prefix="WH1:", algorithms=PROFILES[profile].default_code_algorithms
    )
    verdict = verify(json.loads(body)["code"], trust, int(time.time()))
    if not verdict.valid:
        raise BenchError(f"the issued code does not verify: {verdict}")


def register_relying_party(
    base_url: str,
    settings: Settings,
    attributes: Sequence[str] = ("name", "id_number", "residency"),
    purpose: str = "registration",
) -> RelyingParty:
    """A service-hall relying party with an Ed25519 key, registered by an operator."""
    key = Ed25519PrivateKey.generate()
    operator = dev_token(settings, "bench-operator", roles=(settings.operator_role,))
    new = {
        "name": "bench service hall",
        "sector": "government",
        "purposes": [purpose],
        "attributes": list(attributes),
        "public_jwk": OKPAlgorithm.to_jwk(key.public_key(), as_dict=True),
    }
    status, body = http(
        "POST",
        base_url + "/v1/relying-parties",
        {"Authorization": f"Bearer {operator}", "Content-Type": "application/json"},
        json.dumps(new).encode(),
    )
    if status != 201:
        raise BenchError(f"POST /v1/relying-parties answered {status}: {body[:300]!r}")
    return RelyingParty(json.loads(body)["id"], key, purpose, tuple(attributes))


def check_consent_issuance(base_url: str, token: str, party: RelyingParty) -> None:
    """One consent code through the API before timing: it names the party."""
    status, body = http(
        "POST",
        base_url + "/v1/codes",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        party.consent_body(),
    )
    if status != 200:
        raise BenchError(f"POST /v1/codes with consent answered {status}: {body[:300]!r}")
    disclosing = json.loads(body).get("disclose") or {}
    if disclosing.get("to") != party.id or disclosing.get("attributes") != list(party.attributes):
        raise BenchError(f"the consent code does not disclose as asked: {disclosing}")


def server_versions(database_url: str, redis_url: str) -> str:
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    postgres = row[0] if row else "?"
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        info: dict[str, Any] = client.info("server")
    finally:
        client.close()
    return f"PostgreSQL {postgres}, Redis {info.get('redis_version', '?')}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
