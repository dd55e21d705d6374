from __future__ import annotations

import dataclasses

import pytest

from gptload import settings
from gptload.errors import ValidationFailed


def test_the_schema_is_derived_from_the_settings_fields():
    fields = {f.name: f.default for f in dataclasses.fields(settings.Settings)}
    assert [s.name for s in settings.SCHEMA] == list(fields)
    for spec in settings.SCHEMA:
        default = tuple(spec.default) if isinstance(spec.default, list) else spec.default
        assert fields[spec.name] == default, spec.name
        assert spec.description and isinstance(spec.default, spec.type)
    assert settings.Settings() == settings.Settings.resolve({})
    overridable = {s.name for s in settings.SCHEMA if s.group_overridable}
    assert "max_retries" in overridable and "proxy_keys" not in overridable


def test_validate_coerces_and_names_every_bad_field():
    assert settings.validate({"max_retries": 5, "request_timeout_seconds": 30}) == {
        "max_retries": 5,
        "request_timeout_seconds": 30.0,
    }
    with pytest.raises(ValidationFailed) as info:
        settings.validate(
            {
                "max_retries": -1,
                "nope": 1,
                "blacklist_threshold": 1.5,
                "log_failures_only": "yes",
                "proxy_keys": ["short"],
            }
        )
    assert set(info.value.details["fields"]) == {
        "max_retries",
        "nope",
        "blacklist_threshold",
        "log_failures_only",
        "proxy_keys",
    }


def test_group_overrides_only_where_allowed():
    with pytest.raises(ValidationFailed):
        settings.validate({"proxy_keys": ["global-key-123"]}, for_group=True)
    resolved = settings.Settings.resolve(
        {"max_retries": 5, "app_url": "https://x"}, {"max_retries": 1, "app_url": "ignored"}
    )
    assert resolved.max_retries == 1 and resolved.app_url == "https://x"
