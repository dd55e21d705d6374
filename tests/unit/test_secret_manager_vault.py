"""SecretManagerVault: exact API calls (autospec of the real client) and behaviour (faithful in-memory fake)."""

from __future__ import annotations

import json
import logging
from unittest import mock

import pytest
from google.api_core import exceptions
from google.cloud import secretmanager
from google.cloud.secretmanager import SecretManagerServiceClient

from gptload.errors import StoreUnavailable
from gptload.vault.secret_manager_vault import SecretManagerVault
from tests.fakes.secret_manager import MAX_PAYLOAD, FakeSecretManager

PROJECT = "my-proj"
HEAD = "projects/my-proj/secrets/gptload-g1-keys-0"


def real_key(i: int) -> str:
    return f"AIzaSy{i:033d}"  # 39 characters, like a Gemini key


def keys(n: int, start: int = 0) -> dict[str, str]:
    return {f"fp{i:06d}": real_key(i) for i in range(start, start + n)}


# -- (a) exact calls, against the real client's signatures ---------------------------------------------------
@pytest.fixture
def spec_client(mocker):
    return mocker.create_autospec(SecretManagerServiceClient, instance=True)


def test_first_add_creates_the_secret_and_one_version(spec_client):
    spec_client.access_secret_version.side_effect = exceptions.NotFound("no secret")
    spec_client.add_secret_version.return_value = secretmanager.SecretVersion(name=f"{HEAD}/versions/1")
    vault = SecretManagerVault(spec_client, PROJECT)

    assert vault.add("g1", {"fp1": "AIza-secret-1"}) == {}

    spec_client.access_secret_version.assert_called_once_with(
        request={"name": f"{HEAD}/versions/latest"}, retry=mock.ANY, timeout=mock.ANY
    )
    spec_client.create_secret.assert_called_once_with(
        request={
            "parent": "projects/my-proj",
            "secret_id": "gptload-g1-keys-0",
            "secret": {"replication": {"automatic": {}}, "labels": {"managed-by": "gptload"}},
        },
        retry=mock.ANY,
        timeout=mock.ANY,
    )
    (call,) = spec_client.add_secret_version.call_args_list
    assert call.kwargs["request"]["parent"] == HEAD
    assert json.loads(call.kwargs["request"]["payload"]["data"]) == {"keys": {"fp1": "AIza-secret-1"}, "shards": []}
    spec_client.destroy_secret_version.assert_not_called()


def test_a_change_adds_a_version_and_destroys_the_superseded_one(spec_client):
    old = json.dumps({"keys": {"fp1": "AIza-secret-1"}, "shards": []}).encode()
    spec_client.access_secret_version.return_value = secretmanager.AccessSecretVersionResponse(
        name=f"{HEAD}/versions/4", payload=secretmanager.SecretPayload(data=old)
    )
    spec_client.add_secret_version.return_value = secretmanager.SecretVersion(name=f"{HEAD}/versions/5")
    vault = SecretManagerVault(spec_client, PROJECT)

    vault.add("g1", {"fp2": "AIza-secret-2"})

    spec_client.create_secret.assert_not_called()
    payload = spec_client.add_secret_version.call_args.kwargs["request"]["payload"]["data"]
    assert json.loads(payload)["keys"] == {"fp1": "AIza-secret-1", "fp2": "AIza-secret-2"}
    spec_client.destroy_secret_version.assert_called_once_with(
        request={"name": f"{HEAD}/versions/4"}, retry=mock.ANY, timeout=mock.ANY
    )


def test_remove_and_drop_group_calls(spec_client):
    old = json.dumps({"keys": {"fp1": "a", "fp2": "b"}, "shards": []}).encode()
    spec_client.access_secret_version.return_value = secretmanager.AccessSecretVersionResponse(
        name=f"{HEAD}/versions/2", payload=secretmanager.SecretPayload(data=old)
    )
    spec_client.add_secret_version.return_value = secretmanager.SecretVersion(name=f"{HEAD}/versions/3")
    vault = SecretManagerVault(spec_client, PROJECT)

    vault.remove("g1", ["fp1"])
    payload = spec_client.add_secret_version.call_args.kwargs["request"]["payload"]["data"]
    assert json.loads(payload)["keys"] == {"fp2": "b"}
    spec_client.destroy_secret_version.assert_called_once_with(
        request={"name": f"{HEAD}/versions/2"}, retry=mock.ANY, timeout=mock.ANY
    )

    vault.drop_group("g1")
    spec_client.delete_secret.assert_called_once_with(request={"name": HEAD}, retry=mock.ANY, timeout=mock.ANY)


def test_api_errors_become_store_unavailable_without_secrets(spec_client, caplog):
    spec_client.access_secret_version.side_effect = exceptions.ServiceUnavailable("down")
    vault = SecretManagerVault(spec_client, PROJECT)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreUnavailable) as info:
        vault.add("g1", {"fp1": "AIza-very-secret"})
    assert "AIza-very-secret" not in str(info.value)
    assert "AIza-very-secret" not in caplog.text


# -- (b) behaviour, against the faithful fake ----------------------------------------------------------------
@pytest.fixture
def fake():
    return FakeSecretManager()


def test_fake_enforces_the_payload_limit_and_destroyed_versions(fake):
    fake.create_secret(request={"parent": "projects/p", "secret_id": "s"})
    with pytest.raises(exceptions.InvalidArgument):
        fake.add_secret_version(
            request={"parent": "projects/p/secrets/s", "payload": {"data": b"x" * (MAX_PAYLOAD + 1)}}
        )
    v = fake.add_secret_version(request={"parent": "projects/p/secrets/s", "payload": {"data": b"one"}}).name
    fake.destroy_secret_version(request={"name": v})
    with pytest.raises(exceptions.FailedPrecondition):
        fake.access_secret_version(request={"name": v})
    with pytest.raises(exceptions.NotFound):
        fake.access_secret_version(request={"name": "projects/p/secrets/s/versions/latest"})


def test_round_trip_of_1000_keys_across_shards(fake):
    vault = SecretManagerVault(fake, PROJECT)
    wanted = keys(1000)
    vault.add("g1", dict(list(wanted.items())[:400]))
    vault.add("g1", dict(list(wanted.items())[400:]))

    shard_ids = sorted(s for s in fake.secrets if s.startswith("gptload-g1-keys-"))
    assert len(shard_ids) >= 4  # 300 keys per shard at most
    for secret_id in shard_ids:
        assert len(fake.live_versions(secret_id)) == 1, "superseded versions are destroyed"
    assert SecretManagerVault(fake, PROJECT).load("g1") == wanted  # a cold instance reads the same
    assert vault.load("g1") == wanted


def test_remove_keys_and_drop_group(fake):
    vault = SecretManagerVault(fake, PROJECT)
    vault.add("g1", keys(700))
    vault.add("g2", keys(3))
    gone = [f"fp{i:06d}" for i in range(0, 700, 2)]
    vault.remove("g1", gone)
    expected = {k: v for k, v in keys(700).items() if k not in set(gone)}
    assert SecretManagerVault(fake, PROJECT).load("g1") == expected
    vault.drop_group("g1")
    assert not [s for s in fake.secrets if s.startswith("gptload-g1-")]
    assert SecretManagerVault(fake, PROJECT).load("g1") == {}
    assert SecretManagerVault(fake, PROJECT).load("g2") == keys(3)


def test_an_unchanged_group_costs_one_access_and_no_shard_payloads(fake):
    writer = SecretManagerVault(fake, PROJECT)
    writer.add("g1", keys(1000))
    reader = SecretManagerVault(fake, PROJECT)
    assert reader.load("g1") == keys(1000)
    before = fake.payload_reads()
    assert reader.load("g1") == keys(1000)
    assert fake.payload_reads() - before == 1  # shard 0's latest only; shards 1..n come from the cache

    writer.add("g1", {"fp999999": real_key(999999)})  # lands in one shard with room
    before = fake.payload_reads()
    assert reader.load("g1") == {**keys(1000), "fp999999": real_key(999999)}
    assert fake.payload_reads() - before == 2  # the new manifest + the one changed shard


def test_reader_survives_a_version_destroyed_after_it_read_the_manifest(fake):
    writer = SecretManagerVault(fake, PROJECT)
    writer.add("g1", keys(600))
    stale = SecretManagerVault(fake, PROJECT)
    head = fake.access_secret_version(request={"name": f"{HEAD}/versions/latest"})
    manifest = json.loads(head.payload.data)["shards"]
    fake.destroy_secret_version(request={"name": manifest[0]})  # as a concurrent writer would
    fake.add_secret_version(request={"parent": manifest[0].split("/versions/")[0], "payload": {"data": b'{"keys":{}}'}})
    got = stale.load("g1")  # no exception: falls back to that shard's latest version
    assert len(got) < 600


def test_re_adding_known_keys_writes_nothing(fake):
    vault = SecretManagerVault(fake, PROJECT)
    vault.add("g1", keys(5))
    writes = sum(1 for m, _ in fake.calls if m == "add_secret_version")
    vault.add("g1", keys(5))
    assert sum(1 for m, _ in fake.calls if m == "add_secret_version") == writes


def test_from_config_builds_the_client_lazily(mocker):
    from gptload.config import Config

    factory = mocker.patch.object(secretmanager, "SecretManagerServiceClient", return_value=FakeSecretManager())
    config = Config(auth_key="x" * 12, google_cloud_project="proj", secret_prefix="pfx", vault="secretmanager")
    vault = SecretManagerVault.from_config(config)
    factory.assert_called_once_with()
    assert vault.kind == "secretmanager"
    assert vault.secret_name("g", 2) == "projects/proj/secrets/pfx-g-keys-2"
