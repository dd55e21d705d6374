"""infra/deploy.sh run for real against a stub gcloud (tests/infra/stubs.py): a failed read, a failed generator,
an interrupted earlier run and IAM's eventual consistency must each end in either a correct deployment or a
clear failure, never in "Done" over a broken one."""

from __future__ import annotations

from gptload import proxyurl
from gptload.cipher import Cipher, load_master_key
from gptload.config import MIN_PASSPHRASE, Config
from tests.infra import stubs
from tests.infra.test_deploy_script import flags, parse_env

ENC = "gptload-encryption-key"


def test_a_fresh_deployment_runs_every_step_and_says_done(tmp_path):
    run = stubs.deploy(tmp_path, stubs.FRESH)
    assert run.returncode == 0, run.stderr
    assert "# Done." in run.stdout
    assert run.called("run", "deploy") and run.called("scheduler", "jobs", "create", "http")
    assert run.called("secrets", "versions", "add")
    conditions = [flags(c).get("--condition", "") for c in run.called("projects", "add-iam-policy-binding")]
    assert any("projects/123456789/secrets/gptload_vault-" in c for c in conditions)


def test_a_failed_project_describe_stops_the_deploy(tmp_path):
    rules = [{"has": ["projects", "describe"], "rc": 1, "stderr": "ERROR: PERMISSION_DENIED\n"}, *stubs.FRESH]
    run = stubs.deploy(tmp_path, rules)
    assert run.returncode != 0
    assert "Done" not in run.stdout
    assert "projects describe" in run.stderr
    assert not any("projects//" in arg for call in run.calls for arg in call), "an IAM condition without the number"
    assert not run.called("projects", "add-iam-policy-binding")


def test_an_empty_project_number_stops_the_deploy(tmp_path):
    rules = [{"has": ["projects", "describe"], "stdout": "\n"}, *stubs.FRESH]
    run = stubs.deploy(tmp_path, rules)
    assert run.returncode != 0 and "Done" not in run.stdout
    assert "project number" in run.stderr
    assert not run.called("projects", "add-iam-policy-binding")


def test_a_failed_function_describe_stops_before_the_scheduler(tmp_path):
    rules = [{"has": ["run", "services", "describe"], "rc": 1, "stderr": "ERROR: boom\n"}, *stubs.FRESH]
    run = stubs.deploy(tmp_path, rules)
    assert run.returncode != 0 and "Done" not in run.stdout
    assert not run.called("scheduler", "jobs", "create")


def test_a_failed_index_generator_stops_the_deploy(tmp_path):
    python3 = 'case "$1" in infra/indexes.py) echo "Traceback: boom" >&2; exit 3 ;; esac\nexec "$REAL_PYTHON3" "$@"'
    run = stubs.deploy(tmp_path, stubs.FRESH, python3=python3)
    assert run.returncode != 0
    assert "Done" not in run.stdout
    assert "infra/indexes.py" in run.stderr
    assert not run.called("run", "deploy"), "went on without indexes and TTL policies"


def test_a_secret_without_a_version_gets_one(tmp_path):
    # An earlier run stopped between `secrets create` and `versions add`: the secrets exist, have no version.
    rules = [{"has": ["secrets", "versions", "list"], "stdout": ""}, *stubs.EXISTING]
    run = stubs.deploy(tmp_path, rules)
    assert run.returncode == 0, run.stderr
    assert not run.called("secrets", "create")
    adds = run.called("secrets", "versions", "add")
    assert [a[4] for a in adds] == ["gptload-auth-key", ENC]
    assert all(flags(a)["--data-file"] == "-" for a in adds)
    listings = run.called("secrets", "versions", "list")
    assert [(c[4], flags(c).get("--filter")) for c in listings] == [
        ("gptload-auth-key", "state:ENABLED"),
        (ENC, "state:ENABLED"),
        (ENC, None),  # no version at all (not merely none enabled): only then is a new key safe
    ]


def test_a_secret_with_a_version_keeps_it(tmp_path):
    run = stubs.deploy(tmp_path, stubs.EXISTING)
    assert run.returncode == 0, run.stderr
    assert not run.called("secrets", "versions", "add"), "a re-run must not change the admin password or the key"


def test_a_fresh_deployment_gives_the_service_an_encryption_key_it_accepts(tmp_path):
    """The deployed service gets ENCRYPTION_KEY from Secret Manager: a generated passphrase that gptload's own
    settings accept with the deployed environment, and that seals proxy_url credentials (the feature it restores)."""
    run = stubs.deploy(tmp_path, stubs.FRESH)
    assert run.returncode == 0, run.stderr
    assert [c[3] for c in run.called("secrets", "create")] == ["gptload-auth-key", ENC]
    key, admin = run.piped[ENC], run.piped["gptload-auth-key"]
    assert len(key) >= MIN_PASSPHRASE and key != admin and key.strip() == key
    assert key not in run.stdout + run.stderr and not [c for c in run.calls if key in " ".join(c)]
    (deploy,) = run.called("run", "deploy")
    secrets = dict(s.split("=", 1) for s in flags(deploy)["--set-secrets"].split(","))
    assert secrets == {"AUTH_KEY": "gptload-auth-key:latest", "ENCRYPTION_KEY": f"{ENC}:latest"}
    env = parse_env(flags(deploy)["--set-env-vars"])
    config = Config.from_env({**env, "AUTH_KEY": admin, "ENCRYPTION_KEY": key})
    assert config.vault == "secretmanager" and config.encryption_key == key
    cipher = Cipher(load_master_key(config.encryption_key, "unused: a passphrase needs no key file"))
    sealed = proxyurl.seal("http://user:pa55@proxy.example:3128", cipher.encrypt)
    assert "pa55" not in sealed and proxyurl.unseal(sealed, cipher.decrypt) == "http://user:pa55@proxy.example:3128"
    # the reader binding on the new secret, for the runtime account only
    (reader,) = [c for c in run.called("secrets", "add-iam-policy-binding") if c[3] == ENC]
    assert flags(reader)["--member"] == "serviceAccount:gptload-run@p.iam.gserviceaccount.com"
    assert run.calls.index(reader) < run.calls.index(deploy)


def test_a_redeploy_never_rotates_the_encryption_key(tmp_path):
    # AUTH_KEY lost its version (an interrupted run); the encryption key has one: only AUTH_KEY gets a new one.
    rules = [{"has": ["secrets", "versions", "list", "gptload-auth-key"], "stdout": ""}, *stubs.EXISTING]
    run = stubs.deploy(tmp_path, rules)
    assert run.returncode == 0, run.stderr
    assert [a[4] for a in run.called("secrets", "versions", "add")] == ["gptload-auth-key"]
    assert ENC not in run.piped


def test_an_encryption_key_without_an_enabled_version_stops_the_deploy(tmp_path):
    # Someone disabled (or destroyed) the key's versions. A new key would make every sealed proxy_url unreadable:
    # the script says what to do instead of generating one.
    rules = [
        {"has": ["secrets", "versions", "list", ENC, "--filter=state:ENABLED"], "stdout": ""},
        *stubs.EXISTING,  # the unfiltered listing finds version 1
    ]
    run = stubs.deploy(tmp_path, rules)
    assert run.returncode != 0 and "Done" not in run.stdout
    assert "no enabled version" in run.stderr and f"gcloud secrets versions enable VERSION --secret={ENC}" in run.stderr
    assert not run.called("secrets", "versions", "add") and not run.called("run", "deploy")


def test_a_binding_of_a_fresh_service_account_is_retried(tmp_path):
    # IAM does not know the new account yet: the first two attempts of each kind of binding fail.
    rules = [
        {"has": ["add-iam-policy-binding"], "rc": 1, "times": 2, "stderr": "ERROR: INVALID_ARGUMENT: does not exist\n"},
        *stubs.FRESH,
    ]
    run = stubs.deploy(tmp_path, rules)
    assert run.returncode == 0, run.stderr
    assert "# Done." in run.stdout
    first = run.called("projects", "add-iam-policy-binding")[0]
    assert run.calls.count(first) == 3
    assert "retrying" in run.stderr


def test_a_binding_that_keeps_failing_stops_the_deploy(tmp_path):
    rules = [{"has": ["add-iam-policy-binding"], "rc": 1, "stderr": "ERROR: PERMISSION_DENIED\n"}, *stubs.FRESH]
    run = stubs.deploy(tmp_path, rules)
    assert run.returncode != 0 and "Done" not in run.stdout
    first = run.called("projects", "add-iam-policy-binding")[0]
    assert run.calls.count(first) == 4  # the first attempt and one after each of the three delays
    assert not run.called("run", "deploy")


def test_a_deleted_custom_role_is_undeleted_and_updated(tmp_path):
    rules = [{"has": ["iam", "roles", "describe", "--format=value(deleted)"], "stdout": "True\n"}, *stubs.EXISTING]
    run = stubs.deploy(tmp_path, rules)
    assert run.returncode == 0, run.stderr
    assert len(run.called("iam", "roles", "undelete")) == 2
    assert len(run.called("iam", "roles", "update")) == 2
    assert run.called("scheduler", "jobs", "update", "http") and not run.called("scheduler", "jobs", "create")


def test_key_secrets_of_the_old_layout_stop_the_deploy_until_a_prefix_is_chosen(tmp_path):
    old = "projects/123456789/secrets/gptload-vault-main-keys-0\n"
    rules = [{"has": ["secrets", "list"], "stdout": old}, *stubs.EXISTING]
    run = stubs.deploy(tmp_path, rules)
    assert run.returncode != 0 and "Done" not in run.stdout
    assert "--secret-prefix gptload-vault" in run.stderr
    assert not run.called("run", "deploy")
    kept = stubs.deploy(tmp_path / "kept", rules, "--secret-prefix", "gptload-vault")
    assert kept.returncode == 0, kept.stderr
    (deploy,) = kept.called("run", "deploy")
    assert "SECRET_PREFIX=gptload-vault|" in flags(deploy)["--set-env-vars"]


def test_a_function_of_an_older_deployment_is_deleted_before_the_service_takes_its_name(tmp_path):
    rules = [{"has": ["functions", "describe"], "stdout": "gptload\n"}, *stubs.EXISTING]
    run = stubs.deploy(tmp_path, rules)
    assert run.returncode == 0, run.stderr
    (delete,) = run.called("functions", "delete")
    (deploy,) = run.called("run", "deploy")
    assert "--quiet" in delete and run.calls.index(delete) < run.calls.index(deploy)
    assert not stubs.deploy(tmp_path / "again", stubs.EXISTING).called("functions", "delete")
