"""An in-memory stand-in for ``SecretManagerServiceClient``, faithful where gptload depends on the real API.

Like the real service it: returns the real proto types; names resources with the project *number* in responses
(``projects/123456789/...``) whatever the request said; numbers versions from 1; resolves ``latest`` to the
newest enabled version; rejects payloads over 64 KiB with InvalidArgument; refuses to read or destroy a destroyed
version with FailedPrecondition; answers NotFound / AlreadyExists where the API does. ``calls`` records
(method, name) pairs so tests can count what was read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions
from google.cloud import secretmanager

MAX_PAYLOAD = 64 * 1024
PROJECT_NUMBER = "123456789"


@dataclass
class _Version:
    number: int
    data: bytes | None  # None once destroyed
    state: secretmanager.SecretVersion.State = secretmanager.SecretVersion.State.ENABLED


@dataclass
class _Secret:
    labels: dict[str, str]
    versions: list[_Version] = field(default_factory=list)


class FakeSecretManager:
    def __init__(self) -> None:
        self.secrets: dict[str, _Secret] = {}  # secret id -> secret
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    # -- helpers --------------------------------------------------------------------------------------------
    @staticmethod
    def _parse(name: str) -> tuple[str, str | None]:
        """``projects/p/secrets/s[/versions/v]`` -> (s, v)."""
        parts = name.split("/")
        if len(parts) not in (4, 6) or parts[0] != "projects" or parts[2] != "secrets":
            raise exceptions.InvalidArgument(f"invalid resource name {name!r}")
        if len(parts) == 6 and parts[4] != "versions":
            raise exceptions.InvalidArgument(f"invalid resource name {name!r}")
        return parts[3], parts[5] if len(parts) == 6 else None

    def _secret(self, secret_id: str) -> _Secret:
        secret = self.secrets.get(secret_id)
        if secret is None:
            raise exceptions.NotFound(f"Secret [projects/{PROJECT_NUMBER}/secrets/{secret_id}] not found.")
        return secret

    def _version(self, secret_id: str, version: str) -> _Version:
        secret = self._secret(secret_id)
        if version == "latest":
            enabled = [v for v in secret.versions if v.state == secretmanager.SecretVersion.State.ENABLED]
            if not enabled:
                raise exceptions.NotFound(f"Secret [{secret_id}] has no enabled versions.")
            return enabled[-1]
        try:
            number = int(version)
        except ValueError:
            raise exceptions.InvalidArgument(f"invalid version {version!r}") from None
        for v in secret.versions:
            if v.number == number:
                return v
        raise exceptions.NotFound(f"Secret Version [{secret_id}/versions/{version}] not found.")

    @staticmethod
    def _name(secret_id: str, number: int | None = None) -> str:
        base = f"projects/{PROJECT_NUMBER}/secrets/{secret_id}"
        return base if number is None else f"{base}/versions/{number}"

    # -- the API surface gptload uses -----------------------------------------------------------------------
    def create_secret(self, request: Any = None, *, retry: Any = None, timeout: Any = None, metadata: Any = ()):
        secret_id = request["secret_id"]
        with self._lock:
            self.calls.append(("create_secret", secret_id))
            if secret_id in self.secrets:
                raise exceptions.AlreadyExists(f"Secret [{self._name(secret_id)}] already exists.")
            labels = dict((request.get("secret") or {}).get("labels") or {})
            self.secrets[secret_id] = _Secret(labels=labels)
            return secretmanager.Secret(name=self._name(secret_id), labels=labels)

    def add_secret_version(self, request: Any = None, *, retry: Any = None, timeout: Any = None, metadata: Any = ()):
        secret_id, _ = self._parse(request["parent"])
        data = bytes(request["payload"]["data"])
        with self._lock:
            self.calls.append(("add_secret_version", secret_id))
            secret = self._secret(secret_id)
            if len(data) > MAX_PAYLOAD:
                raise exceptions.InvalidArgument("Secret Payload cannot be larger than 64KiB.")
            version = _Version(number=len(secret.versions) + 1, data=data)
            secret.versions.append(version)
            return secretmanager.SecretVersion(name=self._name(secret_id, version.number), state=version.state)

    def access_secret_version(self, request: Any = None, *, retry: Any = None, timeout: Any = None, metadata: Any = ()):
        secret_id, version_id = self._parse(request["name"])
        with self._lock:
            self.calls.append(("access_secret_version", request["name"]))
            version = self._version(secret_id, version_id or "latest")
            if version.state != secretmanager.SecretVersion.State.ENABLED:
                state = secretmanager.SecretVersion.State(version.state).name
                raise exceptions.FailedPrecondition(
                    f"Secret Version [{self._name(secret_id, version.number)}] is in {state} state."
                )
            return secretmanager.AccessSecretVersionResponse(
                name=self._name(secret_id, version.number), payload=secretmanager.SecretPayload(data=version.data)
            )

    def get_secret_version(self, request: Any = None, *, retry: Any = None, timeout: Any = None, metadata: Any = ()):
        secret_id, version_id = self._parse(request["name"])
        with self._lock:
            self.calls.append(("get_secret_version", request["name"]))
            version = self._version(secret_id, version_id or "latest")
            return secretmanager.SecretVersion(name=self._name(secret_id, version.number), state=version.state)

    def destroy_secret_version(
        self, request: Any = None, *, retry: Any = None, timeout: Any = None, metadata: Any = ()
    ):
        secret_id, version_id = self._parse(request["name"])
        with self._lock:
            self.calls.append(("destroy_secret_version", request["name"]))
            version = self._version(secret_id, version_id or "")
            if version.state == secretmanager.SecretVersion.State.DESTROYED:
                raise exceptions.FailedPrecondition(
                    f"Secret Version [{self._name(secret_id, version.number)}] is already destroyed."
                )
            version.state = secretmanager.SecretVersion.State.DESTROYED
            version.data = None
            return secretmanager.SecretVersion(name=self._name(secret_id, version.number), state=version.state)

    def delete_secret(self, request: Any = None, *, retry: Any = None, timeout: Any = None, metadata: Any = ()):
        secret_id, _ = self._parse(request["name"])
        with self._lock:
            self.calls.append(("delete_secret", secret_id))
            self._secret(secret_id)
            del self.secrets[secret_id]

    # -- inspection for tests -------------------------------------------------------------------------------
    def live_versions(self, secret_id: str) -> list[int]:
        return [
            v.number for v in self._secret(secret_id).versions if v.state != secretmanager.SecretVersion.State.DESTROYED
        ]

    def payload_reads(self) -> int:
        return sum(1 for method, _ in self.calls if method == "access_secret_version")
