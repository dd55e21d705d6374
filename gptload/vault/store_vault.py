"""Store vault (``VAULT=store``): AES-GCM ciphertext kept in the store beside each key record."""

from __future__ import annotations

import logging

from gptload.cipher import Cipher, DecryptionFailed
from gptload.store.base import Store

log = logging.getLogger(__name__)


class StoreVault:
    kind = "store"

    def __init__(self, store: Store, cipher: Cipher) -> None:
        self._store = store
        self._cipher = cipher

    def add(self, group: str, secrets: dict[str, str]) -> dict[str, bytes]:
        return {key_id: self._cipher.encrypt(secret, f"{group}/{key_id}") for key_id, secret in secrets.items()}

    def load(self, group: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key_id, blob in self._store.get_secrets(group).items():
            try:
                out[key_id] = self._cipher.decrypt(blob, f"{group}/{key_id}")
            except DecryptionFailed as exc:
                log.error("key %s of group %s cannot be decrypted: %s", key_id, group, exc)
        return out

    def remove(self, group: str, ids: list[str]) -> None:
        """Nothing to do: the store deletes the ciphertext with the key record."""

    def drop_group(self, group: str) -> None:
        """Nothing to do: the store deletes the ciphertext with the group's keys."""
