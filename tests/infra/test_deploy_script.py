"""infra/deploy.sh --dry-run: it prints every command, calls nothing (a gcloud stub on PATH proves it), and the
commands satisfy the same facts as the Terraform files (tests/infra/facts.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.infra import facts

P, R = "p", "r"


def dry_run(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run the script with a gcloud stub first on PATH; return the result and the shlex-split command lines."""
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir(parents=True, exist_ok=True)
    calls = tmp_path / "gcloud-calls"
    stub = stub_dir / "gcloud"
    stub.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexit 1\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(facts.DEPLOY_SH), "--dry-run", *extra], capture_output=True, text=True, env=env, timeout=60
    )
    assert not calls.exists(), f"--dry-run called gcloud: {calls.read_text()}"
    lines = [shlex.split(line[2:]) for line in result.stdout.splitlines() if line[:2] in ("+ ", "? ")]
    return result, lines


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    result, lines = dry_run(tmp_path_factory.mktemp("deploy"), "--project", P, "--region", R)
    assert result.returncode == 0, result.stderr
    return result.stdout, lines


def gcloud(lines, *words):
    """Command lines starting with gcloud WORDS..."""
    n = len(words)
    return [c for c in lines if c[:1] == ["gcloud"] and c[1 : 1 + n] == list(words)]


def flags(cmd: list[str]) -> dict[str, str]:
    out = {}
    for arg in cmd:
        if arg.startswith("--"):
            key, _, value = arg.partition("=")
            out[key] = value
    return out


def parse_env(value: str) -> dict[str, str]:
    sep = ","
    if value.startswith("^"):
        sep, value = value[1:].split("^", 1)
    return dict(item.split("=", 1) for item in value.split(sep))


@pytest.fixture(scope="module")
def deploy(out):
    (cmd,) = gcloud(out[1], "run", "deploy")
    return cmd


@pytest.fixture(scope="module")
def env(deploy):
    return parse_env(flags(deploy)["--set-env-vars"])


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(facts.DEPLOY_SH)], check=True)
    text = facts.DEPLOY_SH.read_text()
    assert "set -euo pipefail" in text


def test_dry_run_needs_a_project(tmp_path):
    result, _ = dry_run(tmp_path)
    assert result.returncode == 2 and "--project" in result.stderr


def test_dry_run_prints_and_says_so(out):
    stdout, lines = out
    assert "dry run: nothing was executed" in stdout
    assert len(gcloud(lines)) > 20


def test_service_deploy_matches_main_py(deploy):
    """A Cloud Run service from source with the functions framework (the Live API needs WebSocket upgrades)."""
    f = flags(deploy)
    assert deploy[3] == "gptload"
    assert {"--allow-unauthenticated", "--session-affinity", "--no-use-http2", "--quiet"} <= f.keys()
    assert f["--base-image"] == "python312"
    assert f["--function"] == facts.entry_point()
    assert f["--source"] == "."
    assert f["--timeout"] == "3600s"
    assert f["--region"] == R and f["--project"] == P
    assert f["--service-account"] == f"gptload-run@{P}.iam.gserviceaccount.com"
    assert f["--build-service-account"] == f"projects/{P}/serviceAccounts/gptload-build@{P}.iam.gserviceaccount.com"


def test_environment_sets_every_serverless_setting_and_nothing_the_code_does_not_read(deploy, env):
    secrets = dict(s.split("=", 1) for s in flags(deploy)["--set-secrets"].split(","))
    read = facts.env_vars_read_by_code()
    assert facts.REQUIRED_ENV - env.keys() == set()
    assert secrets.keys() == facts.REQUIRED_SECRET_ENV
    assert secrets["AUTH_KEY"] == "gptload-auth-key:latest"
    assert secrets["ENCRYPTION_KEY"] == "gptload-encryption-key:latest"
    assert (env.keys() | secrets.keys()) - read == set()
    assert not env.keys() & (facts.NEVER_PLAIN | facts.NEVER_SET)
    for name, value in facts.EXPECTED_VALUES.items():
        assert env[name] == value
    assert env["GOOGLE_CLOUD_PROJECT"] == P and env["FIRESTORE_DATABASE"] == "(default)"
    assert env["ALLOWED_ORIGINS"] == ""


def test_threads_equal_concurrency(deploy, env):
    assert env["THREADS"] == flags(deploy)["--concurrency"] == "1000"  # measured: bench/results/streams.md
    # Cloud Run never sends an instance more than its concurrency: Live sessions may take every thread there
    # (LIVE_MAX_SESSIONS' default, half of THREADS, would refuse sessions Cloud Run does not scale out for)
    assert env["LIVE_MAX_SESSIONS"] == env["THREADS"]


def test_same_environment_as_terraform(env):
    facts.require_hcl2()
    tf = facts.Terraform()
    tf_env = tf.locals["service_env"]
    assert tf_env.keys() == env.keys()
    for name, expression in tf_env.items():
        value = tf.resolve(str(expression), {"project": P, "region": R})
        if "${" not in value:  # what the small resolver can evaluate must agree exactly
            assert value == env[name], name


def test_no_primitive_role(out):
    roles = {flags(c).get("--role") for c in out[1]} - {None}
    assert roles and not roles & facts.PRIMITIVE_ROLES


def test_secret_manager_rights_are_the_vaults_calls_limited_to_its_prefix(out, env):
    lines = out[1]
    perms = set()
    for cmd in gcloud(lines, "iam", "roles", "create"):
        perms |= set(flags(cmd)["--permissions"].split(","))
    assert perms == facts.vault_permissions()
    prefix = f"projects/PROJECT_NUMBER/secrets/{env['SECRET_PREFIX']}-"
    grants = [c for c in gcloud(lines, "projects", "add-iam-policy-binding") if "/roles/gptload_" in flags(c)["--role"]]
    assert len(grants) == 2
    for cmd in grants:
        assert f'resource.name.startsWith("{prefix}")' in flags(cmd)["--condition"]
    assert not gcloud(lines, "projects", "add-iam-policy-binding", P, "--member=serviceAccount:gptload-run@p.iam"
                      ".gserviceaccount.com", "--role=roles/secretmanager.admin")  # fmt: skip
    readers = {c[3]: c for c in gcloud(lines, "secrets", "add-iam-policy-binding")}
    assert readers.keys() == {"gptload-auth-key", "gptload-encryption-key"}
    for secret, grant in readers.items():  # read-only, and outside the vault's prefix: the service cannot write it
        assert flags(grant)["--role"] == "roles/secretmanager.secretAccessor", secret
        assert flags(grant)["--member"] == f"serviceAccount:gptload-run@{P}.iam.gserviceaccount.com"
        assert not secret.startswith(env["SECRET_PREFIX"] + "-")


def test_the_deployed_service_gets_encryption_key_from_secret_manager(out, deploy, env):
    """Without ENCRYPTION_KEY, VAULT=secretmanager refuses a proxy_url with credentials (nothing to seal them with):
    the deployment provides one, as a secret environment variable of its own secret, never plain env."""
    lines = out[1]
    secrets = dict(s.split("=", 1) for s in flags(deploy)["--set-secrets"].split(","))
    assert secrets["ENCRYPTION_KEY"] == f"{facts.SECRET_ENV_SECRETS['ENCRYPTION_KEY'].format(name='gptload')}:latest"
    assert "ENCRYPTION_KEY" not in env
    creates = [c for c in gcloud(lines, "secrets", "create") if c[3] == "gptload-encryption-key"]
    assert len(creates) == 1 and flags(creates[0])["--replication-policy"] == "automatic"
    # the secret and its reader binding come before the service that reads it
    (reader,) = [c for c in gcloud(lines, "secrets", "add-iam-policy-binding") if c[3] == "gptload-encryption-key"]
    assert lines.index(creates[0]) < lines.index(reader) < lines.index(deploy)
    # a generated value, piped to gcloud (never on a command line): the dry run prints what it would run
    assert "gcloud secrets versions add gptload-encryption-key --data-file=-" in out[0]


def test_scheduler_uses_the_audience_and_account_the_function_checks(out, env):
    lines = out[1]
    (job,) = gcloud(lines, "scheduler", "jobs", "create", "http")
    f = flags(job)
    assert f["--oidc-token-audience"] == env["OIDC_AUDIENCE"]
    assert env["OIDC_AUDIENCE"] == f"https://{R}-{P}.cloudfunctions.net/gptload{facts.maintenance_path()}"
    assert (
        f["--oidc-service-account-email"] == env["OIDC_SERVICE_ACCOUNT"] == f"gptload-sched@{P}.iam.gserviceaccount.com"
    )
    assert f["--uri"].endswith(facts.maintenance_path()) and f["--http-method"] == "POST"
    (invoker,) = gcloud(lines, "run", "services", "add-iam-policy-binding")
    assert invoker[4] == "gptload" and flags(invoker)["--role"] == "roles/run.invoker"
    assert flags(invoker)["--member"] == f"serviceAccount:{env['OIDC_SERVICE_ACCOUNT']}"
    sched = f"serviceAccount:{env['OIDC_SERVICE_ACCOUNT']}"
    assert [c for c in lines if flags(c).get("--member") == sched] == [invoker], "the scheduler gets invoker only"


def test_firestore_database_and_indexes_and_ttl_match_the_store(out):
    lines = out[1]
    (db,) = gcloud(lines, "firestore", "databases", "create")
    assert {"--delete-protection"} <= flags(db).keys() and flags(db)["--type"] == "firestore-native"
    declared = set()
    for cmd in gcloud(lines, "firestore", "indexes", "composite", "create"):
        f = flags(cmd)
        fields = []
        for arg in cmd:
            if arg.startswith("--field-config="):
                cfg = dict(kv.split("=", 1) for kv in arg.split("=", 1)[1].split(","))
                fields.append((cfg["field-path"], (cfg.get("order") or cfg["array-config"]).upper()))
        declared.add((f["--collection-group"], f["--query-scope"].upper().replace("-", "_"), tuple(fields)))
    assert declared == facts.store_indexes()
    ttl = {(flags(c)["--collection-group"], c[5]) for c in gcloud(lines, "firestore", "fields", "ttls", "update")}
    assert ttl == facts.store_ttl_fields()
    assert all("--enable-ttl" in c for c in gcloud(lines, "firestore", "fields", "ttls", "update"))
    exemptions = gcloud(lines, "firestore", "indexes", "fields", "update")
    exempt = [(flags(c)["--collection-group"], c[5]) for c in exemptions]
    assert set(exempt) == facts.store_index_exemptions() and len(exempt) == len(set(exempt))
    assert ttl < set(exempt) and all("--disable-indexes" in c for c in exemptions)
    assert all(not any(a.startswith("--index") for a in c) for c in exemptions), "an exemption keeps no index"


def test_every_create_is_preceded_by_a_describe(out):
    stdout = out[0]
    printed = [line for line in stdout.splitlines() if line[:2] in ("+ ", "? ")]
    for i, line in enumerate(printed):
        cmd = shlex.split(line[2:])
        if (
            line.startswith("+ gcloud")
            and "create" in cmd[:5]
            and cmd[:4] != ["gcloud", "firestore", "indexes", "composite"]
        ):
            assert printed[i - 1].startswith("? gcloud") and "describe" in printed[i - 1], line


def test_existing_indexes_are_not_created_again(tmp_path):
    sys.path.insert(0, str(facts.ROOT / "infra"))
    try:
        import indexes
    finally:
        sys.path.pop(0)
    collection, scope, fields = sorted(facts.store_indexes())[0]
    listed = [{
        "name": f"projects/p/databases/(default)/collectionGroups/{collection}/indexes/CICAgJim14AK",
        "queryScope": scope,
        "fields": [*({"fieldPath": f, "order": o} for f, o in fields), {"fieldPath": "__name__", "order": "DESCENDING"}],
        "state": "READY",
    }]  # fmt: skip
    path = tmp_path / "existing.json"
    path.write_text(json.dumps(listed))
    all_cmds = indexes.gcloud_commands("p", "(default)")
    some_cmds = indexes.gcloud_commands("p", "(default)", json.loads(path.read_text()))
    assert len(all_cmds) - len(some_cmds) == 1


def test_retired_indexes_are_named_for_deletion_and_never_deleted(tmp_path):
    # A deployment made before log pages has the six request_logs indexes; no query uses them any more. The
    # generator names those it finds (stderr, with the delete command) and emits no command touching them.
    from gptload.store.firestore.schema import RETIRED_INDEXES

    assert {ix["collection"] for ix in RETIRED_INDEXES} == {"request_logs"} and len(RETIRED_INDEXES) == 6
    listed = [{
        "name": f"projects/p/databases/(default)/collectionGroups/request_logs/indexes/OLD{i}",
        "queryScope": "COLLECTION",
        "fields": [*({"fieldPath": f, "order": o} for f, o in ix["fields"]), {"fieldPath": "__name__", "order": "DESCENDING"}],
        "state": "READY",
    } for i, ix in enumerate(RETIRED_INDEXES)]  # fmt: skip
    listed.append(
        {  # an index someone else made on a collection of their own: not ours to mention
            "name": "projects/p/databases/(default)/collectionGroups/orders/indexes/THEIRS",
            "queryScope": "COLLECTION",
            "fields": [{"fieldPath": "a", "order": "ASCENDING"}, {"fieldPath": "b", "order": "DESCENDING"}],
        }
    )
    path = tmp_path / "existing.json"
    path.write_text(json.dumps(listed))
    result = subprocess.run(
        ["python3", "infra/indexes.py", "gcloud", "--project=p", f"--existing={path}"],
        cwd=facts.ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 6 and all("gcloud firestore indexes composite delete OLD" in n for n in notes)
    assert "THEIRS" not in result.stderr and "delete" not in result.stdout
    assert not [c for c in result.stdout.splitlines() if "composite" in c and "request_logs" in c]
    # deployments without them hear nothing
    fresh = subprocess.run(
        ["python3", "infra/indexes.py", "gcloud", "--project=p"], cwd=facts.ROOT, capture_output=True, text=True
    )
    assert fresh.returncode == 0 and fresh.stderr == ""


def test_console_bucket_option(tmp_path):
    result, lines = dry_run(tmp_path, "--project", P, "--region", R, "--console-bucket")
    assert result.returncode == 0, result.stderr
    (cmd,) = gcloud(lines, "run", "deploy")
    assert parse_env(flags(cmd)["--set-env-vars"])["ALLOWED_ORIGINS"] == "https://storage.googleapis.com"
    assert gcloud(lines, "storage", "buckets", "create")
    (sync,) = gcloud(lines, "storage", "rsync")
    assert sync[3] == "admin_ui" and sync[4] == f"gs://{P}-gptload-console"
    assert 'export const API_BASE = "https://SERVICE-URL.run.app";' in result.stdout


def test_options_flow_into_the_commands(tmp_path):
    result, lines = dry_run(tmp_path, "--project", P, "--region", R, "--name", "gl-test", "--concurrency", "40",
                            "--allowed-origins", "https://a.example,https://b.example")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (cmd,) = gcloud(lines, "run", "deploy")
    env = parse_env(flags(cmd)["--set-env-vars"])
    assert env["THREADS"] == flags(cmd)["--concurrency"] == env["LIVE_MAX_SESSIONS"] == "40"
    assert env["ALLOWED_ORIGINS"] == "https://a.example,https://b.example"
    assert env["SECRET_PREFIX"] == "gl-test_vault" and cmd[3] == "gl-test"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck():
    subprocess.run(["shellcheck", "-S", "warning", str(facts.DEPLOY_SH)], check=True)


def test_cpu_below_one_needs_concurrency_one(tmp_path):
    result, _ = dry_run(tmp_path, "--project", P, "--cpu", "0.5", "--concurrency", "80")
    assert result.returncode == 2 and "--cpu below 1 needs --concurrency 1" in result.stderr
    result, lines = dry_run(tmp_path, "--project", P, "--cpu", "0.5", "--concurrency", "1", "--memory", "512Mi")
    assert result.returncode == 0, result.stderr
    (cmd,) = gcloud(lines, "run", "deploy")
    assert flags(cmd)["--cpu"] == "0.5" and flags(cmd)["--concurrency"] == "1"
    result, _ = dry_run(tmp_path, "--project", P, "--cpu", "half")
    assert result.returncode == 2 and "--cpu" in result.stderr


def _vault_scope(tmp_path, name: str) -> tuple[str, list[str]]:
    """(the prefix the vault's IAM conditions grant, the names of secrets this deployment owns)."""
    result, lines = dry_run(tmp_path / name, "--project", P, "--name", name)
    assert result.returncode == 0, result.stderr
    (deploy,) = gcloud(lines, "run", "deploy")
    prefix = parse_env(flags(deploy)["--set-env-vars"])["SECRET_PREFIX"]
    read_only = [c[3] for c in gcloud(lines, "secrets", "create")]  # AUTH_KEY's and ENCRYPTION_KEY's secrets
    assert len(read_only) == 2
    owned = [
        f"projects/PROJECT_NUMBER/secrets/{s}" for s in (*read_only, f"{prefix}-main-keys-0", f"{prefix}-x-keys-1")
    ]
    (grant,) = [c for c in gcloud(lines, "projects", "add-iam-policy-binding") if flags(c)["--role"].endswith("_vault")]
    (scope,) = re.findall(r'startsWith\("([^"]+)"\)', flags(grant)["--condition"])
    return scope, owned


def test_a_vault_grant_matches_no_secret_of_another_deployment(tmp_path):
    scope, owned = _vault_scope(tmp_path, "gptload")
    assert all(s.startswith(scope) for s in owned[2:]) and not [s for s in owned[:2] if s.startswith(scope)]
    for other in ("gptload-vault", "gptload-vault-x", "gptload-x", "gptload-v"):
        _, theirs = _vault_scope(tmp_path, other)
        assert not [s for s in theirs if s.startswith(scope)], other


def test_function_images_go_to_a_repository_with_the_terraform_cleanup_policy(out, deploy):
    lines = out[1]
    (create,) = gcloud(lines, "artifacts", "repositories", "create")
    assert create[4] == "gptload-functions" and flags(create)["--repository-format"] == "docker"
    (policy,) = gcloud(lines, "artifacts", "repositories", "set-cleanup-policies")
    assert policy[4] == "gptload-functions" and "--no-dry-run" in policy
    assert lines.index(policy) < lines.index(deploy)
    assert flags(deploy)["--image"] == f"{R}-docker.pkg.dev/{P}/gptload-functions/gptload"
    rules = {r["action"]["type"]: r for r in json.loads((facts.ROOT / flags(policy)["--policy"]).read_text())}
    facts.require_hcl2()
    repo = facts.Terraform().one("google_artifact_registry_repository", "functions")
    tf_rules = {p["action"]: p for p in repo["cleanup_policies"]}
    assert rules["Keep"]["mostRecentVersions"]["keepCount"] == tf_rules["KEEP"]["most_recent_versions"][0]["keep_count"]
    days = int(rules["Delete"]["condition"]["olderThan"].rstrip("d"))
    assert f"{days * 86400}s" == tf_rules["DELETE"]["condition"][0]["older_than"]
    assert rules["Delete"]["condition"]["tagState"].upper() == tf_rules["DELETE"]["condition"][0]["tag_state"]
