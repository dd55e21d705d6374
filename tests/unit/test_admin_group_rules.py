"""The admin API's side of a group's request rules: validation (400 naming the field), round trip, and the
proxy_url setting's credentials (masked in every answer, kept when the masked value is sent back)."""

from __future__ import annotations

import json
import logging

import pytest

from tests.unit.admin_client import AdminClient

PROXY = "http://proxyuser:pr0xy-s3cret@127.0.0.1:3128"


@pytest.fixture
def admin(tmp_path):
    client = AdminClient(tmp_path)
    yield client
    client.close()


@pytest.fixture(scope="module")
def shared_admin(tmp_path_factory):
    """One service for the many refusal cases (each uses its own group name): they change nothing."""
    client = AdminClient(tmp_path_factory.mktemp("rules-admin"))
    yield client
    client.close()


def create(admin, name="g1", **fields):
    return admin.open("POST", "/api/groups", body={"name": name, "proxy_keys": ["proxy-key-0001"], **fields})


def field_errors(r) -> dict[str, str]:
    assert r.status_code == 400, r.get_data(as_text=True)
    return r.get_json()["error"]["details"]["fields"]


def test_rules_round_trip_through_the_admin_api(admin):
    rules = {
        "model_redirect_rules": {"gpt-4o": "models/gemini-2.5-pro", " fast ": "gemini-2.5-flash"},
        "model_redirect_strict": True,
        "param_overrides": {"generationConfig": {"temperature": 0.2, "topK": None}},
        "header_rules": [
            {"key": "X-Trace", "value": "${GROUP_NAME}-${TIMESTAMP_MS}", "action": "set"},
            {"key": "User-Agent", "action": "remove"},
        ],
    }
    r = create(admin, **rules)
    assert r.status_code == 201, r.get_data(as_text=True)
    got = admin.open("GET", "/api/groups/g1").get_json()
    assert got["model_redirect_rules"] == {"gpt-4o": "gemini-2.5-pro", "fast": "gemini-2.5-flash"}
    assert got["model_redirect_strict"] is True
    assert got["param_overrides"] == rules["param_overrides"]
    assert got["header_rules"] == [
        {"key": "X-Trace", "value": "${GROUP_NAME}-${TIMESTAMP_MS}", "action": "set"},
        {"key": "User-Agent", "value": "", "action": "remove"},
    ]
    r = admin.open("PUT", "/api/groups/g1", body={"model_redirect_strict": False, "header_rules": []})
    assert r.status_code == 200
    got = admin.open("GET", "/api/groups/g1").get_json()
    assert got["model_redirect_strict"] is False and got["header_rules"] == []
    assert got["model_redirect_rules"] == {"gpt-4o": "gemini-2.5-pro", "fast": "gemini-2.5-flash"}  # untouched


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("model_redirect_rules", ["a", "b"], "object"),
        ("model_redirect_rules", {"gpt 4": "gemini-2.5-pro"}, "not a model name"),
        ("model_redirect_rules", {"a": 5}, "target"),
        ("model_redirect_rules", {"models/a": "x", "a": "y"}, "twice"),
        ("model_redirect_strict", "yes", "true or false"),
        ("param_overrides", [1], "JSON object"),
        ("param_overrides", {"model": "x"}, "model_redirect_rules"),
        ("param_overrides", {"stream": True}, "stream"),
        ("header_rules", {"key": "X"}, "list"),
        ("header_rules", [{"key": "x-goog-api-key", "value": "k"}], "managed by gptload"),
        ("header_rules", [{"key": "Authorization", "action": "remove"}], "managed by gptload"),
        ("header_rules", [{"key": "X-API-Key", "value": "k"}], "managed by gptload"),
        ("header_rules", [{"key": "Host", "value": "evil"}], "managed by gptload"),
        ("header_rules", [{"key": "Content-Length", "value": "1"}], "managed by gptload"),
        ("header_rules", [{"key": "Transfer-Encoding", "value": "chunked"}], "managed by gptload"),
        ("header_rules", [{"key": "X-Key", "value": "${API_KEY}"}], "unknown variable ${API_KEY}"),
        ("header_rules", [{"key": "X-A", "value": "a\r\nX-B: b"}], "control characters"),
        ("header_rules", [{"key": "Bad Name", "value": "v"}], "header name"),
        ("header_rules", [{"key": "X-A", "value": "v", "action": "append"}], "set' or 'remove"),
        ("settings", {"proxy_url": "ftp://host:21"}, "scheme"),
        ("settings", {"proxy_url": "http://host"}, "port"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(shared_admin, field, value, says):
    admin = shared_admin
    name = f"g{len(admin.services.store.list_groups())}"
    before = admin.snapshot()
    errors = field_errors(create(admin, name, **{field: value}))
    assert field in errors and says in errors[field], errors
    assert admin.snapshot() == before  # nothing stored
    assert create(admin, name).status_code == 201
    before = admin.snapshot()
    errors = field_errors(admin.open("PUT", f"/api/groups/{name}", body={field: value}))
    assert field in errors and says in errors[field]
    assert admin.snapshot() == before


def test_strict_mode_needs_a_redirect_when_created_and_when_the_last_one_goes(admin):
    errors = field_errors(create(admin, model_redirect_strict=True))
    assert "needs at least one redirect" in errors["model_redirect_strict"]
    assert admin.services.store.get_group("g1") is None
    assert create(admin, model_redirect_strict=True, model_redirect_rules={"a": "b"}).status_code == 201
    errors = field_errors(admin.open("PUT", "/api/groups/g1", body={"model_redirect_rules": {}}))
    assert "model_redirect_strict" in errors
    assert admin.services.store.get_group("g1").model_redirect_rules == {"a": "b"}
    r = admin.open("PUT", "/api/groups/g1", body={"model_redirect_rules": {}, "model_redirect_strict": False})
    assert r.status_code == 200 and r.get_json()["model_redirect_rules"] == {}


def test_proxy_url_credentials_never_leave_the_admin_api_and_survive_a_masked_save(admin, caplog):
    caplog.set_level(logging.DEBUG)
    r = admin.open("PUT", "/api/settings", body={"proxy_url": PROXY})
    assert r.status_code == 200
    assert r.get_json()["settings"]["proxy_url"] == "http://****@127.0.0.1:3128"
    schema = {s["name"]: s for s in r.get_json()["schema"]}
    assert schema["proxy_url"]["secret"] is True and schema["proxy_url"]["group_overridable"] is True
    r = create(admin, settings={"proxy_url": PROXY})
    assert r.status_code == 201
    texts = [r.get_data(as_text=True)]
    for path in ("/api/settings", "/api/groups", "/api/groups/g1", "/api/settings/schema"):
        texts.append(admin.open("GET", path).get_data(as_text=True))
    # the console sends back what it was shown: the stored secret stays
    shown = admin.open("GET", "/api/groups/g1").get_json()["settings"]
    texts.append(admin.open("PUT", "/api/groups/g1", body={"settings": shown}).get_data(as_text=True))
    settings = admin.open("GET", "/api/settings").get_json()["settings"]
    texts.append(admin.open("PUT", "/api/settings", body=settings).get_data(as_text=True))
    # stored sealed (tests/contract/test_store_contract_proxy_url.py reads the raw rows); the pool opens it
    assert "pr0xy-s3cret" not in admin.services.store.get_settings()["proxy_url"]
    assert "pr0xy-s3cret" not in admin.services.store.get_group("g1").settings["proxy_url"]
    assert admin.services.pool.view("g1").settings.proxy_url == PROXY
    assert "pr0xy-s3cret" not in repr(admin.services.pool.view("g1").settings)
    for text in [*texts, caplog.text]:
        assert "pr0xy-s3cret" not in text and "proxyuser" not in text
    assert all("****@127.0.0.1:3128" in t for t in texts[1:4])
    # a new value replaces it; an empty one means direct
    admin.open("PUT", "/api/groups/g1", body={"settings": {"proxy_url": "http://127.0.0.1:8888"}})
    assert admin.services.store.get_group("g1").settings["proxy_url"] == "http://127.0.0.1:8888"
    assert admin.open("GET", "/api/groups/g1").get_json()["settings"]["proxy_url"] == "http://127.0.0.1:8888"
    admin.open("PUT", "/api/settings", body={"proxy_url": ""})
    assert admin.services.store.get_settings()["proxy_url"] == ""
    assert json.loads(admin.open("GET", "/api/settings").get_data())["settings"]["proxy_url"] == ""


def test_a_bad_proxy_url_error_does_not_repeat_the_password(admin):
    r = admin.open("PUT", "/api/settings", body={"proxy_url": "gopher://u:hunter22@host:70"})
    assert r.status_code == 400
    assert "hunter22" not in r.get_data(as_text=True)


def test_a_refused_stored_proxy_url_is_logged_masked(caplog):
    from gptload import settings

    caplog.set_level(logging.WARNING)
    resolved = settings.Settings.resolve({"proxy_url": "ftp://old-user:old-pass-991@host:21"})
    assert resolved.proxy_url == ""  # refused: direct
    assert "ignoring stored setting proxy_url" in caplog.text and "old-pass-991" not in caplog.text


def test_direct_overrides_the_system_proxy_for_one_group(admin):
    admin.open("PUT", "/api/settings", body={"proxy_url": PROXY})
    assert create(admin, "g1", settings={"proxy_url": " DIRECT "}).status_code == 201
    assert create(admin, "g2").status_code == 201
    shown = admin.open("GET", "/api/groups/g1").get_json()["settings"]
    assert shown["proxy_url"] == "direct"
    assert admin.services.pool.view("g1").settings.proxy_url == ""  # no proxy
    assert admin.services.pool.view("g2").settings.proxy_url == PROXY  # empty: the system's
    assert admin.open("PUT", "/api/groups/g1", body={"settings": shown}).status_code == 200
    assert admin.services.store.get_group("g1").settings["proxy_url"] == "direct"
    r = admin.open("PUT", "/api/settings", body={"proxy_url": "direct"})  # system-wide: the same as ""
    assert r.status_code == 200 and admin.services.pool.view("g2").settings.proxy_url == ""


@pytest.mark.parametrize("passphrase", ["", "p" * 32])
def test_secret_manager_deployments_seal_credentials_with_encryption_key_or_refuse_them(tmp_path, passphrase):
    from gptload.vault.secret_manager_vault import SecretManagerVault
    from tests.fakes.secret_manager import FakeSecretManager

    env = {"VAULT": "secretmanager", "GOOGLE_CLOUD_PROJECT": "p", "ENCRYPTION_KEY": passphrase}
    client = AdminClient(tmp_path, vault=SecretManagerVault(FakeSecretManager(), "p"), **env)
    try:
        if passphrase:  # the cipher exists: sealed, and the pool opens it
            assert client.open("PUT", "/api/settings", body={"proxy_url": PROXY}).status_code == 200
            assert "pr0xy-s3cret" not in client.services.store.get_settings()["proxy_url"]
            assert client.services.pool.settings.proxy_url == PROXY
            return
        r = client.open("PUT", "/api/settings", body={"proxy_url": PROXY})
        assert field_errors(r)["proxy_url"] == "credentials need ENCRYPTION_KEY to be stored encrypted"
        assert "pr0xy-s3cret" not in r.get_data(as_text=True)
        assert client.services.store.get_settings().get("proxy_url", "") == ""
        assert client.open("PUT", "/api/settings", body={"proxy_url": "http://127.0.0.1:3128"}).status_code == 200
    finally:
        client.close()


def test_proxy_credentials_are_scrubbed_from_log_lines(admin, caplog):
    caplog.set_level(logging.INFO)
    try:
        raise OSError(f"cannot reach {PROXY}/ (connect refused)")
    except OSError:
        logging.getLogger("gptload.test").exception("proxy %s failed", PROXY)
    assert "pr0xy-s3cret" not in caplog.text and "proxyuser" not in caplog.text
    assert "http://****@127.0.0.1:3128" in caplog.text


def test_maintenance_seals_values_an_older_version_stored_in_clear(admin):
    from gptload.maintenance import run_maintenance
    from gptload.models import Group

    assert create(admin, "g1").status_code == 201
    store = admin.services.store
    store.put_settings({"proxy_url": PROXY})  # as an older version wrote them
    group = store.get_group("g1")
    store.update_group(Group.from_dict({**group.to_dict(), "settings": {"proxy_url": PROXY, "max_retries": 2}}))
    admin.services.pool.reload()
    assert admin.services.pool.view("g1").settings.proxy_url == PROXY  # a clear value keeps working
    assert run_maintenance(admin.services)["proxy_urls_sealed"] == 2
    assert "pr0xy-s3cret" not in json.dumps([store.get_settings(), store.get_group("g1").to_dict()])
    assert store.get_group("g1").settings["max_retries"] == 2
    assert admin.services.pool.view("g1").settings.proxy_url == PROXY
    assert admin.services.pool.settings.proxy_url == PROXY
    assert run_maintenance(admin.services)["proxy_urls_sealed"] == 0


def test_a_sealed_proxy_url_moved_to_another_host_does_not_open(admin):
    """Whoever holds a sealed value (a store reader without ENCRYPTION_KEY, a backup) and can save a proxy_url must
    not get the credentials sent to a host of their choosing: the ciphertext is bound to its scheme, host and port."""
    assert create(admin, "g1", settings={"proxy_url": PROXY}).status_code == 201
    sealed = admin.services.store.get_group("g1").settings["proxy_url"]
    userinfo = sealed.split("://", 1)[1].rpartition("@")[0]
    for moved in (f"http://{userinfo}@127.0.0.1:9", f"socks5://{userinfo}@127.0.0.1:3128"):
        name = f"g{len(moved)}"
        assert create(admin, name, settings={"proxy_url": moved}).status_code == 201
        assert "pr0xy-s3cret" not in admin.services.pool.view(name).settings.proxy_url
    assert admin.services.pool.view("g1").settings.proxy_url == PROXY


def test_a_long_proxy_password_accepted_once_stays_in_use_sealed(admin):
    """Sealing makes the user info longer (base64 of nonce, ciphertext and tag): a value accepted in clear must still
    be read back once sealed, never dropped by the stored-value check so that the group goes out directly."""
    token = "t" * 1900  # a long token as the proxy password (some proxy services use JWTs)
    url = f"http://u:{token}@127.0.0.1:3128"
    assert len(url) <= 2048 and create(admin, "g1", settings={"proxy_url": url}).status_code == 201
    assert admin.open("PUT", "/api/settings", body={"proxy_url": url}).status_code == 200
    assert admin.services.pool.view("g1").settings.proxy_url == url
    assert admin.services.pool.settings.proxy_url == url
    shown = admin.open("GET", "/api/groups/g1").get_json()["settings"]["proxy_url"]
    assert shown == "http://****@127.0.0.1:3128"


@pytest.mark.parametrize("restart_key", ["q" * 32, ""])
def test_a_sealed_proxy_url_the_restarted_service_cannot_open_fails_closed(tmp_path, restart_key):
    """Sealed under one ENCRYPTION_KEY, served after a restart with another one or none (VAULT=secretmanager, so the
    keys still work): the proxy is still used and refuses the sealed text (407); nothing goes out directly."""
    from gptload.vault.secret_manager_vault import SecretManagerVault
    from tests.fakes.fake_gemini import FakeGemini
    from tests.fakes.forward_proxy import ForwardProxy
    from tests.fakes.secret_manager import FakeSecretManager

    secrets = FakeSecretManager()
    env = {"VAULT": "secretmanager", "GOOGLE_CLOUD_PROJECT": "p"}
    with ForwardProxy(credentials=("px", "px-pass-3141")) as proxy, FakeGemini() as fake:
        first = AdminClient(tmp_path, vault=SecretManagerVault(secrets, "p"), ENCRYPTION_KEY="p" * 32, **env)
        settings = {"proxy_url": f"http://px:px-pass-3141@127.0.0.1:{proxy.port}", "max_retries": 0}
        upstreams = [{"url": fake.url, "weight": 1}]
        assert create(first, "g1", upstreams=upstreams, settings=settings).status_code == 201
        assert first.open("POST", "/api/groups/g1/keys", body={"keys": "AIzaSy" + "k" * 33}).status_code < 300
        first.join_tasks()
        first.close()
        again = AdminClient(tmp_path, vault=SecretManagerVault(secrets, "p"), ENCRYPTION_KEY=restart_key, **env)
        try:
            r = again.client.open(
                "/proxy/g1/v1beta/models/gemini-2.5-flash:generateContent",
                method="POST",
                headers={"x-goog-api-key": "proxy-key-0001", "Content-Type": "application/json"},
                data=json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}),
            )
            assert r.status_code == 502 and "px-pass-3141" not in r.get_data(as_text=True)
            assert proxy.refused == 1 and proxy.requests == [] and fake.requests == []
        finally:
            again.close()
