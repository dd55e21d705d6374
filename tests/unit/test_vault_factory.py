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
