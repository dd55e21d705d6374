"""Secrets at rest: AES-256-GCM under a key derived from ENCRYPTION_KEY, and key fingerprints.

- ``load_master_key``: the passphrase (32+ characters) goes through scrypt; without one, a random key is generated
  once into ``DATA_DIR/encryption.key`` with mode 0600 (the embedded default).
- ``Cipher``: AES-GCM with a random 96-bit nonce; the associated data binds a ciphertext to its slot
  (``group/key_id``) so a ciphertext copied to another key's row fails to decrypt.
- ``fingerprint``: HMAC-SHA256 of a key under a per-deployment salt; its first 16 hex digits are the key id.
  Keys carry ~209 bits of entropy, so the id reveals nothing even if the salt leaks.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gptload.errors import ConfigError

_SCRYPT_SALT = b"gptload/encryption-key/v1"
_VERSION = b"\x01"
KEY_FILE = "encryption.key"


def load_master_key(passphrase: str | None, data_dir: str) -> bytes:
    """Return 32 key bytes from the passphrase, or from (a newly generated) ``data_dir/encryption.key``."""
    if passphrase:
        return hashlib.scrypt(passphrase.encode(), salt=_SCRYPT_SALT, n=2**14, r=8, p=1, dklen=32)
    path = Path(data_dir) / KEY_FILE
    if path.exists():
        with contextlib.suppress(OSError):  # in case it was copied or restored with a wider mode
            os.chmod(path, 0o600)
        raw = base64.b64decode(path.read_text().strip())
        if len(raw) != 32:
            raise ConfigError(f"{path} does not hold a 32-byte key")
        return raw
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(key).decode() + "\n")
    return key


class DecryptionFailed(Exception):
    """A ciphertext did not authenticate: wrong ENCRYPTION_KEY, or a row tampered with."""


class Cipher:
    def __init__(self, master_key: bytes) -> None:
        self._aead = AESGCM(hmac.new(master_key, b"aes-gcm", hashlib.sha256).digest())

    def encrypt(self, plaintext: str, slot: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), slot.encode())

    def decrypt(self, blob: bytes, slot: str) -> str:
        if not blob or blob[:1] != _VERSION:
            raise DecryptionFailed("unknown ciphertext format")
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], slot.encode()).decode()
        except InvalidTag:
            raise DecryptionFailed("ciphertext does not authenticate (wrong ENCRYPTION_KEY?)") from None


def fingerprint(salt: bytes, secret: str) -> str:
    """Stable id of a secret: the first 16 hex digits of HMAC-SHA256(salt, secret)."""
    return hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()[:16]


def digest(salt: bytes, secret: str) -> bytes:
    """Full HMAC digest, for constant-time-safe lookups of presented proxy keys."""
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()
