# AUTH_KEY, the admin password, and ENCRYPTION_KEY (below) reach the service as secret environment variables,
# never as plain env.
# The key vault's own secrets ({SECRET_PREFIX}-{group}-keys-{n}) are created by the function, not here.
#
# It never lands in the Terraform state or plan: the generated value is ephemeral (regenerated on every run and
# never stored) and reaches Secret Manager through the write-only secret_data_wo, which Terraform sends only when
# secret_data_wo_version changes. var.auth_key is an ephemeral variable for the same reason. To rotate the
# password, raise auth_key_version (with or without a new auth_key).
ephemeral "random_password" "auth_key" {
  length  = 32
  special = false
}

resource "google_secret_manager_secret" "auth_key" {
  project   = var.project
  secret_id = local.auth_key_secret

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "auth_key" {
  secret                 = google_secret_manager_secret.auth_key.id
  secret_data_wo         = var.auth_key != "" ? var.auth_key : ephemeral.random_password.auth_key.result
  secret_data_wo_version = var.auth_key_version
}

# ENCRYPTION_KEY: the passphrase of the AES-GCM key that seals proxy_url credentials (a group's or the system's
# egress proxy, http://user:pass@proxy:3128) in Firestore. Without it the service refuses a proxy_url with
# credentials (VAULT=secretmanager keeps the real keys in Secret Manager, so nothing else needs it).
#
# Generated once, like AUTH_KEY (ephemeral, written through the write-only secret_data_wo: never in the state or a
# plan), and NEVER rotated: a new key would make every sealed proxy_url unreadable (the proxy then answers 407 for
# that group rather than going out directly; re-entering each proxy_url is the only way back). So the version is a
# constant (the value is sent once, at creation, and never again), there is no variable to replace it, and
# prevent_destroy makes Terraform refuse any plan that would delete or replace the secret or its version (a changed
# name, `terraform destroy`: README, "Tear it down", says how to keep or delete it on purpose).
ephemeral "random_password" "encryption_key" {
  length  = 48 # gptload/config.py wants 32+ characters
  special = false
}

resource "google_secret_manager_secret" "encryption_key" {
  project   = var.project
  secret_id = local.encryption_key_secret

  replication {
    auto {}
  }

  lifecycle {
    prevent_destroy = true
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "encryption_key" {
  secret                 = google_secret_manager_secret.encryption_key.id
  secret_data_wo         = ephemeral.random_password.encryption_key.result
  secret_data_wo_version = 1 # never raise it: that writes a new key, and sealed proxy credentials are lost

  lifecycle {
    prevent_destroy = true
  }
}
