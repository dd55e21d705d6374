"""The scheduler's OIDC tokens are verified against Google's certificates, fetched once per their Cache-Control
max-age (not on every maintenance call); without certificates (none fetched, none cached) the answer is a JSON
503 AUTH_UNAVAILABLE, not a 500. A real RSA key signs real tokens; a fake HTTP callable serves its certificate."""

from __future__ import annotations

import datetime
import json
import time
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from gptload.errors import AuthUnavailable, Unauthorized
from gptload.web.auth import GOOGLE_CERTS_URL, GoogleCerts, SchedulerAuth
from tests.unit.admin_client import AdminClient, error_of

AUD = "https://gptload-abc.a.run.app/api/tasks/run"
SA = "gptload-scheduler@proj.iam.gserviceaccount.com"
KID = "test-key-1"


@pytest.fixture(scope="module")
def signing():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return crypt.RSASigner.from_string(pem_key, key_id=KID), cert.public_bytes(serialization.Encoding.PEM).decode()


def token(signing, **claims) -> str:
    signer, _ = signing
    now = int(time.time())
    payload = {"iss": "https://accounts.google.com", "aud": AUD, "email": SA, "email_verified": True}
    payload.update({"iat": now, "exp": now + 300, **claims})
    return jwt.encode(signer, payload).decode()


class FakeHttp:
    """A google-auth transport Request: serves the certificate JSON, or fails as the network does."""

    def __init__(self, signing, cache_control="public, max-age=600, must-revalidate, no-transform"):
        self.certs = json.dumps({KID: signing[1]}).encode()
        self.cache_control = cache_control
        self.calls: list[str] = []
        self.failure: Exception | None = None
        self.status = 200

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        self.calls.append(url)
        if self.failure:
            raise self.failure
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        return SimpleNamespace(status=self.status, headers=headers, data=self.certs)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scheduler(http, clock) -> SchedulerAuth:
    return SchedulerAuth(AUD, SA, certs=GoogleCerts(http, clock))


def test_tokens_are_verified_with_certificates_cached_for_their_max_age(signing):
    http, clock = FakeHttp(signing), Clock()
    auth = scheduler(http, clock)
    auth.check(f"Bearer {token(signing)}")
    assert http.calls == [GOOGLE_CERTS_URL]
    clock.now += 599
    auth.check(f"Bearer {token(signing)}")
    assert len(http.calls) == 1  # still fresh: no fetch per maintenance call
    clock.now += 2
    auth.check(f"Bearer {token(signing)}")
    assert len(http.calls) == 2


def test_other_callers_and_forged_tokens_are_refused(signing):
    http, clock = FakeHttp(signing), Clock()
    auth = scheduler(http, clock)
    other_key = crypt.RSASigner.from_string(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        key_id=KID,
    )
    for bad in (
        token(signing, email="someone@else.iam.gserviceaccount.com"),
        token(signing, email_verified=False),
        token(signing, aud="https://other.example/api/tasks/run"),
        token(signing, iss="https://evil.example"),  # google-auth raises GoogleAuthError, not ValueError, for this
        token(signing, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        token((other_key, None)),
        "not-a-jwt",
    ):
        with pytest.raises(Unauthorized):
            auth.check(f"Bearer {bad}")
    assert len(http.calls) == 1


def test_no_certificates_and_none_cached_is_auth_unavailable(signing):
    http, clock = FakeHttp(signing), Clock()
    http.failure = OSError("network is unreachable")
    auth = scheduler(http, clock)
    with pytest.raises(AuthUnavailable):
        auth.check(f"Bearer {token(signing)}")
    http.failure = None
    http.status = 500
    with pytest.raises(AuthUnavailable):
        auth.check(f"Bearer {token(signing)}")
    http.status = 200
    auth.check(f"Bearer {token(signing)}")  # fetched again once Google answers


def test_a_failed_refresh_keeps_the_expired_certificates_for_a_while(signing):
    http, clock = FakeHttp(signing), Clock()
    auth = scheduler(http, clock)
    auth.check(f"Bearer {token(signing)}")
    http.failure = OSError("network is unreachable")
    clock.now += 3600
    auth.check(f"Bearer {token(signing)}")  # stale but usable
    clock.now += GoogleCerts.MAX_STALE_SECONDS
    with pytest.raises(AuthUnavailable):
        auth.check(f"Bearer {token(signing)}")


def test_without_max_age_certificates_are_fetched_each_time(signing):
    http, clock = FakeHttp(signing, cache_control="no-cache"), Clock()
    auth = scheduler(http, clock)
    auth.check(f"Bearer {token(signing)}")
    auth.check(f"Bearer {token(signing)}")
    assert len(http.calls) == 2


def test_maintenance_endpoint_answers_503_json_when_certificates_are_unavailable(tmp_path, signing):
    client = AdminClient(tmp_path, OIDC_AUDIENCE=AUD, OIDC_SERVICE_ACCOUNT=SA)
    try:
        http, clock = FakeHttp(signing), Clock()
        http.failure = OSError("network is unreachable")
        client.router.scheduler_auth = scheduler(http, clock)
        r = client.open("POST", "/api/tasks/run", headers={"Authorization": f"Bearer {token(signing)}"})
        assert error_of(r) == (503, "AUTH_UNAVAILABLE")
        http.failure = None
        r = client.open("POST", "/api/tasks/run", headers={"Authorization": f"Bearer {token(signing)}"})
        assert r.status_code == 200
    finally:
        client.close()
