"""The embedded store's files are private: DATA_DIR 0700; the database, its WAL and shared-memory files (proxy-key
digests, the salt) and the generated encryption key 0600, whatever the umask, and also for files an older version
left with wider modes."""

from __future__ import annotations

import os
import stat

import pytest

from tests.fakes.fake_gemini import make_key
from tests.unit.admin_client import UNREACHABLE, AdminClient

FILES = ("gptload.db", "gptload.db-wal", "gptload.db-shm", "encryption.key")


@pytest.fixture
def open_umask():
    old = os.umask(0o022)  # the usual default, under which SQLite creates 0644 files
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def write_something(client: AdminClient) -> None:
    body = {"name": "g", "upstreams": [{"url": UNREACHABLE}], "proxy_keys": ["proxy-key-0001"]}
    assert client.open("POST", "/api/groups", body=body).status_code == 201
    assert client.open("POST", "/api/groups/g/keys", body={"keys": make_key(1)}).get_json()["added"] == 1


def modes_of(data) -> dict[str, int]:
    return {"dir": mode(data), **{name: mode(data / name) for name in FILES}}


PRIVATE = {"dir": 0o700, **dict.fromkeys(FILES, 0o600)}


def test_new_data_dir_and_files_are_private(tmp_path, open_umask):
    data = tmp_path / "data"
    client = AdminClient(data)
    try:
        write_something(client)
        assert modes_of(data) == PRIVATE  # while running: -wal and -shm exist
    finally:
        client.close()


def test_files_left_open_by_an_older_version_are_made_private(tmp_path, open_umask):
    data = tmp_path / "data"
    client = AdminClient(data)
    write_something(client)
    client.close()
    os.chmod(data, 0o755)
    for name in ("gptload.db", "encryption.key"):
        os.chmod(data / name, 0o644)
    for name in ("gptload.db-wal", "gptload.db-shm"):  # as a crashed older process leaves them
        (data / name).touch()
        os.chmod(data / name, 0o644)
    client = AdminClient(data)
    try:
        assert client.open("PUT", "/api/settings", body={"max_retries": 2}).status_code == 200
        assert modes_of(data) == PRIVATE
    finally:
        client.close()


def test_a_shared_sticky_directory_is_left_alone(tmp_path, open_umask):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: making it 0700 would lock everyone else out
    client = AdminClient(shared)
    try:
        write_something(client)
        assert mode(shared) == 0o1777
        assert {name: mode(shared / name) for name in FILES} == dict.fromkeys(FILES, 0o600)
    finally:
        client.close()
