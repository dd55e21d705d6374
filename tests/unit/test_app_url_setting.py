"""The ``app_url`` setting is the base URL handed to clients (upload URLs, /api/integration/info): only an absolute
http(s) URL (or empty) is accepted, so a typo is refused with a clear error instead of breaking clients' uploads."""

from __future__ import annotations

import pytest

from gptload import settings
from gptload.errors import ValidationFailed


@pytest.mark.parametrize(
    "value", ["javascript:alert(1)//", "gptload.example.com", "ftp://x.example", "https://", "https://a b.example"]
)
def test_a_base_url_that_is_not_http_is_refused_with_the_field_named(value):
    with pytest.raises(ValidationFailed) as caught:
        settings.validate({"app_url": value})
    assert "app_url" in caught.value.details["fields"]


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("", ""),
        ("  https://gptload.example.com/  ", "https://gptload.example.com"),
        ("http://10.0.0.5:8080/gptload", "http://10.0.0.5:8080/gptload"),
    ],
)
def test_an_http_base_url_or_empty_is_kept_without_the_trailing_slash(value, kept):
    assert settings.validate({"app_url": value}) == {"app_url": kept}


def test_a_stored_bad_base_url_is_ignored_for_the_default():
    assert settings.Settings.resolve({"app_url": "javascript:alert(1)"}).app_url == ""
