"""A small TCP proxy for fault injection: put it between a client and a service to delay,
cut or reset connections while requests are in flight.

    with FaultProxy(("127.0.0.1", 8000)) as proxy:
        proxy.delay = 0.05          # every answer arrives 50 ms late
        ... talk to f"http://127.0.0.1:{proxy.port}" ...
        proxy.refuse = True         # new connections are reset at once
        proxy.cut_all()             # open connections are cut now

Threads and blocking sockets: a test proxy carries a handful of connections.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.delay = 0.0  # seconds added before each chunk the service sends back
        self.refuse = False  # reset new connections instead of forwarding them
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so that the accept loop notices the end promptly
        self.port: int = self._listener.getsockname()[1]
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self.cut_all()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_all(self) -> None:
        """Reset every open connection (RST, as a dropped network or a killed peer does)."""
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            _reset(connection)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            if self.refuse:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._connections.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, delay: float | None) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                pause = self.delay if delay is None else delay
                if pause:
                    time.sleep(pause)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with self._lock:
                    self._connections.discard(end)
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()


def _reset(connection: socket.socket) -> None:
    """Close with RST rather than FIN: SO_LINGER with a zero timeout."""
    try:
        connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        connection.close()
    except OSError:
        pass
