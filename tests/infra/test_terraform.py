"""Offline checks of infra/terraform: formatting, and the facts the code dictates (entry point, settings, IAM,
indexes, TTL policies). Providers cannot be downloaded here, so `terraform validate` is not run; the files are
parsed with python-hcl2 instead."""

from __future__ import annotations

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
    return tf.one("google_cloudfunctions2_function", "gptload")


@pytest.fixture(scope="module")
def service(function):
    return function["service_config"][0]


def test_terraform_fmt():
    terraform = shutil.which("terraform")
    require(terraform is not None, "terraform is not installed (needed for `terraform fmt -check`)")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(facts.TF_DIR)], capture_output=True, text=True
    )
    assert result.returncode == 0, (
        f"terraform fmt -check failed; run `terraform fmt -recursive infra/terraform`:\n{result.stdout}"
    )


def test_entry_point_and_runtime_match_main_py(function):
    build = function["build_config"][0]
    assert build["entry_point"] == facts.entry_point()
    assert build["runtime"] == "python312"
    assert build["service_account"] == "${google_service_account.build.id}", "builds run as our build account"
    source = build["source"][0]["storage_source"][0]
    assert source["object"] == "${google_storage_bucket_object.source.name}"


def test_source_zip_is_named_by_its_hash(tf):
    obj = tf.one("google_storage_bucket_object", "source")
    assert "${data.archive_file.source.output_sha256}" in obj["name"] or "output_md5" in obj["name"]
    assert obj["source"] == "${data.archive_file.source.output_path}"


def test_environment_sets_every_serverless_setting_and_nothing_the_code_does_not_read(service):
    env = service["environment_variables"]
    secret_env = {s["key"] for s in service["secret_environment_variables"]}
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


def test_auth_key_comes_from_secret_manager(tf, service):
    (auth,) = service["secret_environment_variables"]
    assert auth["secret"] == "${google_secret_manager_secret.auth_key.secret_id}"
    assert auth["version"] == "latest"
    # and the runtime may read that secret
    binding = tf.one("google_secret_manager_secret_iam_member", "runtime_auth_key")
    assert binding["role"] == "roles/secretmanager.secretAccessor"
    assert binding["member"] == "${google_service_account.runtime.member}"


def test_threads_equal_concurrency(service):
    assert service["environment_variables"]["THREADS"] == service["max_instance_request_concurrency"]


def test_timeout_allows_long_streams(tf, service):
    assert service["timeout_seconds"] == "${var.timeout_seconds}"
    assert tf.variables["timeout_seconds"]["default"] == 3600  # the gen2 maximum


def test_runtime_identity_is_ours(service):
    assert service["service_account_email"] == "${google_service_account.runtime.email}"


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
    for api in ("cloudfunctions", "run", "cloudbuild", "artifactregistry", "firestore", "secretmanager",
                "cloudscheduler", "iam", "storage"):  # fmt: skip
        assert f"{api}.googleapis.com" in apis
    assert tf.one("google_project_service", "apis")["for_each"] == "${toset(local.apis)}"


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
    assert prefix == f"projects/{project_number}/secrets/gptload-vault-"
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
                       "service": "${google_cloudfunctions2_function.gptload.name}"}  # fmt: skip
    for rtype, named in tf.resources.items():
        for name, body in named.items():
            if body.get("member") == sched_member:
                assert (rtype, name) == ("google_cloud_run_service_iam_member", "scheduler_invoker")


def test_scheduler_job_calls_maintenance_with_the_audience_the_function_checks(tf, service):
    job = tf.one("google_cloud_scheduler_job", "maintenance")
    target = job["http_target"][0]
    assert target["http_method"] == "POST"
    assert target["uri"].endswith(facts.maintenance_path())
    oidc = target["oidc_token"][0]
    env = service["environment_variables"]
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
    assert (
        'export const API_BASE = "${google_cloudfunctions2_function.gptload.service_config[0].uri}";'
        in config["content"]
    )
    # the line the repository's config.js has, so api.js imports the same name
    assert "export const API_BASE = " in (facts.ROOT / "admin_ui" / "config.js").read_text()
    uploaded = tf.locals["console_files"]
    assert 'setsubtract(fileset(local.console_dir, "**"), ["config.js"])' in uploaded
    assert tf.locals["console_origin"] == "https://storage.googleapis.com"
    assert "var.console_bucket ? [local.console_origin]" in tf.locals["allowed_origins"]
    assert "var.allowed_origins" in tf.locals["allowed_origins"]


def test_outputs(tf):
    assert {"function_url", "console_url", "next_steps"} <= tf.outputs.keys()
    assert tf.outputs["function_url"]["value"] == "${google_cloudfunctions2_function.gptload.service_config[0].uri}"


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
