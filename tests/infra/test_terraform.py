"""Offline checks of infra/terraform: formatting, and the facts the code dictates (entry point, settings, IAM,
indexes, TTL policies). Providers cannot be downloaded here, so `terraform validate` is not run; the files are
parsed with python-hcl2 instead."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import require
from tests.infra import facts

P, R = "p", "r"  # the same project/region the deploy.sh tests use


@pytest.fixture(scope="module")
def tf() -> facts.Terraform:
    facts.require_hcl2()
    return facts.Terraform()


@pytest.fixture(scope="module")
def function(tf):
    """The Cloud Run service (built from source with the functions framework) that serves gptload."""
    return tf.one("google_cloud_run_v2_service", "gptload")


@pytest.fixture(scope="module")
def service(function):
    return function["template"][0]


@pytest.fixture(scope="module")
def container(service):
    (container,) = service["containers"]
    return container


@pytest.fixture(scope="module")
def env(tf):
    return tf.locals["service_env"]


def test_terraform_fmt():
    terraform = shutil.which("terraform")
    require(terraform is not None, "terraform is not installed (needed for `terraform fmt -check`)")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(facts.TF_DIR)], capture_output=True, text=True
    )
    assert result.returncode == 0, (
        f"terraform fmt -check failed; run `terraform fmt -recursive infra/terraform`:\n{result.stdout}"
    )


def test_entry_point_and_runtime_match_main_py(tf, function, container):
    build = function["build_config"][0]
    assert build["function_target"] == facts.entry_point()
    assert build["base_image"] == container["base_image_uri"] == "${local.base_image}"
    assert tf.locals["base_image"].endswith("/runtimes/python312")
    assert build["service_account"] == "${google_service_account.build.id}", "builds run as our build account"
    assert build["source_location"].endswith("/${google_storage_bucket_object.source.name}")
    assert build["image_uri"] == container["image"] == "${local.image}"


def test_a_service_not_a_function_because_live_sessions_need_websockets(tf, service):
    """Cloud Run services pass WebSocket upgrades (documented); the Live API route needs them (README)."""
    assert not tf.resources.get("google_cloudfunctions2_function")
    assert service["session_affinity"] is True


def test_source_zip_is_named_by_its_hash(tf):
    obj = tf.one("google_storage_bucket_object", "source")
    assert "${data.archive_file.source.output_sha256}" in obj["name"] or "output_md5" in obj["name"]
    assert obj["source"] == "${data.archive_file.source.output_path}"


def _secret_env(container) -> dict:
    return {e["name"]: e for e in container["env"] if "value_source" in e}


def test_environment_sets_every_serverless_setting_and_nothing_the_code_does_not_read(container, env):
    (plain,) = [e for e in container["dynamic"] if "env" in e]
    assert plain["env"]["for_each"] == "${local.service_env}"
    secret_env = set(_secret_env(container))
    read = facts.env_vars_read_by_code()
    assert facts.REQUIRED_ENV | facts.REQUIRED_SECRET_ENV <= read, "config.py no longer reads a required setting"
    missing = facts.REQUIRED_ENV - env.keys()
    assert not missing, f"settings the function needs but Terraform does not set: {missing}"
    assert secret_env == facts.REQUIRED_SECRET_ENV
    unread = (env.keys() | secret_env) - read
    assert not unread, f"Terraform sets variables gptload/config.py never reads: {unread}"
    assert not (env.keys() & facts.NEVER_PLAIN), "a secret is set as a plain environment variable"
    assert not (env.keys() & facts.NEVER_SET)
    for name, value in facts.EXPECTED_VALUES.items():
        assert env[name] == value
    assert not any("random_password" in str(v) or "auth_key" in str(v).lower() for v in env.values())


def test_auth_key_comes_from_secret_manager(tf, container):
    auth = _secret_env(container)["AUTH_KEY"]
    auth = auth["value_source"][0]["secret_key_ref"][0]
    assert auth["secret"] == "${google_secret_manager_secret.auth_key.secret_id}"
    # The version Terraform wrote, not "latest": raising auth_key_version then rolls out a new revision, instead of
    # instances started before and after the rotation disagreeing about the password.
    assert auth["version"] == "${google_secret_manager_secret_version.auth_key.version}"
    # and the runtime may read that secret
    binding = tf.one("google_secret_manager_secret_iam_member", "runtime_auth_key")
    assert binding["role"] == "roles/secretmanager.secretAccessor"
    assert binding["member"] == "${google_service_account.runtime.member}"


def test_the_deployed_service_gets_encryption_key_from_secret_manager(tf, container, function):
    """Without ENCRYPTION_KEY, VAULT=secretmanager refuses a proxy_url with credentials: the service gets one from
    a secret of its own (read-only for it, outside the vault's prefix), pinned to the version Terraform wrote."""
    ref = _secret_env(container)["ENCRYPTION_KEY"]["value_source"][0]["secret_key_ref"][0]
    assert ref["secret"] == "${google_secret_manager_secret.encryption_key.secret_id}"
    assert ref["version"] == "${google_secret_manager_secret_version.encryption_key.version}"
    secret_id = tf.resolve(tf.one("google_secret_manager_secret", "encryption_key")["secret_id"], {})
    assert secret_id == facts.SECRET_ENV_SECRETS["ENCRYPTION_KEY"].format(name="gptload")
    assert not secret_id.startswith(tf.resolve("${local.secret_prefix}", {}) + "-")
    binding = tf.one("google_secret_manager_secret_iam_member", "runtime_encryption_key")
    assert binding["secret_id"] == "${google_secret_manager_secret.encryption_key.secret_id}"
    assert binding["role"] == "roles/secretmanager.secretAccessor"
    assert binding["member"] == "${google_service_account.runtime.member}"
    for dependency in ("google_secret_manager_secret_version.encryption_key", "runtime_encryption_key"):
        assert any(dependency in d for d in function["depends_on"]), dependency


def test_encryption_key_is_generated_write_only_and_never_changed_by_a_later_apply(tf):
    """Like AUTH_KEY, the value never enters the state or a plan (ephemeral, secret_data_wo). Unlike it, nothing
    rotates it: a new key would make every sealed proxy_url unreadable. The write-only value is sent once (its
    version is a constant), and Terraform refuses any plan that would destroy or replace the secret or its version."""
    from gptload.config import MIN_PASSPHRASE

    generated = re.search(r'ephemeral "random_password" "encryption_key" \{(.*?)\n\}', tf.text, re.S)
    assert generated, "no ephemeral random_password for the encryption key"
    length = int(re.search(r"length\s*=\s*(\d+)", generated.group(1)).group(1))
    assert length >= MIN_PASSPHRASE and "special = false" in generated.group(1)
    version = tf.one("google_secret_manager_secret_version", "encryption_key")
    assert "secret_data" not in version, "secret_data is stored in the state"
    assert version["secret_data_wo"] == "${ephemeral.random_password.encryption_key.result}"
    assert version["secret_data_wo_version"] == 1, "a constant: raising it would write a new key"
    assert version["secret"] == "${google_secret_manager_secret.encryption_key.id}"
    for body in (version, tf.one("google_secret_manager_secret", "encryption_key")):
        assert body["lifecycle"][0].get("prevent_destroy") is True, body
    assert not [v for v in tf.variables if "encryption" in v], "no variable may rotate or replace the key"
    assert "random_password" not in tf.resources, "a managed random_password keeps its result in the state"


def test_threads_equal_concurrency(service, env):
    assert env["THREADS"] == service["max_instance_request_concurrency"]
    assert env["LIVE_MAX_SESSIONS"] == env["THREADS"]  # Cloud Run bounds requests: sessions may take every thread


def test_timeout_allows_long_streams(tf, service):
    assert service["timeout"] == "${var.timeout_seconds}s"
    assert tf.variables["timeout_seconds"]["default"] == 3600  # the gen2 maximum


def test_runtime_identity_is_ours(service):
    assert service["service_account"] == "${google_service_account.runtime.email}"


def test_variables_from_the_issue_exist_and_every_reference_is_declared(tf):
    wanted = {"project", "region", "name", "min_instances", "max_instances", "concurrency", "memory",
              "timeout_seconds", "console_bucket", "allowed_origins"}  # fmt: skip
    assert wanted <= tf.variables.keys()
    used = set(re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", tf.text))
    assert used <= tf.variables.keys(), f"undeclared variables: {used - tf.variables.keys()}"
    assert tf.variables.keys() <= used, f"unused variables: {tf.variables.keys() - used}"
    assert "default" not in tf.variables["project"]


def test_needed_apis_are_enabled(tf):
    apis = set(re.findall(r'"([a-z]+\.googleapis\.com)"', tf.text))
    for api in ("run", "cloudbuild", "artifactregistry", "firestore", "secretmanager",
                "cloudscheduler", "iam", "storage"):  # fmt: skip
        assert f"{api}.googleapis.com" in apis
    assert "toset(concat(local.apis," in tf.one("google_project_service", "apis")["for_each"]


def test_no_primitive_role_anywhere(tf):
    roles = {m for s in tf.all_strings() for m in re.findall(r"roles/[A-Za-z.]+", s)}
    assert roles, "no roles found: the parser changed?"
    assert not roles & facts.PRIMITIVE_ROLES, roles & facts.PRIMITIVE_ROLES


def test_secret_manager_rights_are_exactly_the_vaults_calls_and_limited_to_its_prefix(tf):
    vault = tf.one("google_project_iam_custom_role", "vault")
    creator = tf.one("google_project_iam_custom_role", "secret_creator")
    assert set(vault["permissions"]) | set(creator["permissions"]) == facts.vault_permissions()
    assert creator["permissions"] == ["secretmanager.secrets.create"]
    prefix = tf.resolve("${local.vault_secrets}", {"project": P})
    project_number = "${data.google_project.this.number}"
    assert prefix == f"projects/{project_number}/secrets/gptload_vault-"
    for name in ("runtime_vault", "runtime_secret_creator"):
        condition = tf.one("google_project_iam_member", name)["condition"][0]["expression"]
        assert f'resource.name.startsWith("{prefix}")' in tf.resolve(condition, {"project": P})
    # the function's SECRET_PREFIX is that prefix, and AUTH_KEY's secret is outside it (read-only for the function)
    secret_prefix = tf.resolve("${local.secret_prefix}", {})
    assert prefix.endswith(f"/{secret_prefix}-")
    auth_secret = tf.resolve(tf.one("google_secret_manager_secret", "auth_key")["secret_id"], {})
    assert not auth_secret.startswith(f"{secret_prefix}-")
    # only the scheduler-free, runtime-only grants touch Secret Manager
    for binding in tf.resources["google_project_iam_member"].values():
        if "secretmanager" in str(binding.get("role")) or "roles/secretmanager" in str(binding.get("role")):
            assert binding.get("condition"), f"unconditional Secret Manager grant {binding}"


def test_firestore_grant_is_limited_to_the_database(tf):
    binding = tf.one("google_project_iam_member", "runtime_firestore")
    assert binding["role"] == "roles/datastore.user"
    expression = tf.resolve(binding["condition"][0]["expression"], {"project": P})
    assert expression == 'resource.name == "projects/p/databases/(default)"'


def test_scheduler_may_invoke_the_function_only(tf):
    sched_member = "${google_service_account.scheduler.member}"
    invoker = tf.one("google_cloud_run_service_iam_member", "scheduler_invoker")
    assert invoker == {**invoker, "role": "roles/run.invoker", "member": sched_member,
                       "service": "${google_cloud_run_v2_service.gptload.name}"}  # fmt: skip
    for rtype, named in tf.resources.items():
        for name, body in named.items():
            if body.get("member") == sched_member:
                assert (rtype, name) == ("google_cloud_run_service_iam_member", "scheduler_invoker")


def test_scheduler_job_calls_maintenance_with_the_audience_the_function_checks(tf, env):
    job = tf.one("google_cloud_scheduler_job", "maintenance")
    target = job["http_target"][0]
    assert target["http_method"] == "POST"
    assert target["uri"].endswith(facts.maintenance_path())
    oidc = target["oidc_token"][0]
    # the same expression, hence the same string (and it resolves without the function's own URL: no cycle)
    assert oidc["audience"] == env["OIDC_AUDIENCE"]
    audience = tf.resolve(env["OIDC_AUDIENCE"], {"project": P, "region": R})
    assert audience == f"https://{R}-{P}.cloudfunctions.net/gptload{facts.maintenance_path()}"
    assert oidc["service_account_email"] == env["OIDC_SERVICE_ACCOUNT"] == "${google_service_account.scheduler.email}"


def test_function_is_public_because_it_authenticates_itself(tf):
    public = tf.one("google_cloud_run_service_iam_member", "public")
    assert public["member"] == "allUsers" and public["role"] == "roles/run.invoker"


def test_firestore_database_native_with_delete_protection(tf):
    db = tf.one("google_firestore_database", "gptload")
    assert db["type"] == "FIRESTORE_NATIVE"
    assert db["delete_protection_state"] == "DELETE_PROTECTION_ENABLED"
    assert db["location_id"] == "${local.firestore_location}"
    assert "var.firestore_location" in tf.locals["firestore_location"]


def _declared_indexes(tf):
    out = set()
    for body in tf.resources.get("google_firestore_index", {}).values():
        fields = tuple((f["field_path"], f.get("order") or f["array_config"]) for f in body["fields"])
        out.add((body["collection"], body.get("query_scope", "COLLECTION"), fields))
    return out


def test_indexes_cover_the_store_queries(tf):
    declared = _declared_indexes(tf)
    assert declared == facts.store_indexes(), "run: python3 infra/indexes.py hcl > infra/terraform/firestore_schema.tf"
    assert len(declared) == len(tf.resources["google_firestore_index"]), "duplicate index declarations"


def test_ttl_fields_are_exactly_those_the_store_writes(tf):
    ttl = {
        (b["collection"], b["field"])
        for b in tf.resources.get("google_firestore_field", {}).values()
        if "ttl_config" in b
    }
    assert ttl == facts.store_ttl_fields()


def _exemption_errors(tf) -> list[str]:
    """What is wrong with the google_firestore_field resources against the store's declarations."""
    errors = []
    seen: dict[tuple[str, str], str] = {}
    for name, b in tf.resources.get("google_firestore_field", {}).items():
        where = (b.get("collection"), b.get("field"))
        if where in seen:
            errors.append(f"{name}: a second resource for {where} (with {seen[where]}): they would fight")
        seen[where] = name
        config = b.get("index_config")
        if config is None:
            errors.append(f"{name}: no index_config: the field keeps Firestore's default single-field indexes")
        elif any(block.get("indexes") for block in config):
            errors.append(f"{name}: index_config keeps indexes {config}: an exemption disables them all")
    exempt = {w for w, n in seen.items() if "index_config" in tf.resources["google_firestore_field"][n]}
    if exempt != facts.store_index_exemptions():
        errors.append(f"exempted {sorted(exempt)} != declared {sorted(facts.store_index_exemptions())}")
    return errors


def test_index_exemptions_are_exactly_those_the_store_declares(tf):
    assert _exemption_errors(tf) == []
    assert {("log_pages", "rows"), ("key_usage", "k"), ("stats_hourly", "m")} <= facts.store_index_exemptions()


_DUPLICATE = (
    'resource "google_firestore_field" "noindex_tasks_data_again" {\n  project    = var.project\n'
    '  collection = "tasks"\n  field      = "data"\n\n  index_config {}\n}\n\n'
)
EXEMPTION_FAULTS = {
    "exemption without index_config": (
        '  field      = "rows"\n\n  index_config {}\n',
        '  field      = "rows"\n',
        "no index_config",
    ),
    "exemption keeping an index": (
        '  field      = "rows"\n\n  index_config {}\n',
        '  field      = "rows"\n\n  index_config {\n    indexes {\n      order = "ASCENDING"\n    }\n  }\n',
        "keeps indexes",
    ),
    "exemption on a queried field": ('  field      = "rows"\n', '  field      = "ids"\n', "!= declared"),
    "two resources on one field": (
        'resource "google_firestore_field" "noindex_tasks_data" {',
        _DUPLICATE + 'resource "google_firestore_field" "noindex_tasks_data" {',
        "a second resource",
    ),
}


@pytest.mark.parametrize("fault", sorted(EXEMPTION_FAULTS))
def test_a_wrong_exemption_resource_is_caught(fault, tmp_path):
    facts.require_hcl2()
    old, new, expected = EXEMPTION_FAULTS[fault]
    text = (facts.TF_DIR / "firestore_schema.tf").read_text()
    assert text.count(old) == 1, old
    (tmp_path / "firestore_schema.tf").write_text(text.replace(old, new))
    errors = _exemption_errors(facts.Terraform(tmp_path))
    assert any(expected in e for e in errors), errors


def test_generated_schema_file_is_current():
    sys.path.insert(0, str(facts.ROOT / "infra"))
    try:
        import indexes
    finally:
        sys.path.pop(0)
    current = (facts.TF_DIR / "firestore_schema.tf").read_text()
    assert current == indexes.render_hcl(), "run: python3 infra/indexes.py hcl > infra/terraform/firestore_schema.tf"


def test_console_bucket_gets_a_config_js_naming_the_function_and_its_origin_is_allowed(tf):
    config = tf.one("google_storage_bucket_object", "console_config")
    assert config["name"] == "config.js"
    assert 'export const API_BASE = "${google_cloud_run_v2_service.gptload.uri}";' in config["content"]
    # the line the repository's config.js has, so api.js imports the same name
    assert "export const API_BASE = " in (facts.ROOT / "admin_ui" / "config.js").read_text()
    uploaded = tf.locals["console_files"]
    assert 'setsubtract(fileset(local.console_dir, "**"), ["config.js"])' in uploaded
    assert tf.locals["console_origin"] == "https://storage.googleapis.com"
    assert "var.console_bucket ? [local.console_origin]" in tf.locals["allowed_origins"]
    assert "var.allowed_origins" in tf.locals["allowed_origins"]


def test_outputs(tf):
    assert {"function_url", "console_url", "next_steps"} <= tf.outputs.keys()
    assert tf.outputs["function_url"]["value"] == "${google_cloud_run_v2_service.gptload.uri}"


def test_upload_keeps_tests_data_and_caches_out_and_matches_gcloudignore(tf):
    excludes = tf.data["archive_file"]["source"]["excludes"]
    ignore = (facts.ROOT / ".gcloudignore").read_text().splitlines()
    files = facts.repo_files()
    by_archive = {f for f in files if not facts.archive_excluded(f, excludes)}
    by_gcloud = {f for f in files if not facts.gcloudignore_excluded(f, ignore)}
    assert by_archive == by_gcloud, f"Terraform and gcloud upload different files: {by_archive ^ by_gcloud}"
    assert {
        "main.py",
        "requirements.txt",
        "admin_ui/index.html",
        "admin_ui/config.js",
        "gptload/config.py",
    } <= by_archive
    kept_out = ("tests/", "bench/", "data/", "docs/", "infra/", "test-artifacts/", ".git/", ".pytest_cache/")
    for prefix in (*kept_out, ".hypothesis/"):
        assert not any(f.startswith(prefix) for f in by_archive), prefix
    assert not any("__pycache__" in f or f.endswith((".pyc", ".db")) for f in by_archive)
    assert facts.gcloudignore_excluded("data/x/gptload.db", ignore) and facts.archive_excluded(
        "data/x/gptload.db", excludes
    )


# -- review defects (issue 14, item 3) ---------------------------------------------------------------------------
APIS = "${google_project_service.apis}"


def test_custom_roles_and_the_project_lookup_wait_for_the_apis(tf):
    # A fresh project: the IAM and Resource Manager APIs must be on before these are created or read.
    assert APIS in tf.data["google_project"]["this"].get("depends_on", [])
    for name in ("vault", "secret_creator"):
        assert APIS in tf.one("google_project_iam_custom_role", name).get("depends_on", [])


def test_the_first_build_waits_for_the_build_accounts_grants(tf, function):
    wait = tf.one("time_sleep", "build_grants")
    assert "${google_project_iam_member.build}" in wait["depends_on"]
    assert int(wait["create_duration"].rstrip("s")) >= 60
    assert "${time_sleep.build_grants}" in function["depends_on"]


def test_the_source_bucket_never_deletes_the_zip_in_use(tf):
    # The zip is named by its hash; Terraform deletes the old object itself when the source changes. An age rule
    # would delete the zip in use and make every later plan re-create it.
    bucket = tf.one("google_storage_bucket", "source")
    assert not bucket.get("lifecycle_rule"), bucket.get("lifecycle_rule")


def test_auth_key_is_write_only_and_never_in_state(tf):
    version = tf.one("google_secret_manager_secret_version", "auth_key")
    assert "secret_data" not in version, "secret_data is stored in the state"
    assert (
        "var.auth_key" in version["secret_data_wo"]
        and "ephemeral.random_password.auth_key.result" in (version["secret_data_wo"])
    )
    assert version["secret_data_wo_version"] == "${var.auth_key_version}"
    assert "random_password" not in tf.resources, "a managed random_password keeps its result in the state"
    assert tf.variables["auth_key"].get("ephemeral") is True
    assert re.search(r'required_version = ">= 1\.11', (facts.TF_DIR / "versions.tf").read_text())


def test_the_lock_file_is_not_git_ignored():
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "infra/terraform/.terraform.lock.hcl"], cwd=facts.ROOT, capture_output=True
    )
    assert ignored.returncode == 1, "HashiCorp recommends committing .terraform.lock.hcl"


def test_the_vault_grant_matches_no_secret_of_another_deployment(tf):
    def scope_and_owned(name: str) -> tuple[str, list[str]]:
        over = {"project": P, "name": name}
        scope = tf.resolve("${local.vault_secrets}", over).replace("${data.google_project.this.number}", "N")
        prefix = tf.resolve("${local.secret_prefix}", over)
        auth = tf.resolve("${local.auth_key_secret}", over)
        key = tf.resolve("${local.encryption_key_secret}", over)
        shards = (f"{prefix}-main-keys-0", f"{prefix}-x-keys-1")
        return scope, [f"projects/N/secrets/{s}" for s in (auth, key, *shards)]

    scope, owned = scope_and_owned("gptload")
    assert "${" not in scope + "".join(owned), (scope, owned)
    assert all(s.startswith(scope) for s in owned[2:]) and not [s for s in owned[:2] if s.startswith(scope)]
    for other in ("gptload-vault", "gptload-vault-x", "gptload-x", "gptload-v"):
        _, theirs = scope_and_owned(other)
        assert not [s for s in theirs if s.startswith(scope)], other


def test_old_layout_key_secrets_stop_the_apply_until_a_prefix_is_chosen(tf, function):
    listing = tf.data["google_secret_manager_secrets"]["all"]
    assert APIS in listing["depends_on"]
    (check,) = function["lifecycle"][0]["precondition"]
    assert "local.legacy_secrets" in check["condition"] and "secret_prefix" in check["error_message"]
    assert 'regex("^${var.name}-vault-[^_]+-keys-[0-9]+$", s.secret_id)' in tf.locals["legacy_secrets"]


def test_function_images_have_a_cleanup_policy(tf, function):
    repo = tf.one("google_artifact_registry_repository", "functions")
    image = tf.resolve(function["build_config"][0]["image_uri"], {"project": P, "region": R})
    assert image == f"{R}-docker.pkg.dev/{P}/gptload-functions/gptload"
    actions = {p["action"]: p for p in repo["cleanup_policies"]}
    assert actions["KEEP"]["most_recent_versions"][0]["keep_count"] >= 2
    assert actions["DELETE"]["condition"][0]["older_than"]
    assert repo["format"] == "DOCKER" and repo.get("cleanup_policy_dry_run") is False


def test_budget_is_optional_and_alerts_the_given_addresses(tf):
    budget = tf.one("google_billing_budget", "gptload")
    assert budget["count"] == "${var.budget_amount > 0 ? 1 : 0}"
    assert budget["billing_account"] == "${var.billing_account}"
    assert "data.google_project.this.number" in str(budget["budget_filter"][0]["projects"])
    rule = budget["all_updates_rule"][0]
    assert "google_monitoring_notification_channel.email" in rule["monitoring_notification_channels"]
    channel = tf.one("google_monitoring_notification_channel", "email")
    assert channel["for_each"] == "${toset(var.alert_emails)}" and channel["type"] == "email"


def test_maintenance_failures_raise_an_alert(tf):
    policy = tf.one("google_monitoring_alert_policy", "maintenance_failures")
    log_filter = tf.resolve(policy["conditions"][0]["condition_matched_log"][0]["filter"], {"project": P})
    assert 'resource.type="cloud_scheduler_job"' in log_filter
    assert 'resource.labels.job_id="gptload-maintenance"' in log_filter and "severity>=ERROR" in log_filter
    assert "google_monitoring_notification_channel.email" in policy["notification_channels"]
    job = tf.one("google_cloud_scheduler_job", "maintenance")
    assert tf.resolve(job["name"], {}) == "gptload-maintenance"


# Variable validations, evaluated by Terraform itself: a configuration of variables.tf alone needs no provider,
# so `terraform plan` runs offline and applies every validation block.
@pytest.fixture(scope="module")
def plan_variables(tmp_path_factory):
    terraform = shutil.which("terraform")
    require(terraform is not None, "terraform is not installed")
    work = tmp_path_factory.mktemp("variables")
    shutil.copy(facts.TF_DIR / "variables.tf", work / "variables.tf")
    subprocess.run([terraform, "init", "-input=false", "-no-color"], cwd=work, check=True, capture_output=True)

    def plan(**values: object) -> subprocess.CompletedProcess:
        args = [f"-var={k}={v}" for k, v in {"project": "p", **values}.items()]
        return subprocess.run(
            [terraform, "plan", "-input=false", "-no-color", "-refresh=false", *args],
            cwd=work,
            capture_output=True,
            text=True,
            env={**os.environ, "TF_IN_AUTOMATION": "1"},
        )

    return plan


def test_cpu_below_one_requires_concurrency_one(plan_variables):
    refused = plan_variables(cpu="0.5", concurrency=80)
    assert refused.returncode != 0 and "cpu below 1 needs concurrency = 1" in refused.stderr, refused.stderr
    assert plan_variables(cpu="0.5", concurrency=1, memory="512Mi").returncode == 0
    assert plan_variables(cpu="2", concurrency=80).returncode == 0
    assert "cpu: a number" in plan_variables(cpu="half").stderr


def test_a_budget_needs_a_billing_account(plan_variables):
    refused = plan_variables(budget_amount=20)
    assert refused.returncode != 0 and "billing_account" in refused.stderr
    assert plan_variables(budget_amount=20, billing_account="000000-AAAAAA-BBBBBB").returncode == 0


def test_the_tfvars_example_names_only_declared_variables(tf):
    text = (facts.TF_DIR / "terraform.tfvars.example").read_text()
    named = set(re.findall(r"^#?\s*([a-z_]+)\s+=", text, re.M))
    assert {"project", "region", "budget_amount", "alert_emails", "cpu"} <= named
    assert named <= tf.variables.keys(), named - tf.variables.keys()
    assert not re.search(r"^auth_key\s*=", text, re.M), "AUTH_KEY does not belong in a file on disk"
