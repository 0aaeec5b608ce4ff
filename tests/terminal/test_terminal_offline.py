"""An offline terminal (issue 15, item 6 g): it stops promptly at the end of its input, and logs
that the service is unreachable once per change, not at every attempt; its lines can be JSON
(IDCODE_LOG_FORMAT=json)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from idcode.bundle import sign_bundle
from idcode.errors import ServiceError, ServiceUnreachable
from idcode.scenes import encode_scene_key, scene_subject_key
from idcode.statuslist import StatusList
from idcode.terminal import identity as identities
from idcode.terminal.client import TerminalClient
from idcode.terminal.identity import TerminalIdentity
from idcode.terminal.runtime import TerminalRuntime
from idcode.terminal.trust import TrustStore
from idcode.testing import TestIssuer

SCENE = "community"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing answers there
WAIT = 30.0  # seconds a test waits for a thread or a process before it fails, never a measure
FOREVER = 10_000.0  # a drain deadline no test reaches: only the behaviour under test ends it


def provisioned(directory: Path, issuer: TestIssuer) -> TerminalIdentity:
    """A community gate that holds a bundle ``issuer`` signed, as after a sync."""
    token = sign_bundle(
        issuer.root,
        version=1,
        issued_at=issuer.now,
        max_age=48 * 3600,
        keys=[issuer.key.public],
        status=StatusList(1024),
        scene={
            "scene": SCENE,
            "site": "test-site",
            "version": 1,
            "data": {},
            "subject_key": encode_scene_key(scene_subject_key(issuer.city_key, SCENE)),
        },
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    TrustStore(directory, issuer.root.public_jwk).save_bundle(token, None)
    identity = TerminalIdentity(
        str(uuid.uuid4()),
        SCENE,
        "test-site",
        UNREACHABLE,
        identities.new_terminal_key(),
        issuer.root.public_jwk,
    )
    identities.save(directory, identity)
    return identity


class Failing(TerminalClient):
    """A service that fails every upload with ``error``; ``calls`` counts the attempts."""

    def __init__(self, identity: TerminalIdentity, error: Exception) -> None:
        super().__init__(identity)
        self.error = error
        self.calls = 0
        self.called = threading.Event()

    def upload(self, events: list[dict[str, Any]]) -> dict[str, int]:
        self.calls += 1
        self.called.set()
        raise self.error


@contextmanager
def gate_with_one_pending_event(
    tmp_path: Path, error: Exception
) -> Iterator[tuple[TerminalRuntime, Failing]]:
    issuer = TestIssuer()
    identity = provisioned(tmp_path / "gate", issuer)
    client = Failing(identity, error)
    runtime = TerminalRuntime(
        tmp_path / "gate", identity, clock=lambda: float(issuer.now), client=client
    )
    try:
        assert runtime.scan(issuer.mint()).event_id
        assert runtime.journal.pending_count(identity.id) == 1
        yield runtime, client
    finally:
        runtime.stop()


def test_the_drain_gives_up_at_once_when_the_service_cannot_be_reached(tmp_path: Path) -> None:
    unreachable = ServiceUnreachable("cannot reach http://127.0.0.1:9/v1/events")
    with gate_with_one_pending_event(tmp_path, unreachable) as (runtime, client):
        assert runtime.drain(FOREVER) is False
        assert client.calls == 1
        assert runtime.journal.pending_count(runtime.identity.id) == 1  # kept for the next run


def test_the_drain_gives_up_at_once_when_the_service_refuses_the_terminal(
    tmp_path: Path,
) -> None:
    refused = ServiceError(403, "terminal_decommissioned")
    with gate_with_one_pending_event(tmp_path, refused) as (runtime, client):
        assert runtime.drain(FOREVER) is False
        assert client.calls == 1


def test_interrupt_ends_the_drains_backoff_wait(tmp_path: Path) -> None:
    # A passing failure (503) is tried again after a backoff pause; without the interrupt
    # this drain would go on for FOREVER seconds.
    unavailable = ServiceError(503, "database_unavailable")
    with gate_with_one_pending_event(tmp_path, unavailable) as (runtime, client):
        drained: list[bool] = []
        thread = threading.Thread(target=lambda: drained.append(runtime.drain(FOREVER)))
        thread.start()
        assert client.called.wait(WAIT)
        runtime.interrupt()
        thread.join(WAIT)
        assert not thread.is_alive()
        assert drained == [False]


def test_unreachability_is_logged_once_then_its_end_with_the_attempts_between(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = ServiceUnreachable("cannot reach http://127.0.0.1:9/v1/events")
    caplog.set_level(logging.INFO, logger="idcode.terminal")
    with gate_with_one_pending_event(tmp_path, unreachable) as (runtime, client):
        for _ in range(5):
            assert runtime.drain(FOREVER) is False
        assert client.calls == 5
        said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("upload: the service is unreachable")
        runtime.reachability.answered()
        runtime.reachability.answered()
    answered = [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
    assert answered == ["the service answers again, after 5 failed attempts"]


def test_an_offline_terminal_stops_at_the_end_of_its_input_and_logs_json_lines(
    tmp_path: Path,
) -> None:
    issuer = TestIssuer()
    directory = tmp_path / "gate"
    provisioned(directory, issuer)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    environment.update(PYTHONUNBUFFERED="1", IDCODE_LOG_FORMAT="json")
    # Before, it tried to upload once a second until --drain-timeout passed, logging each
    # time: with this timeout it would not finish within WAIT.
    ran = subprocess.run(
        [
            *(sys.executable, "-m", "idcode.cli", "terminal", "run", "--dir", str(directory)),
            *("--input", "stdin", "--drain-timeout", str(FOREVER)),
        ],
        env=environment,
        input=issuer.mint() + "\n",
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["admitted"] is False  # a stranger at a community gate
    lines = [json.loads(line) for line in ran.stderr.splitlines()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    unreachable = [line for line in lines if "unreachable" in line["message"]]
    assert len(unreachable) == 1 and unreachable[0]["level"] == "warning"
    assert any("1 events stay journaled" in line["message"] for line in lines)
