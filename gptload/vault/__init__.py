"""Vaults behind one port (``base.Vault``)."""

from __future__ import annotations

from gptload.cipher import Cipher
from gptload.config import Config
from gptload.store.base import Store
from gptload.vault.base import Vault

__all__ = ["Vault", "open_vault"]


def open_vault(config: Config, store: Store, cipher: Cipher | None) -> Vault:
    if config.vault == "secretmanager":
        from gptload.vault.secret_manager_vault import SecretManagerVault

        return SecretManagerVault.from_config(config)
    from gptload.vault.store_vault import StoreVault

    assert cipher is not None, "the store vault needs ENCRYPTION_KEY (or the generated key file)"
    return StoreVault(store, cipher)
