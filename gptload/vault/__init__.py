"""Vaults behind one port (``base.Vault``)."""

from __future__ import annotations

from gptload.cipher import Cipher
from gptload.config import Config
from gptload.errors import ConfigError
from gptload.store.base import Store
from gptload.vault.base import Vault

__all__ = ["Vault", "open_vault"]


def open_vault(config: Config, store: Store, cipher: Cipher | None) -> Vault:
    if config.vault == "secretmanager":
        from gptload.vault.secret_manager_vault import SecretManagerVault

        return SecretManagerVault.from_config(config)
    from gptload.vault.store_vault import StoreVault

    if cipher is None:
        raise ConfigError("VAULT=store needs a cipher: ENCRYPTION_KEY or the generated key file in DATA_DIR")
    return StoreVault(store, cipher)
