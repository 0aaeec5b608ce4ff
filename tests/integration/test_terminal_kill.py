"""A terminal killed with SIGKILL at random points while scanning and uploading loses no
event and duplicates none.

Each round starts a real ``idcode terminal run`` process reading scans from stdin, feeds it
codes, and kills it at a random moment: while it starts, decides, journals or uploads (tiny
batches and a short upload interval keep an upload in flight most of the time). After the
last round the terminal runs to the end of its input and drains its journal. Then every
decision it printed (acted on) is in the journal, and the service holds exactly the
journal's events, each once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from idcode.issuer import mint_code
from idcode.keystore import open_key_store
from idcode.scenes import subject_of
from idcode.service.settings import Settings
from idcode.terminal import identity as identities
from idcode.terminal.client import register
from idcode.terminal.journal import Journal
from idcode.testing import random_card
from tests.faultproxy import FaultProxy
from tests.live import LiveService, live_service

KILLS = 24
PER_ROUND = 45  # scans offered to each terminal process (one every 5 ms)
SITE = "kill-court"
FIRST_DECISION_SECONDS = 60  # a cold start on a busy machine


def _codes(settings: Settings, count: int) -> tuple[list[str], list[bytes]]:
    """Codes the service's issuer key signed, valid for an hour; a few are scanned twice."""
    key = open_key_store(settings.keys_dir).signing_key(int(time.time()))
    now = int(time.time())
    lines, pseudonyms = [], []
    for number in range(count):
        card = random_card(status_index=number)
        code, _ = mint_code(card, key, prefix=settings.code_prefix, now=now, ttl=3600)
        lines.append(code)
        pseudonyms.append(card.pseudonym)
        if number % 7 == 0:
            lines.append(code)  # a replay
        if number % 11 == 0:
            lines.append("WH1:NOT-A-CODE")
    return lines, pseudonyms


def _provision(service: LiveService, directory: Path, url: str) -> identities.TerminalIdentity:
    private_key = identities.new_terminal_key()
    operator = service.tokens.operator()["Authorization"].removeprefix("Bearer ")
    terminal_id = register(
        service.url,
        operator,
        scene="community",
        site=SITE,
        public_jwk=identities.public_jwk_of(private_key),
    )
    identity = identities.TerminalIdentity(
        terminal_id, "community", SITE, url, private_key, service.root_jwk
    )
    identities.save(directory, identity)
    return identity


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


class Round:
    """One terminal process: a feeder thread writes scans, a reader collects decisions."""

    def __init__(
        self, command: list[str], env: dict[str, str], lines: list[str], log: Path, *, last: bool
    ) -> None:
        self.lines = lines
        self.last = last
        self.decided: list[dict[str, Any]] = []
        self.first_decision = threading.Event()
        self.log = log
        with log.open("a") as stderr:
            self.process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._threads = [
            threading.Thread(target=self._feed, args=(self.process.stdin,), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _feed(self, stdin: IO[str]) -> None:
        try:
            for line in self.lines:
                stdin.write(line + "\n")
                stdin.flush()
                time.sleep(0.005)
            if self.last:
                stdin.close()  # the end of the input: the terminal drains and exits
        except (BrokenPipeError, ValueError, OSError):
            pass  # killed

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            try:
                self.decided.append(json.loads(line))
            except ValueError:
                continue  # the torn last line of a killed process
            self.first_decision.set()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=30)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a write buffered for a killed process
                    stream.close()


def test_terminal_killed_at_random_points_loses_no_event_and_duplicates_none(
    service_settings: Settings, tmp_path: Path
) -> None:
    chance = random.Random()
    seed = chance.randrange(2**32)
    chance.seed(seed)
    with live_service(service_settings) as service, FaultProxy(service.address) as proxy:
        # Every answer comes 30 ms late, so that an upload is in flight for much of the run
        # and a kill often lands between the service storing a batch and the terminal
        # marking it uploaded.
        proxy.delay = 0.03
        directory = tmp_path / "terminal"
        identity = _provision(service, directory, proxy.url)
        lines, pseudonyms = _codes(service_settings, 1000)
        assert len(lines) > (KILLS + 1) * PER_ROUND
        residents = [subject_of(service.subject_key("community"), p) for p in pseudonyms[::2]]
        response = service.client.put(
            f"/v1/scenes/community/{SITE}",
            json={"residents": residents},
            headers=service.tokens.operator(),
        )
        assert response.status_code == 200, response.text

        env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
        env.update(PYTHONUNBUFFERED="1", IDCODE_ENVIRONMENT="development")
        command = [
            sys.executable,
            "-m",
            "idcode.cli",
            "terminal",
            "run",
            "--dir",
            str(directory),
            "--input",
            "stdin",
            "--sync-interval",
            "0.5",
            "--upload-interval",
            "0.05",
            "--batch-size",
            "3",
            "--drain-timeout",
            "60",
        ]
        log = tmp_path / "terminal.log"
        printed: list[str] = []
        kills, position = 0, 0
        pending_at_kill: list[int] = []  # journaled, not yet uploaded when it was killed
        stored_at_kill: list[int] = []
        for _ in range(KILLS):
            round_ = Round(command, env, lines[position : position + PER_ROUND], log, last=False)
            try:
                if chance.random() < 0.2:  # sometimes while it is still starting up
                    time.sleep(chance.uniform(0.05, 0.8))
                else:
                    if not round_.first_decision.wait(FIRST_DECISION_SECONDS):
                        round_.process.send_signal(signal.SIGUSR1)
                        time.sleep(1)
                    assert round_.first_decision.is_set(), (
                        f"no decision from the terminal (seed {seed}):\n{_tail(log)}"
                    )
                    time.sleep(chance.uniform(0.0, 0.6))
                assert round_.process.poll() is None, f"the terminal exited early (seed {seed})"
                round_.process.send_signal(signal.SIGKILL)
                kills += 1
            finally:
                round_.process.kill()
                round_.process.wait(timeout=30)
                round_.join()
            printed += [decision["event_id"] for decision in round_.decided]
            # Scans not yet decided are lost, as a power cut loses them at a real gate (the
            # holder scans again); the next round gets new ones.
            position += PER_ROUND
            journal = Journal(directory / "journal.sqlite3")
            try:
                pending_at_kill.append(journal.pending_count(identity.id))
            finally:
                journal.close()
            stored_at_kill.append(len(service.events(identity.id)))

        final = Round(command, env, lines[position:], log, last=True)
        try:
            assert final.process.wait(timeout=180) == 0, f"the last run failed (seed {seed})"
        finally:
            final.process.kill()
            final.join()
        printed += [decision["event_id"] for decision in final.decided]

        journal = Journal(directory / "journal.sqlite3")
        try:
            journaled = [entry.event_id for entry in journal.entries(identity.id)]
            pending = journal.pending_count(identity.id)
        finally:
            journal.close()
        stored = [event["event_id"] for event in service.events(identity.id)]

    assert kills >= 20
    # Kills came while uploads were still behind the journal, and uploads happened between
    # kills, not only in the last run.
    assert any(pending_at_kill), pending_at_kill
    assert stored_at_kill[-1] > 0, stored_at_kill
    assert len(set(printed)) == len(printed), f"an event was decided twice (seed {seed})"
    assert set(printed) <= set(journaled), f"acted on but not journaled (seed {seed})"
    assert pending == 0, f"{pending} events were never uploaded (seed {seed})"
    assert len(set(journaled)) == len(journaled)
    assert len(set(stored)) == len(stored), f"the service holds duplicates (seed {seed})"
    assert sorted(stored) == sorted(journaled), f"journal and service differ (seed {seed})"
    assert len(journaled) > KILLS  # decisions were really made between the kills
