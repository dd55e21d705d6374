"""The Vault port: where real keys live. Two adapters: ciphertext in the store, or Secret Manager.

Contract: ``add`` returns ciphertexts the store must keep beside the key records (the store vault) or an empty
dict after writing the secrets elsewhere (Secret Manager); ``load`` returns ``{key_id: real key}`` for a group;
``remove`` forgets keys after the store deleted their records; ``drop_group`` forgets a whole group.
A vault never logs or raises with a secret in its message.
"""

from __future__ import annotations

from typing import Protocol


class Vault(Protocol):
    kind: str

    def add(self, group: str, secrets: dict[str, str]) -> dict[str, bytes]: ...

    def load(self, group: str) -> dict[str, str]: ...

    def remove(self, group: str, ids: list[str]) -> None: ...

    def drop_group(self, group: str) -> None: ...
