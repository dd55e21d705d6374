from __future__ import annotations

import os
import stat

import pytest

from gptload.cipher import Cipher, DecryptionFailed, fingerprint, load_master_key

SECRET = "AIza" + "Q" * 35


def test_generated_key_file_is_private_and_stable(tmp_path):
    k1 = load_master_key(None, str(tmp_path))
    mode = stat.S_IMODE(os.stat(tmp_path / "encryption.key").st_mode)
    assert mode == 0o600
    assert load_master_key(None, str(tmp_path)) == k1 and len(k1) == 32


def test_passphrase_derivation_is_deterministic():
    assert load_master_key("p" * 32, "/nonexistent") == load_master_key("p" * 32, "/elsewhere")
    assert load_master_key("p" * 32, "/x") != load_master_key("q" * 32, "/x")


def test_round_trip_and_binding_to_the_slot():
    c = Cipher(b"k" * 32)
    blob = c.encrypt(SECRET, "g1/abc")
    assert SECRET.encode() not in blob
    assert c.decrypt(blob, "g1/abc") == SECRET
    with pytest.raises(DecryptionFailed):
        c.decrypt(blob, "g1/other")  # a ciphertext moved to another key's row does not decrypt
    with pytest.raises(DecryptionFailed):
        Cipher(b"j" * 32).decrypt(blob, "g1/abc")
    assert c.encrypt(SECRET, "g1/abc") != blob  # fresh nonce each time


def test_fingerprint_is_stable_per_salt():
    assert fingerprint(b"s1", SECRET) == fingerprint(b"s1", SECRET)
    assert fingerprint(b"s1", SECRET) != fingerprint(b"s2", SECRET)
    assert len(fingerprint(b"s1", SECRET)) == 16
