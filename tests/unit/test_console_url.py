"""The console address ``python main.py`` prints at start-up."""

from __future__ import annotations

import pytest

from main import console_url


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8080, "http://127.0.0.1:8080/"),
        ("0.0.0.0", 9000, "http://127.0.0.1:9000/"),  # a wildcard address is opened through the loopback one
        ("::", 8080, "http://[::1]:8080/"),
        ("::1", 8080, "http://[::1]:8080/"),
        ("localhost", 8081, "http://localhost:8081/"),
    ],
)
def test_console_url(host, port, url):
    assert console_url(host, port) == url
