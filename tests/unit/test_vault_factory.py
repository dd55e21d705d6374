"""open_vault: a missing cipher for the store vault is a configuration error, not an assertion."""

from __future__ import annotations

import pytest

from gptload.cipher import Cipher
from gptload.config import Config
from gptload.errors import ConfigError
from gptload.vault import open_vault
from gptload.vault.store_vault import StoreVault


def test_store_vault_without_a_cipher_is_a_config_error(sqlite_store, tmp_path):
    config = Config.from_env({"AUTH_KEY": "admin-key-123", "DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="ENCRYPTION_KEY"):
        open_vault(config, sqlite_store, None)


def test_store_vault_with_a_cipher(sqlite_store, tmp_path):
    config = Config.from_env({"AUTH_KEY": "admin-key-123", "DATA_DIR": str(tmp_path)})
    assert isinstance(open_vault(config, sqlite_store, Cipher(bytes(32))), StoreVault)


def _services(tmp_path, **env):
    from gptload.app import build_services

    return build_services(Config.from_env({"AUTH_KEY": "admin-key-123", "DATA_DIR": str(tmp_path), **env}))


def test_build_services_derives_the_same_key_from_encryption_key_on_every_start(tmp_path):
    """The key is derived on a thread beside the store's opening: a key written by one start reads back on the
    next, and a different ENCRYPTION_KEY cannot read it."""
    passphrase = "a-passphrase-of-thirty-two-characters!"
    first = _services(tmp_path, ENCRYPTION_KEY=passphrase)
    try:
        first.admin.create_group({"name": "g", "upstreams": [{"url": "https://upstream.example"}]})
        first.admin.add_keys("g", {"keys": "AIza" + "k" * 35})
    finally:
        first.shutdown()
    again = _services(tmp_path, ENCRYPTION_KEY=passphrase)
    try:
        assert list(again.vault.load("g").values()) == ["AIza" + "k" * 35]
    finally:
        again.shutdown()
    other = _services(tmp_path, ENCRYPTION_KEY="another-passphrase-of-32-characters!!")
    try:
        assert other.vault.load("g") == {}
    finally:
        other.shutdown()


def test_build_services_reports_a_broken_key_file_as_a_config_error(tmp_path):
    (tmp_path / "encryption.key").write_text("c2hvcnQ=\n")  # 5 bytes, not 32
    with pytest.raises(ConfigError, match="32-byte key"):
        _services(tmp_path)
