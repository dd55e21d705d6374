"""What every fake served on a real socket has in common: used as a context manager, and its port and URL."""

from __future__ import annotations

from typing import Any, Self


class Served:
    """Mixin for a fake with ``start()``/``stop()``, a ``host`` and a socketserver in ``_server`` (None when
    stopped)."""

    host: str
    _server: Any

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

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
