"""Group commit of identifications: one thread records the identifications pending at a time
in one database transaction, and each request is answered after its group committed.

Every identification needs the same three statements (read the party, consent and card;
spend the consent; insert the disclosure record) and a commit. Run one per request on the
thread pool, each paid a session, a connection checkout with its ping, ``BEGIN`` and
``COMMIT``, and three thread-pool hand-offs: most of an identification's CPU
(bench/README.md). Here one thread takes every identification waiting when it is free, runs
their statements one after the other in one transaction and commits once.

Why this keeps "a disclosure happened if and only if it is recorded" (docs/identity.md): a
request gets its attributes only from the future this thread resolves after ``COMMIT``
returned; when the transaction fails, every request of the group gets ``RecordingFailed``
and nothing is disclosed. A refusal writes nothing (``identification.identify`` diagnoses it
before its first write), so refused and answered identifications share a group safely. The
consent is still spent by a conditional ``UPDATE`` in the transaction that writes the record:
two presentations of one code in one group are seen in order (the second finds it used), and
across replicas PostgreSQL's row lock decides as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from idcode.errors import RecordingFailed
from idcode.service import identification
from idcode.service.identification import Presentation
from idcode.service.pii import PersonalDataVault

log = logging.getLogger("idcode.service.recorder")

#: The most identifications in one transaction: bounds how long a group holds its locks.
MAX_GROUP = 64


@dataclass(frozen=True, slots=True)
class _Pending:
    presented: Presentation
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[dict[str, Any]]


_STOP = None


class IdentificationRecorder:
    """The one thread that records identifications in groups (see the module's docstring)."""

    def __init__(self, engine: Engine, vault: PersonalDataVault) -> None:
        self._engine = engine
        self._vault = vault
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="idcode-identification-recorder", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Record what is pending, then end the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    async def identify(self, presented: Presentation) -> dict[str, Any]:
        """Record ``presented`` with the others pending; its answer once committed, or
        ConsentRefused (nothing written), or RecordingFailed (nothing recorded)."""
        if self._thread is None:
            raise RecordingFailed(unavailable=True)  # not started, or stopping
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._queue.put(_Pending(presented, loop, future))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    break
                if pending is _STOP:
                    stopping = True
                    break
                group.append(pending)
            # The thread must outlive any error: a dead recorder would leave every later
            # identification waiting forever.
            try:
                self._record(group)
            except Exception as exc:
                log.error("identification recorder: %s", type(exc).__name__)
                for pending in group:  # those already settled keep their outcome
                    _settle(pending, RecordingFailed(unavailable=False))
        # Anything queued after the stop is answered, not left waiting.
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                break
            if pending is not _STOP:
                _settle(pending, RecordingFailed(unavailable=True))

    def _record(self, pendings: list[_Pending]) -> None:
        outcomes: list[dict[str, Any] | Exception] = []
        now = datetime.now(UTC)
        try:
            with self._engine.begin() as connection:
                outcomes.extend(
                    identification.identify(
                        connection, self._vault, [p.presented for p in pendings], now
                    )
                )
        except SQLAlchemyError as exc:
            # The type only: a driver's message may quote a statement's parameters.
            log.error("identifications not recorded, database: %s", type(exc).__name__)
            outcomes = [RecordingFailed(unavailable=True) for _ in pendings]
        except Exception as exc:
            log.error("identifications not recorded: %s", type(exc).__name__)
            outcomes = [RecordingFailed(unavailable=False) for _ in pendings]
        for pending, outcome in zip(pendings, outcomes, strict=True):
            _settle(pending, outcome)


def _settle(pending: _Pending, outcome: dict[str, Any] | Exception) -> None:
    """Resolve ``pending``'s future on its event loop (futures are not thread-safe)."""

    def settle() -> None:
        if pending.future.done():  # the request was cancelled (its client went away)
            return
        if isinstance(outcome, Exception):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits any more
        pending.loop.call_soon_threadsafe(settle)
