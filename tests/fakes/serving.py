"""What every fake served on a real socket has in common: used as a context manager, and its port and URL."""

from __future__ import annotations

import socket
import threading
from typing import Any, Self


class Served:
    """Mixin for a fake served by a threading socketserver: ``_serve`` starts it, ``_close`` stops it and cuts the
    connections still open (kept in ``_conns`` under ``_lock``); ``host`` and ``_server`` (None when stopped)."""

    host: str
    _server: Any
    _thread: threading.Thread | None
    _conns: set[socket.socket]
    _lock: Any

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _serve(self, server: Any, name: str) -> Self:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        self._thread.start()
        return self

    def _close(self) -> None:
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, f"{type(self).__name__} not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
